"""Start-up time of the CLI: ``kiban --help`` against ``import torch`` and ``import
transformers``' Llama class (what a command that trains pays), medians of ``--repeats`` runs.

    .venv/bin/python benchmarks/bench_startup.py
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
KIBAN = Path(sys.executable).with_name("kiban")

COMMANDS = {
    "kiban --help": [str(KIBAN), "--help"],
    "kiban train --help": [str(KIBAN), "train", "--help"],
    "kiban generate --help": [str(KIBAN), "generate", "--help"],
    "python -c 'import torch'": [sys.executable, "-c", "import torch"],
    "python -c 'from transformers import LlamaForCausalLM'": [
        sys.executable,
        "-c",
        "from transformers import LlamaForCausalLM",
    ],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", default=str(HERE / "results" / "startup.json"))
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.repeats):
        for name, command in COMMANDS.items():  # interleaved
            began = time.perf_counter()
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
            times[name].append(time.perf_counter() - began)
    result = {
        name: {"median_s": statistics.median(v), "max_s": max(v)} for name, v in times.items()
    }
    Path(args.out).write_text(json.dumps(result, indent=1))
    for name, row in result.items():
        print(f"{name:55s} {row['median_s']:.3f} s (max {row['max_s']:.3f})")


if __name__ == "__main__":
    main()
