"""The campaign store: one SQLite file in WAL mode; every proposal and result is committed before
the next step, so a campaign killed at any point loses nothing.

Tables: ``meta`` (the config text and its fingerprint), ``proposals`` (params as JSON, status
``pending`` → ``running`` → ``completed`` | ``failed``), ``results`` (one per proposal, at most),
``failures`` (why a proposal failed, or why a record naming no proposal was refused) and
``events`` (what happened when: runs, recoveries, rejected files).

A proposal is marked ``running`` (committed) *before* it is handed to an instrument. A process
that finds ``running`` proposals on start-up was killed while they ran: they are marked failed
("interrupted") and never re-run, because a real experiment may already have consumed material.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from kiban.lab.space import CampaignConfig, config_from_text

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS proposals (
    id INTEGER PRIMARY KEY,
    batch INTEGER NOT NULL,
    params TEXT NOT NULL,
    proposer TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'running', 'completed', 'failed')),
    created REAL NOT NULL,
    started REAL,
    finished REAL
);
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


class StoreError(ValueError):
    """A campaign database that is missing, of another campaign, or asked something impossible."""


@dataclass(frozen=True)
class Proposal:
    id: int
    batch: int
    params: dict[str, Any]
    proposer: str
    status: str
    created: float


@dataclass(frozen=True)
class Result:
    proposal_id: int
    params: dict[str, Any]
    values: dict[str, float]
    source: str
    recorded: float


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

    # -- opening
    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        db = sqlite3.connect(str(path), timeout=30.0, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA foreign_keys=ON")
        return db

    @classmethod
    def create(cls, path: str | Path, config: CampaignConfig) -> "Store":
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
            for key, value in (("schema", str(SCHEMA_VERSION)), ("config", config.source),
                               ("base", str(Path(config.base).resolve())),
                               ("fingerprint", config.fingerprint()), ("name", config.name),
                               ("created", repr(now))):
                db.execute("INSERT INTO meta VALUES (?, ?)", (key, value))
            store._event("init", {"name": config.name, "fingerprint": config.fingerprint()})
        return store

    @classmethod
    def open(cls, path: str | Path) -> "Store":
        path = Path(path)
        if not path.is_file():
            raise StoreError(f"campaign database {str(path)!r} not found "
                             "(create it with `kiban lab init CONFIG --db PATH`)")
        try:
            db = cls._connect(path)
            row = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        except sqlite3.DatabaseError as error:
            raise StoreError(f"{path}: not a kiban campaign database ({error})") from None
        if row is None or int(row[0]) != SCHEMA_VERSION:
            raise StoreError(f"{path}: campaign schema {row and row[0]!r}, this kiban reads "
                             f"{SCHEMA_VERSION}")
        return cls(path, db)

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
        raise StoreError(f"{self.path}: the campaign was started with another config; "
                         + "; ".join(diffs[:4])
                         + ". Start a new campaign (another --db) to change it.")

    # -- events
    def _event(self, kind: str, detail: dict[str, Any]) -> None:
        self.db.execute("INSERT INTO events (time, kind, detail) VALUES (?, ?, ?)",
                        (time.time(), kind, _dumps(detail)))

    def event(self, kind: str, detail: dict[str, Any]) -> None:
        with self.transaction():
            self._event(kind, detail)

    def events(self) -> list[tuple[float, str, dict[str, Any]]]:
        return [(t, k, json.loads(d)) for t, k, d in
                self.db.execute("SELECT time, kind, detail FROM events ORDER BY id")]

    # -- proposals
    def add_proposals(self, params: list[dict[str, Any]], proposer: str) -> list[Proposal]:
        with self.transaction() as db:
            batch = db.execute("SELECT COALESCE(MAX(batch), -1) + 1 FROM proposals").fetchone()[0]
            now = time.time()
            out = []
            for p in params:
                cur = db.execute("INSERT INTO proposals (batch, params, proposer, status, created)"
                                 " VALUES (?, ?, ?, 'pending', ?)", (batch, _dumps(p), proposer, now))
                out.append(Proposal(cur.lastrowid, batch, p, proposer, "pending", now))
        return out

    def _proposals(self, where: str = "", args: tuple = ()) -> list[Proposal]:
        rows = self.db.execute("SELECT id, batch, params, proposer, status, created FROM proposals "
                               f"{where} ORDER BY id", args)
        return [Proposal(i, b, json.loads(p), pr, s, c) for i, b, p, pr, s, c in rows]

    def proposals(self, status: str | None = None) -> list[Proposal]:
        return self._proposals("WHERE status = ?", (status,)) if status else self._proposals()

    def proposal(self, proposal_id: int) -> Proposal | None:
        found = self._proposals("WHERE id = ?", (proposal_id,))
        return found[0] if found else None

    def counts(self) -> dict[str, int]:
        out = {s: 0 for s in ("pending", "running", "completed", "failed")}
        for status, n in self.db.execute("SELECT status, COUNT(*) FROM proposals GROUP BY status"):
            out[status] = n
        out["proposed"] = sum(out.values())
        return out

    def mark_running(self, ids: list[int]) -> None:
        with self.transaction() as db:
            now = time.time()
            for i in ids:
                cur = db.execute("UPDATE proposals SET status = 'running', started = ? "
                                 "WHERE id = ? AND status = 'pending'", (now, i))
                if cur.rowcount != 1:
                    raise StoreError(f"proposal {i} is not pending")

    def recover_interrupted(self) -> list[int]:
        """Proposals left ``running`` by a killed process become failures (never re-run)."""
        with self.transaction() as db:
            ids = [r[0] for r in db.execute("SELECT id FROM proposals WHERE status = 'running'")]
            for i in ids:
                self._fail(i, "interrupted: the process stopped while this experiment ran; "
                              "not re-run (its result, if any, was not recorded)", "recovery")
            if ids:
                self._event("recovered", {"interrupted": ids})
        return ids

    # -- results
    def _fail(self, proposal_id: int | None, reason: str, source: str,
              payload: Any = None) -> None:
        now = time.time()
        self.db.execute("INSERT INTO failures (proposal_id, reason, source, payload, recorded) "
                        "VALUES (?, ?, ?, ?, ?)",
                        (proposal_id, reason, source,
                         None if payload is None else json.dumps(payload, default=str), now))
        if proposal_id is not None:
            self.db.execute("UPDATE proposals SET status = 'failed', finished = ? WHERE id = ?",
                            (now, proposal_id))

    def record_failure(self, proposal_id: int | None, reason: str, source: str,
                       payload: Any = None) -> None:
        with self.transaction():
            self._fail(proposal_id, reason, source, payload)

    def record_result(self, proposal_id: int, values: dict[str, float], source: str,
                      meta: dict[str, Any] | None = None) -> None:
        """Values must already be checked finite (JSON refuses NaN and infinities)."""
        with self.transaction() as db:
            self._record(db, proposal_id, values, source, meta or {})

    def _record(self, db: sqlite3.Connection, proposal_id: int, values: dict[str, float],
                source: str, meta: dict[str, Any]) -> None:
        row = db.execute("SELECT status FROM proposals WHERE id = ?", (proposal_id,)).fetchone()
        if row is None:
            raise StoreError(f"no proposal {proposal_id}")
        if row[0] == "completed":
            raise StoreError(f"proposal {proposal_id} already has a result")
        if any(not math.isfinite(v) for v in values.values()):
            raise StoreError(f"proposal {proposal_id}: values must be finite, got {values}")
        now = time.time()
        db.execute("INSERT INTO results (proposal_id, vals, source, meta, recorded) "
                   "VALUES (?, ?, ?, ?, ?)", (proposal_id, _dumps(values), source,
                                              json.dumps(meta, default=str), now))
        db.execute("UPDATE proposals SET status = 'completed', finished = ? WHERE id = ?",
                   (now, proposal_id))

    def _results(self, where: str = "", args: tuple = ()) -> list[Result]:
        rows = self.db.execute(
            "SELECT r.proposal_id, p.params, r.vals, r.source, r.recorded FROM results r "
            f"JOIN proposals p ON p.id = r.proposal_id {where} ORDER BY r.id", args)
        return [Result(i, json.loads(p), json.loads(v), s, t) for i, p, v, s, t in rows]

    def results(self) -> list[Result]:
        return self._results()

    def result(self, proposal_id: int) -> Result | None:
        found = self._results("WHERE r.proposal_id = ?", (proposal_id,))
        return found[0] if found else None

    def failures(self) -> list[Failure]:
        return [Failure(*row) for row in self.db.execute(
            "SELECT proposal_id, reason, source, recorded FROM failures ORDER BY id")]

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
            props.append({"id": p.id, "batch": p.batch, "proposer": p.proposer,
                          "status": p.status, "created": p.created, "params": p.params,
                          "values": r.values if r else None, "source": r.source if r else None,
                          "failures": failures.get(p.id, [])})
        return {"format": "kiban.lab.campaign", "version": SCHEMA_VERSION,
                "name": self.meta("name"), "fingerprint": self.meta("fingerprint"),
                "config": self.meta("config"), "counts": self.counts(), "proposals": props,
                "refused": failures.get(None, []),
                "events": [{"time": t, "kind": k, **d} for t, k, d in self.events()]}
