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
            r = {
                "dataset": d,
                "seed": s,
                "method": method,
                "budget": 30,
                "values": [],
                "wall_s": 0.0,
                "best": values_of(d, s, OLYMPUS_GOALS[d]),
            }
            if options:
                r["options"] = options
            out.append(r)
    return out


def chance(bench, tmp_path, all_runs):
    path = tmp_path / "runs.json"
    path.write_text(json.dumps({"runs": all_runs}))
    out = tmp_path / "chance.json"
    bench.chance(argparse.Namespace(results=[str(path)], budget=30, draws=300, chance_out=str(out)))
    return json.loads(out.read_text())


def better(goal, margin):
    return margin if goal == "max" else -margin


def test_chance_counts_the_goal(bench, tmp_path):
    # kiban better than Ax on every seed of 8 datasets, worse on 2: the goal always met
    good = set(bench.DATASETS[:8])
    kiban = runs(
        bench, "kiban", lambda d, s, g: better(g, 1.0 if d in good else -1.0) + s * 1e-3, range(20)
    )
    ax = runs(bench, "ax", lambda d, s, g: s * 1e-3, range(20))
    result = chance(bench, tmp_path, kiban + ax)
    assert result["kiban vs Ax"]["p_goal"] == 1.0
    assert result["kiban vs Ax"]["mean_wins"] == 8
    pooled = {r["dataset"]: r for r in result["pooled"]}
    assert [pooled[d]["kiban_at_least"] for d in bench.DATASETS] == [True] * 8 + [False] * 2
    assert all(r["p"] < 1e-6 for r in pooled.values())
    per = result["kiban vs Ax"]["per_dataset"]
    assert all(per[d] == (1.0 if d in good else 0.0) for d in bench.DATASETS)
    # worse on 4: never 7
    good = set(bench.DATASETS[:6])
    kiban = runs(bench, "kiban", lambda d, s, g: better(g, 1.0 if d in good else -1.0), range(20))
    assert chance(bench, tmp_path, kiban + ax)["kiban vs Ax"]["p_goal"] == 0.0


def test_chance_equal_methods_near_half(bench, tmp_path):
    # kiban against itself: distinct values per seed, so each dataset is a coin flip
    kiban = runs(bench, "kiban", lambda d, s, g: (s * 7919 % 23) + s * 1e-6, range(40))
    ax = runs(bench, "ax", lambda d, s, g: 0.0, range(20))
    result = chance(bench, tmp_path, kiban + ax)
    assert 0.3 < result["kiban vs kiban"]["mean_wins"] / 10 < 0.7


def test_variants_compared_with_default_on_shared_seeds(bench, tmp_path):
    default = runs(bench, "kiban", lambda d, s, g: 0.0, range(20, 30))
    variant = runs(
        bench, "kiban", lambda d, s, g: better(g, 1.0), range(20, 30), options={"warp": "power"}
    )
    ax = runs(bench, "ax", lambda d, s, g: 0.0, range(10))
    result = chance(bench, tmp_path, default + variant + ax)
    v = result["variants"][json.dumps({"warp": "power"})]
    assert v["at_least_default"] == 10 and v["mean_p_beat"] == 1.0
    # the default's own numbers ignore the variant's runs
    assert result["kiban vs Ax"]["mean_wins"] == 10  # ties count as "at least"
    pooled = {r["dataset"]: r for r in result["pooled"]}
    assert len(pooled) == 10 and all(
        r["kiban_at_least"] and r["p"] == 1.0 and (r["kiban_seeds"], r["ax_seeds"]) == (10, 10)
        for r in pooled.values()
    )


def test_run_key_tells_options_apart(bench):
    base = {"dataset": "suzuki", "seed": 0, "method": "kiban", "budget": 30}
    assert bench.run_key(base) == bench.run_key({**base, "options": {}})
    assert bench.run_key(base) != bench.run_key({**base, "options": {"warp": "power"}})
    assert bench.run_key({**base, "options": {"a": 1, "b": 2}}) == bench.run_key(
        {**base, "options": {"b": 2, "a": 1}}
    )


def test_chance_without_ax_runs_still_compares_variants(bench, tmp_path):
    default = runs(bench, "kiban", lambda d, s, g: 0.0, range(20, 40))
    variant = runs(
        bench, "kiban", lambda d, s, g: better(g, -1.0), range(20, 40), options={"maxiter": 50}
    )
    result = chance(bench, tmp_path, default + variant)
    assert "kiban vs Ax" not in result
    assert result["kiban vs kiban"]["mean_wins"] == 10  # all ties
    v = result["variants"][json.dumps({"maxiter": 50})]
    assert v["at_least_default"] == 0 and v["mean_p_beat"] == 0.0
    assert (v["better"], v["worse"]) == (0, 200) and v["p_sign"] < 1e-50


def test_variants_paired_by_seed_with_a_sign_test(bench, tmp_path):
    # the variant equals the default on most seeds (same steps) and differs on a few: better
    # on seeds 20-25 of the first dataset, worse on seed 26; ties leave the test
    first = bench.DATASETS[0]
    default = runs(bench, "kiban", lambda d, s, g: float(s), range(20, 40))
    moved = {20: 1, 21: 1, 22: 1, 23: 1, 24: 1, 25: 1, 26: -1}
    variant = runs(
        bench,
        "kiban",
        lambda d, s, g: float(s) + (better(g, moved.get(s, 0)) if d == first else 0.0),
        range(20, 40),
        options={"exploit_after": 27},
    )
    v = chance(bench, tmp_path, default + variant)["variants"][json.dumps({"exploit_after": 27})]
    assert (v["better"], v["worse"]) == (6, 1)
    assert v["p_sign"] == pytest.approx(0.125)  # 2 * P(X <= 1), X ~ Bin(7, 1/2) = 16/128
    row = {r["dataset"]: r for r in v["rows"]}
    assert (row[first]["better"], row[first]["worse"]) == (6, 1)
    assert all(r["p_sign"] == 1.0 for d, r in row.items() if d != first)
