"""``kiban design CONFIG.toml [--out DIR]``: read the TOML, call
`kiban.tasks.molecules.design.campaign.run_design`, print where the results are.

Handlers raise (``kiban.cli.main`` runs them through `kiban._cli.run_command`): a bad config is
an `InputError` (exit 2), a run that scores nothing a `RuntimeError` (exit 1).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "design",
        help="goal-directed molecule design from a scoring TOML (graph GA or REINVENT-style)",
        description="Optimise molecules against a REINVENT 4-like scoring function "
        "([[scoring.component]]: qed, sa, similarity, alerts, custom_alerts, lipinski, "
        "property) with the graph GA or the prior-anchored REINVENT-style loop on a kiban "
        "model, at a fixed oracle budget. Writes ranked.csv, summary.json, report.html and "
        "config.toml into --out. See docs/design.md.",
    )
    parser.add_argument("config", metavar="CONFIG.toml")
    parser.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help="results directory (default out/design/<config name>)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace --out if it exists and is not empty"
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.set_defaults(handler=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from kiban.tasks.molecules.design.campaign import read_config, run_design

    config = read_config(args.config)
    out = Path(args.out) if args.out else Path("out/design") / Path(args.config).stem

    def progress(update: dict) -> None:
        print(
            f"round {update['rounds']}: {update['calls']} calls, best {update['best']:.3f}",
            file=sys.stderr,
        )

    result = run_design(config, out, overwrite=args.overwrite, progress=progress)
    summary = result.summary
    if args.json:
        print(json.dumps(summary, indent=1))
        return 0
    print(
        f"{summary['algorithm']}: {summary['oracle_calls']:,} oracle calls of "
        f"{summary['budget']:,} in {summary['seconds']:.1f} s; best {summary['top1']:.3f}, "
        f"top-10 mean {summary['top10_mean']:.3f}, top-10 AUC {summary['top10_auc']:.3f}"
    )
    for i, best in enumerate(summary["best"], start=1):
        print(f"  {i}. {best['score']:.3f}  {best['smiles']}")
    print(f"results in {result.out}/ (ranked.csv, summary.json, report.html)")
    return 0
