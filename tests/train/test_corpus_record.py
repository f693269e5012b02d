"""``kiban train`` records its corpus's identity (the documents table's sha256) in the model."""

from __future__ import annotations

import hashlib

from .conftest import write_config


def test_the_model_records_the_sha256_of_its_corpus_documents(tiny_corpus, tmp_path):
    from kiban.cli import main
    from kiban.corpus.store import documents_sha256
    from kiban.formats import read_json
    from kiban.train.loop import SUMMARY

    out = tmp_path / "run"
    config = write_config(tmp_path / "run.toml", tiny_corpus, out, train={"max_steps": 1})
    assert main(["train", str(config)]) == 0
    expected = hashlib.sha256((tiny_corpus / "documents.parquet").read_bytes()).hexdigest()
    assert documents_sha256(tiny_corpus) == expected
    assert read_json(out / "model" / "kiban_run.json", SUMMARY)["corpus_sha256"] == expected
    assert read_json(out / "summary.json", SUMMARY)["corpus_sha256"] == expected
