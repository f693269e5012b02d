"""`kiban report molecules`: every number recomputed independently on a tiny run."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

SMILES = [
    "CCO",
    "c1ccccc1",
    "CC(=O)O",
    "CCN",
    "CCCC",
    "O=C=O",
    "NCC(=O)O",
    "CC(C)O",
    "CCOC",
    "c1ccncc1",
    "CC(C)(C)O",
    "OCCO",
    "CC#N",
    "C1CCCCC1",
    "CC=O",
]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from kiban.corpus import BuildConfig, SourceSpec, build_corpus
    from kiban.index import build_index

    root = tmp_path_factory.mktemp("report")
    lines = [
        json.dumps({"text": f"<mol>{s}</mol> is molecule {i} of {j}."})
        for j in range(20)
        for i, s in enumerate(SMILES)
    ]
    (root / "docs.jsonl").write_text("\n".join(lines) + "\n")
    build_corpus(
        BuildConfig(sources=(SourceSpec(path=str(root / "docs.jsonl")),), vocab_size=300),
        root / "corpus",
    )
    build_index(root / "corpus")
    from kiban.train.config import config_from_dict
    from kiban.train.run import pretrain

    # a model trained briefly on the corpus: it writes mostly valid, mostly memorised SMILES
    pretrain(
        config_from_dict(
            {
                "out": str(root / "run"),
                "model": {
                    "preset": "llama-1m",
                    "hidden_size": 32,
                    "num_layers": 2,
                    "num_heads": 2,
                    "intermediate_size": 64,
                },
                "data": {"corpus": str(root / "corpus"), "seq_len": 32, "validation_fraction": 0.0},
                "optim": {"lr": 1e-2, "warmup_steps": 5},
                "train": {
                    "max_steps": 60,
                    "batch_size": 8,
                    "micro_batch_size": 8,
                    "eval_every": 0,
                    "checkpoint_every": 0,
                    "progress": False,
                    "log_every": 10,
                },
            }
        )
    )
    return root


def test_report_numbers_are_recomputable(run):
    from rdkit import Chem

    out = run / "report.html"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "kiban",
            "report",
            "molecules",
            str(run / "run" / "model"),
            "--corpus",
            str(run / "corpus"),
            "--out",
            str(out),
            "--n",
            "60",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    values = json.loads(out.with_suffix(".json").read_text())
    generated = values["generated"]
    assert len(generated) == 60
    canonical = []
    for text in generated:
        mol = Chem.MolFromSmiles(text) if text else None
        canonical.append(Chem.MolToSmiles(mol) if mol is not None and mol.GetNumAtoms() else None)
    valid = [c for c in canonical if c]
    assert values["valid"] == pytest.approx(len(valid) / 60)
    assert valid, "a constrained random model still writes some valid SMILES"
    unique = set(valid)
    assert values["unique"] == pytest.approx(len(unique) / len(valid))
    assert values["novel"] == pytest.approx(len(unique - set(SMILES)) / len(unique))
    assert values["training_molecules"] == len(SMILES)
    page = out.read_text()
    for heading in ("Corpus", "Model", "Generated molecules", "Where they come from"):
        assert f"<h2>{heading}</h2>" in page
    assert page.count("<svg") >= 3  # loss curve, property plots, molecule drawings
    assert values["traces"] and all(t["spans"] for t in values["traces"])
    for trace in values["traces"]:
        assert trace["nearest_training"] in SMILES


def test_report_errors(run, tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "kiban",
            "report",
            "molecules",
            str(tmp_path / "nope"),
            "--corpus",
            str(run / "corpus"),
            "--out",
            str(tmp_path / "r.html"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "no such directory" in result.stderr
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "kiban",
            "report",
            "molecules",
            str(run / "run" / "model"),
            "--corpus",
            str(run / "corpus"),
            "--out",
            str(tmp_path / "r.html"),
            "--n",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "--n must be >= 1" in result.stderr


def _report(run, corpus, out, capsys, *extra):
    from kiban.cli import main

    argv = ["report", "molecules", str(run / "run" / "model"), "--corpus", str(corpus)]
    code = main(argv + ["--out", str(out), "--n", "20", *extra])
    captured = capsys.readouterr()
    return code, captured.err


def test_report_labels_come_from_the_run(run, tmp_path, capsys):
    import hashlib

    out = tmp_path / "r.html"
    code, err = _report(run, run / "corpus", out, capsys, "--prompt", "<mol>C", "--title", "My run")
    assert code == 0 and err == ""
    values = json.loads(out.with_suffix(".json").read_text())
    documents = (run / "corpus" / "documents.parquet").read_bytes()
    assert values["training_corpus"]["status"] == "match"
    assert values["training_corpus"]["corpus_sha256"] == hashlib.sha256(documents).hexdigest()
    assert values["prompt"] == "<mol>C" and values["title"] == "My run"
    page = out.read_text()
    assert "<title>My run</title>" in page and "kiban demo" not in page
    assert "<code>&lt;mol&gt;C</code>" in page
    if "property_reference_molecules" in values:  # the corpus has 15 molecules, not 3,000
        assert values["property_reference_molecules"] == len(SMILES)
        assert f"generated vs {len(SMILES)} training molecules</h3>" in page
        assert "3,000" not in page


def test_report_warns_on_another_corpus_and_strict_refuses(run, tmp_path, capsys):
    from kiban.corpus import BuildConfig, SourceSpec, build_corpus
    from kiban.index import build_index

    docs = tmp_path / "other.jsonl"
    docs.write_text("".join(json.dumps({"text": f"<mol>{s}</mol> other."}) + "\n" for s in SMILES))
    build_corpus(BuildConfig(sources=(SourceSpec(path=str(docs)),), vocab_size=300), tmp_path / "c")
    build_index(tmp_path / "c")
    out = tmp_path / "r.html"
    code, err = _report(run, tmp_path / "c", out, capsys)
    assert code == 0
    assert err.startswith(f"warning: {tmp_path / 'c'} (documents sha256 ")
    assert f"is not the corpus {run / 'run' / 'model'} was trained on" in err
    assert json.loads(out.with_suffix(".json").read_text())["training_corpus"]["status"] == (
        "mismatch"
    )
    assert "<p class=warning><b>Warning:</b>" in out.read_text()
    strict_out = tmp_path / "strict.html"
    code, err = _report(run, tmp_path / "c", strict_out, capsys, "--strict")
    assert code == 2 and "drop --strict to write the report anyway" in err
    assert not strict_out.exists()


def test_report_on_a_model_without_a_corpus_record_notes_it(run, tmp_path, capsys):
    import shutil

    from kiban.formats import read_json, write_json
    from kiban.train.loop import SUMMARY

    model = tmp_path / "run" / "model"
    shutil.copytree(run / "run" / "model", model)
    record = read_json(model / "kiban_run.json", SUMMARY)
    del record["corpus_sha256"]  # as written by kiban before it recorded the corpus
    write_json(model / "kiban_run.json", SUMMARY, record)
    out = tmp_path / "r.html"
    from kiban.cli import main

    argv = ["report", "molecules", str(model), "--corpus", str(run / "corpus"), "--out", str(out)]
    assert main(argv + ["--n", "10"]) == 0
    err = capsys.readouterr().err
    assert err == (
        f"note: {model} does not record the corpus it was trained on (a run from before kiban "
        f"recorded it, a fine-tuned or a Hugging Face model): cannot check that "
        f"{run / 'corpus'} is it\n"
    )
    assert json.loads(out.with_suffix(".json").read_text())["training_corpus"]["status"] == (
        "unknown"
    )
