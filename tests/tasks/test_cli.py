"""Tests for kiban/tasks/cli.py: ``kiban eval moses`` and ``kiban report molecules``."""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import sys

import pytest

if importlib.util.find_spec("moses") is None or importlib.util.find_spec("fcd_torch") is None:
    pytest.skip("molsets (data-only) and fcd_torch are needed", allow_module_level=True)

from kiban.tasks import cli  # noqa: E402
from kiban.tasks.molecules.evaluation import METRIC_NAMES  # noqa: E402


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kiban")
    cli.add_parser(parser.add_subparsers(dest="command", required=True))
    return parser


def test_cli_json_shape(tmp_path, capsys):
    path = tmp_path / "samples.smi"
    path.write_text("CCO\nc1ccccc1O\nC1CC\n", encoding="utf-8")
    args = _parser().parse_args(["eval", "moses", str(path), "--json", "--n-jobs", "1"])
    assert args.handler(args) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["format"] == "kiban.moses_result" and payload["version"] == 1
    assert list(payload["metrics"]) == list(METRIC_NAMES)
    assert payload["n_samples"] == 3 and payload["n_valid"] == 2
    assert payload["metrics"]["valid"] == pytest.approx(2 / 3)
    # ethanol and phenol have no two-ring scaffold
    assert set(payload["not_computed"]) == {
        "unique@1000",
        "unique@10000",
        "Scaf/Test",
        "Scaf/TestSF",
    }
    assert payload["invalid"]["count"] == 1
    assert payload["invalid"]["examples"][0]["where"] == f"{path}:3"
    assert all(math.isfinite(v) for v in payload["metrics"].values() if v is not None)

    args = _parser().parse_args(["eval", "moses", str(path)])
    assert args.handler(args) == 0
    text = capsys.readouterr().out
    assert "unique@10000  -       (needs at least 10,000 valid molecules, got 2)" in text
    assert f"invalid {path}:3: not a valid SMILES" in text


def test_cli_errors_are_one_line_with_exit_2(tmp_path, capsys):
    from kiban.cli import main

    assert main(["eval", "moses", str(tmp_path / "nope.smi")]) == 2
    assert capsys.readouterr().err == (
        f"kiban eval moses: error: samples file "
        f"{tmp_path / 'nope.smi'} does not exist or is not a file\n"
    )
    assert main(["eval", "moses", str(tmp_path), "--n-jobs", "0"]) == 2
    assert capsys.readouterr().err == "kiban eval moses: error: --n-jobs must be >= 1, got 0\n"
    assert (
        main(
            [
                "report",
                "molecules",
                str(tmp_path),
                "--corpus",
                str(tmp_path),
                "--out",
                str(tmp_path / "r.html"),
                "--n",
                "0",
            ]
        )
        == 2
    )
    assert capsys.readouterr().err == "kiban report molecules: error: --n must be >= 1, got 0\n"
    with pytest.raises(SystemExit):
        _parser().parse_args(["eval", "moses"])


def test_kiban_help_stays_light():
    import subprocess

    code = (
        "import sys, argparse; from kiban.tasks import cli; p = argparse.ArgumentParser(); "
        "cli.add_parser(p.add_subparsers()); "
        "print(sorted(m for m in ('rdkit', 'torch', 'numba') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
