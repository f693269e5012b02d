"""Molecular property prediction: a fine-tuned kiban LM vs a random forest on Morgan fingerprints.

    .venv/bin/python benchmarks/bench_properties.py                 # 3 seeds, LOGS/Lipo/BBBP/BACE
    .venv/bin/python benchmarks/bench_properties.py --quick         # 1 seed, LOGS + BBBP, tiny runs
    .venv/bin/python benchmarks/bench_properties.py --datasets hiv --hiv-limit 4000
    .venv/bin/python benchmarks/bench_properties.py --datasets b3db-regression \
        b3db-classification hiv --hiv-limit 0 --out benchmarks/results/properties-lm-hiv-b3db.json

Stages (the first two are cached in --work and reused by later runs with the same settings):
1. a pre-training corpus from MOSES *train* only (molsets): ``--pretrain-molecules`` molecules
   written as "<mol>S</mol> has QED q, logP l, molecular weight m and TPSA t" (RDKit-computed
   values, the demo corpus's template) -- no measured property of any benchmark set is in it;
2. a llama-1m kiban model pre-trained on it for ``--pretrain-steps`` steps;
3. for each dataset and seed: chemprop's scaffold_balanced split (80/10/10), a random forest on
   Morgan fingerprints (radius 2, 2048 bits), and the kiban model fine-tuned on the training part
   and scored on the test part (RMSE / ROC-AUC). The validation part is not used by either model
   (fixed hyper-parameters, no early stopping).

Writes benchmarks/results/properties.json (properties-quick.json with --quick).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kiban.tasks.molecules.properties import (  # noqa: E402
    METRIC,
    LMSettings,
    evaluate_split,
    load_dataset,
    scaffold_split,
    summarize_runs,
)

PRETRAIN_TEMPLATE = (
    "<mol>{SMILES}</mol> has QED <num>{qed}</num>, logP <num>{logp}</num>, "
    "molecular weight <num>{mw} g/mol</num> and TPSA <num>{tpsa} Å²</num>."
)


def build_pretraining_corpus(out: Path, molecules: int) -> dict:
    from kiban.corpus.build import BuildConfig, build_corpus
    from kiban.corpus.readers import SourceSpec

    source = SourceSpec(
        path="dataset/data/train.csv.gz",
        package="moses",
        name="moses-train",
        license="MIT",
        limit=molecules,
        columns={"SMILES": "mol"},
        properties=("qed", "logp", "mw", "tpsa"),
        template=PRETRAIN_TEMPLATE,
    )
    config = BuildConfig(sources=(source,), dedup="exact", vocab_size=2000, min_frequency=2)
    return build_corpus(config, out, workers=1)


def pretrain_base(corpus: Path, out: Path, steps: int, seed: int) -> dict:
    from kiban.train.config import DataConfig, ModelConfig, OptimConfig, RunConfig, TrainConfig
    from kiban.train.run import pretrain

    summary_path = out / "summary.json"
    if summary_path.is_file():
        summary = json.loads(summary_path.read_text())
        if summary.get("steps") == steps:
            return summary
    shutil.rmtree(out, ignore_errors=True)  # another step count, or a run that was stopped
    config = RunConfig(
        out=str(out),
        model=ModelConfig(preset="llama-1m"),
        data=DataConfig(corpus=str(corpus), seq_len=128, validation_fraction=0.01, seed=seed),
        optim=OptimConfig(lr=3e-3, warmup_steps=10),
        train=TrainConfig(
            max_steps=steps,
            batch_size=16,
            micro_batch_size=16,
            seed=seed,
            eval_every=0,
            checkpoint_every=0,
            log_every=10,
            progress=False,
        ),
    )
    return pretrain(config)


def overlap_with_corpus(corpus_smiles: set[str], smiles: list[str]) -> int:
    return sum(s in corpus_smiles for s in smiles)


def moses_canonical(molecules: int) -> set[str]:
    from kiban.chem import canonical_or_none
    from kiban.data import moses_smiles

    canonical = (canonical_or_none(smiles) for smiles in moses_smiles("train", molecules))
    return {smiles for smiles in canonical if smiles is not None}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--datasets", nargs="+", default=None)
    parser.add_argument("--seeds", type=int, default=None, help="seeds 0..N-1")
    parser.add_argument("--trees", type=int, default=None)
    parser.add_argument("--finetune-steps", type=int, default=None)
    parser.add_argument("--finetune-batch", type=int, default=16)
    parser.add_argument("--finetune-lr", type=float, default=2e-3)
    parser.add_argument("--pretrain-molecules", type=int, default=None)
    parser.add_argument("--pretrain-steps", type=int, default=None)
    parser.add_argument(
        "--hiv-limit",
        type=int,
        default=4000,
        help="random subsample of HIV before the split; 0: all 41,120",
    )
    parser.add_argument("--rf-jobs", type=int, default=1, help="forest worker threads")
    parser.add_argument("--no-lm", action="store_true", help="random forest only")
    parser.add_argument("--no-rf", action="store_true", help="language model only")
    parser.add_argument("--work", default="/tmp/kiban-bench-properties")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.no_lm and args.no_rf:
        parser.error("--no-lm and --no-rf leave nothing to run")
    quick = args.quick
    datasets = args.datasets or (
        ["logs", "bbbp"] if quick else ["logs", "lipophilicity", "bbbp", "bace"]
    )
    seeds = list(range(args.seeds or (1 if quick else 3)))
    trees = args.trees or (50 if quick else 100)
    finetune_steps = args.finetune_steps or (20 if quick else 50)
    pretrain_molecules = args.pretrain_molecules or (2000 if quick else 10000)
    pretrain_steps = args.pretrain_steps or (20 if quick else 100)
    out_path = (
        Path(args.out)
        if args.out
        else ROOT
        / "benchmarks"
        / "results"
        / ("properties-quick.json" if quick else "properties.json")
    )
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    import torch

    load_start = os.getloadavg()
    started = time.perf_counter()
    result: dict = {
        "benchmark": "molecular property prediction: kiban LM vs random forest (Morgan)",
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_start": load_start,
        "quick": quick,
        "seeds": seeds,
        "split": "chemprop scaffold_balanced 80/10/10 (test part scored; validation unused)",
        "random_forest": {
            "features": "Morgan radius 2, 2048 bits (RDKit MorganGenerator)",
            "n_estimators": trees,
            "n_jobs": args.rf_jobs,
            "other": "scikit-learn defaults",
        },
        "lm": None,
        "datasets": {},
    }
    if args.no_rf:
        result["random_forest"] = None
    lm_base = None
    if not args.no_lm:
        t0 = time.perf_counter()
        corpus_dir = work / f"corpus-moses{pretrain_molecules}"
        manifest = build_pretraining_corpus(corpus_dir, pretrain_molecules)
        corpus_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        base_run = work / f"base-moses{pretrain_molecules}"
        summary = pretrain_base(corpus_dir, base_run, pretrain_steps, seed=0)
        lm_base = base_run / "model"
        corpus_smiles = moses_canonical(pretrain_molecules)
        result["lm"] = {
            "pretraining_corpus": f"MOSES train, first {pretrain_molecules} molecules, "
            "RDKit-computed QED/logP/MW/TPSA (no benchmark labels)",
            "corpus_documents": manifest.get("counts", {}).get(
                "documents", manifest.get("documents")
            ),
            "corpus_build_s": corpus_s,
            "pretrain_s": time.perf_counter() - t0,
            "pretrain_steps": pretrain_steps,
            "pretrain_batch": "16 x 128 tokens",
            "pretrain_final_loss": summary.get("loss"),
            "parameters": summary.get("parameters"),
            "finetune": {
                "steps": finetune_steps,
                "batch_size": args.finetune_batch,
                "lr": args.finetune_lr,
                "warmup_steps": 10,
                "seq_len": 256,
                "full fine-tuning": True,
            },
            "prediction": {
                "classification": "P('1') / (P('0') + P('1')) after ' <num>'",
                "regression": "greedy kiban.generate decoding inside <num>, parsed "
                "as float (unparsed -> training mean)",
            },
        }
    loaded = {}
    for name in datasets:
        t0 = time.perf_counter()
        dataset = load_dataset(name, limit=(args.hiv_limit or None) if name == "hiv" else None)
        loaded[name] = dataset
        entry = {
            "data": dataset.describe(),
            "load_s": time.perf_counter() - t0,
            "metric": METRIC[dataset.task],
            "runs": [],
        }
        if lm_base is not None:
            entry["test_molecules_in_pretraining_corpus"] = []
        result["datasets"][name] = entry
        print(f"[{name}] {len(dataset)} molecules, {len(dataset.bad_records)} bad rows", flush=True)
    # seed-major: every dataset gets seed 0 before any gets seed 1, so a run stopped early
    # still covers every dataset (the JSON is rewritten after each run, with what completed)
    for seed in seeds:
        for name in datasets:
            dataset, entry = loaded[name], result["datasets"][name]
            split = scaffold_split(dataset.molecules, seed=seed)
            if lm_base is not None:
                entry["test_molecules_in_pretraining_corpus"].append(
                    overlap_with_corpus(corpus_smiles, [dataset.smiles[i] for i in split.test])
                )
            settings = LMSettings(
                max_steps=finetune_steps, batch_size=args.finetune_batch, lr=args.finetune_lr
            )
            methods = [m for m, on in (("rf", not args.no_rf), ("lm", lm_base is not None)) if on]
            run = evaluate_split(
                dataset,
                split,
                seed=seed,
                methods=methods,
                trees=trees,
                n_jobs=args.rf_jobs,
                lm_base=lm_base,
                lm_settings=settings,
                work=work / f"ft-{name}-seed{seed}",
            )
            entry["runs"].append(run)
            print(
                f"[{name}] seed {seed}: "
                + ", ".join(
                    f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                    for k, v in run.items()
                    if k not in ("split",)
                ),
                flush=True,
            )
            entry.update(summarize_runs(entry["runs"]))
            write(out_path, result, started)
    write(out_path, result, started)
    print(f"wrote {out_path}")
    return 0


def write(path: Path, result: dict, started: float) -> None:
    from kiban.io import atomic_write_text

    result["wall_s"] = time.perf_counter() - started
    result["load_average_end"] = os.getloadavg()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(result, indent=1, default=float) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
