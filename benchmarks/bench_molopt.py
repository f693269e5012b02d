"""Property-conditioned generation and goal-directed optimisation with a small kiban model.

Part 1 (`kiban.tasks.molecules.design.conditioned`): for each range specification, N samples prompted
with target properties vs N samples prompted with ``<mol>`` (the same model) filtered afterwards;
success = valid samples whose RDKit properties are all in range.
Part 2 (`kiban.tasks.molecules.design.optimize`, `.reinvent`): QED, Tanimoto to celecoxib, and an MPO
objective, each at a fixed oracle budget, for REINVENT's augmented likelihood on the model
(``model-augmented``), the model in the loop (sample, score, fine-tune on the best:
``model-loop``), plain sampling from the same model (no fine-tuning), and a graph GA; top-10
AUC, top-1, top-10.

The base model is built first when missing (corpus from configs/molopt-corpus.toml, training
with configs/molopt-base.toml; both through the ``kiban`` CLI)::

    .venv/bin/python benchmarks/bench_molopt.py                 # results/{conditioned,molopt}.json
    .venv/bin/python benchmarks/bench_molopt.py --quick         # smoke run: *-quick.json
    .venv/bin/python benchmarks/bench_molopt.py --part molopt --seeds 0 1 2 --budget 1000
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
KIBAN = [sys.executable, "-m", "kiban"]


def run(command: list[str]) -> None:
    print("+", " ".join(command), flush=True)
    subprocess.run(command, check=True, cwd=ROOT)


def prepare(args) -> tuple[Path, Path, dict]:
    """The corpus and model directories (built when missing) and what the model is."""
    corpus, run_dir = Path(args.corpus), Path(args.run)
    if not (corpus / "documents.parquet").is_file():
        recipe = ROOT / "configs" / "molopt-corpus.toml"
        if args.quick:  # the same recipe on the first 2,000 molecules
            text = re.sub(r"limit = \d+", "limit = 2000", recipe.read_text())
            recipe = corpus.parent / "molopt-corpus-quick.toml"
            recipe.parent.mkdir(parents=True, exist_ok=True)
            recipe.write_text(text)
        run([*KIBAN, "corpus", "build", str(recipe), "--out", str(corpus), "--workers", "2"])
    model = run_dir / "model"
    if not (model / "config.json").is_file():
        command = [
            *KIBAN,
            "train",
            str(ROOT / "configs" / "molopt-base.toml"),
            "--corpus",
            str(corpus),
            "--out",
            str(run_dir),
        ]
        if args.quick:
            command += ["--max-steps", "40"]
        run(command)
    summary = json.loads((run_dir / "summary.json").read_text())
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    info = {
        "model_dir": str(model),
        "corpus": str(corpus),
        "parameters": summary.get("parameters"),
        "steps": summary.get("steps"),
        "tokens_trained": max((m.get("tokens") or 0) for m in metrics),
        "train_seconds": max(m.get("elapsed_s", 0.0) for m in metrics),
        "final_loss": summary.get("loss"),
        "val_loss": summary.get("val_loss"),
        "corpus_documents": summary.get("data", {}).get("documents")
        or summary.get("data", {}).get("train_documents"),
    }
    return corpus, model, info


def conditioned_part(args, corpus: Path, model: Path) -> dict:
    from kiban.generate import load_generator
    from kiban.tasks.molecules.design.conditioned import Reference, evaluate_conditioning

    reference = Reference.from_corpus(corpus)
    generator = load_generator(model)
    began = time.perf_counter()
    result = evaluate_conditioning(
        generator, reference, n=args.samples, temperature=args.temperature, seed=args.seeds[0]
    )
    result["seconds"] = time.perf_counter() - began
    result["reference_molecules"] = len(reference.smiles)
    return result


def _oracle_runs(args, corpus: Path, model: Path, oracle_name: str) -> list[dict]:
    """Every (seed, method) run on one oracle (one worker process with --jobs)."""
    import torch

    from kiban.tasks.molecules.design.conditioned import Reference
    from kiban.tasks.molecules.design.optimize import (
        GAConfig,
        LoopConfig,
        get_oracle,
        graph_ga,
        optimize_with_model,
    )
    from kiban.tasks.molecules.design.reinvent import AugmentedConfig, optimize_augmented_likelihood

    if args.jobs > 1:
        torch.set_num_threads(1)

    start = list(Reference.from_corpus(corpus).smiles)
    loop = LoopConfig(
        batch=args.loop_batch, max_rounds=args.max_rounds, max_per_scaffold=args.max_per_scaffold
    )
    sample = LoopConfig(batch=args.loop_batch, max_rounds=args.max_rounds, steps=0)
    augmented = AugmentedConfig(
        sigma=args.sigma, top_fraction=args.top_fraction, bucket=args.bucket or None
    )
    methods = {
        "model-loop": lambda oracle, seed: optimize_with_model(
            oracle, str(model), config=loop, seed=seed
        ),
        "model-sample": lambda oracle, seed: optimize_with_model(
            oracle, str(model), config=sample, seed=seed
        ),
        "model-augmented": lambda oracle, seed: optimize_augmented_likelihood(
            oracle, str(model), config=augmented, seed=seed
        ),
        "graph-ga": lambda oracle, seed: graph_ga(oracle, start, config=GAConfig(), seed=seed),
    }
    runs = []
    for seed in args.seeds:
        for method in args.methods:
            oracle = get_oracle(oracle_name, args.budget)
            result = methods[method](oracle, seed)
            print(
                f"{oracle_name:10s} {method:12s} seed {seed}: top10-AUC "
                f"{result['top10_auc']:.3f} top1 {result['top1'] or 0:.3f} top10 "
                f"{result['top10_mean'] or 0:.3f} ({result['calls']} calls, "
                f"{result['seconds']:.0f} s)",
                flush=True,
            )
            runs.append(result)
    return runs


def molopt_part(args, corpus: Path, model: Path) -> dict:
    """All oracles; with --jobs N, one spawned process per oracle (N at a time)."""
    from kiban.tasks.molecules.design.optimize import GAConfig, LoopConfig
    from kiban.tasks.molecules.design.reinvent import AugmentedConfig

    if args.jobs > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(args.jobs, mp_context=context) as pool:
            groups = list(
                pool.map(
                    _oracle_runs, *zip(*[(args, corpus, model, name) for name in args.oracles])
                )
            )
    else:
        groups = [_oracle_runs(args, corpus, model, name) for name in args.oracles]
    runs = [run for group in groups for run in group]
    table = []
    for oracle_name in args.oracles:
        for method in args.methods:
            mine = [r for r in runs if r["oracle"] == oracle_name and r["method"] == method]
            row = {"oracle": oracle_name, "method": method, "seeds": len(mine)}
            for key in ("top10_auc", "top1", "top10_mean", "calls", "seconds"):
                values = [r[key] or 0.0 for r in mine]  # top1 is None after no valid sample
                row[key] = statistics.mean(values)
                row[key + "_sd"] = statistics.stdev(values) if len(values) > 1 else 0.0
            table.append(row)
    return {
        "budget": args.budget,
        "auc_every": 100,
        "jobs": args.jobs,
        "loop": LoopConfig(
            batch=args.loop_batch,
            max_rounds=args.max_rounds,
            max_per_scaffold=args.max_per_scaffold,
        ).__dict__,
        "augmented": AugmentedConfig(
            sigma=args.sigma, top_fraction=args.top_fraction, bucket=args.bucket or None
        ).__dict__,
        "ga": GAConfig().__dict__,
        "ga_start_pool": "the corpus's property-first molecules",
        "summary": table,
        "runs": runs,
    }


def machine() -> dict:
    import torch

    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average": os.getloadavg(),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run (minutes)")
    parser.add_argument("--part", choices=["conditioned", "molopt", "both"], default="both")
    parser.add_argument("--corpus", default=None)
    parser.add_argument("--run", default=None, help="training run directory (model in RUN/model)")
    parser.add_argument("--samples", type=int, default=None, help="samples per arm and spec")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--budget", type=int, default=None, help="oracle calls per run")
    parser.add_argument("--loop-batch", type=int, default=None, help="samples per round")
    parser.add_argument(
        "--max-rounds", type=int, default=None, help="sampling rounds per model run at most"
    )
    parser.add_argument(
        "--max-per-scaffold",
        type=int,
        default=None,
        help="model loop: at most this many molecules per Murcko scaffold among "
        "the top-k it fine-tunes on (default: no limit)",
    )
    parser.add_argument(
        "--sigma",
        type=float,
        default=500.0,
        help="model-augmented: REINVENT's sigma (score weight; PMO's 500)",
    )
    parser.add_argument(
        "--top-fraction",
        type=float,
        default=0.25,
        help="model-augmented: the best fraction of each batch in the loss "
        "(Augmented Hill-Climb; 1.0 = REINVENT)",
    )
    parser.add_argument(
        "--bucket",
        type=int,
        default=25,
        help="model-augmented: the diversity filter's scaffold bucket size (0: no filter)",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=None)
    parser.add_argument("--oracles", nargs="+", default=["qed", "celecoxib", "mpo"])
    parser.add_argument(
        "--methods",
        nargs="+",
        default=["model-augmented", "model-loop", "model-sample", "graph-ga"],
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="optimisation: oracles run in this many processes (1 thread each)",
    )
    parser.add_argument("--results", default=str(HERE / "results"))
    args = parser.parse_args(argv)
    base = Path("/tmp/kiban-molopt-quick") if args.quick else ROOT / "out" / "molopt"
    args.corpus = args.corpus or str(base / "corpus")
    args.run = args.run or str(base / "base")
    args.samples = args.samples or (32 if args.quick else 500)
    args.budget = args.budget or (100 if args.quick else 1000)
    args.seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    args.loop_batch = args.loop_batch or (50 if args.quick else 100)
    args.max_rounds = args.max_rounds or (4 if args.quick else 30)
    suffix = "-quick" if args.quick else ""
    corpus, model, info = prepare(args)
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    common = {"machine": machine(), "model": info, "quick": args.quick}
    if args.part in ("conditioned", "both"):
        began = time.perf_counter()
        out = {
            **common,
            **conditioned_part(args, corpus, model),
            "wall_seconds": time.perf_counter() - began,
        }
        (results / f"conditioned{suffix}.json").write_text(json.dumps(out, indent=1))
        for spec in out["specs"]:
            print(
                f"{spec['spec']:36s} train {spec['training_fraction_in_range']:.3f}  "
                f"<mol> {spec['unconditional']['success_rate']:.3f}  "
                + "  ".join(
                    f"{k[12:]} {v['success_rate']:.3f}"
                    for k, v in spec.items()
                    if k.startswith("conditioned_")
                )
            )
    if args.part in ("molopt", "both"):
        began = time.perf_counter()
        out = {
            **common,
            **molopt_part(args, corpus, model),
            "wall_seconds": time.perf_counter() - began,
        }
        (results / f"molopt{suffix}.json").write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
