"""Campaign config, store, loop, CSV recording, kill -9 recovery, CLI."""

from __future__ import annotations

import csv
import json
import math
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import numpy as np
import pytest

from kiban.lab.campaign import (
    RecordError,
    best,
    best_so_far,
    campaign_documents,
    init_campaign,
    observations,
    pareto_mask,
    parse_measurement,
    prediction_cells,
    propose,
    record_csv,
    run_campaign,
    status,
)
from kiban.lab.proposers.base import canonical_smiles as canonical
from kiban.lab.report import write_report
from kiban.lab.space import SpaceError, load_config, parse_config
from kiban.lab.store import Store, StoreError

from .helpers import CONFIG, FUNCTION, init_in_subprocess, write_config


@pytest.fixture
def fn_path(tmp_path, monkeypatch):
    (tmp_path / "labfn.py").write_text(FUNCTION)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("labfn", None)
    return tmp_path


class FakeInstrument:
    """The instrument protocol, in-process: a function of the params, optional failures."""

    kind = "fake"
    asynchronous = False

    def __init__(self, fail_ids=(), values=None, drop_ids=()):
        self.calls: list[int] = []
        self.fail_ids, self.values, self.drop_ids = set(fail_ids), values, set(drop_ids)

    def measures(self):
        return ("score",)

    def describe(self):
        return {"kind": self.kind}

    def close(self):
        pass

    def run_batch(self, jobs, timeout_s=None):
        from kiban.lab.instruments.base import Outcome

        for pid, params in jobs:
            self.calls.append(pid)
            if pid in self.drop_ids:
                continue
            if pid in self.fail_ids:
                yield Outcome(pid, None, "crashed: boom", 0.0, {})
                continue
            v = (
                self.values(pid, params)
                if self.values
                else {"score": -((params["x"] - 0.3) ** 2) - (params["y"] - 1.2) ** 2}
            )
            yield Outcome(pid, v, None, 0.0, {})


# ---------------------------------------------------------------------------------------------
# config


def test_parameter_and_objective_keys_are_their_classes_fields():
    # the accepted keys come from the dataclasses, so a new field is accepted without a table
    from dataclasses import fields

    from kiban.lab.space import _OBJECTIVE, _PARAM, Composition, Continuous, Molecule, parse_config

    for cls in (Continuous, Molecule, Composition):
        from_table = {"ids", "names"}
        assert _PARAM[cls.kind] == {
            f.name for f in fields(cls) if f.init and f.name not in from_table
        } | {"type"}
    # a molecule's candidate IDs and names come from its table, never from the config
    assert not from_table & _PARAM["molecule"]
    assert {"id_column", "name_column"} <= _PARAM["molecule"]
    assert _OBJECTIVE == {"name", "goal", "target", "low", "high", "threshold"}
    raw = {
        "parameters": [{"name": "x", "type": "continuous", "lo": 0, "high": 1}],
        "objectives": [{"name": "y"}],
        "instrument": {"kind": "function"},
    }
    with pytest.raises(SpaceError, match=r"unknown key 'lo' \(did you mean 'low'\?\)"):
        parse_config(raw)


def test_config_errors_name_the_key_and_the_fix(tmp_path, fn_path):
    base = tmp_path / "c.toml"
    base.write_text(CONFIG.format(proposer="random", batch=1).replace("batch_size", "batchsize"))
    with pytest.raises(
        SpaceError,
        match=r"unknown key 'batchsize' \(did you mean 'batch_size'\?\); expected one of ",
    ):
        load_config(base)
    base.write_text(CONFIG.format(proposer="bogus", batch=1))
    with pytest.raises(SpaceError, match="proposer must be one of"):
        load_config(base)
    base.write_text(CONFIG.format(proposer="random", batch=1).replace("high = 1.0", "high = -2.0"))
    with pytest.raises(SpaceError, match=r"parameter 'x': need finite low < high"):
        load_config(base)
    raw = {
        "parameters": [{"name": "x", "type": "continuous", "low": 0, "high": 1}],
        "objectives": [{"name": "y"}],
        "instrument": {"kind": "function"},
        "constraints": ["x + z <= 1"],
    }
    with pytest.raises(SpaceError, match=r"'z' is not a numeric parameter"):
        parse_config(raw)


def test_space_round_trip_and_checks():
    raw = {
        "parameters": [
            {"name": "t", "type": "continuous", "low": 1, "high": 100, "log": True},
            {"name": "n", "type": "integer", "low": 1, "high": 5},
            {"name": "s", "type": "categorical", "choices": ["a", "b", "c"]},
            {"name": "mix", "type": "composition", "components": ["Cu", "Zn", "Sn"], "total": 2.0},
        ],
        "objectives": [{"name": "y", "goal": "target", "target": 3.0}],
        "instrument": {"kind": "function"},
        "constraints": ["n - 2*Cu >= 0"],
    }
    space = parse_config(raw).space
    params = {"t": 10.0, "n": 3, "s": "c", "Cu": 0.5, "Zn": 1.0, "Sn": 0.5}
    assert space.check_params(params) == []
    u = space.to_unit(params)
    assert u.shape == (space.dim,) == (1 + 1 + 3 + 3,)
    assert u[0] == pytest.approx(0.5)  # log scale: 10 is half way to 100
    back = space.from_unit(u)
    assert back["s"] == "c" and back["n"] == 3 and back["t"] == pytest.approx(10.0)
    assert sum(back[c] for c in ("Cu", "Zn", "Sn")) == pytest.approx(2.0)
    bad = dict(params, s="cc", Cu=0.9)
    problems = space.check_params(bad)
    assert any("did you mean 'c'" in p for p in problems)
    assert any("must sum to 2.0" in p for p in problems)
    assert space.check_params(dict(params, n=1, Cu=1.0, Zn=0.5)) == [
        "violates constraint 'n - 2*Cu >= 0'"
    ]
    # the constraint in cube coordinates agrees with the constraint in params
    ((a, b),) = space.unit_constraints()
    for trial in ({"n": 1, "Cu": 1.0}, {"n": 3, "Cu": 0.5}, {"n": 5, "Cu": 0.2}):
        p = dict(params, **trial)
        lhs = sum(c * space.to_unit(p)[i] for i, c in a.items())
        assert (lhs <= b + 1e-12) == all(c.satisfied(p) for c in space.constraints)
    assert space.utilities({"y": 2.5})[0] == pytest.approx(-0.5)
    assert "not finite" in space.check_values({"y": math.nan})[0]


# ---------------------------------------------------------------------------------------------
# store


def test_store_is_wal_and_refuses_another_config(tmp_path, fn_path):
    cfg = load_config(write_config(tmp_path))
    store = Store.create(tmp_path / "c.db", cfg)
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    again = Store.create(tmp_path / "c.db", cfg)  # same config: opens
    assert again.meta("fingerprint") == cfg.fingerprint()
    other = tmp_path / "other.toml"
    other.write_text(CONFIG.format(proposer="random", batch=4))
    with pytest.raises(StoreError, match=r"batch_size: stored 2, given 4"):
        Store.create(tmp_path / "c.db", load_config(other))
    with pytest.raises(StoreError, match="not found"):
        Store.open(tmp_path / "missing.db")
    (tmp_path / "junk.db").write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(StoreError, match="not a kiban campaign database"):
        Store.open(tmp_path / "junk.db")


# ---------------------------------------------------------------------------------------------
# the loop


def test_run_reaches_the_budget_and_a_rerun_continues(tmp_path, fn_path):
    store = Store.create(tmp_path / "c.db", load_config(write_config(tmp_path, "sobol", 2)))
    inst = FakeInstrument(fail_ids={2})
    summary = run_campaign(store, 5, instrument=inst)
    counts = store.counts()
    assert counts["proposed"] == 5 and counts["completed"] == 4 and counts["failed"] == 1
    assert summary.completed == 4 and summary.failed == 1
    assert inst.calls == [1, 2, 3, 4, 5]  # the last batch is cut to the budget
    assert store.failures()[0].reason == "crashed: boom"
    run_campaign(store, 5, instrument=inst)  # already there: nothing runs
    assert inst.calls == [1, 2, 3, 4, 5]
    run_campaign(store, 8, instrument=inst)
    assert inst.calls == list(range(1, 9)) and store.counts()["completed"] == 7
    # Sobol continues its sequence across runs: no point proposed twice
    keys = [json.dumps(p.params, sort_keys=True) for p in store.proposals()]
    assert len(set(keys)) == 8


def test_bad_values_and_missing_outcomes_become_failures(tmp_path, fn_path):
    store = Store.create(tmp_path / "c.db", load_config(write_config(tmp_path, "random", 4)))

    def values(pid, params):
        return {1: {"score": math.nan}, 2: {"score": 1e9}, 3: {"other": 1.0}}.get(
            pid, {"score": 0.5}
        )

    run_campaign(store, 4, instrument=FakeInstrument(values=values))
    reasons = {f.proposal_id: f.reason for f in store.failures()}
    assert "not finite" in reasons[1]
    assert "outside the declared range" in reasons[2]
    assert "objective 'score' missing" in reasons[3]
    assert store.counts()["completed"] == 1
    run_campaign(store, 6, instrument=FakeInstrument(drop_ids={6}))
    assert "no outcome" in {f.proposal_id: f.reason for f in store.failures()}[6]


def test_interrupted_experiments_are_failed_not_rerun(tmp_path, fn_path):
    store = Store.create(tmp_path / "c.db", load_config(write_config(tmp_path, "random", 2)))
    props = propose(store)
    store.mark_running([p.id for p in props])  # a process died here
    inst = FakeInstrument()
    summary = run_campaign(store, 4, instrument=inst)
    assert summary.interrupted == [1, 2]
    assert inst.calls == [3, 4]
    assert all("interrupted" in f.reason for f in store.failures())


@pytest.mark.parametrize("proposer", ["sobol", "random"])
def test_failed_proposals_are_taken_for_the_proposer(tmp_path, fn_path, proposer):
    """After the initial design, an interrupted and a crashed proposal: the next proposals
    (sobol's sequence restarts from the number of points drawn) repeat neither."""
    store = Store.create(tmp_path / "c.db", load_config(write_config(tmp_path, proposer, 1)))
    run_campaign(store, 3, instrument=FakeInstrument())
    crashed = run_campaign(store, 4, instrument=FakeInstrument(fail_ids={4}))
    assert crashed.failed == 1
    (interrupted,) = propose(store)
    store.mark_running([interrupted.id])  # a process died here
    run_campaign(store, 8, instrument=FakeInstrument())
    params = [json.dumps(p.params, sort_keys=True) for p in store.proposals()]
    assert len(params) == 8 and len(set(params)) == 8
    assert [p.status for p in store.proposals()] == ["completed"] * 3 + ["failed"] * 2 + [
        "completed"
    ] * 3


# ---------------------------------------------------------------------------------------------
# recording results from CSV


def _csv(path: Path, rows: list[str], header: str = "proposal_id,score") -> Path:
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


def test_record_csv_refuses_unknown_proposals_whole(tmp_path, fn_path):
    store = Store.create(tmp_path / "c.db", load_config(write_config(tmp_path, "random", 3)))
    propose(store)
    before = store.export()
    with pytest.raises(RecordError, match=r"unknown proposals: 9 \(line 3\)"):
        record_csv(store, _csv(tmp_path / "r.csv", ["1,0.5", "9,0.7"]))
    with pytest.raises(RecordError, match="not an integer"):
        record_csv(store, _csv(tmp_path / "r.csv", ["1,0.5", "two,0.7"]))
    with pytest.raises(RecordError, match="already given on line 2"):
        record_csv(store, _csv(tmp_path / "r.csv", ["1,0.5", "1,0.7"]))
    with pytest.raises(RecordError, match="unknown columns"):
        record_csv(store, _csv(tmp_path / "r.csv", ["1,0.5,3"], "proposal_id,score,scroe"))
    with pytest.raises(RecordError, match="no objective column"):
        record_csv(store, _csv(tmp_path / "r.csv", ["1"], "proposal_id"))
    after = store.export()
    assert after["proposals"] == before["proposals"] and after["events"] == before["events"]


def test_record_csv_rows(tmp_path, fn_path):
    store = Store.create(tmp_path / "c.db", load_config(write_config(tmp_path, "random", 3)))
    propose(store, 5)
    path = _csv(tmp_path / "r.csv", ["1,0.5", "2,", "3,nan", "4,inf", "5,500"])
    summary = record_csv(store, path)
    assert summary.recorded == [1] and summary.blank == [2]
    assert [p for p, _ in summary.failed] == [3, 4, 5]
    assert "r.csv:5" in dict(summary.failed)[4]
    assert store.counts() == {
        "pending": 1,
        "running": 0,
        "completed": 1,
        "failed": 3,
        "cancelled": 0,
        "proposed": 5,
    }
    again = record_csv(store, _csv(tmp_path / "r2.csv", ["1,0.5", "2,0.25"]))
    assert again.already == [1] and again.recorded == [2]
    clash = record_csv(store, _csv(tmp_path / "r3.csv", ["1,0.75"]))
    assert clash.conflicts and store.result(1).values == {"score": 0.5}


def test_record_refuses_a_row_run_under_other_conditions(tmp_path, fn_path, capsys):
    from kiban.cli import main

    store = Store.create(tmp_path / "c.db", load_config(write_config(tmp_path, "random", 2)))
    first, second = propose(store, 2)
    x1, y1 = first.params["x"], first.params["y"]
    path = _csv(
        tmp_path / "r.csv",
        [f"1,{x1!r},{y1!r},0.5", f"2,0.25,{second.params['y']!r},0.7"],
        "proposal_id,x,y,score",
    )
    summary = record_csv(store, path)
    assert summary.recorded == [1] and summary.mismatched == [
        (
            2,
            (
                f"r.csv, line 3, column 'x': proposed {second.params['x']!r}, given '0.25' (not "
                "recorded: results are learnt only for the conditions run; --as-run records them for "
                "the conditions given)"
            ),
        )
    ]
    assert store.proposal(2).status == "pending" and store.result(2) is None
    # the command line: the good row recorded, the refused one named, exit 2
    db = str(tmp_path / "c.db")
    assert main(["lab", "record", "--db", db, str(path)]) == 2
    err = capsys.readouterr().err
    assert "2: r.csv, line 3, column 'x'" in err
    assert err.endswith(
        f"kiban lab record: error: {path}: refused the rows of proposals 2 (the "
        "other rows were recorded); see the reasons above\n"
    )
    # --as-run: the result belongs to the conditions given; the proposed ones are kept
    assert main(["lab", "record", "--db", db, str(path), "--as-run"]) == 0
    store = Store.open(db)
    result = store.result(2)
    assert result.params == {"x": 0.25, "y": second.params["y"]} and result.values == {"score": 0.7}
    assert store.events()[-2][1:] == (
        "as-run",
        {
            "file": str(path),
            "line": 3,
            "proposal_id": 2,
            "proposed": second.params,
            "run": {"x": 0.25, "y": second.params["y"]},
        },
    )
    # conditions outside the space are refused even with --as-run
    store.add_proposals([{"x": 0.0, "y": 0.0}], "manual")
    bad = _csv(tmp_path / "b.csv", ["3,7.5,0.0,0.1"], "proposal_id,x,y,score")
    summary = record_csv(store, bad, as_run=True)
    assert summary.recorded == [] and summary.mismatched == [
        (
            3,
            (
                "b.csv, line 2: the conditions given are not in the space: x: expected a number in "
                "[-1.0, 1.0], got 7.5"
            ),
        )
    ]


def test_recording_a_file_twice_adds_no_second_failure(tmp_path, fn_path):
    store = Store.create(tmp_path / "c.db", load_config(write_config(tmp_path, "random", 3)))
    propose(store, 3)
    path = _csv(tmp_path / "r.csv", ["1,0.5", "2,nan", "3,500"])
    first = record_csv(store, path)
    assert first.recorded == [1] and [p for p, _ in first.failed] == [2, 3]
    again = record_csv(store, path)
    assert again.recorded == [] and again.failed == [] and again.already == [1, 2, 3]
    assert [f.proposal_id for f in store.failures()] == [2, 3]
    fixed = record_csv(store, _csv(tmp_path / "fixed.csv", ["2,0.25"]))
    assert fixed.recorded == [2]  # a failed row may still be given its real result


def test_record_refuses_a_binary_file_clearly(tmp_path, fn_path):
    from kiban.cli import main

    store = Store.create(tmp_path / "c.db", load_config(write_config(tmp_path, "random", 3)))
    propose(store)
    binary = tmp_path / "r.csv"
    binary.write_bytes(b"proposal_id,score\n1,\xff\xfe0.5\n")
    with pytest.raises(
        RecordError,
        match=r"r.csv: not a CSV text file \(byte 20 is not UTF-8: "
        r"b'\\xff'\); is it a binary file\?",
    ):
        record_csv(store, binary)
    binary.write_bytes(b"proposal_id,score\n1,0.5\n2,\x000.5\n")
    with pytest.raises(RecordError, match=r"r.csv, line 3: a NUL byte; is it a binary file\?"):
        record_csv(store, binary)
    assert main(["lab", "record", "--db", str(tmp_path / "c.db"), str(binary)]) == 2
    assert store.counts()["completed"] == 0


# ---------------------------------------------------------------------------------------------
# best, Pareto, documents


def test_pareto_mask_matches_brute_force():
    rng = np.random.default_rng(0)
    u = rng.normal(size=(60, 2)).round(1)
    mask = pareto_mask(u)
    for i in range(len(u)):
        dominated = any((u[j] >= u[i]).all() and (u[j] > u[i]).any() for j in range(len(u)))
        assert mask[i] == (not dominated)


def test_best_and_documents(tmp_path, fn_path):
    store = Store.create(tmp_path / "c.db", load_config(write_config(tmp_path, "random", 3)))
    run_campaign(store, 6, instrument=FakeInstrument())
    b = best(store)
    scores = [r.values["score"] for r in store.results()]
    assert b["values"]["score"] == max(scores)
    docs = campaign_documents(store)
    assert len(docs) == 6 and docs[0].source == "lab:quad"
    assert docs[0].meta["proposal_id"] == 1 and "recorded" in docs[0].meta
    assert [s.modality for s in docs[0].spans] == ["num", "num", "num"]


# ---------------------------------------------------------------------------------------------
# kill -9 in the middle of `kiban lab run`, then run again


def test_kill_9_loses_nothing_and_runs_nothing_twice(tmp_path):
    db, log = tmp_path / "c.db", tmp_path / "calls.log"
    kiban, env = init_in_subprocess(
        tmp_path, write_config(tmp_path, "random", 2), db, LABFN_LOG=str(log), LABFN_SLEEP="0.15"
    )
    proc = subprocess.Popen(
        [*kiban, "run", "--db", str(db), "--budget", "16", "--quiet"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.time() + 60
    while time.time() < deadline:
        done = log.read_text().count("\n") if log.exists() else 0
        if done >= 5:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    with sqlite3.connect(db) as con:
        before = dict(con.execute("SELECT status, COUNT(*) FROM proposals GROUP BY status"))
    assert before.get("completed", 0) >= 4
    done = subprocess.run(
        [*kiban, "run", "--db", str(db), "--budget", "16", "--json"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["proposed"] == 16 and out["completed"] + out["failed"] == 16
    calls = log.read_text().splitlines()
    assert len(calls) == len(set(calls))  # nothing ran twice
    store = Store.open(db)
    ran = {
        json.dumps(p.params, sort_keys=True) for p in store.proposals() if p.status == "completed"
    }
    assert ran <= set(calls)  # every result came from a real call
    assert out["failed"] == len(out["interrupted"])  # the only failures: the killed batch
    assert out["completed"] >= 14


# ---------------------------------------------------------------------------------------------
# the command line


def test_cli_round_trip(tmp_path, fn_path, capsys):
    from kiban.cli import main

    config = write_config(tmp_path, "sobol", 3)
    db = str(tmp_path / "c.db")
    assert main(["lab", "init", str(config), "--db", db]) == 0
    assert main(["lab", "propose", "--db", db, "--out", str(tmp_path / "todo.csv")]) == 0
    rows = (tmp_path / "todo.csv").read_text().splitlines()
    assert rows[0].startswith("proposal_id") and len(rows) == 4
    header = rows[0].split(",")
    filled = []
    for line in rows[1:]:
        cells = dict(zip(header, line.split(",")))
        x, y = float(cells["x"]), float(cells["y"])
        cells["score"] = str(-((x - 0.3) ** 2) - (y - 1.2) ** 2)
        filled.append(",".join(cells[h] for h in header))
    (tmp_path / "done.csv").write_text("\n".join([rows[0], *filled]) + "\n")
    assert main(["lab", "record", "--db", db, str(tmp_path / "done.csv")]) == 0
    capsys.readouterr()
    assert main(["lab", "status", "--db", db, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["proposed"] == 3 and info["completed"] == 3 and info["failed"] == 0
    assert info["best"]["values"]["score"] == max(
        r.values["score"] for r in Store.open(db).results()
    )
    bad = tmp_path / "bad.csv"
    bad.write_text("proposal_id,score\n77,1.0\n")
    assert main(["lab", "record", "--db", db, str(bad)]) == 2
    assert "unknown proposals: 77" in capsys.readouterr().err
    assert main(["lab", "report", "--db", db, "--out", str(tmp_path / "rep")]) == 0
    assert (tmp_path / "rep" / "best_so_far.png").stat().st_size > 1000
    assert "Best results" in (tmp_path / "rep" / "report.html").read_text()
    assert main(["lab", "export", "--db", db, "--out", str(tmp_path / "c.json")]) == 0
    exported = json.loads((tmp_path / "c.json").read_text())
    assert len(exported["proposals"]) == 3 and exported["proposals"][0]["values"]
    assert main(["lab", "documents", "--db", db, "--out", str(tmp_path / "docs.jsonl")]) == 0
    lines = (tmp_path / "docs.jsonl").read_text().splitlines()
    assert len(lines) == 3 and json.loads(lines[0])["source"] == "lab:quad"


def test_a_config_given_as_a_dict_is_stored_as_toml(tmp_path, fn_path):
    raw = {
        "campaign": {"name": "d", "proposer": "random", "batch_size": 2},
        "constraints": ["x + y <= 2.5"],
        "parameters": [
            {"name": "x", "type": "continuous", "low": -1.0, "high": 1.0},
            {"name": "y", "type": "continuous", "low": 0.0, "high": 2.0},
        ],
        "objectives": [{"name": "score", "goal": "max"}],
        "instrument": {"kind": "function", "target": "labfn:measure", "workers": 0},
    }
    config = parse_config(raw)
    store = Store.create(tmp_path / "d.db", config)
    assert store.config().fingerprint() == config.fingerprint()
    run_campaign(store, 4)
    assert store.counts()["completed"] == 4


def test_lab_documents_build_into_a_corpus(tmp_path, fn_path):
    from kiban.corpus import BuildConfig, SourceSpec, build_corpus
    from kiban.corpus.store import Corpus

    store = Store.create(tmp_path / "c.db", load_config(write_config(tmp_path, "sobol", 4)))
    run_campaign(store, 8, instrument=FakeInstrument())
    path = tmp_path / "lab.jsonl"
    path.write_text("".join(d.to_json() + "\n" for d in campaign_documents(store)))
    build_corpus(
        BuildConfig(sources=(SourceSpec(path=str(path)),), vocab_size=300), tmp_path / "corpus"
    )
    info = Corpus(tmp_path / "corpus").info()
    assert info["documents"] == 8


TWO_OBJECTIVES = CONFIG.replace(
    """[instrument]""",
    """[[objectives]]
name = "extra"
goal = "min"

[instrument]""",
)


def test_two_objectives_pareto_status_and_report(tmp_path, fn_path):
    from kiban.lab.report import write_report

    path = tmp_path / "two.toml"
    path.write_text(TWO_OBJECTIVES.format(proposer="sobol", batch=4))

    def values(pid, params):
        return {
            "score": -((params["x"] - 0.3) ** 2) - (params["y"] - 1.2) ** 2,
            "extra": params["x"] + params["y"],
        }

    store = Store.create(tmp_path / "two.db", load_config(path))
    run_campaign(store, 12, instrument=FakeInstrument(values=values))
    b = best(store)
    front = {e["proposal_id"] for e in b["pareto"]}
    results = store.results()
    for r in results:
        dominated = any(
            o.values["score"] >= r.values["score"]
            and o.values["extra"] <= r.values["extra"]
            and o.values != r.values
            for o in results
        )
        assert (r.proposal_id in front) == (not dominated)
    assert b["per_objective"]["extra"]["values"]["extra"] == min(r.values["extra"] for r in results)
    info = write_report(store, tmp_path / "rep")
    assert (
        "pareto.png" in info["files"]
        and "Pareto set" in (tmp_path / "rep" / "report.html").read_text()
    )


def test_people_in_the_loop_through_csv(tmp_path, fn_path, capsys):
    """`lab run` with the csv instrument exports and stops; `lab record` brings results back;
    the next `lab run` learns from them and exports the next batch."""
    from kiban.cli import main

    text = CONFIG.format(proposer="sobol", batch=3).replace(
        'kind = "function"\ntarget = "labfn:measure"\nworkers = 0',
        'kind = "csv"\npath = "todo.csv"',
    )
    (tmp_path / "people.toml").write_text(text)
    db = str(tmp_path / "p.db")
    assert main(["lab", "init", str(tmp_path / "people.toml"), "--db", db]) == 0
    capsys.readouterr()
    assert main(["lab", "run", "--db", db, "--budget", "6", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["waiting_for_results"] is True
    todo = tmp_path / "todo.csv"  # beside the config, not the cwd
    rows = todo.read_text().splitlines()
    assert len(rows) == 4 and rows[0].split(",")[0] == "proposal_id"
    assert main(["lab", "run", "--db", db, "--budget", "6"]) == 0  # nothing measured: no new batch
    assert len(todo.read_text().splitlines()) == 4
    header = rows[0].split(",")
    filled = [rows[0]]
    for line in rows[1:]:
        cells = dict(zip(header, line.split(",")))
        cells["score"] = str(-((float(cells["x"]) - 0.3) ** 2))
        filled.append(",".join(cells[h] for h in header))
    todo.write_text("\n".join(filled) + "\n")
    assert main(["lab", "record", "--db", db, str(todo)]) == 0
    assert main(["lab", "run", "--db", db, "--budget", "6"]) == 0
    assert len(todo.read_text().splitlines()) == 7  # the next batch added, the old rows kept
    store = Store.open(db)
    assert store.counts() == {
        "pending": 3,
        "running": 0,
        "completed": 3,
        "failed": 0,
        "cancelled": 0,
        "proposed": 6,
    }


def _kill_while_measuring(tmp_path: Path, proposer: str, batch: int, started: int) -> list[str]:
    """`kiban lab run` killed with SIGKILL while its instrument measures (the log gets a line
    when a measurement starts, then the function sleeps 0.6 s), then run again to the budget; the
    parameter sets the instrument was given, in order."""
    db, log = tmp_path / "c.db", tmp_path / "calls.log"
    kiban, env = init_in_subprocess(
        tmp_path, write_config(tmp_path, proposer, batch), db, LABFN_LOG=str(log), LABFN_SLEEP="0.6"
    )
    proc = subprocess.Popen(
        [*kiban, "run", "--db", str(db), "--budget", "8", "--quiet"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        if log.exists() and log.read_text().count("\n") >= started:
            break
        time.sleep(0.02)
    time.sleep(0.2)  # well inside the 0.6 s measurement
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    with sqlite3.connect(db) as con:
        running = con.execute("SELECT COUNT(*) FROM proposals WHERE status = 'running'")
        assert running.fetchone()[0] >= 1  # killed mid-measurement
    env["LABFN_SLEEP"] = "0"
    done = subprocess.run(
        [*kiban, "run", "--db", str(db), "--budget", "8", "--json"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["proposed"] == 8 and out["interrupted"]
    # the killed run's lease is taken over, and both are said even with --json
    assert (
        f"kiban lab run: {db}: took over the lease of `kiban lab run` (pid {proc.pid} "
        in done.stderr
        and f": process {proc.pid} no longer exists\n" in done.stderr
    )
    assert (
        f"marked {len(out['interrupted'])} interrupted experiment(s) failed (not re-run)"
        in done.stderr
    )
    return log.read_text().splitlines()


# sobol restarts its sequence from the number of points drawn: killed on the 4th point (the
# first after the 3-point initial design) it used to propose the interrupted point again
@pytest.mark.parametrize("proposer, batch, started", [("sobol", 1, 4), ("sobol", 2, 5)])
def test_an_interrupted_experiment_is_never_proposed_again(tmp_path, proposer, batch, started):
    calls = _kill_while_measuring(tmp_path, proposer, batch, started)
    assert len(calls) == len(set(calls)), [c for c in calls if calls.count(c) > 1]


# ---------------------------------------------------------------------------------------------
# lab init checks the instrument and the proposer


OLYMPUS = """
[campaign]
name = "o"
proposer = "{proposer}"

[[parameters]]
name = "temperature"
type = "continuous"
low = 75.0
high = 90.0

[[parameters]]
name = "pd_mol"
type = "continuous"
low = 0.5
high = 5.0

[[parameters]]
name = "arbpin"
type = "continuous"
low = 1.0
high = 1.8

[[parameters]]
name = "k3po4"
type = "continuous"
low = 1.5
high = 3.0

[[objectives]]
name = "yield"

[instrument]
kind = "olympus"
dataset = "{dataset}"
{extra}
[proposer]
{options}
"""


@pytest.mark.parametrize(
    "dataset, extra, proposer, options, message",
    [
        (
            "suzuky",
            "",
            "botorch",
            "",
            r"\[instrument\] \(kind 'olympus'\): unknown Olympus dataset "
            r"'suzuky' \(did you mean 'suzuki'\?\)",
        ),
        (
            "suzuki",
            "noize = 1.0",
            "botorch",
            "",
            r"unknown option 'noize' \(did you mean 'noise'\?\)",
        ),
        ("suzuki", "noise = -1.0", "botorch", "", r"noise must be a number >= 0"),
        (
            "suzuki",
            "",
            "botorch",
            "num_restart = 3",
            r"proposer 'botorch': unknown option "
            r"'num_restart' \(did you mean 'num_restarts'",
        ),
        (
            "suzuki",
            "",
            "sobol",
            "samples = 3",
            r"proposer 'sobol': unknown option 'samples'; this "
            r"proposer takes no options",
        ),
        ("photo_wf3", "", "sobol", "", r"\[instrument\] olympus 'photo_wf3': the space lacks "),
        ("suzuki", "timeout_s = -1.0", "sobol", "", r"timeout_s must be a number > 0, got -1.0"),
        (
            "suzuki",
            'timeout_s = "soon"',
            "sobol",
            "",
            r"\[instrument\] timeout_s must be a finite "
            r"number, got str 'soon'",
        ),
    ],
)
def test_init_refuses_an_instrument_or_proposer_that_cannot_work(
    tmp_path, dataset, extra, proposer, options, message
):
    path = tmp_path / "o.toml"
    path.write_text(
        OLYMPUS.format(dataset=dataset, extra=extra, proposer=proposer, options=options)
    )
    with pytest.raises(ValueError, match=message):
        init_campaign(path, tmp_path / "o.db")
    assert not (tmp_path / "o.db").exists()


def test_init_refuses_a_function_target_that_does_not_import(tmp_path, fn_path, capsys):
    from kiban.cli import main

    config = write_config(tmp_path, "random", 1)
    config.write_text(config.read_text().replace("labfn:measure", "labfn:measur"))
    assert main(["lab", "init", str(config), "--db", str(tmp_path / "c.db")]) == 2
    assert capsys.readouterr().err == (
        f"kiban lab init: error: {config}: target 'labfn:measur': module 'labfn' has no 'measur'\n"
    )
    assert not (tmp_path / "c.db").exists()
    config.write_text(
        config.read_text().replace("labfn:measur", "labfn:measure") + 'timeout_s = "soon"\n'
    )
    assert main(["lab", "init", str(config), "--db", str(tmp_path / "c.db")]) == 2
    assert capsys.readouterr().err == (
        f"kiban lab init: error: {config}: [instrument] (kind "
        "'function'): option 'timeout_s' must be a finite number "
        "or absent, got str 'soon'\n"
    )


def test_run_workers_replaces_the_instruments_for_this_run(tmp_path, fn_path, capsys):
    from kiban.cli import main

    config = write_config(tmp_path, "random", 2)  # workers = 0: in this process
    db = str(tmp_path / "c.db")
    assert main(["lab", "init", str(config), "--db", db]) == 0
    assert main(["lab", "run", "--db", db, "--budget", "2", "--workers", "1", "--quiet"]) == 0
    with sqlite3.connect(db) as con:
        pids = {json.loads(m).get("worker_pid") for (m,) in con.execute("SELECT meta FROM results")}
    assert len(pids) == 1 and None not in pids and os.getpid() not in pids
    assert Store.open(db).meta("fingerprint") == load_config(config).fingerprint()
    capsys.readouterr()
    assert main(["lab", "run", "--db", db, "--budget", "3", "--workers", "-1"]) == 2
    assert capsys.readouterr().err == (
        "kiban lab run: error: [instrument] (kind 'function'): "
        "workers must be an integer >= 0, got -1\n"
    )
    olympus = tmp_path / "o.toml"
    olympus.write_text(OLYMPUS.format(dataset="suzuki", extra="", proposer="sobol", options=""))
    assert main(["lab", "init", str(olympus), "--db", str(tmp_path / "o.db")]) == 0
    capsys.readouterr()
    assert (
        main(["lab", "run", "--db", str(tmp_path / "o.db"), "--budget", "1", "--workers", "2"]) == 2
    )
    assert capsys.readouterr().err == (
        "kiban lab run: error: --workers 2: the 'olympus' "
        "instrument runs in this process (its options have no "
        "`workers`)\n"
    )


# ---------------------------------------------------------------------------------------------
# a lab's history: `kiban lab add`


def _history(n: int = 20) -> list[tuple[float, float, float]]:
    """``n`` past experiments of the quad campaign: (x, y, score), exact in text."""
    rows = []
    for i in range(n):
        x, y = round(-0.95 + 0.1 * i, 2), round((0.37 * i) % 2, 2)
        rows.append((x, y, round(-((x - 0.3) ** 2) - (y - 1.2) ** 2, 4)))
    return rows


def _write_history(path: Path, rows, header: str = "x,y,score,notes") -> Path:
    lines = [header] + [f"{x},{y},{s},past run {i}" for i, (x, y, s) in enumerate(rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_lab_add_imports_a_history_the_model_learns_from(tmp_path, fn_path, kiban, monkeypatch):
    config = write_config(tmp_path, proposer="botorch", batch=2)
    db = tmp_path / "c.db"
    assert kiban("lab", "init", config, "--db", db)[0] == 0
    rows = _history()
    past = _write_history(tmp_path / "past.csv", rows)

    code, out, err = kiban("lab", "add", "--db", db, past, "--json")
    assert (code, err) == (0, "")
    assert json.loads(out) == {"imported": 20, "skipped": [], "flagged": []}
    store = Store.open(db)
    results = store.results()
    assert [(r.params, r.values, r.source) for r in results] == [
        ({"x": x, "y": y}, {"score": s}, "import:past.csv") for x, y, s in rows
    ]
    assert {p.proposer for p in store.proposals()} == {"imported"}
    assert store.counts() == {
        "pending": 0,
        "running": 0,
        "completed": 20,
        "failed": 0,
        "cancelled": 0,
        "proposed": 20,
    }
    assert store.result_meta(results[3].proposal_id) == {
        "imported": True,
        "file": str(past),
        "line": 5,
        "where": "past.csv:5",
    }
    (event,) = [d for _, k, d in store.events() if k == "imported"]
    assert event["proposals"] == [r.proposal_id for r in results]
    assert event["lines"] == list(range(2, 22))

    # the next proposal comes from the model, fitted on the 20 imported results
    from kiban.lab.proposers.bo import optimiser

    seen: list[int] = []
    fit = optimiser.fit_model
    monkeypatch.setattr(optimiser, "fit_model", lambda L, X, Y: seen.append(len(X)) or fit(L, X, Y))
    code, out, err = kiban("lab", "propose", "--db", db, "--json")
    assert code == 0, err
    proposed = json.loads(out)
    assert seen and set(seen) == {20}
    assert [p["proposer"] for p in proposed] == ["botorch", "botorch"]
    imported = {(x, y) for x, y, _ in rows}
    assert all((p["params"]["x"], p["params"]["y"]) not in imported for p in proposed)

    # the same file again adds nothing, and says which rows were there already
    code, out, err = kiban("lab", "add", "--db", db, past)
    assert code == 0
    assert out == "imported 0 experiments, skipped 20\n"
    assert err.splitlines()[0] == (
        f"  {past}:2: skipped: already imported (proposal 1, from past.csv:2)"
    )
    assert len(Store.open(db).results()) == 20


def test_lab_add_refuses_bad_history_whole(tmp_path, fn_path, kiban):
    config = write_config(tmp_path)
    db = tmp_path / "c.db"
    assert kiban("lab", "init", config, "--db", db)[0] == 0
    rows = _history(5)

    def refused(path, *flags) -> str:
        code, out, err = kiban("lab", "add", "--db", db, path, *flags)
        assert (code, out) == (2, "")
        assert Store.open(db).counts()["proposed"] == 0  # nothing half-written
        return err

    bad = _write_history(tmp_path / "bad.csv", [*rows[:2], (1.5, 0.5, -2.0), *rows[2:]])
    assert refused(bad) == (
        f"kiban lab add: error: {bad}: refused, nothing imported: 1 row(s) do not fit the "
        "campaign: bad.csv:4: column 'x': expected a number in [-1.0, 1.0], got 1.5 "
        "(--skip-invalid imports the other rows)\n"
    )
    text = _write_history(tmp_path / "text.csv", [*rows[:1], (0.1, 0.2, "n.d.")])
    assert "text.csv:3: objective 'score': expected a number, got 'n.d.'" in refused(text)
    blank = tmp_path / "blank.csv"
    blank.write_text("x,y,score\n0.1,,3\n")
    assert "blank.csv:2: column 'y': empty" in refused(blank)
    columns = _write_history(tmp_path / "cols.csv", rows, header="x,yy,score,notes")
    assert refused(columns) == (
        f"kiban lab add: error: {columns}, line 1: missing columns ['y']; unknown columns "
        "['yy']; expected the parameter columns ['x', 'y'] and the objective columns "
        "['score'] (optionally notes); the file has ['x', 'yy', 'score', 'notes']\n"
    )
    binary = tmp_path / "past.xlsx"
    binary.write_bytes(b"PK\x03\x04\x14\x00\x06\x00\x08\x00\x00\x00!\x00\xff\xfe")
    assert "is it a binary file? expected a CSV of past experiments" in refused(binary)
    assert "not found" in refused(tmp_path / "nope.csv")

    # --skip-invalid imports the rows that fit and lists the others with their reasons
    code, out, err = kiban("lab", "add", "--db", db, bad, "--skip-invalid", "--json")
    assert code == 0, err
    assert json.loads(out) == {
        "imported": 5,
        "skipped": [{"line": 4, "reason": "column 'x': expected a number in [-1.0, 1.0], got 1.5"}],
        "flagged": [],
    }
    assert [r.values["score"] for r in Store.open(db).results()] == [s for _, _, s in rows]


def test_lab_add_waits_for_the_writer_lease(tmp_path, fn_path, kiban):
    config = write_config(tmp_path)
    db = tmp_path / "c.db"
    assert kiban("lab", "init", config, "--db", db)[0] == 0
    past = _write_history(tmp_path / "past.csv", _history(3))
    holder = Store.open(db)
    with holder.lease("run"):
        code, out, err = kiban("lab", "add", "--db", db, past)
    assert code == 1
    assert "the campaign is in use by `kiban lab run`" in err
    assert Store.open(db).counts()["proposed"] == 0


# ---------------------------------------------------------------------------------------------
# `kiban lab cancel`


def test_lab_cancel_drops_pending_proposals_unrun(tmp_path, fn_path, kiban):
    config = write_config(tmp_path, proposer="sobol", batch=3)
    db = tmp_path / "c.db"
    assert kiban("lab", "init", config, "--db", db)[0] == 0
    assert kiban("lab", "propose", "--db", db)[0] == 0  # proposals 1, 2, 3
    store = Store.open(db)
    cancelled_point = store.proposal(2).params

    code, out, err = kiban("lab", "cancel", "--db", db, "2", "--json")
    assert (code, err) == (0, "")
    assert json.loads(out) == {"cancelled": [2]}
    assert [(p.id, p.status) for p in store.proposals()] == [
        (1, "pending"),
        (2, "cancelled"),
        (3, "pending"),
    ]
    assert store.failures() == []  # not a failure
    assert [d for _, k, d in store.events() if k == "cancelled"] == [{"proposals": [2]}]

    # never recorded against: a results file naming it is refused for that row
    results = tmp_path / "r.csv"
    results.write_text("proposal_id,score\n1,-0.5\n2,-0.25\n")
    code, out, err = kiban("lab", "record", "--db", db, results)
    assert code == 2
    assert "  2: line 3: proposal 2 was cancelled (never run); refusing {'score': '-0.25'}" in err
    assert [r.proposal_id for r in store.results()] == [1]
    assert store.proposal(2).status == "cancelled"

    # refused: not pending (naming the status), unknown ids (naming the pending ones)
    code, out, err = kiban("lab", "cancel", "--db", db, "1", "2")
    assert code == 2
    assert err == (
        f"kiban lab cancel: error: {db}: only pending proposals can be cancelled: proposal 1 "
        "is completed (it has a result); proposal 2 is cancelled (already cancelled)\n"
    )
    code, out, err = kiban("lab", "cancel", "--db", db, "3", "9")
    assert (code, err) == (
        2,
        f"kiban lab cancel: error: {db}: no proposal 9; the pending proposals are [3]\n",
    )
    assert store.proposal(3).status == "pending"  # all or nothing
    assert kiban("lab", "cancel", "--db", db)[0] == 2  # neither ids nor --all-pending

    # the run does not run it and it does not count toward the budget; its point is open
    summary = run_campaign(store, 4)
    assert store.proposal(2).status == "cancelled"
    assert summary.counts == {
        "pending": 0,
        "running": 0,
        "completed": 4,
        "failed": 0,
        "cancelled": 1,
        "proposed": 5,
    }
    assert cancelled_point not in [p.params for p in store.proposals() if p.id != 2]
    code, out, err = kiban("lab", "status", "--db", db)
    assert out.splitlines()[0] == (
        "quad: proposed 5, pending 0, running 0, completed 4, failed 0, cancelled 1"
    )


def test_lab_cancel_all_pending_and_a_running_proposal(tmp_path, fn_path, kiban):
    config = write_config(tmp_path, proposer="random", batch=2)
    db = tmp_path / "c.db"
    assert kiban("lab", "init", config, "--db", db)[0] == 0
    store = Store.open(db)
    propose(store)
    store.mark_running([1])
    code, out, err = kiban("lab", "cancel", "--db", db, "1")
    assert code == 2
    assert "proposal 1 is running (an instrument is running it)" in err
    code, out, err = kiban("lab", "cancel", "--db", db, "--all-pending")
    assert (code, out) == (0, "cancelled 1 proposals: [2]\n")
    with pytest.raises(StoreError, match="proposal 2 was cancelled: it was never run"):
        store.record_result(2, {"score": 0.0}, "test")


def test_a_cancelled_point_is_not_taken_for_the_proposer(tmp_path, fn_path):
    """Unlike a failed (interrupted) proposal, a cancelled one was never run: the proposers do
    not get it among the pending points."""
    from kiban.lab.proposers import PROPOSERS

    store = init_campaign(write_config(tmp_path, proposer="random", batch=2), tmp_path / "c.db")
    run_campaign(store, 4, instrument=FakeInstrument())
    propose(store)  # 5, 6
    store.record_failure(5, "interrupted", "test")
    store.cancel([6])
    seen: list[list[dict]] = []

    class Spy(PROPOSERS.get("random")):
        def propose(self, space, observed, pending, n, seed):
            seen.append(list(pending))
            return super().propose(space, observed, pending, n, seed)

    propose(store, proposer=Spy.from_config({}, seed=0))
    assert seen == [[store.proposal(5).params]]


def test_a_corrected_failure_is_no_longer_a_failure(tmp_path, fn_path):
    store = Store.create(tmp_path / "c.db", load_config(write_config(tmp_path, "random", 3)))
    propose(store, 2)
    record_csv(store, _csv(tmp_path / "r.csv", ["1,n.d.", "2,500"]))  # both fail
    assert [f["proposal_id"] for f in status(store)["failures"]] == [1, 2]
    fixed = record_csv(store, _csv(tmp_path / "fixed.csv", ["1,0.5"]))  # the value, corrected
    assert fixed.recorded == [1] and store.proposal(1).status == "completed"
    assert [f["proposal_id"] for f in status(store)["failures"]] == [2]
    assert [f.proposal_id for f in store.failures()] == [1, 2]  # the history keeps it
    page = (Path(write_report(store, tmp_path / "rep")["out"]) / "report.html").read_text()
    assert "<h2>Failures (1)</h2>" in page
    # the status as a table, not raw JSON
    assert (
        "<h2>Status</h2>\n<table><tr><th>proposed</th><th>pending</th><th>running</th>"
        "<th>completed</th><th>failed</th><th>cancelled</th></tr><tr><td>2</td><td>0</td>"
        "<td>0</td><td>1</td><td>1</td><td>0</td></tr></table>"
    ) in page
    assert '{"proposed"' not in page


def test_propose_shows_the_models_mean_sd_and_acquisition(tmp_path, fn_path, kiban):
    config = write_config(tmp_path, proposer="botorch", batch=2)
    db = tmp_path / "c.db"
    assert kiban("lab", "init", config, "--db", db)[0] == 0
    # design points first: no model, "-" in every prediction column
    code, out, err = kiban("lab", "propose", "--db", db)
    assert code == 0, err
    header, *rows = out.splitlines()
    assert header == "id\tproposer\tscore_predicted\tscore_sd\tacquisition\tconditions"
    assert [r.split("\t")[:5] for r in rows] == [
        ["1", "sobol", "-", "-", "-"],
        ["2", "sobol", "-", "-", "-"],
    ]
    assert kiban("lab", "cancel", "--db", db, "--all-pending")[0] == 0
    past = _write_history(tmp_path / "past.csv", _history(8))
    assert kiban("lab", "add", "--db", db, past)[0] == 0

    todo = tmp_path / "todo.csv"
    code, out, err = kiban("lab", "propose", "--db", db, "--out", todo)
    assert code == 0, err
    store = Store.open(db)
    proposed = store.proposals("pending")
    assert [p.proposer for p in proposed] == ["botorch", "botorch"]
    lines = out.splitlines()[1:]
    with todo.open() as handle:
        table = list(csv.DictReader(handle))
    for p, line, row in zip(proposed, lines, table):
        pred = p.prediction
        assert pred["model"] == "GP"
        assert pred["acquisition"] == "qLogNoisyExpectedImprovement"
        mean, sd = pred["objectives"]["score"]["mean"], pred["objectives"]["score"]["sd"]
        cells = [f"{mean:.4g}", f"{sd:.4g}", f"{pred['acquisition_value']:.4g}"]
        assert line.split("\t")[2:5] == cells
        assert [row["score_predicted"], row["score_sd"], row["acquisition"]] == cells
        assert row["proposal_id"] == str(p.id) and row["score"] == ""
        # the quad function's values lie in [-3.3, 0]; a GP fitted to 8 of them stays there
        assert -3.5 < mean < 0.5 and 0 < sd < 2

    # the filled-in file records (the prediction columns are read past)
    table[0]["score"] = "-0.5"
    with todo.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(table)
    code, out, err = kiban("lab", "record", "--db", db, todo)
    assert code == 0, err
    assert Store.open(db).result(proposed[0].id).values == {"score": -0.5}
    exported = json.loads(kiban("lab", "export", "--db", db)[1])
    assert exported["version"] == 4
    assert [p["prediction"] for p in exported["proposals"] if p["proposer"] == "botorch"] == [
        p.prediction for p in proposed
    ]


def test_random_proposals_predict_nothing(tmp_path, fn_path):
    store = Store.create(tmp_path / "c.db", load_config(write_config(tmp_path, "random")))
    run_campaign(store, 2, instrument=FakeInstrument())
    assert [p.prediction for p in propose(store)] == [None, None]
    assert prediction_cells(None, ["score"]) == {
        "score_predicted": "-",
        "score_sd": "-",
        "acquisition": "-",
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<4", (4.0, "<")),
        ("< 4", (4.0, "<")),
        ("<=4.5", (4.5, "<")),
        ("≤4", (4.0, "<")),
        (">10", (10.0, ">")),
        (">= 1e1", (10.0, ">")),
        ("≥10", (10.0, ">")),
        ("4.2", (4.2, None)),
        ("<abc", ("<abc", None)),
        ("<", ("<", None)),
        ("<nan", ("<nan", None)),
        ("n.d.", ("n.d.", None)),
    ],
)
def test_parse_measurement(text, expected):
    assert parse_measurement(text) == expected


def test_censored_values_are_bounds_not_failures(tmp_path, fn_path, kiban):
    config = write_config(tmp_path)
    db = tmp_path / "c.db"
    assert kiban("lab", "init", config, "--db", db)[0] == 0
    past = tmp_path / "past.csv"
    past.write_text("x,y,score\n0.1,0.2,<-2\n0.3,1.2,-0.5\n-0.5,0.5,< 0.5\n")
    assert kiban("lab", "add", "--db", db, past)[0] == 0
    store = Store.open(db)
    assert [(r.values, r.censored) for r in store.results()] == [
        ({"score": -2.0}, {"score": "<"}),
        ({"score": -0.5}, {}),
        ({"score": 0.5}, {"score": "<"}),
    ]
    assert store.counts()["failed"] == 0
    # "< 0.5" when maximising: at most 0.5, perhaps much worse; never the best so far
    code, out, _ = kiban("lab", "status", "--db", db)
    assert out.splitlines()[1] == "best: proposal 2: score=-0.5  x=0.3, y=1.2"
    assert best_so_far(store)[1][:, 0].tolist() == [-np.inf, -0.5, -0.5]
    # a lower bound when maximising (">0" : at least 0) is the best, shown with its sign
    assert kiban("lab", "propose", "--db", db, "--n", "1")[0] == 0
    results = tmp_path / "results.csv"
    results.write_text("proposal_id,score\n4,>0\n")
    code, out, err = kiban("lab", "record", "--db", db, results)
    assert code == 0, err
    assert Store.open(db).result(4).censored == {"score": ">"}
    assert (
        kiban("lab", "status", "--db", db)[1]
        .splitlines()[1]
        .startswith("best: proposal 4: score=>0  ")
    )
    # the GP learns the bound itself (imputed at it)
    assert [o.values for o in observations(Store.open(db))][-1] == {"score": 0.0}
    docs = campaign_documents(Store.open(db))
    assert docs[0].text.endswith("Measured: score at most <num>-2</num>.")
    assert docs[3].text.endswith("Measured: score at least <num>0</num>.")
    assert docs[1].text.endswith("Measured: score <num>-0.5</num>.")
    assert docs[0].meta["censored"] == {"score": "<"} and "censored" not in docs[1].meta
    exported = json.loads(kiban("lab", "export", "--db", db)[1])
    assert [p["censored"] for p in exported["proposals"]] == [
        {"score": "<"},
        None,
        {"score": "<"},
        {"score": ">"},
    ]


def test_censored_values_that_cannot_be_used_refuse_the_file(tmp_path, fn_path, kiban):
    path = write_config(tmp_path)
    # a target objective and a declared range: "<8" when the target is 6 bounds nothing
    text = path.read_text().replace('goal = "max"', 'goal = "target"\ntarget = 6.0')
    path.write_text(text.replace("low = -100", "low = 0"))
    db = tmp_path / "c.db"
    assert kiban("lab", "init", path, "--db", db)[0] == 0
    past = tmp_path / "past.csv"
    past.write_text("x,y,score\n0.1,0.2,<4\n0.3,1.2,<8\n0.2,0.2,<0\n0.2,0.4,>2\n")
    code, out, err = kiban("lab", "add", "--db", db, past)
    assert (code, out) == (2, "")
    assert err == (
        f"kiban lab add: error: {past}: refused, nothing imported: 3 row(s) do not fit the "
        "campaign: past.csv:3: column 'score': '<8': objective 'score' (goal: target 6): <8 "
        "is the wrong direction: every value below 8 includes the target, so how close it "
        "came is unknown; expected a bound on the far side (>8) or a number; past.csv:4: "
        "column 'score': '<0': objective 'score': <0 leaves nothing in the declared range "
        "[0.0, 100.0] (nothing is below 0); past.csv:5: column 'score': '>2': objective "
        "'score' (goal: target 6): >2 is the wrong direction: every value above 2 includes "
        "the target, so how close it came is unknown; expected a bound on the far side (<2) "
        "or a number (--skip-invalid imports the other rows)\n"
    )
    assert Store.open(db).counts()["proposed"] == 0
    # lab record: the whole file is checked before anything is written
    assert kiban("lab", "propose", "--db", db)[0] == 0
    results = tmp_path / "results.csv"
    results.write_text("proposal_id,score\n1,<4\n2,>5\n")
    code, out, err = kiban("lab", "record", "--db", db, results)
    assert (code, out) == (2, "")
    assert err == (
        f"kiban lab record: error: {results}: refused, nothing recorded: results.csv:3: "
        "column 'score': '>5': objective 'score' (goal: target 6): >5 is the wrong direction: "
        "every value above 5 includes the target, so how close it came is unknown; expected "
        "a bound on the far side (<5) or a number\n"
    )
    assert Store.open(db).counts()["completed"] == 0


_CANDIDATES = {  # compound_id -> SMILES of a small candidate table
    "CPD-001": "c1ccccc1O",
    "CPD-002": "c1ccncc1",
    "CPD-003": "CCOC(=O)c1ccccc1",
    "CPD-004": "CC(=O)Nc1ccc(O)cc1",
    "CPD-005": "Cc1ccccc1",
    "CPD-006": "OC(=O)c1ccccc1",
}

_MOLECULE_CONFIG = """
[campaign]
name = "mols"
proposer = "random"
batch_size = 2
seed = 0

[[parameters]]
name = "mol"
type = "molecule"
candidates = "compounds.csv"
id_column = "compound_id"

[[objectives]]
name = "pIC50"
goal = "max"
low = 0
high = 14

[instrument]
kind = "function"
target = "labfn:measure"
workers = 0
"""


def test_candidate_ids_travel_through_propose_record_status_and_export(tmp_path, fn_path, kiban):
    table = tmp_path / "compounds.csv"
    table.write_text(
        "compound_id,name,smiles\n" + "".join(f"{i},n{i},{smi}\n" for i, smi in _CANDIDATES.items())
    )
    config = tmp_path / "mols.toml"
    config.write_text(_MOLECULE_CONFIG)
    db = tmp_path / "m.db"
    assert kiban("lab", "init", config, "--db", db)[0] == 0
    # history: IDs from the table (written as another SMILES of the same molecule), one
    # molecule outside the table (its own ID kept, flagged), one censored value
    past = tmp_path / "past.csv"
    past.write_text(
        "mol,compound_id,pIC50\nOc1ccccc1,CPD-001,6.2\nCCO,EXT-9,5.0\nc1ccncc1,CPD-002,<4\n"
    )
    code, out, err = kiban("lab", "add", "--db", db, past)
    assert code == 0, err
    assert out == "imported 3 experiments (proposals 1-3), skipped 0, flagged 1\n"
    assert err == (
        f"  {past}:3: flagged: column 'mol': 'CCO' is not one of the 6 candidates (imported: "
        "the model learns from it; it is never proposed)\n"
    )
    todo = tmp_path / "todo.csv"
    code, out, err = kiban("lab", "propose", "--db", db, "--out", todo)
    assert code == 0, err
    header, *lines = out.splitlines()
    assert header.split("\t")[:3] == ["id", "proposer", "compound_id"]
    with todo.open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0])[:4] == ["proposal_id", "mol", "pIC50", "compound_id"]
    by_smiles = {canonical(smi): i for i, smi in _CANDIDATES.items()}
    for line, row in zip(lines, rows):
        assert row["compound_id"] == by_smiles[canonical(row["mol"])]
        assert line.split("\t")[2] == row["compound_id"]
    rows[0]["pIC50"] = "9.5"
    with todo.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    assert kiban("lab", "record", "--db", db, todo)[0] == 0
    best_line = kiban("lab", "status", "--db", db)[1].splitlines()[1]
    assert best_line.startswith(f"best: proposal 4: compound_id={rows[0]['compound_id']}: ")
    exported = json.loads(kiban("lab", "export", "--db", db)[1])
    assert [p["ids"] for p in exported["proposals"]] == [
        {"compound_id": "CPD-001"},
        {"compound_id": "EXT-9"},
        {"compound_id": "CPD-002"},
        {"compound_id": rows[0]["compound_id"]},
        {"compound_id": rows[1]["compound_id"]},
    ]
    # the report's best results: the IDs next to the molecules (the CSV row measured first)
    assert kiban("lab", "report", "--db", db, "--out", tmp_path / "report")[0] == 0
    page = (tmp_path / "report" / "report.html").read_text()
    best = page[page.index("<h2>Best results</h2>") : page.index("<h2>Predictions")]
    assert re.findall(r"<tr><td>(\d+)</td><td>([^<]+)</td>", best) == [
        ("4", rows[0]["compound_id"]),
        ("1", "CPD-001"),
        ("2", "EXT-9"),
    ]


def test_the_csv_instruments_to_do_file_carries_ids_and_predictions(tmp_path, fn_path, kiban):
    table = tmp_path / "compounds.csv"
    table.write_text("compound_id,smiles\n" + "".join(f"{i},{s}\n" for i, s in _CANDIDATES.items()))
    config = tmp_path / "mols.toml"
    instrument = '[instrument]\nkind = "csv"\npath = "to_run.csv"\n'
    config.write_text(_MOLECULE_CONFIG[: _MOLECULE_CONFIG.index("[instrument]")] + instrument)
    db = tmp_path / "m.db"
    assert kiban("lab", "init", config, "--db", db)[0] == 0
    code, _, err = kiban("lab", "run", "--db", db, "--budget", "2")
    assert code == 0, err
    with (tmp_path / "to_run.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    by_smiles = {canonical(smi): i for i, smi in _CANDIDATES.items()}
    assert [list(r) for r in rows] == [
        ["proposal_id", "mol", "pIC50", "compound_id", "pIC50_predicted", "pIC50_sd", "acquisition"]
    ] * 2
    assert [r["compound_id"] for r in rows] == [by_smiles[canonical(r["mol"])] for r in rows]
    assert {r["acquisition"] for r in rows} == {"-"}  # random proposals: no model


def test_candidate_names_travel_next_to_the_ids(tmp_path, fn_path, kiban):
    table = tmp_path / "compounds.csv"
    table.write_text(
        "compound_id,name,smiles\n" + "".join(f"{i},n{i},{s}\n" for i, s in _CANDIDATES.items())
    )
    config = tmp_path / "mols.toml"
    config.write_text(
        _MOLECULE_CONFIG.replace(
            'id_column = "compound_id"', 'id_column = "compound_id"\nname_column = "name"'
        )
    )
    db = tmp_path / "m.db"
    assert kiban("lab", "init", config, "--db", db)[0] == 0
    past = tmp_path / "past.csv"  # a chemist's own file: ID, name, SMILES, value
    past.write_text(
        "compound_id,name,mol,pIC50\nCPD-001,phenol,Oc1ccccc1,6.2\nEXT-9,ethanol,CCO,5.0\n"
    )
    code, out, err = kiban("lab", "add", "--db", db, past)
    assert (code, out) == (0, "imported 2 experiments (proposals 1-2), skipped 0, flagged 1\n"), err
    todo = tmp_path / "todo.csv"
    assert kiban("lab", "propose", "--db", db, "--out", todo)[0] == 0
    with todo.open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0])[:5] == ["proposal_id", "mol", "pIC50", "compound_id", "name"]
    assert [r["name"] for r in rows] == [f"n{r['compound_id']}" for r in rows]
    best_line = kiban("lab", "status", "--db", db)[1].splitlines()[1]
    assert best_line.startswith("best: proposal 1: compound_id=CPD-001, name=nCPD-001: ")
    exported = json.loads(kiban("lab", "export", "--db", db)[1])
    assert [p["ids"] for p in exported["proposals"][:2]] == [
        {"compound_id": "CPD-001", "name": "nCPD-001"},  # the table's name wins
        {"compound_id": "EXT-9", "name": "ethanol"},  # not in the table: the row's own
    ]


def test_a_candidate_table_names_its_columns(tmp_path):
    table = tmp_path / "compounds.csv"
    table.write_text("compound_id,smiles\nA,CCO\n")
    text = _MOLECULE_CONFIG.replace('"compound_id"', '"compound"')
    with pytest.raises(
        SpaceError,
        match=r"id_column 'compound' is not a column of .*compounds.csv \(did you mean "
        r"'compound_id'\?\); the columns are \['compound_id', 'smiles'\]",
    ):
        parse_config(tomllib.loads(text), tmp_path)
    text = _MOLECULE_CONFIG.replace('id_column = "compound_id"', 'name_column = "nmae"')
    with pytest.raises(SpaceError, match=r"name_column 'nmae' is not a column of .*compounds.csv"):
        parse_config(tomllib.loads(text), tmp_path)
