"""The campaign store: one SQLite file in WAL mode; every proposal and result is committed before
the next step, so a campaign killed at any point loses nothing.

Tables: ``meta`` (the config text and its fingerprint), ``proposals`` (params as JSON, status
``pending`` → ``running`` → ``completed`` | ``failed``), ``results`` (one per proposal, at most),
``failures`` (why a proposal failed, or why a record naming no proposal was refused) and
``events`` (what happened when: runs, recoveries, rejected files).

A proposal is marked ``running`` (committed) *before* it is handed to an instrument. A process
that finds ``running`` proposals on start-up was killed while they ran: they are marked failed
("interrupted") and never re-run, because a real experiment may already have consumed material.

One writer per campaign: ``lease`` holds at most one row (the process that writes: pid, host,
command, since, last renewed). `Store.lease` takes it in a transaction, a thread renews it while
the process runs, and it is released on exit. A second writer is refused, naming the holder; a
lease whose process is gone (same host: no such pid; any host: not renewed for
`LEASE_STALE_S`) is taken over, and the take-over is logged.

A pending proposal people will not run can be ``cancelled`` (`Store.cancel`): never run, never
recorded against, not a failure, and not taken for the proposers (it was never run).

A proposal carries the model's ``prediction`` made when it was proposed (version 4: predicted mean
and standard deviation per objective, the acquisition value; null for design points and model-free
proposers), so the report can compare predictions with what was measured.

Format ``kiban.lab.campaign`` version 4 (version 1 stores, without the lease table, version 2
ones, without the ``cancelled`` status, and version 3 ones, without predictions, are upgraded in
place when opened, with an ``upgrade`` event saying so).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import socket
import sqlite3
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kiban.errors import RunFailure
from kiban.formats import check, register
from kiban.lab.space import CampaignConfig, config_from_text

#: the campaign store's format; version 2 added the ``lease`` table (one writer per campaign),
#: version 3 the ``cancelled`` status of a proposal (``kiban lab cancel``), version 4 the
#: ``prediction`` of a proposal (the model's mean, sd and acquisition value when proposed)
CAMPAIGN_STORE = register(
    "kiban.lab.campaign",
    4,
    description="a lab campaign: SQLite, config + proposals + results",
    upgrades={
        1: lambda meta: {**meta, "changes": "added the lease table (one writer)"},
        2: lambda meta: {**meta, "changes": "proposals may be cancelled"},
        3: lambda meta: {**meta, "changes": "proposals carry the model's prediction"},
    },
)
SCHEMA_VERSION = CAMPAIGN_STORE.version
LEASE_RENEW_S = 2.0  # the holder renews its lease this often
LEASE_STALE_S = 120.0  # a lease not renewed for this long is stale (its holder is gone)

_LEASE_TABLE = """
CREATE TABLE IF NOT EXISTS lease (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    token TEXT NOT NULL,
    pid INTEGER NOT NULL,
    host TEXT NOT NULL,
    command TEXT NOT NULL,
    since REAL NOT NULL,
    renewed REAL NOT NULL
)"""

#: a proposal's states; ``cancelled`` (version 3): pending, then dropped unrun (`lab cancel`)
STATUSES = ("pending", "running", "completed", "failed", "cancelled")

_PROPOSALS_TABLE = """
CREATE TABLE IF NOT EXISTS {name} (
    id INTEGER PRIMARY KEY,
    batch INTEGER NOT NULL,
    params TEXT NOT NULL,
    proposer TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'running', 'completed', 'failed', 'cancelled')),
    created REAL NOT NULL,
    started REAL,
    finished REAL{extra}
)"""
#: the column version 4 added to the proposals table (JSON, null: no model prediction)
_PREDICTION_COLUMN = "prediction TEXT"

_SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
    + _PROPOSALS_TABLE.format(name="proposals", extra=",\n    " + _PREDICTION_COLUMN)
    + """;
CREATE TABLE IF NOT EXISTS results (
    id INTEGER PRIMARY KEY,
    proposal_id INTEGER NOT NULL UNIQUE REFERENCES proposals(id),
    vals TEXT NOT NULL,
    source TEXT NOT NULL,
    meta TEXT NOT NULL,
    recorded REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS failures (
    id INTEGER PRIMARY KEY,
    proposal_id INTEGER REFERENCES proposals(id),
    reason TEXT NOT NULL,
    source TEXT NOT NULL,
    payload TEXT,
    recorded REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    time REAL NOT NULL,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS proposals_status ON proposals(status);
"""
    + _LEASE_TABLE
    + ";\n"
)


class StoreError(ValueError):
    """A campaign database that is missing, of another campaign, or asked something impossible."""


class CampaignBusy(RunFailure):
    """Another process holds the campaign's lease (exit status 1)."""


@dataclass(frozen=True)
class Lease:
    """Who writes to a campaign: ``pid`` on ``host`` running ``command`` since ``since``."""

    token: str
    pid: int
    host: str
    command: str
    since: float
    renewed: float

    def describe(self, now: float | None = None) -> str:
        now = time.time() if now is None else now
        since = _dt.datetime.fromtimestamp(self.since, _dt.UTC)
        return (
            f"`kiban lab {self.command}` (pid {self.pid} on host {self.host!r}, since "
            f"{since:%Y-%m-%d %H:%M:%S} UTC, last renewed {now - self.renewed:.0f} s ago)"
        )

    def stale(self, now: float | None = None) -> str | None:
        """Why the lease's holder is gone, or None when it may still be running."""
        now = time.time() if now is None else now
        if now - self.renewed > LEASE_STALE_S:
            return f"not renewed for {now - self.renewed:.0f} s (> {LEASE_STALE_S:g} s)"
        if self.host == socket.gethostname():
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                return f"process {self.pid} no longer exists"
            except PermissionError:  # another user's process: alive
                return None
        return None


@dataclass(frozen=True)
class Proposal:
    id: int
    batch: int
    params: dict[str, Any]
    proposer: str
    status: str
    created: float
    #: the model's prediction when proposed (version 4): {"model", "acquisition",
    #: "acquisition_value", "objectives": {name: {"mean", "sd"}}}; None: no model
    prediction: dict[str, Any] | None = None


@dataclass(frozen=True)
class Result:
    proposal_id: int
    params: dict[str, Any]
    values: dict[str, float]
    source: str
    recorded: float
    #: objective -> "<" or ">": the value is a bound (a censored measurement, ``<4``), kept in
    #: the result's meta (see docs/lab.md, "Censored values")
    censored: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Failure:
    proposal_id: int | None
    reason: str
    source: str
    recorded: float


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, allow_nan=False, ensure_ascii=False)


class Store:
    """Open with :meth:`create` (a new campaign) or :meth:`open` (an existing one)."""

    def __init__(self, path: str | Path, connection: sqlite3.Connection):
        self.path = Path(path)
        self.db = connection
        self.notes: list[str] = []  # what opening changed (an upgrade), for the user
        self._lease: Lease | None = None  # held by this object (re-entrant)
        self._lease_lost: str | None = None

    # -- opening
    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        db = sqlite3.connect(str(path), timeout=30.0, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA foreign_keys=ON")
        return db

    @classmethod
    def create(cls, path: str | Path, config: CampaignConfig) -> Store:
        """A new campaign database; an existing one must hold the same config (else refused)."""
        path = Path(path)
        if path.exists():
            store = cls.open(path)
            store.check_config(config)
            return store
        path.parent.mkdir(parents=True, exist_ok=True)
        db = cls._connect(path)
        store = cls(path, db)
        with store.transaction():
            for statement in _SCHEMA.strip().split(";"):
                if statement.strip():
                    db.execute(statement)
            now = time.time()
            for key, value in (
                ("schema", str(SCHEMA_VERSION)),
                ("config", config.source),
                ("base", str(Path(config.base).resolve())),
                ("fingerprint", config.fingerprint()),
                ("name", config.name),
                ("created", repr(now)),
            ):
                db.execute("INSERT INTO meta VALUES (?, ?)", (key, value))
            store._event("init", {"name": config.name, "fingerprint": config.fingerprint()})
        return store

    @classmethod
    def open(cls, path: str | Path) -> Store:
        path = Path(path)
        if not path.is_file():
            raise StoreError(
                f"campaign database {str(path)!r} not found "
                "(create it with `kiban lab init CONFIG --db PATH`)"
            )
        try:
            db = cls._connect(path)
            row = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        except sqlite3.DatabaseError as error:
            raise StoreError(f"{path}: not a kiban campaign database ({error})") from None
        if row is None:
            raise StoreError(
                f"{path}: not a kiban campaign database (its meta table has no schema version)"
            )
        version = int(row[0]) if str(row[0]).isdigit() else row[0]
        check({"format": CAMPAIGN_STORE.name, "version": version}, CAMPAIGN_STORE, where=path)
        store = cls(path, db)
        if version < SCHEMA_VERSION:
            store._upgrade()
        return store

    def _upgrade(self) -> None:
        """Bring an older store up to `SCHEMA_VERSION` in place (what changed: `notes`)."""
        # the proposals table is rebuilt (SQLite cannot alter a CHECK constraint): SQLite's
        # documented procedure, with foreign keys off (they cannot change inside a transaction)
        self.db.execute("PRAGMA foreign_keys=OFF")
        try:
            with self.transaction() as db:
                found = int(db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()[0])
                if found >= SCHEMA_VERSION:  # another process upgraded it meanwhile
                    return
                changes = []
                if found < 2:
                    db.execute(_LEASE_TABLE)
                    changes.append("added the lease table (one writer per campaign)")
                if found < 3:
                    db.execute(_PROPOSALS_TABLE.format(name="proposals_v3", extra=""))
                    columns = "id, batch, params, proposer, status, created, started, finished"
                    db.execute(
                        f"INSERT INTO proposals_v3 ({columns}) SELECT {columns} FROM proposals"
                    )
                    db.execute("DROP TABLE proposals")
                    db.execute("ALTER TABLE proposals_v3 RENAME TO proposals")
                    db.execute("CREATE INDEX IF NOT EXISTS proposals_status ON proposals(status)")
                    broken = db.execute("PRAGMA foreign_key_check").fetchall()
                    if broken:
                        raise StoreError(f"{self.path}: upgrade broke references: {broken[:5]}")
                    changes.append("proposals may be cancelled")
                if found < 4:
                    db.execute(f"ALTER TABLE proposals ADD COLUMN {_PREDICTION_COLUMN}")
                    changes.append("proposals carry the model's prediction (none for older ones)")
                db.execute("UPDATE meta SET value = ? WHERE key = 'schema'", (str(SCHEMA_VERSION),))
                note = (
                    f"{self.path}: upgraded the campaign store from version {found} to "
                    f"{SCHEMA_VERSION}: " + "; ".join(changes)
                )
                self._event("upgrade", {"from": found, "to": SCHEMA_VERSION, "note": note})
        finally:
            self.db.execute("PRAGMA foreign_keys=ON")
        self.notes.append(note)

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE … COMMIT: a writer holds the lock for the whole step."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # -- the writer's lease
    def lease_holder(self) -> Lease | None:
        row = self.db.execute(
            "SELECT token, pid, host, command, since, renewed FROM lease WHERE id = 1"
        ).fetchone()
        return Lease(*row) if row else None

    @contextmanager
    def lease(self, command: str, log: Callable[[str], None] | None = None) -> Iterator[Lease]:
        """Hold the campaign's writer lease for the block (re-entrant on this object).

        Refused with `CampaignBusy` (naming the holder) while another live process holds it; a
        stale lease is taken over and ``log`` told so."""
        if self._lease is not None:  # an inner step of the command that holds it
            yield self._lease
            return
        mine = Lease(
            uuid.uuid4().hex, os.getpid(), socket.gethostname(), command, time.time(), time.time()
        )
        with self.transaction() as db:
            held = self.lease_holder()
            if held is not None:
                why = held.stale(mine.since)
                if why is None:
                    raise CampaignBusy(
                        f"{self.path}: the campaign is in use by "
                        f"{held.describe(mine.since)}; one process writes to a "
                        "campaign at a time: wait for it to finish or stop it"
                    )
                message = f"{self.path}: took over the lease of {held.describe(mine.since)}: {why}"
                self._event("lease-takeover", {"previous": asdict(held), "reason": why})
                if log:
                    log(message)
            db.execute(
                "INSERT OR REPLACE INTO lease VALUES (1, ?, ?, ?, ?, ?, ?)",
                (mine.token, mine.pid, mine.host, mine.command, mine.since, mine.renewed),
            )
        self._lease, self._lease_lost = mine, None
        stop = threading.Event()
        renewer = threading.Thread(
            target=self._renew, args=(mine.token, stop), name="kiban-lab-lease", daemon=True
        )
        renewer.start()
        try:
            yield mine
        finally:
            stop.set()
            renewer.join()
            self._lease = None
            with self.transaction() as db:
                db.execute("DELETE FROM lease WHERE token = ?", (mine.token,))

    def _renew(self, token: str, stop: threading.Event) -> None:
        """Renew the lease every `LEASE_RENEW_S` (own connection: SQLite objects stay in the
        thread that made them) until ``stop``; note it if someone else took it."""
        db = self._connect(self.path)
        try:
            while not stop.wait(LEASE_RENEW_S):
                try:
                    cur = db.execute(
                        "UPDATE lease SET renewed = ? WHERE id = 1 AND token = ?",
                        (time.time(), token),
                    )
                except sqlite3.OperationalError as error:  # busy past the timeout: next time
                    print(
                        f"kiban lab: could not renew the campaign lease: {error}", file=sys.stderr
                    )
                    continue
                if cur.rowcount != 1:
                    self._lease_lost = "another process took over this campaign's lease"
                    return
        finally:
            db.close()

    def check_lease(self) -> None:
        """Raise `CampaignBusy` when this process's lease was taken over (it must stop)."""
        if self._lease_lost:
            raise CampaignBusy(f"{self.path}: {self._lease_lost}; stopping")

    # -- config
    def meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def config(self) -> CampaignConfig:
        """The stored config; relative paths in it resolve against the folder of the original
        config file (recorded at ``init``)."""
        return config_from_text(self.meta("config") or "", Path(self.meta("base") or "."))

    def check_config(self, config: CampaignConfig) -> None:
        """Refuse a config that differs from the stored one, naming what differs."""
        stored = self.config()
        if stored.fingerprint() == config.fingerprint():
            return
        a, b = stored.describe(), config.describe()
        diffs = [f"{k}: stored {a[k]!r}, given {b[k]!r}" for k in a if a[k] != b.get(k)]
        raise StoreError(
            f"{self.path}: the campaign was started with another config; "
            + "; ".join(diffs[:4])
            + ". Start a new campaign (another --db) to change it."
        )

    # -- events
    def _event(self, kind: str, detail: dict[str, Any]) -> None:
        self.db.execute(
            "INSERT INTO events (time, kind, detail) VALUES (?, ?, ?)",
            (time.time(), kind, _dumps(detail)),
        )

    def event(self, kind: str, detail: dict[str, Any]) -> None:
        with self.transaction():
            self._event(kind, detail)

    def events(self) -> list[tuple[float, str, dict[str, Any]]]:
        return [
            (t, k, json.loads(d))
            for t, k, d in self.db.execute("SELECT time, kind, detail FROM events ORDER BY id")
        ]

    # -- proposals
    def add_proposals(
        self,
        params: list[dict[str, Any]],
        proposer: str,
        predictions: list[dict[str, Any] | None] | None = None,
    ) -> list[Proposal]:
        """Commit ``params`` as pending proposals of one batch; ``predictions``: the model's,
        one per proposal (None where there is none)."""
        predictions = predictions or [None] * len(params)
        if len(predictions) != len(params):
            raise StoreError(f"{len(params)} proposals but {len(predictions)} predictions")
        with self.transaction() as db:
            batch = db.execute("SELECT COALESCE(MAX(batch), -1) + 1 FROM proposals").fetchone()[0]
            now = time.time()
            out = []
            for p, pred in zip(params, predictions):
                cur = db.execute(
                    "INSERT INTO proposals (batch, params, proposer, status, created, prediction)"
                    " VALUES (?, ?, ?, 'pending', ?, ?)",
                    (batch, _dumps(p), proposer, now, None if pred is None else _dumps(pred)),
                )
                out.append(Proposal(cur.lastrowid, batch, p, proposer, "pending", now, pred))
        return out

    def _proposals(self, where: str = "", args: tuple = ()) -> list[Proposal]:
        rows = self.db.execute(
            "SELECT id, batch, params, proposer, status, created, prediction FROM proposals "
            f"{where} ORDER BY id",
            args,
        )
        return [
            Proposal(i, b, json.loads(p), pr, s, c, None if pd is None else json.loads(pd))
            for i, b, p, pr, s, c, pd in rows
        ]

    def proposals(self, status: str | None = None) -> list[Proposal]:
        return self._proposals("WHERE status = ?", (status,)) if status else self._proposals()

    def proposal(self, proposal_id: int) -> Proposal | None:
        found = self._proposals("WHERE id = ?", (proposal_id,))
        return found[0] if found else None

    def counts(self) -> dict[str, int]:
        """Proposals per status; ``proposed``: all of them (cancelled ones included)."""
        out = {s: 0 for s in STATUSES}
        for status, n in self.db.execute("SELECT status, COUNT(*) FROM proposals GROUP BY status"):
            out[status] = n
        out["proposed"] = sum(out.values())
        return out

    def mark_running(self, ids: list[int]) -> None:
        with self.transaction() as db:
            now = time.time()
            for i in ids:
                cur = db.execute(
                    "UPDATE proposals SET status = 'running', started = ? "
                    "WHERE id = ? AND status = 'pending'",
                    (now, i),
                )
                if cur.rowcount != 1:
                    raise StoreError(f"proposal {i} is not pending")

    def cancel(self, ids: list[int] | None) -> list[int]:
        """Cancel pending proposals (``None``: every pending one) in one transaction: status
        ``cancelled`` and a ``cancelled`` event; never run, never recorded against, not a
        failure. An unknown id, or a proposal that is not pending, refuses them all."""
        with self.transaction() as db:
            status = dict(db.execute("SELECT id, status FROM proposals").fetchall())
            pending = [i for i, st in sorted(status.items()) if st == "pending"]
            ids = pending if ids is None else list(dict.fromkeys(ids))
            unknown = [i for i in ids if i not in status]
            if unknown:
                raise StoreError(
                    f"{self.path}: no proposal {', '.join(map(str, unknown))}; the pending "
                    f"proposals are {pending or 'none'}"
                )
            why = {
                "running": "an instrument is running it",
                "completed": "it has a result",
                "failed": "it failed; a failure stays on record",
                "cancelled": "already cancelled",
            }
            busy = [i for i in ids if status[i] != "pending"]
            if busy:
                raise StoreError(
                    f"{self.path}: only pending proposals can be cancelled: "
                    + "; ".join(f"proposal {i} is {status[i]} ({why[status[i]]})" for i in busy)
                )
            now = time.time()
            for i in ids:
                db.execute(
                    "UPDATE proposals SET status = 'cancelled', finished = ? WHERE id = ?",
                    (now, i),
                )
            if ids:
                self._event("cancelled", {"proposals": ids})
        return ids

    def recover_interrupted(self) -> list[int]:
        """Proposals left ``running`` by a killed process become failures (never re-run)."""
        with self.transaction() as db:
            ids = [r[0] for r in db.execute("SELECT id FROM proposals WHERE status = 'running'")]
            for i in ids:
                self._fail(
                    i,
                    "interrupted: the process stopped while this experiment ran; "
                    "not re-run (its result, if any, was not recorded)",
                    "recovery",
                )
            if ids:
                self._event("recovered", {"interrupted": ids})
        return ids

    # -- results
    def _fail(self, proposal_id: int | None, reason: str, source: str, payload: Any = None) -> None:
        now = time.time()
        self.db.execute(
            "INSERT INTO failures (proposal_id, reason, source, payload, recorded) "
            "VALUES (?, ?, ?, ?, ?)",
            (
                proposal_id,
                reason,
                source,
                None if payload is None else json.dumps(payload, default=str),
                now,
            ),
        )
        if proposal_id is not None:
            self.db.execute(
                "UPDATE proposals SET status = 'failed', finished = ? WHERE id = ?",
                (now, proposal_id),
            )

    def record_failure(
        self, proposal_id: int | None, reason: str, source: str, payload: Any = None
    ) -> None:
        with self.transaction():
            self._fail(proposal_id, reason, source, payload)

    def record_result(
        self,
        proposal_id: int,
        values: dict[str, float],
        source: str,
        meta: dict[str, Any] | None = None,
    ) -> None:
        """Values must already be checked finite (JSON refuses NaN and infinities)."""
        with self.transaction() as db:
            self._record(db, proposal_id, values, source, meta or {})

    def _record(
        self,
        db: sqlite3.Connection,
        proposal_id: int,
        values: dict[str, float],
        source: str,
        meta: dict[str, Any],
    ) -> None:
        row = db.execute("SELECT status FROM proposals WHERE id = ?", (proposal_id,)).fetchone()
        if row is None:
            raise StoreError(f"no proposal {proposal_id}")
        if row[0] == "completed":
            raise StoreError(f"proposal {proposal_id} already has a result")
        if row[0] == "cancelled":
            raise StoreError(f"proposal {proposal_id} was cancelled: it was never run")
        if any(not math.isfinite(v) for v in values.values()):
            raise StoreError(f"proposal {proposal_id}: values must be finite, got {values}")
        now = time.time()
        db.execute(
            "INSERT INTO results (proposal_id, vals, source, meta, recorded) "
            "VALUES (?, ?, ?, ?, ?)",
            (proposal_id, _dumps(values), source, json.dumps(meta, default=str), now),
        )
        db.execute(
            "UPDATE proposals SET status = 'completed', finished = ? WHERE id = ?",
            (now, proposal_id),
        )

    def _import(
        self,
        db: sqlite3.Connection,
        batch: int,
        params: dict[str, Any],
        values: dict[str, float],
        source: str,
        meta: dict[str, Any],
    ) -> int:
        """A completed experiment from a lab's history (``kiban lab add``): a proposal whose
        proposer is ``imported``, completed with its result, inside the caller's transaction."""
        now = time.time()
        cur = db.execute(
            "INSERT INTO proposals (batch, params, proposer, status, created, started)"
            " VALUES (?, ?, 'imported', 'pending', ?, ?)",
            (batch, _dumps(params), now, now),
        )
        self._record(db, cur.lastrowid, values, source, meta)
        return cur.lastrowid

    def next_batch(self) -> int:
        return self.db.execute("SELECT COALESCE(MAX(batch), -1) + 1 FROM proposals").fetchone()[0]

    def result_meta(self, proposal_id: int) -> dict[str, Any]:
        row = self.db.execute(
            "SELECT meta FROM results WHERE proposal_id = ?", (proposal_id,)
        ).fetchone()
        return json.loads(row[0]) if row else {}

    def _results(self, where: str = "", args: tuple = ()) -> list[Result]:
        rows = self.db.execute(
            "SELECT r.proposal_id, p.params, r.vals, r.source, r.recorded, r.meta FROM results r "
            f"JOIN proposals p ON p.id = r.proposal_id {where} ORDER BY r.id",
            args,
        )
        return [
            Result(i, json.loads(p), json.loads(v), s, t, json.loads(m).get("censored") or {})
            for i, p, v, s, t, m in rows
        ]

    def results(self) -> list[Result]:
        return self._results()

    def result(self, proposal_id: int) -> Result | None:
        found = self._results("WHERE r.proposal_id = ?", (proposal_id,))
        return found[0] if found else None

    def failure_payloads(self, proposal_id: int) -> list[dict[str, Any]]:
        """The JSON payloads stored with a proposal's failures (those that have one)."""
        out = []
        for (payload,) in self.db.execute(
            "SELECT payload FROM failures WHERE proposal_id = ? "
            "AND payload IS NOT NULL ORDER BY id",
            (proposal_id,),
        ):
            value = json.loads(payload)
            if isinstance(value, dict):
                out.append(value)
        return out

    def _set_params(self, db: sqlite3.Connection, proposal_id: int, params: dict[str, Any]) -> None:
        """The conditions a proposal was actually run under (``lab record --as-run``)."""
        db.execute("UPDATE proposals SET params = ? WHERE id = ?", (_dumps(params), proposal_id))

    def failures(self, *, corrected: bool = True) -> list[Failure]:
        """Every failure recorded; ``corrected=False``: less those of proposals that have a
        result since (a value recorded again, corrected: no longer a failure)."""
        where = (
            ""
            if corrected
            else "LEFT JOIN proposals p ON p.id = f.proposal_id "
            "WHERE p.status IS NULL OR p.status != 'completed' "
        )
        return [
            Failure(*row)
            for row in self.db.execute(
                "SELECT f.proposal_id, f.reason, f.source, f.recorded FROM failures f "
                f"{where}ORDER BY f.id"
            )
        ]

    # -- export
    def export(self) -> dict[str, Any]:
        """Everything in the campaign as one JSON-ready object."""
        results = {r.proposal_id: r for r in self.results()}
        failures: dict[int | None, list[str]] = {}
        for f in self.failures():
            failures.setdefault(f.proposal_id, []).append(f.reason)
        props = []
        for p in self.proposals():
            r = results.get(p.id)
            props.append(
                {
                    "id": p.id,
                    "batch": p.batch,
                    "proposer": p.proposer,
                    "status": p.status,
                    "created": p.created,
                    "params": p.params,
                    "prediction": p.prediction,
                    "values": r.values if r else None,
                    "censored": (r.censored or None) if r else None,
                    "source": r.source if r else None,
                    "failures": failures.get(p.id, []),
                }
            )
        return {
            **CAMPAIGN_STORE.stamp(),
            "name": self.meta("name"),
            "fingerprint": self.meta("fingerprint"),
            "config": self.meta("config"),
            "counts": self.counts(),
            "proposals": props,
            "refused": failures.get(None, []),
            "events": [{"time": t, "kind": k, **d} for t, k, d in self.events()],
        }
