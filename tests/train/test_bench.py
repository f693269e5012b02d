"""The training benchmark runs end to end at tiny size (the same code measures MFU on GPUs)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_train.py"


def test_bench_train_quick(tmp_path):
    out = tmp_path / "train.json"
    result = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(out.read_text())
    assert set(report["tokens_per_s"]) == {"kiban", "plain", "trainer"}
    assert all(v > 0 for v in report["tokens_per_s"].values())
    assert 0 < report["mfu"]["kiban"] < 1
    assert report["kiban_over_plain"] > 0 and report["kiban_over_trainer"] > 0
