"""``kiban eval moses SAMPLES_FILE``: parse, call `evaluate_moses_file`, print.

RDKit, numba and torch are imported inside `run`, so building the parser stays fast.
"""

from __future__ import annotations

import argparse
import json
import math
import sys


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Adds ``eval`` (with its ``moses`` subcommand) to the ``kiban`` subcommands."""
    parser = subparsers.add_parser("eval", help="score a generator's samples on a benchmark",
                                   description="Score generated samples on a benchmark.")
    benchmarks = parser.add_subparsers(dest="eval_command", required=True, metavar="BENCHMARK")
    moses = benchmarks.add_parser(
        "moses", help="MOSES distribution-learning metrics of generated SMILES",
        description="All MOSES metrics (validity, uniqueness, FCD, SNN, Frag, Scaf, IntDiv, "
                    "filters, property distances, novelty) of a file with one SMILES per line, "
                    "against the MOSES test and scaffold-test sets. Invalid lines count as "
                    "invalid molecules and are listed with file:line and the reason.")
    moses.add_argument("samples", metavar="SAMPLES_FILE", help="one SMILES per line")
    moses.add_argument("--json", action="store_true", help="print the result as JSON")
    moses.add_argument("--n-jobs", type=int, default=1, metavar="N",
                       help="worker processes for the per-molecule RDKit work (default 1)")
    moses.add_argument("--device", default="cpu",
                       help="torch device for ChemNet and fingerprint similarities (default cpu)")
    moses.set_defaults(handler=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """0 when the metrics were computed (some may be None with a reason); 1 on bad input."""
    if args.n_jobs < 1:
        print(f"kiban eval moses: error: --n-jobs must be >= 1, got {args.n_jobs}", file=sys.stderr)
        return 1
    from kiban.tasks.molecules.moses import evaluate_moses_file

    try:
        result = evaluate_moses_file(args.samples, n_jobs=args.n_jobs, device=args.device)
    except (FileNotFoundError, ValueError, RuntimeError) as error:
        print(f"kiban eval moses: error: {error}", file=sys.stderr)
        return 1
    payload = result.as_dict()
    if args.json:
        print(json.dumps(payload, indent=1, ensure_ascii=False, allow_nan=False))
        return 0
    print(f"MOSES metrics of {payload['source']}: {payload['n_samples']:,} samples, "
          f"{payload['n_valid']:,} valid")
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
    print(f"  {payload['seconds']['total']:.1f} s")
    return 0
