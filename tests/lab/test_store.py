"""The campaign store: the writer's lease, and stores written by earlier versions."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kiban.lab.campaign import propose, run_campaign
from kiban.lab.space import load_config
from kiban.lab.store import CAMPAIGN_STORE, CampaignBusy, Store

from .helpers import ROOT, init_in_subprocess, write_config


def _campaign(tmp_path: Path) -> Path:
    return write_config(tmp_path, "sobol", 1)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_two_runs_on_one_campaign_the_second_is_refused_naming_the_first(tmp_path):
    db, log = tmp_path / "c.db", tmp_path / "calls.log"
    kiban, env = init_in_subprocess(
        tmp_path, _campaign(tmp_path), db, LABFN_LOG=str(log), LABFN_SLEEP="0.3"
    )
    first = subprocess.Popen(
        [*kiban, "run", "--db", str(db), "--budget", "6", "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 60
    while time.time() < deadline and not log.exists():
        time.sleep(0.02)
    second = subprocess.run(
        [*kiban, "run", "--db", str(db), "--budget", "6", "--json"],
        env=env,
        capture_output=True,
        text=True,
    )
    out, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    assert second.returncode == 1
    assert second.stdout == ""
    assert second.stderr.startswith(
        f"kiban lab run: error: {db}: the campaign is in use by "
        f"`kiban lab run` (pid {first.pid} on host "
        f"{socket.gethostname()!r}, since "
    )
    assert json.loads(out)["proposed"] == 6
    calls = log.read_text().splitlines()
    assert len(calls) == 6 and len(set(calls)) == 6  # the budget, nothing twice
    store = Store.open(db)
    assert store.lease_holder() is None  # released on exit


def test_a_lease_is_re_entrant_and_released(tmp_path):
    store = Store.create(tmp_path / "c.db", load_config(_campaign(tmp_path)))
    other = Store.open(tmp_path / "c.db")
    with store.lease("run") as held:
        assert held.pid == os.getpid() and held.command == "run"
        with store.lease("propose") as inner:
            assert inner is held
        with pytest.raises(
            CampaignBusy,
            match=r"in use by `kiban lab run` \(pid "
            f"{os.getpid()} on host",
        ):
            propose(other)
        assert other.counts()["proposed"] == 0
    assert store.lease_holder() is None
    assert len(propose(other)) == 1


def test_the_lease_of_a_dead_process_is_taken_over_with_a_message(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    store = Store.create(tmp_path / "c.db", load_config(_campaign(tmp_path)))
    pid = _dead_pid()
    now = time.time()
    with store.transaction() as db:
        db.execute(
            "INSERT INTO lease VALUES (1, 'x', ?, ?, 'run', ?, ?)",
            (pid, socket.gethostname(), now - 5, now - 1),
        )
    # and a running proposal of that process: interrupted, not re-run
    store.mark_running([p.id for p in propose_unleased(store)])
    messages: list[str] = []
    summary = run_campaign(store, 3, log=messages.append)
    assert messages[0].startswith(
        f"{store.path}: took over the lease of `kiban lab run` (pid {pid} on host"
    )
    assert messages[0].endswith(f": process {pid} no longer exists")
    assert summary.interrupted == [1]
    assert [e[1] for e in store.events()].count("lease-takeover") == 1


def propose_unleased(store: Store) -> list:
    """A proposal added as the killed process would have (it held the lease)."""
    return store.add_proposals([{"x": 0.0, "y": 1.0}], "sobol")


def test_a_lease_another_host_stopped_renewing_is_stale(tmp_path):
    from kiban.lab.store import LEASE_STALE_S, Lease

    now = time.time()
    fresh = Lease("t", 1, "elsewhere", "run", now - 600, now - 1)
    assert fresh.stale(now) is None
    old = Lease("t", 1, "elsewhere", "run", now - 600, now - LEASE_STALE_S - 1)
    assert old.stale(now) == f"not renewed for {LEASE_STALE_S + 1:.0f} s (> {LEASE_STALE_S:g} s)"


def test_a_version_1_store_is_upgraded_in_place_with_a_note(tmp_path):
    store = Store.create(tmp_path / "c.db", load_config(_campaign(tmp_path)))
    propose(store)
    store.close()
    # what kiban wrote before the lease: schema 1, no lease table
    with sqlite3.connect(tmp_path / "c.db") as db:
        db.execute("DROP TABLE lease")
        db.execute("UPDATE meta SET value = '1' WHERE key = 'schema'")
    store = Store.open(tmp_path / "c.db")
    assert store.notes == [
        f"{tmp_path / 'c.db'}: upgraded the campaign store from version 1 "
        "to 4: added the lease table (one writer per campaign); proposals may be cancelled; "
        "proposals carry the model's prediction (none for older ones)"
    ]
    assert store.meta("schema") == "4" and store.counts()["proposed"] == 1
    assert store.events()[-1][1] == "upgrade"
    assert Store.open(tmp_path / "c.db").notes == []
    assert store.export()["format"] == CAMPAIGN_STORE.name and store.export()["version"] == 4


def test_a_store_from_a_newer_kiban_is_refused(tmp_path):
    store = Store.create(tmp_path / "c.db", load_config(_campaign(tmp_path)))
    store.close()
    with sqlite3.connect(tmp_path / "c.db") as db:
        db.execute("UPDATE meta SET value = '5' WHERE key = 'schema'")
    with pytest.raises(ValueError, match="version 5 was written by a newer kiban"):
        Store.open(tmp_path / "c.db")


def test_a_store_written_before_the_lease_opens_and_continues(tmp_path, monkeypatch):
    """tests/lab/data/campaign-v1.db: written by kiban before issue 15 (schema 1, 4 results of
    campaign-v1.toml); it opens with a note, and a run continues it."""
    data = Path(__file__).parent / "data"
    db = tmp_path / "campaign-v1.db"
    db.write_bytes((data / "campaign-v1.db").read_bytes())
    monkeypatch.syspath_prepend(str(data))
    store = Store.open(db)
    assert store.notes == [
        f"{db}: upgraded the campaign store from version 1 to 4: added the "
        "lease table (one writer per campaign); proposals may be cancelled; proposals carry "
        "the model's prediction (none for older ones)"
    ]
    assert store.counts() == {
        "pending": 0,
        "running": 0,
        "completed": 4,
        "failed": 0,
        "cancelled": 0,
        "proposed": 4,
    }
    assert store.config().fingerprint() == store.meta("fingerprint")
    summary = run_campaign(store, 6)
    assert summary.completed == 2 and store.counts()["completed"] == 6
    params = [p.params["x"] for p in store.proposals()]
    assert len(set(params)) == 6  # the Sobol sequence continued, nothing twice


@pytest.mark.parametrize("name", ["olympus-suzuki.toml", "xtb-gap.toml"])
def test_the_shipped_campaign_configs_still_parse_and_build(name):
    from kiban.lab.campaign import check_campaign

    pytest.importorskip("olympus_surrogate_bench" if "olympus" in name else "tblite")
    config = load_config(ROOT / "configs" / "lab" / name)
    check_campaign(config, where=name)


def test_a_version_2_store_is_upgraded_and_can_cancel(tmp_path):
    store = Store.create(tmp_path / "c.db", load_config(_campaign(tmp_path)))
    (first,) = propose(store)
    store.close()
    # what kiban wrote before `lab cancel`: schema 2, no 'cancelled' status in the CHECK
    db = sqlite3.connect(tmp_path / "c.db", isolation_level=None)
    db.execute("PRAGMA foreign_keys=OFF")
    (sql,) = db.execute("SELECT sql FROM sqlite_master WHERE name = 'proposals'").fetchone()
    db.execute(sql.replace("proposals", "old").replace(", 'cancelled'", ""))
    db.execute("INSERT INTO old SELECT * FROM proposals")
    db.execute("DROP TABLE proposals")
    db.execute("ALTER TABLE old RENAME TO proposals")
    db.execute("UPDATE meta SET value = '2' WHERE key = 'schema'")
    with pytest.raises(sqlite3.IntegrityError, match="CHECK constraint failed"):
        db.execute("UPDATE proposals SET status = 'cancelled'")
    db.close()
    store = Store.open(tmp_path / "c.db")
    assert store.notes == [
        f"{tmp_path / 'c.db'}: upgraded the campaign store from version 2 to 4: proposals "
        "may be cancelled; proposals carry the model's prediction (none for older ones)"
    ]
    assert store.proposal(first.id) == first
    assert store.cancel([first.id]) == [first.id]
    assert store.proposal(first.id).status == "cancelled"


def test_a_version_3_store_opens_and_proposals_carry_predictions(tmp_path, monkeypatch):
    """tests/lab/data/campaign-v3.db: written by kiban before predictions (schema 3: 4 results,
    proposal 5 cancelled, 6 pending); it opens with a note, its proposals have no prediction,
    and a run continues it."""
    data = Path(__file__).parent / "data"
    db = tmp_path / "campaign-v3.db"
    db.write_bytes((data / "campaign-v3.db").read_bytes())
    monkeypatch.syspath_prepend(str(data))
    store = Store.open(db)
    assert store.notes == [
        f"{db}: upgraded the campaign store from version 3 to 4: proposals carry the "
        "model's prediction (none for older ones)"
    ]
    assert [(p.id, p.status, p.prediction) for p in store.proposals()] == [
        (1, "completed", None),
        (2, "completed", None),
        (3, "completed", None),
        (4, "completed", None),
        (5, "cancelled", None),
        (6, "pending", None),
    ]
    assert store.meta("schema") == "4"
    summary = run_campaign(store, 7)
    assert summary.completed == 3 and store.counts()["completed"] == 7
