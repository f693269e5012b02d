"""``kiban eval moses SAMPLES_FILE`` and ``kiban report molecules MODEL_DIR``: parse, call one
library function of `kiban.tasks.molecules.evaluation`, print.

Handlers raise (``kiban.cli.main`` runs them through `kiban._cli.run_command`): bad input is a
`ValueError` (exit 2), a failed run a `RuntimeError` (exit 1). RDKit, numba and torch are
imported inside the handlers, so building the parser stays fast.
"""

from __future__ import annotations

import argparse
import json
import math


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Adds ``eval`` (with its ``moses`` subcommand) to the ``kiban`` subcommands."""
    parser = subparsers.add_parser(
        "eval",
        help="score a generator's samples on a benchmark",
        description="Score generated samples on a benchmark.",
    )
    benchmarks = parser.add_subparsers(dest="eval_command", required=True, metavar="BENCHMARK")
    moses = benchmarks.add_parser(
        "moses",
        help="MOSES distribution-learning metrics of generated SMILES",
        description="All MOSES metrics (validity, uniqueness, FCD, SNN, Frag, Scaf, IntDiv, "
        "filters, property distances, novelty) of a file with one SMILES per line, "
        "against the MOSES test and scaffold-test sets; novelty against MOSES train, or "
        "against your training set with --train. Invalid lines count as "
        "invalid molecules and are listed with file:line and the reason.",
    )
    moses.add_argument("samples", metavar="SAMPLES_FILE", help="one SMILES per line")
    moses.add_argument("--json", action="store_true", help="print the result as JSON")
    moses.add_argument(
        "--train",
        metavar="FILE",
        default=None,
        help="your training SMILES (.smi/.txt: one per line; .csv: a header and a 'smiles' "
        "column): novelty is measured against them instead of MOSES train, and the output "
        "names the file, its molecule count and sha256",
    )
    moses.add_argument(
        "--train-corpus",
        metavar="CORPUS_DIR",
        default=None,
        help="measure novelty against the molecules of the <mol> spans of a kiban corpus's "
        "documents (the corpus a model was trained on) instead of MOSES train",
    )
    moses.add_argument(
        "--train-column",
        metavar="COLUMN",
        default=None,
        help="the SMILES column of a --train CSV (default: the column named smiles)",
    )
    moses.add_argument(
        "--n-jobs",
        type=int,
        default=1,
        metavar="N",
        help="worker processes for the per-molecule RDKit work (default 1)",
    )
    moses.add_argument(
        "--device",
        default="cpu",
        help="torch device for ChemNet and fingerprint similarities (default cpu)",
    )
    moses.set_defaults(handler=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """0 when the metrics were computed (some may be None with a reason)."""
    if args.n_jobs < 1:
        raise ValueError(f"--n-jobs must be >= 1, got {args.n_jobs}")
    if args.train_column is not None and args.train is None:
        raise ValueError("--train-column names the SMILES column of --train FILE; add --train")
    from kiban.tasks.molecules.evaluation.moses import (
        evaluate_moses_file,
        read_training_corpus,
        read_training_set,
    )

    if args.train is not None and args.train_corpus is not None:
        raise ValueError(
            f"give one training set: --train {args.train} or --train-corpus {args.train_corpus}"
        )
    training = None
    if args.train is not None:
        training = read_training_set(
            args.train, smiles_column=args.train_column, n_jobs=args.n_jobs
        )
    elif args.train_corpus is not None:
        training = read_training_corpus(args.train_corpus, n_jobs=args.n_jobs)
    result = evaluate_moses_file(
        args.samples, n_jobs=args.n_jobs, device=args.device, training=training
    )
    payload = result.as_dict()
    if args.json:
        print(json.dumps(payload, indent=1, ensure_ascii=False, allow_nan=False))
        return 0
    print(
        f"MOSES metrics of {payload['source']}: {payload['n_samples']:,} samples, "
        f"{payload['n_valid']:,} valid"
    )
    for name, value in payload["metrics"].items():
        if value is None:
            print(f"  {name:<13} -       ({payload['not_computed'][name]})")
        else:
            print(f"  {name:<13} {value:.6f}" if math.isfinite(value) else f"  {name:<13} {value}")
    invalid = payload["invalid"]
    for example in invalid["examples"]:
        print(f"  invalid {example['where']}: {example['reason']}")
    if invalid["count"] > len(invalid["examples"]):
        print(f"  … and {invalid['count'] - len(invalid['examples']):,} more invalid samples")
    print("  " + _training_line(payload["training_set"]))
    print(f"  {payload['seconds']['total']:.1f} s")
    return 0


def _training_line(training: dict) -> str:
    """Which training set Novelty was measured against, so it is not read against another."""
    skipped = training["invalid"]["count"]
    line = (
        f"Novelty against {training['name']}: {training['path']} ({training['molecules']:,} "
        f"distinct molecules, sha256 {training['sha256'][:16]}…"
        + (f"; {skipped:,} line(s) that are not molecules skipped" if skipped else "")
        + ")"
    )
    for example in training["invalid"]["examples"][:3]:
        line += f"\n  not a training molecule {example['where']}: {example['reason']}"
    return line


def add_report_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Adds ``report`` (with its ``molecules`` subcommand) to the ``kiban`` subcommands."""
    parser = subparsers.add_parser(
        "report",
        help="an HTML report of a trained model",
        description="Write an HTML report computed on this run.",
    )
    kinds = parser.add_subparsers(dest="report_command", required=True, metavar="KIND")
    molecules = kinds.add_parser(
        "molecules",
        help="sample molecules, evaluate them, trace them to the corpus",
        description="Sample molecules from MODEL_DIR (--prompt, default <mol>), measure validity, "
        "uniqueness, novelty, diversity and property distributions against the "
        "corpus's molecules, trace a few to their training documents (the corpus "
        "must be indexed), and write an HTML page with plots and RDKit drawings "
        "plus a JSON file of the numbers. The corpus is checked against the one the model "
        "was trained on (the sha256 of its documents table, which kiban train records): "
        "another corpus gets a warning (an error with --strict).",
    )
    molecules.add_argument("model", metavar="MODEL_DIR")
    molecules.add_argument("--corpus", required=True, help="the corpus the model was trained on")
    molecules.add_argument("--out", required=True, help="HTML file to write (and .json beside)")
    molecules.add_argument("--n", type=int, default=1000, help="molecules to sample")
    molecules.add_argument("--temperature", type=float, default=1.0)
    molecules.add_argument("--seed", type=int, default=0)
    molecules.add_argument("--json", action="store_true", help="print the numbers as JSON")
    molecules.add_argument(
        "--prompt", default="<mol>", help="the prompt to sample with (default <mol>)"
    )
    molecules.add_argument(
        "--title", default=None, help="the report's title (default: the model and corpus names)"
    )
    molecules.add_argument(
        "--strict",
        action="store_true",
        help="refuse (exit 2) when --corpus is not the model's recorded training corpus, or "
        "the model records none",
    )
    molecules.set_defaults(handler=run_report)
    return parser


def run_report(args: argparse.Namespace) -> int:
    if args.n < 1:
        raise ValueError(f"--n must be >= 1, got {args.n}")
    import sys

    from kiban.tasks.molecules.evaluation.report import molecule_report

    values = molecule_report(
        args.model,
        args.corpus,
        args.out,
        n=args.n,
        temperature=args.temperature,
        seed=args.seed,
        prompt=args.prompt,
        title=args.title,
        strict=args.strict,
    )
    check = values["training_corpus"]
    if check["status"] == "mismatch":
        print(f"warning: {check['message']}", file=sys.stderr)
    elif check["status"] == "unknown":
        print(f"note: {check['message']}", file=sys.stderr)
    if args.json:
        print(json.dumps({k: v for k, v in values.items() if k != "traces"}, indent=1))
    else:
        print(
            f"{args.n} samples: valid {values['valid']:.3f}, unique {_or(values['unique'])}, "
            f"novel {_or(values['novel'])}; report in {args.out}"
        )
    return 0


def _or(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"
