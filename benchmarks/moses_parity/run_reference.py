"""Runs molsets' own `moses.get_all_metrics` on a samples file (in the reference venv).

    .venv-moses-ref/bin/python benchmarks/moses_parity/run_reference.py SAMPLES --out JSON

Reads the file exactly as `kiban eval moses` does (one sample per line, surrounding whitespace
stripped, a final newline ends the last line; every other line, blank ones included, is a
sample) and writes {metric: value} with the wall time and the package versions.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import time
import warnings
from pathlib import Path


def read_samples(path: Path) -> list[str]:
    text = path.read_bytes().decode("utf-8", errors="replace")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.strip() for line in lines]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("samples", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--n-jobs", type=int, default=2)
    args = parser.parse_args()

    # fcd_torch 1.0.7 calls torch.load(path) without weights_only; torch >= 2.6 defaults to True,
    # which reads ChemNet's plain tensors/dicts fine, so nothing is patched here.
    import moses
    import torch

    smiles = read_samples(args.samples)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        metrics = moses.get_all_metrics(smiles, n_jobs=args.n_jobs, device="cpu")
    seconds = time.perf_counter() - start
    values = {
        name: (
            None
            if value is None or (isinstance(value, float) and math.isnan(value))
            else float(value)
        )
        for name, value in metrics.items()
    }
    versions = {
        name: importlib.metadata.version(name)
        for name in ("molsets", "fcd_torch", "rdkit", "torch", "numpy", "pandas", "scipy")
    }
    payload = {
        "samples": str(args.samples),
        "n_samples": len(smiles),
        "n_jobs": args.n_jobs,
        "torch_threads": torch.get_num_threads(),
        "wall_seconds": seconds,
        "metrics": values,
        "versions": versions,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(payload, indent=1))


if __name__ == "__main__":
    main()
