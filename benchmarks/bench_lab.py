"""Closed-loop benchmark on the 10 Olympus emulators: kiban vs random vs Ax's default `Client`.

For each dataset and seed, 30 sequential experiments (batch 1) on the same emulator
(olympus-surrogate-bench's random forests, evaluated through kiban's olympus instrument):

* kiban: a real campaign (SQLite store, `run_campaign`) with the default proposer (Sobol for 5,
  then BoTorch qLogNoisyExpectedImprovement);
* random: the same campaign with the random proposer;
* ax: `ax.Client` (Ax 1.x) with its default generation strategy, seeded.

Result: the best value found after 30 experiments, median over seeds, per dataset; wins count
datasets where kiban's median is at least Ax's. Part 2 times one proposal of a batch of 8 at 30
and 100 observations on hplc (6-d), kiban vs Ax, medians of repeats.

Every finished (dataset, seed, method) run is appended to the results file at once, so a killed
benchmark resumes where it stopped::

    .venv/bin/python benchmarks/bench_lab.py                     # results/lab-olympus.json
    .venv/bin/python benchmarks/bench_lab.py --seeds 0 1 --datasets suzuki snar --budget 15
    .venv/bin/python benchmarks/bench_lab.py --part timing
    .venv/bin/python benchmarks/bench_lab.py --part chance     # results/lab-chance.json

Two benchmark processes on one 2-core machine: start each with ``OMP_NUM_THREADS=1`` (and
``MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1``). kiban holds its own threads to one while
proposing, but Ax's torch uses every core, and two such processes oversubscribe them: measured,
an Ax run on hplc took 100-140 s that way against 15-22 s with one thread each.

``--options '{...}'`` runs kiban with other proposer options (kept apart in the results by
their options); ``--part chance`` pools results files and measures how often the goal is met
on random draws of 10 seeds, kiban vs Ax and kiban vs itself, and compares each set of options
with the default on their shared seeds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

AX_METRIC = "measured"
DATASETS = [
    "alkox",
    "benzylation",
    "colors_bob",
    "colors_n9",
    "fullerenes",
    "hplc",
    "photo_pce10",
    "photo_wf3",
    "snar",
    "suzuki",
]


PROPOSER_OPTIONS: dict = {}  # --options: the [proposer] table of kiban's campaigns


def campaign_config(dataset: str, proposer: str, seed: int, batch: int = 1):
    """The dataset's space as kiban declares it (photo_* blends as a composition)."""
    from kiban.lab.instruments import instrument_space
    from kiban.lab.space import parse_config

    raw = instrument_space({"kind": "olympus", "dataset": dataset})
    raw["campaign"] = {
        "name": f"bench-{dataset}",
        "proposer": proposer,
        "batch_size": batch,
        "initial": 5,
        "seed": seed,
    }
    if proposer == "botorch" and PROPOSER_OPTIONS:
        raw["proposer"] = dict(PROPOSER_OPTIONS)
    return parse_config(raw)


def ax_parameters(space):
    """Ax's view of the same space: a composition of k parts is k-1 free fractions with
    sum <= total (the last part is what is left), as Ax has no equality constraints."""
    from ax import RangeParameterConfig

    from kiban.lab.space import Composition

    params, constraints, fill = [], [], {}
    for p in space.parameters:
        if isinstance(p, Composition):
            free = p.components[:-1]
            params += [
                RangeParameterConfig(name=c, parameter_type="float", bounds=(0.0, p.total))
                for c in free
            ]
            constraints.append(" + ".join(free) + f" <= {p.total}")
            fill[p.components[-1]] = (free, p.total)
        else:
            params.append(
                RangeParameterConfig(name=p.name, parameter_type="float", bounds=(p.low, p.high))
            )
    return params, constraints, fill


def ax_client(space, seed: int):
    from ax import Client

    params, constraints, fill = ax_parameters(space)
    client = Client(random_seed=seed)
    client.configure_experiment(parameters=params, parameter_constraints=constraints or None)
    objective = space.objectives[0]
    # Ax parses the objective as an expression: a metric called "yield" is a syntax error
    client.configure_optimization(
        objective=AX_METRIC if objective.goal == "max" else f"-{AX_METRIC}"
    )
    return client, fill


def ax_params(params: dict, fill: dict) -> dict:
    out = dict(params)
    for last, (free, total) in fill.items():
        out[last] = max(0.0, total - sum(out[c] for c in free))
    return out


def run_kiban(dataset: str, proposer: str, seed: int, budget: int) -> dict:
    from kiban.lab.campaign import run_campaign
    from kiban.lab.store import Store

    config = campaign_config(dataset, proposer, seed)
    objective = config.space.objectives[0]
    with tempfile.TemporaryDirectory() as tmp:
        store = Store.create(Path(tmp) / "c.db", config)
        start = time.perf_counter()
        run_campaign(store, budget)
        wall = time.perf_counter() - start
        values = [
            store.result(p.id).values[objective.name]
            for p in store.proposals()
            if p.status == "completed"
        ]
        store.close()
    return {"values": values, "wall_s": wall}


def run_ax(dataset: str, seed: int, budget: int) -> dict:
    from kiban.lab.instruments import make_instrument

    config = campaign_config(dataset, "botorch", seed)
    instrument = make_instrument(dict(config.instrument), config.space)
    name = config.space.objectives[0].name
    client, fill = ax_client(config.space, seed)
    values = []
    start = time.perf_counter()
    for _ in range(budget):
        ((index, params),) = client.get_next_trials(max_trials=1).items()
        (outcome,) = list(instrument.run_batch([(index, ax_params(params, fill))]))
        if outcome.values is None:
            client.mark_trial_failed(index)
            continue
        client.complete_trial(index, raw_data={AX_METRIC: outcome.values[name]})
        values.append(outcome.values[name])
    return {"values": values, "wall_s": time.perf_counter() - start}


def best_of(values: list[float], goal: str) -> float:
    return max(values) if goal == "max" else min(values)


def olympus(args) -> None:
    from kiban.lab.instruments.olympus import OLYMPUS_GOALS

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = json.loads(out.read_text()) if out.exists() else {"runs": []}
    have = {run_key(r) for r in done["runs"]}
    for dataset in args.datasets:
        for seed in args.seeds:
            for method in args.methods:
                options = dict(PROPOSER_OPTIONS) if method == "kiban" else {}
                key = run_key(
                    {
                        "dataset": dataset,
                        "seed": seed,
                        "method": method,
                        "budget": args.budget,
                        "options": options,
                    }
                )
                if args.summary_only:
                    continue
                if key in have:
                    continue
                if method == "ax":
                    run = run_ax(dataset, seed, args.budget)
                else:
                    run = run_kiban(
                        dataset, "botorch" if method == "kiban" else "random", seed, args.budget
                    )
                run.update(
                    dataset=dataset,
                    seed=seed,
                    method=method,
                    budget=args.budget,
                    best=best_of(run["values"], OLYMPUS_GOALS[dataset]),
                )
                if options:
                    run["options"] = options
                done["runs"].append(run)
                tmp = out.with_suffix(".tmp")
                tmp.write_text(json.dumps(done, indent=1))
                os.replace(tmp, out)
                print(
                    f"{dataset:12s} seed {seed} {method:6s} best {run['best']:.4g} "
                    f"({run['wall_s']:.1f} s)",
                    flush=True,
                )
    summarise(done, args.budget)


def run_key(run: dict) -> tuple:
    """A run's identity: dataset, seed, method, budget and the kiban options it ran with."""
    return (
        run["dataset"],
        run["seed"],
        run["method"],
        run["budget"],
        json.dumps(run.get("options") or {}, sort_keys=True),
    )


def best_values(done: dict, dataset: str, method: str, budget: int) -> list[float]:
    """Best values of the runs of ``method`` (kiban: the default options), one per seed."""
    return list(by_seed(done["runs"], method, budget).get(dataset, {}).values())


def by_seed(
    runs: list[dict],
    method: str,
    budget: int,
    options: dict | None = None,
) -> dict[str, dict[int, float]]:
    """dataset -> seed -> best value, for one method (and kiban options)."""
    want = json.dumps(options or {}, sort_keys=True)
    out: dict[str, dict[int, float]] = {}
    for r in runs:
        if (
            r["method"] == method
            and r["budget"] == budget
            and json.dumps(r.get("options") or {}, sort_keys=True) == want
        ):
            out.setdefault(r["dataset"], {})[r["seed"]] = r["best"]
    return out


def chance(args) -> None:
    """How often the goal (kiban's median best >= Ax's on >= 7 of 10 datasets, 10 seeds) is
    met when the 10 seeds are drawn at random from those run: kiban vs Ax, and kiban vs kiban
    (two disjoint draws from kiban's own seeds: what two equally good methods score); then each
    set of kiban options run (``--options`` runs) against the default on their shared seeds."""
    import random

    from scipy.stats import mannwhitneyu

    from kiban.lab.instruments.olympus import OLYMPUS_GOALS

    runs = [r for f in args.results for r in json.loads(Path(f).read_text())["runs"]]
    kiban, ax = by_seed(runs, "kiban", args.budget), by_seed(runs, "ax", args.budget)
    sign = {d: 1 if OLYMPUS_GOALS[d] == "max" else -1 for d in DATASETS}
    rng = random.Random(args.draws)
    n = 10

    def at_least(a: list[float], b: list[float], d: str) -> bool:
        return sign[d] * statistics.median(a) >= sign[d] * statistics.median(b)

    def draw_vs_ax() -> list[bool]:
        return [
            at_least(rng.sample(list(kiban[d].values()), n), rng.sample(list(ax[d].values()), n), d)
            for d in DATASETS
        ]

    def draw_vs_self() -> list[bool]:
        out = []
        for d in DATASETS:
            values = rng.sample(list(kiban[d].values()), 2 * n)
            out.append(at_least(values[:n], values[n:], d))
        return out

    if not kiban:
        raise SystemExit("no default kiban runs in " + ", ".join(args.results))
    print(
        f"seeds run: kiban {min(len(v) for v in kiban.values())}, "
        f"Ax {min((len(v) for v in ax.values()), default=0)}; {args.draws} draws of {n} seeds"
    )
    result = {"draws": args.draws, "results": args.results, "pooled": []}
    for d in DATASETS:  # every seed of each: medians and a Mann-Whitney U test
        a, b = list(kiban.get(d, {}).values()), list(ax.get(d, {}).values())
        if len(a) < 3 or len(b) < 3:
            continue
        row = {
            "dataset": d,
            "kiban_seeds": len(a),
            "ax_seeds": len(b),
            "kiban": statistics.median(a),
            "ax": statistics.median(b),
            "p": mannwhitneyu(a, b, alternative="two-sided").pvalue,
            "kiban_at_least": at_least(a, b, d),
        }
        result["pooled"].append(row)
        print(
            f"pooled {d:12s} kiban {row['kiban']:.4g} [{len(a)}]  Ax {row['ax']:.4g} "
            f"[{len(b)}]  median >= {'yes' if row['kiban_at_least'] else 'no'}  "
            f"p {row['p']:.2f}"
        )
    fewest = min(len(v) for v in kiban.values())
    for name, draw in (("kiban vs Ax", draw_vs_ax), ("kiban vs kiban", draw_vs_self)):
        if name == "kiban vs kiban" and fewest < 2 * n:
            print(f"{name}: needs {2 * n} kiban seeds per dataset, have {fewest}")
            continue
        if name == "kiban vs Ax" and min((len(ax.get(d, ())) for d in DATASETS), default=0) < n:
            print(f"{name}: needs {n} Ax seeds per dataset")
            continue
        wins = [draw() for _ in range(args.draws)]
        totals = [sum(w) for w in wins]
        p7 = sum(t >= 7 for t in totals) / len(totals)
        per = {d: sum(w[i] for w in wins) / len(wins) for i, d in enumerate(DATASETS)}
        result[name] = {"p_goal": p7, "mean_wins": statistics.mean(totals), "per_dataset": per}
        print(
            f"{name}: P(>= 7 of 10) = {p7:.2f}, mean datasets at >= {statistics.mean(totals):.2f}; "
            "P(median >=) per dataset: " + ", ".join(f"{d} {v:.2f}" for d, v in per.items())
        )
    variants = sorted(
        {
            json.dumps(r["options"], sort_keys=True)
            for r in runs
            if r["method"] == "kiban" and r.get("options")
        }
    )
    result["variants"] = {}
    for text in variants:
        other = by_seed(runs, "kiban", args.budget, json.loads(text))
        rows, wins, pairs = [], 0, []
        for d in DATASETS:
            seeds = sorted(set(other.get(d, {})) & set(kiban.get(d, {})))
            if len(seeds) < 3:
                continue
            a, b = [kiban[d][s] for s in seeds], [other[d][s] for s in seeds]
            ge = at_least(b, a, d)
            wins += ge
            # probability that a run of the variant beats a run of the default (ties half)
            beat = sum((sign[d] * (y - x) > 0) + 0.5 * (y == x) for x in a for y in b) / (
                len(a) * len(b)
            )
            pairs.append(beat)
            # paired by seed (same design, and the same steps until an option changes one)
            better = sum(sign[d] * (y - x) > 0 for x, y in zip(a, b))
            worse = sum(sign[d] * (y - x) < 0 for x, y in zip(a, b))
            rows.append(
                {
                    "dataset": d,
                    "seeds": len(seeds),
                    "default": statistics.median(a),
                    "variant": statistics.median(b),
                    "p_beat": beat,
                    "p": mannwhitneyu(a, b, alternative="two-sided").pvalue,
                    "better": better,
                    "worse": worse,
                    "p_sign": sign_test(better, worse),
                }
            )
        better, worse = (sum(r[k] for r in rows) for k in ("better", "worse"))
        p_sign = sign_test(better, worse)
        result["variants"][text] = {
            "at_least_default": wins,
            "datasets": len(rows),
            "mean_p_beat": statistics.mean(pairs),
            "rows": rows,
            "better": better,
            "worse": worse,
            "p_sign": p_sign,
        }
        print(
            f"options {text}: median >= default on {wins} of {len(rows)}; mean P(a run "
            f"beats a default run) {statistics.mean(pairs):.2f}; smallest p "
            f"{min(r['p'] for r in rows):.2f}; same seed: better {better}, worse {worse} "
            f"(sign test p {p_sign:.3g}); by dataset: "
            + ", ".join(f"{r['dataset']} {r['better']}/{r['worse']}" for r in rows)
        )
    if args.chance_out:
        Path(args.chance_out).write_text(json.dumps(result, indent=1))


def sign_test(better: int, worse: int) -> float:
    """Two-sided sign test on paired runs (ties left out): 1.0 when none differ."""
    from scipy.stats import binomtest

    return binomtest(better, better + worse).pvalue if better + worse else 1.0


def summarise(done: dict, budget: int) -> None:
    """Markdown table: median (and quartiles) of the best value after ``budget`` experiments."""
    from kiban.lab.instruments.olympus import OLYMPUS_GOALS

    def stats(values):
        if not values:
            return None
        q = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
        return statistics.median(values), q[0], q[2], len(values)

    def cell(st):
        return "–" if st is None else f"{st[0]:.4g} ({st[1]:.3g}–{st[2]:.3g}) [{st[3]}]"

    from scipy.stats import mannwhitneyu

    wins = compared = 0
    better = worse = 0
    print("\n| dataset | goal | kiban | random | Ax `Client` | kiban ≥ Ax | p (kiban vs Ax) |")
    print("|---|---|---:|---:|---:|:---:|---:|")
    for dataset in DATASETS:
        st = {m: stats(best_values(done, dataset, m, budget)) for m in ("kiban", "random", "ax")}
        if st["kiban"] is None:
            continue
        verdict, p_text = "", ""
        if st["ax"] is not None:
            compared += 1
            sign = 1 if OLYMPUS_GOALS[dataset] == "max" else -1
            at_least = sign * st["kiban"][0] >= sign * st["ax"][0]
            wins += at_least
            verdict = "yes" if at_least else "no"
            # two-sided Mann-Whitney U on the per-seed best values: is there a difference at all?
            ours, theirs = (best_values(done, dataset, m, budget) for m in ("kiban", "ax"))
            p = mannwhitneyu(ours, theirs, alternative="two-sided").pvalue
            p_text = f"{p:.2f}"
            if p < 0.05:
                kiban_ahead = sign * statistics.median(ours) > sign * statistics.median(theirs)
                better += kiban_ahead
                worse += not kiban_ahead
        print(
            f"| {dataset} | {OLYMPUS_GOALS[dataset]} | {cell(st['kiban'])} | "
            f"{cell(st['random'])} | {cell(st['ax'])} | {verdict} | {p_text} |"
        )
    print(
        f"\nmedian (quartiles) [seeds] of the best value after {budget} experiments; "
        f"kiban ≥ Ax on {wins} of {compared} datasets; a difference at p < 0.05 (two-sided "
        f"Mann-Whitney U over seeds): kiban ahead on {better}, behind on {worse}"
    )
    walls = {
        m: statistics.median([r["wall_s"] for r in done["runs"] if r["method"] == m])
        for m in ("kiban", "random", "ax")
        if any(r["method"] == m for r in done["runs"])
    }
    print(
        "median wall time per 30-experiment run: "
        + ", ".join(f"{m} {w:.1f} s" for m, w in walls.items())
    )


def timing(args) -> None:
    """Seconds to propose a batch of 8 after n observations (hplc, 6-d, unless
    ``--timing-dataset``), kiban vs Ax."""
    from kiban.lab.instruments import make_instrument
    from kiban.lab.proposers import Observation, initial_design, make_proposer

    dataset = args.timing_dataset
    config = campaign_config(dataset, "botorch", 0, batch=8)
    name = config.space.objectives[0].name
    instrument = make_instrument(dict(config.instrument), config.space)
    result = {"dataset": dataset, "batch": 8, "repeats": args.repeats, "cases": []}
    for n_obs in (30, 100):
        xs = initial_design(config.space, n_obs, seed=123)
        ys = [o.values[name] for o in instrument.run_batch(list(enumerate(xs)))]
        observed = [Observation(x, {name: y}) for x, y in zip(xs, ys)]
        kiban_t, ax_t = [], []
        for repeat in range(args.repeats):
            proposer = make_proposer(config)
            start = time.perf_counter()
            proposer.propose(config.space, observed, [], 8, seed=repeat)
            kiban_t.append(time.perf_counter() - start)
            client, fill = ax_client(config.space, repeat)
            for x, y in zip(xs, ys):  # a composition's last part is implied in Ax
                index = client.attach_trial(
                    parameters={k: v for k, v in x.items() if k not in fill}
                )
                client.complete_trial(index, raw_data={AX_METRIC: y})
            start = time.perf_counter()
            client.get_next_trials(max_trials=8)
            ax_t.append(time.perf_counter() - start)
        case = {
            "observations": n_obs,
            "kiban_s": statistics.median(kiban_t),
            "ax_s": statistics.median(ax_t),
            "kiban_all": kiban_t,
            "ax_all": ax_t,
        }
        case["ax_over_kiban"] = case["ax_s"] / case["kiban_s"]
        result["cases"].append(case)
        print(
            f"{n_obs} observations: kiban {case['kiban_s']:.3f} s, Ax {case['ax_s']:.3f} s "
            f"per batch of 8 (Ax/kiban {case['ax_over_kiban']:.2f}×)",
            flush=True,
        )
    Path(args.timing_out).write_text(json.dumps(result, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=["olympus", "timing", "all", "chance"], default="all")
    parser.add_argument("--datasets", nargs="+", default=DATASETS, choices=DATASETS)
    parser.add_argument("--seeds", nargs="+", type=int, default=list(range(10)))
    parser.add_argument(
        "--methods", nargs="+", default=["kiban", "random", "ax"], choices=["kiban", "random", "ax"]
    )
    parser.add_argument("--budget", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(HERE / "results" / "lab-olympus.json"))
    parser.add_argument(
        "--summary-only",
        action="store_true",
        help="print the table of what the results file holds; run nothing",
    )
    parser.add_argument(
        "--options",
        default="{}",
        help="kiban proposer options as JSON, e.g. '{\"num_restarts\": 10}'",
    )
    parser.add_argument("--timing-dataset", default="hplc", choices=DATASETS)
    parser.add_argument("--timing-out", default=str(HERE / "results" / "lab-timing.json"))
    parser.add_argument(
        "--results",
        nargs="+",
        default=[
            str(HERE / "results" / f)
            for f in (
                "lab-olympus.json",
                "lab-olympus-seeds10-19.json",
                "lab-olympus-kiban-heldout.json",
                "lab-olympus-ax-seeds20-39.json",
            )
        ],
        help="--part chance: the results files to pool",
    )
    parser.add_argument("--draws", type=int, default=20000, help="--part chance: resamples")
    parser.add_argument("--chance-out", default=str(HERE / "results" / "lab-chance.json"))
    args = parser.parse_args()
    PROPOSER_OPTIONS.update(json.loads(args.options))
    warnings.filterwarnings("ignore")
    import logging

    logging.getLogger("ax").setLevel(logging.WARNING)
    print(f"python {platform.python_version()}, {os.cpu_count()} cpus", flush=True)
    if args.part in ("timing", "all"):
        timing(args)
    if args.part in ("olympus", "all"):
        olympus(args)
    if args.part == "chance":
        chance(args)


if __name__ == "__main__":
    main()
