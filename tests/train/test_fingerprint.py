"""`kiban.train.fingerprint`: what a checkpoint records of its data, and the words `--resume`
uses when the data changed (end-to-end refusals are in test_checkpoint.py)."""

from __future__ import annotations

import json
from pathlib import Path

from kiban.train.fingerprint import corpus_fingerprint, data_change, examples_fingerprint

SHA_A, SHA_B = "a" * 64, "b" * 64


class FakeCorpus:
    """What `corpus_fingerprint` reads of a `Corpus`: its directory and manifest."""

    def __init__(self, directory: Path, manifest: dict):
        self.directory, self.manifest = directory, manifest


def corpus(tmp_path: Path, tokenizer_text: str = "{}", **manifest) -> dict:
    (tmp_path / "tokenizer").mkdir(exist_ok=True)
    (tmp_path / "tokenizer" / "tokenizer.json").write_text(tokenizer_text)
    fields = {
        "documents": 3,
        "tokens": 30,
        "shards": 2,
        "tokenizer_sha256": SHA_A,
        "config": {"sha256": "not compared"},
        **manifest,
    }
    return corpus_fingerprint(
        FakeCorpus(tmp_path, fields), shard_documents=[2, 1], shard_tokens=[20, 10]
    )


def test_a_corpus_fingerprint_holds_tokenizer_files_counts_and_manifest_checksums(tmp_path):
    found = corpus(
        tmp_path,
        shard_files=[
            {"name": "tokens-000000.bin", "sha256": SHA_A},
            {"name": "tokens-000001.bin", "sha256": SHA_B},
        ],
    )
    assert found == {
        "kind": "corpus",
        "path": str(tmp_path),
        "tokenizer": {
            "tokenizer.json": "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        },
        "contents": {
            "documents": 3,
            "tokens": 30,
            "shards": [{"documents": 2, "tokens": 20}, {"documents": 1, "tokens": 10}],
            "checksums": {"shard_files.0.sha256": SHA_A, "shard_files.1.sha256": SHA_B},
        },
    }
    assert json.loads(json.dumps(found)) == found


def test_the_same_data_and_an_old_checkpoint_pass(tmp_path):
    assert data_change(corpus(tmp_path), corpus(tmp_path), checkpoint="step-4") is None
    assert data_change(None, corpus(tmp_path), checkpoint="step-4") is None
    moved = {**corpus(tmp_path), "path": "/elsewhere"}  # a moved corpus is the same corpus
    assert data_change(moved, corpus(tmp_path), checkpoint="step-4") is None


def test_a_changed_tokenizer_is_named_before_the_contents(tmp_path):
    saved = corpus(tmp_path)
    now = corpus(tmp_path, tokenizer_text='{"other": 1}', documents=4)
    message = data_change(saved, now, checkpoint="step-4")
    assert message.startswith(
        f"the tokenizer of {tmp_path} changed since checkpoint step-4 "
        "(tokenizer.tokenizer.json: 44136fa355b3… then, "
    )
    assert message.endswith(
        "its token ids are not the ones the model learned. Rebuild the data "
        "with the run's tokenizer, or start a new run (another --out) on "
        "the new data"
    )


def test_changed_contents_name_the_first_difference(tmp_path):
    saved = corpus(tmp_path, shard_files=[{"sha256": SHA_A}])
    now = corpus(tmp_path, shard_files=[{"sha256": SHA_B}])
    assert data_change(saved, now, checkpoint="step-4") == (
        f"the contents of {tmp_path} changed since checkpoint step-4 (contents.checksums."
        "shard_files.0.sha256: aaaaaaaaaaaa… then, bbbbbbbbbbbb… now), with the same "
        "tokenizer: resuming would continue on other data than the run trained on. Restore the "
        "data the run used, or start a new run (another --out)"
    )
    fewer = {**saved, "contents": {**saved["contents"], "shards": saved["contents"]["shards"][:1]}}
    assert "(contents.shards: 2 entries then, 1 entries now)" in data_change(
        saved, fewer, checkpoint="step-4"
    )


def test_fine_tuning_data_is_compared_by_content_not_path(tmp_path):
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    first.write_text('{"prompt": "p", "completion": "c"}\n')
    second.write_text('{"prompt": "p", "completion": "c"}\n')
    saved = examples_fingerprint(
        [first], examples=1, tokenizer_directory=None, tokenizer_fingerprint=SHA_A
    )
    moved = examples_fingerprint(
        [second], examples=1, tokenizer_directory=None, tokenizer_fingerprint=SHA_A
    )
    assert data_change(saved, moved, checkpoint="step-2") is None
    second.write_text('{"prompt": "p", "completion": "d"}\n')
    edited = examples_fingerprint(
        [second], examples=1, tokenizer_directory=None, tokenizer_fingerprint=SHA_A
    )
    assert data_change(saved, edited, checkpoint="step-2").startswith(
        f"the contents of {second} changed since checkpoint step-2 (contents.files_sha256[0]: "
    )
    assert data_change(saved, {**saved, "kind": "corpus", "path": "c"}, checkpoint="step-2") == (
        f"checkpoint step-2 trained on examples {first}, this run reads corpus c: start a new "
        "run (another --out)"
    )
