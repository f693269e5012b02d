"""kiban's MOSES metrics next to molsets' on the same samples file: JSON + markdown table.

    .venv/bin/python benchmarks/moses_parity/compare.py SAMPLES \
        --reference results/reference-X.json --out results/parity-X

Runs `kiban.tasks.molecules.evaluation.evaluate_moses_file` (same worker count as the reference run) and
writes PREFIX.json and PREFIX.md with, per metric, both values, |kiban - molsets| and whether it
is within the tolerance (1e-6), or kiban's reason when kiban declines to compute it.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import time
from pathlib import Path

from kiban.tasks.molecules.evaluation import METRIC_NAMES, evaluate_moses_file

TOLERANCE = 1e-6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("samples", type=Path)
    parser.add_argument("--reference", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="output prefix (no suffix)")
    args = parser.parse_args()

    reference = json.loads(args.reference.read_text(encoding="utf-8"))
    start = time.perf_counter()
    result = evaluate_moses_file(args.samples, n_jobs=reference["n_jobs"])
    seconds = time.perf_counter() - start

    rows = []
    for name in METRIC_NAMES:
        ours, theirs = result[name], reference["metrics"].get(name)
        difference = None if ours is None or theirs is None else abs(ours - theirs)
        rows.append(
            {
                "metric": name,
                "kiban": ours,
                "molsets": theirs,
                "abs_diff": difference,
                "within_tolerance": difference is not None and difference <= TOLERANCE,
                "kiban_reason": result.reasons.get(name),
            }
        )
    versions = {
        name: importlib.metadata.version(name)
        for name in ("rdkit", "torch", "numpy", "scipy", "numba", "fcd_torch", "molsets")
    }
    payload = {
        "samples": str(args.samples),
        "n_samples": result.n_samples,
        "n_valid": result.n_valid,
        "tolerance": TOLERANCE,
        "n_jobs": reference["n_jobs"],
        "wall_seconds": {"kiban": seconds, "molsets": reference["wall_seconds"]},
        "kiban_stage_seconds": dict(result.timings),
        "rows": rows,
        "versions": {"kiban_env": versions, "reference_env": reference["versions"]},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    args.out.with_suffix(".md").write_text(markdown(payload), encoding="utf-8")
    print(markdown(payload))


def _cell(value) -> str:
    return "—" if value is None else f"{value:.10f}"


def markdown(payload: dict) -> str:
    wall = payload["wall_seconds"]
    lines = [
        f"Samples `{payload['samples']}`: {payload['n_samples']:,} lines, "
        f"{payload['n_valid']:,} valid; {payload['n_jobs']} worker processes.",
        "",
        "| metric | kiban | molsets | abs diff | ≤ 1e-6 |",
        "|---|---:|---:|---:|:---:|",
    ]
    for row in payload["rows"]:
        diff = "—" if row["abs_diff"] is None else f"{row['abs_diff']:.1e}"
        ok = (
            "yes"
            if row["within_tolerance"]
            else f"no: {row['kiban_reason']}"
            if row["kiban_reason"]
            else "no"
        )
        lines.append(
            f"| {row['metric']} | {_cell(row['kiban'])} | {_cell(row['molsets'])} | {diff} | {ok} |"
        )
    lines += [
        "",
        f"Wall time: kiban {wall['kiban']:.1f} s, molsets {wall['molsets']:.1f} s "
        f"(molsets / kiban = {wall['molsets'] / wall['kiban']:.2f}).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
