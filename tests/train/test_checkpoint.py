"""`kiban.train.checkpoint`: checksummed files refused by name when damaged, the metadata
format versioned (files written before formats were recorded still read), and ``--resume``
refusing data that changed under the run (`kiban.train.fingerprint`)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from .conftest import run_kiban, write_config

pytest.importorskip("torch")
pytest.importorskip("transformers")

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def finished(tiny_corpus, tmp_path_factory) -> Path:
    """A 4-step run with checkpoints at steps 2 and 4."""
    root = tmp_path_factory.mktemp("finished")
    config = write_config(
        root / "run.toml",
        tiny_corpus,
        root / "run",
        train={"max_steps": 4, "checkpoint_every": 2, "eval_every": 0},
    )
    result = run_kiban("train", str(config))
    assert result.returncode == 0, result.stderr
    return root


def copy_run(finished: Path, tmp_path: Path) -> tuple[Path, Path]:
    """(config, run directory) of a copy of the finished run, its config pointing at the copy."""
    shutil.copytree(finished / "run", tmp_path / "run")
    config = (
        (finished / "run.toml").read_text().replace(str(finished / "run"), str(tmp_path / "run"))
    )
    (tmp_path / "run.toml").write_text(config)
    return tmp_path / "run.toml", tmp_path / "run"


def test_meta_records_format_sizes_checksums_and_data(finished):
    from kiban.io import file_sha256

    step = finished / "run" / "checkpoints" / "step-00000004"
    meta = json.loads((step / "meta.json").read_text())
    assert (meta["format"], meta["version"], meta["step"], meta["world"]) == (
        "kiban.checkpoint",
        2,
        4,
        1,
    )
    assert (
        sorted(meta["sha256"])
        == sorted(meta["files"])
        == ["rng-0.pt", "state/.metadata", "state/__0_0.distcp", "trainer.pt"]
    )
    assert meta["sha256"]["trainer.pt"] == file_sha256(step / "trainer.pt")
    assert meta["data"]["kind"] == "corpus"
    assert meta["data"]["contents"]["shards"] == [{"documents": 600, "tokens": 38843}]


def test_flipped_bytes_are_refused_naming_the_file_and_the_fallback(finished, tmp_path):
    config, out = copy_run(finished, tmp_path)
    step = out / "checkpoints" / "step-00000004"
    state = step / "state" / "__0_0.distcp"
    damaged = bytearray(state.read_bytes())
    for offset in range(4000, 4008):  # 8 bytes inside the weights: same size, other values
        damaged[offset] ^= 0xFF
    state.write_bytes(bytes(damaged))
    result = run_kiban("train", str(config), "--resume")
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"kiban train: error: {state}: its SHA-256 is ")
    assert result.stderr.endswith(
        f"when it was saved: the file is damaged; delete {step} to "
        f"resume from {out / 'checkpoints' / 'step-00000002'}\n"
    )


def test_the_oldest_damaged_checkpoint_says_there_is_no_fallback(finished, tmp_path):
    from kiban.train.checkpoint import CheckpointError, verify

    _, out = copy_run(finished, tmp_path)
    shutil.rmtree(out / "checkpoints" / "step-00000004")
    step = out / "checkpoints" / "step-00000002"
    trainer = step / "trainer.pt"
    damaged = bytearray(trainer.read_bytes())
    damaged[len(damaged) // 2] ^= 0x01
    trainer.write_bytes(bytes(damaged))
    with pytest.raises(
        CheckpointError,
        match=f"no earlier checkpoint is kept: delete {step} and start the run again",
    ):
        verify(step, 1)


def test_version_1_metadata_reads_as_version_2():
    from kiban.train.checkpoint import CHECKPOINT, read_meta

    meta = read_meta(DATA / "checkpoint-meta-v1.json", CHECKPOINT)
    assert meta == {
        "format": "kiban.checkpoint",
        "version": 2,
        "step": 8,
        "world": 1,
        "files": {
            "rng-0.pt": 14363,
            "state/.metadata": 26397,
            "state/__0_0.distcp": 1151110,
            "trainer.pt": 1453,
        },
        "sha256": {},
        "data": None,
    }


def test_run_json_version_1_reads_as_version_2():
    from kiban.train.checkpoint import read_meta
    from kiban.train.loop import RUN

    meta = read_meta(DATA / "run-v1.json", RUN)
    assert (meta["version"], meta["data_fingerprint"], meta["kind"]) == (2, None, "pretraining")


def test_a_newer_checkpoint_format_is_refused(tmp_path):
    from kiban.train.checkpoint import CheckpointError, verify

    step = tmp_path / "checkpoints" / "step-00000003"
    step.mkdir(parents=True)
    (step / "meta.json").write_text(
        json.dumps({"format": "kiban.checkpoint", "version": 3, "step": 3, "world": 1, "files": {}})
    )
    with pytest.raises(
        CheckpointError,
        match=r"'kiban.checkpoint' version 3 was written by a "
        r"newer kiban; this one reads versions 1-2",
    ):
        verify(step, 1)


def test_a_checkpoint_written_before_checksums_still_resumes(finished, tmp_path):
    config, out = copy_run(finished, tmp_path)
    shutil.rmtree(out / "checkpoints" / "step-00000004")
    shutil.rmtree(out / "model")
    meta_path = out / "checkpoints" / "step-00000002" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({k: meta[k] for k in ("step", "world", "files")}))
    result = run_kiban("train", str(config), "--resume")
    assert result.returncode == 0, result.stderr
    assert "was written before checkpoints recorded their data" in result.stderr
    assert (out / "model" / "model.safetensors").is_file()


def _corpus(root: Path, documents, **options) -> Path:
    from corpus.helpers import write_jsonl

    from kiban.corpus import BuildConfig, SourceSpec, build_corpus

    source = write_jsonl(root / "docs.jsonl", documents)
    build_corpus(BuildConfig(sources=(SourceSpec(path=str(source)),), **options), root / "corpus")
    return root / "corpus"


def test_resume_refuses_a_corpus_rebuilt_with_another_tokenizer(finished, tmp_path):
    from corpus.helpers import prose_documents

    config, out = copy_run(finished, tmp_path)
    other = _corpus(tmp_path / "other", prose_documents(600, seed=3), vocab_size=320)
    result = run_kiban("train", str(config), "--resume", "--corpus", str(other))
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(
        f"kiban train: error: --resume: the tokenizer of {other} changed since checkpoint "
        f"{out / 'checkpoints' / 'step-00000004'} (tokenizer."
    )
    assert result.stderr.endswith(
        "its token ids are not the ones the model learned. Rebuild "
        "the data with the run's tokenizer, or start a new run "
        "(another --out) on the new data\n"
    )


def test_resume_refuses_a_corpus_with_other_documents(finished, tiny_corpus, tmp_path):
    from corpus.helpers import prose_documents

    config, out = copy_run(finished, tmp_path)
    other = _corpus(
        tmp_path / "other",
        prose_documents(600, seed=3)[:550],
        tokenizer=str(tiny_corpus / "tokenizer"),
    )
    result = run_kiban("train", str(config), "--resume", "--corpus", str(other))
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(
        f"kiban train: error: --resume: the contents of {other} changed since checkpoint "
        f"{out / 'checkpoints' / 'step-00000004'} (contents.documents: 600 then, 550 now), "
        "with the same tokenizer: resuming would continue on other data than the run trained "
        "on. Restore the data the run used, or start a new run (another --out)\n"
    )
