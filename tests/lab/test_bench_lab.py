"""The Olympus benchmark's bookkeeping: runs keyed by their options, and `--part chance`
(how often the 7-of-10 goal is met on random draws of 10 seeds) on synthetic results."""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_lab.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_lab_under_test", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def runs(bench, method, values_of, seeds, options=None):
    """One run per dataset and seed; ``values_of(dataset, seed)`` is the best value."""
    from kiban.lab.instruments.olympus import OLYMPUS_GOALS

    out = []
    for d in bench.DATASETS:
        for s in seeds:
            r = {"dataset": d, "seed": s, "method": method, "budget": 30, "values": [],
                 "wall_s": 0.0, "best": values_of(d, s, OLYMPUS_GOALS[d])}
            if options:
                r["options"] = options
            out.append(r)
    return out


def chance(bench, tmp_path, all_runs):
    path = tmp_path / "runs.json"
    path.write_text(json.dumps({"runs": all_runs}))
    out = tmp_path / "chance.json"
    bench.chance(argparse.Namespace(results=[str(path)], budget=30, draws=300,
                                    chance_out=str(out)))
    return json.loads(out.read_text())


def better(goal, margin):
    return margin if goal == "max" else -margin


def test_chance_counts_the_goal(bench, tmp_path):
    # kiban better than Ax on every seed of 8 datasets, worse on 2: the goal always met
    good = set(bench.DATASETS[:8])
    kiban = runs(bench, "kiban", lambda d, s, g: better(g, 1.0 if d in good else -1.0) + s * 1e-3,
                 range(20))
    ax = runs(bench, "ax", lambda d, s, g: s * 1e-3, range(20))
    result = chance(bench, tmp_path, kiban + ax)
    assert result["kiban vs Ax"]["p_goal"] == 1.0
    assert result["kiban vs Ax"]["mean_wins"] == 8
    per = result["kiban vs Ax"]["per_dataset"]
    assert all(per[d] == (1.0 if d in good else 0.0) for d in bench.DATASETS)
    # worse on 4: never 7
    good = set(bench.DATASETS[:6])
    kiban = runs(bench, "kiban", lambda d, s, g: better(g, 1.0 if d in good else -1.0),
                 range(20))
    assert chance(bench, tmp_path, kiban + ax)["kiban vs Ax"]["p_goal"] == 0.0


def test_chance_equal_methods_near_half(bench, tmp_path):
    # kiban against itself: distinct values per seed, so each dataset is a coin flip
    kiban = runs(bench, "kiban", lambda d, s, g: (s * 7919 % 23) + s * 1e-6, range(40))
    ax = runs(bench, "ax", lambda d, s, g: 0.0, range(20))
    result = chance(bench, tmp_path, kiban + ax)
    assert 0.3 < result["kiban vs kiban"]["mean_wins"] / 10 < 0.7


def test_variants_compared_with_default_on_shared_seeds(bench, tmp_path):
    default = runs(bench, "kiban", lambda d, s, g: 0.0, range(20, 30))
    variant = runs(bench, "kiban", lambda d, s, g: better(g, 1.0), range(20, 30),
                   options={"warp": "power"})
    ax = runs(bench, "ax", lambda d, s, g: 0.0, range(10))
    result = chance(bench, tmp_path, default + variant + ax)
    v = result["variants"][json.dumps({"warp": "power"})]
    assert v["at_least_default"] == 10 and v["mean_p_beat"] == 1.0
    # the default's own numbers ignore the variant's runs
    assert result["kiban vs Ax"]["mean_wins"] == 10   # ties count as "at least"


def test_run_key_tells_options_apart(bench):
    base = {"dataset": "suzuki", "seed": 0, "method": "kiban", "budget": 30}
    assert bench.run_key(base) == bench.run_key({**base, "options": {}})
    assert bench.run_key(base) != bench.run_key({**base, "options": {"warp": "power"}})
    assert bench.run_key({**base, "options": {"a": 1, "b": 2}}) == \
        bench.run_key({**base, "options": {"b": 2, "a": 1}})


def test_chance_without_ax_runs_still_compares_variants(bench, tmp_path):
    default = runs(bench, "kiban", lambda d, s, g: 0.0, range(20, 40))
    variant = runs(bench, "kiban", lambda d, s, g: better(g, -1.0), range(20, 40),
                   options={"maxiter": 50})
    result = chance(bench, tmp_path, default + variant)
    assert "kiban vs Ax" not in result
    assert result["kiban vs kiban"]["mean_wins"] == 10   # all ties
    v = result["variants"][json.dumps({"maxiter": 50})]
    assert v["at_least_default"] == 0 and v["mean_p_beat"] == 0.0
