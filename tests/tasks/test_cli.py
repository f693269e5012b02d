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
    assert payload["format"] == "kiban.moses_result" and payload["version"] == 2
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
    assert "  Novelty against MOSES train: " in text and "1,584,663 distinct molecules" in text
    assert payload["training_set"]["name"] == "MOSES train"


def test_cli_train_measures_novelty_against_the_users_training_set(tmp_path, capsys):
    import hashlib

    from rdkit import Chem

    samples = tmp_path / "samples.smi"
    samples.write_text("CCO\nc1ccccc1O\nC1CC\nCCN\nNCC\nc1ccncc1\n", encoding="utf-8")
    train = tmp_path / "train.smi"
    train.write_text("OCC\nc1ccncc1 pyridine\nCC(=O)O\nbad\n", encoding="utf-8")
    args = _parser().parse_args(["eval", "moses", str(samples), "--train", str(train), "--json"])
    assert args.handler(args) == 0
    payload = json.loads(capsys.readouterr().out)

    def canonical(text):
        mol = Chem.MolFromSmiles(text)
        return None if mol is None else Chem.MolToSmiles(mol)

    generated = {canonical(s) for s in samples.read_text().split()} - {None}
    reference = {canonical(s) for s in ["OCC", "c1ccncc1", "CC(=O)O"]}
    # ethanol and pyridine are in the user's set; phenol and ethylamine are not
    assert payload["metrics"]["Novelty"] == len(generated - reference) / len(generated) == 2 / 4
    training = payload["training_set"]
    assert training["name"] == "your training set" and training["path"] == str(train)
    assert training["sha256"] == hashlib.sha256(train.read_bytes()).hexdigest()
    assert (training["molecules"], training["lines"], training["invalid"]["count"]) == (3, 4, 1)

    args = _parser().parse_args(["eval", "moses", str(samples), "--train", str(train)])
    assert args.handler(args) == 0
    text = capsys.readouterr().out
    assert "  Novelty       0.500000" in text
    assert (
        f"  Novelty against your training set: {train} (3 distinct molecules, sha256 "
        f"{training['sha256'][:16]}…; 1 line(s) that are not molecules skipped)\n"
        f"  not a training molecule {train}:4: not a valid SMILES: " in text
    )


def test_cli_train_corpus_measures_novelty_against_the_corpus_molecules(tmp_path, capsys):
    import hashlib

    from kiban.corpus import BuildConfig, SourceSpec, build_corpus
    from kiban.corpus.store import Corpus

    corpus_smiles = ["OCC", "c1ccncc1", "CC(=O)O", "CCCl", "O=C=O"]
    docs = tmp_path / "docs.jsonl"
    docs.write_text(
        "".join(
            json.dumps({"text": f"Compound {i}: <mol>{s}</mol>, also <mol>CCCl</mol>."}) + "\n"
            for i, s in enumerate(corpus_smiles)
        )
    )
    build_corpus(
        BuildConfig(sources=(SourceSpec(path=str(docs)),), vocab_size=300), tmp_path / "corpus"
    )
    samples = tmp_path / "samples.smi"
    samples.write_text("CCO\nc1ccccc1O\nClCC\nCCN\n", encoding="utf-8")
    argv = ["eval", "moses", str(samples), "--train-corpus", str(tmp_path / "corpus"), "--json"]
    args = _parser().parse_args(argv)
    assert args.handler(args) == 0
    payload = json.loads(capsys.readouterr().out)
    # ethanol and chloroethane are in the corpus; phenol and ethylamine are not
    assert payload["metrics"]["Novelty"] == 2 / 4
    training = payload["training_set"]
    assert training["name"] == "your corpus's <mol> spans"
    assert (training["molecules"], training["lines"], training["invalid"]["count"]) == (5, 10, 0)
    documents = Corpus(tmp_path / "corpus").documents_path
    assert training["sha256"] == hashlib.sha256(documents.read_bytes()).hexdigest()


def test_cli_errors_are_one_line_with_exit_2(tmp_path, capsys):
    from kiban.cli import main

    assert main(["eval", "moses", str(tmp_path / "nope.smi")]) == 2
    assert capsys.readouterr().err == (
        f"kiban eval moses: error: samples file "
        f"{tmp_path / 'nope.smi'} does not exist or is not a file\n"
    )
    assert main(["eval", "moses", str(tmp_path), "--n-jobs", "0"]) == 2
    assert capsys.readouterr().err == "kiban eval moses: error: --n-jobs must be >= 1, got 0\n"
    samples = tmp_path / "s.smi"
    samples.write_text("CCO\n")
    assert main(["eval", "moses", str(samples), "--train", str(tmp_path / "t.smi")]) == 2
    assert capsys.readouterr().err == (
        f"kiban eval moses: error: training set {tmp_path / 't.smi'} does not exist or is "
        f"not a file\n"
    )
    both = ["--train", str(samples), "--train-corpus", str(tmp_path)]
    assert main(["eval", "moses", str(samples), *both]) == 2
    assert capsys.readouterr().err == (
        f"kiban eval moses: error: give one training set: --train {samples} or "
        f"--train-corpus {tmp_path}\n"
    )
    assert main(["eval", "moses", str(samples), "--train-column", "smiles"]) == 2
    assert capsys.readouterr().err == (
        "kiban eval moses: error: --train-column names the SMILES column of --train FILE; "
        "add --train\n"
    )
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
