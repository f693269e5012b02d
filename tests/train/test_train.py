"""`kiban train`: a run end to end, kill -9 and resume, bad input, continued pre-training,
and DDP / FSDP2 under torchrun matching one process."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from corpus.helpers import KIBAN

from .conftest import run_kiban, torchrun, write_config

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def weights(model_dir: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(model_dir / "model.safetensors")


@pytest.fixture(scope="module")
def reference(tiny_corpus, tmp_path_factory) -> Path:
    """An uninterrupted 12-step run (checkpoints every 4)."""
    root = tmp_path_factory.mktemp("reference")
    config = write_config(
        root / "run.toml", tiny_corpus, root / "run", train={"max_steps": 12, "log_every": 1}
    )
    result = run_kiban("train", str(config), "--json")
    assert result.returncode == 0, result.stderr
    return root / "run"


def test_a_run_writes_metrics_checkpoints_and_a_transformers_model(reference):
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    records = metrics(reference)
    assert [r["step"] for r in records] == list(range(1, 13))
    assert all(r["tokens_per_s"] > 0 and np.isfinite(r["loss"]) for r in records)
    assert records[-1]["loss"] < records[0]["loss"] - 0.5  # it learns
    assert "val_loss" in records[3] and "val_loss" in records[-1] and "val_loss" not in records[0]
    assert (reference / "config.toml").is_file() and (reference / "config.json").is_file()
    assert sorted(p.name for p in (reference / "checkpoints").iterdir()) == [
        "latest",
        "step-00000008",
        "step-00000012",
    ]  # keep_checkpoints = 2
    summary = json.loads((reference / "summary.json").read_text())
    assert summary["steps"] == 12 and summary["parameters"]["total"] > 0
    model = AutoModelForCausalLM.from_pretrained(reference / "model")
    tokenizer = PreTrainedTokenizerFast.from_pretrained(reference / "model")
    ids = tokenizer("the molecule <mol>CCO</mol>", return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(ids).logits
    assert logits.shape[-1] == model.config.vocab_size >= tokenizer.vocab_size
    # the saved weights are the final checkpoint's: recompute the last validation loss
    assert model.config.num_hidden_layers == 2 and model.config.hidden_size == 32


def _train_until(config: Path, marker: Path, *extra: str) -> int:
    process = subprocess.Popen(
        [*KIBAN, "train", str(config), *extra], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 120
    try:
        while process.poll() is None:
            if marker.exists():
                process.send_signal(signal.SIGKILL)
                break
            assert time.monotonic() < deadline, f"training did not reach {marker}"
            time.sleep(0.001)
        process.wait(timeout=60)
        return process.returncode
    finally:
        if process.poll() is None:
            process.kill()
        process.stderr.close()


def test_kill_9_and_resume_reproduce_the_uninterrupted_run_bitwise(
    tiny_corpus, reference, tmp_path
):
    out = tmp_path / "run"
    config = write_config(
        tmp_path / "run.toml", tiny_corpus, out, train={"max_steps": 12, "log_every": 1}
    )
    status = _train_until(config, out / "checkpoints" / "step-00000004")
    assert status == -signal.SIGKILL
    assert not (out / "model").exists()
    result = run_kiban("train", str(config), "--resume")
    assert result.returncode == 0, result.stderr
    mine, theirs = metrics(out), metrics(reference)
    assert [r["step"] for r in mine] == list(range(1, 13))  # lines past the checkpoint replaced
    for a, b in zip(mine, theirs):
        assert (a["loss"], a["lr"], a["grad_norm"], a.get("val_loss")) == (
            b["loss"],
            b["lr"],
            b["grad_norm"],
            b.get("val_loss"),
        )
    ours, reference_weights = weights(out / "model"), weights(reference / "model")
    assert all(np.array_equal(ours[k], reference_weights[k]) for k in reference_weights)


def test_sigterm_saves_and_resume_finishes_identically(tiny_corpus, reference, tmp_path):
    out = tmp_path / "run"
    config = write_config(
        tmp_path / "run.toml", tiny_corpus, out, train={"max_steps": 12, "log_every": 1}
    )
    process = subprocess.Popen(
        [*KIBAN, "train", str(config), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not (out / "metrics.jsonl").is_file() or len(metrics(out)) < 2:
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.005)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr
    summary = json.loads(stdout)
    if summary["stopped_early"]:  # the signal landed before the last step
        stopped = summary["steps"]
        assert 2 <= stopped < 12 and "stopping after this step" in stderr
        assert (out / "checkpoints" / f"step-{stopped:08d}").is_dir()
        assert (out / "model" / "model.safetensors").is_file()
        result = run_kiban("train", str(config), "--resume")
        assert result.returncode == 0, result.stderr
    mine, theirs = metrics(out), metrics(reference)
    assert [r["loss"] for r in mine] == [r["loss"] for r in theirs]
    ours, reference_weights = weights(out / "model"), weights(reference / "model")
    assert all(np.array_equal(ours[k], reference_weights[k]) for k in reference_weights)


def test_resume_refuses_a_changed_config_and_an_existing_run(tiny_corpus, reference, tmp_path):
    config = write_config(
        tmp_path / "changed.toml",
        tiny_corpus,
        reference,
        train={"max_steps": 12, "log_every": 1},
        optim={"lr": 0.5},
    )
    result = run_kiban("train", str(config), "--resume")
    assert result.returncode == 2
    assert "optim.lr = 0.5 (the run used 0.01)" in result.stderr
    result = run_kiban("train", str(config))
    assert result.returncode == 2 and "already holds a run" in result.stderr
    result = run_kiban("train", str(config), "--resume", "--out", str(tmp_path / "empty"))
    assert result.returncode == 2 and "has no checkpoint to resume from" in result.stderr


def test_a_corrupt_checkpoint_is_named(tiny_corpus, tmp_path):
    out = tmp_path / "run"
    config = write_config(tmp_path / "run.toml", tiny_corpus, out, train={"max_steps": 4})
    assert run_kiban("train", str(config)).returncode == 0
    state = next((out / "checkpoints" / "step-00000004" / "state").glob("*.distcp"))
    state.write_bytes(state.read_bytes()[:100])
    result = run_kiban("train", str(config), "--resume")
    assert result.returncode == 2
    assert "is truncated or corrupt" in result.stderr and state.name in result.stderr


def test_bad_inputs_give_clear_errors(tiny_corpus, tmp_path):
    config = write_config(
        tmp_path / "typo.toml", tiny_corpus, tmp_path / "out", train={"max_step": 3}
    )
    result = run_kiban("train", str(config))
    assert result.returncode == 2 and "did you mean 'max_steps'?" in result.stderr
    config = write_config(tmp_path / "ok.toml", tiny_corpus, tmp_path / "out")
    result = run_kiban("train", str(config), "--corpus", str(tmp_path / "nowhere"))
    assert result.returncode == 2 and "is not a built kiban corpus" in result.stderr


def test_vocabulary_mismatch_is_refused(tiny_corpus, tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    from kiban.train.config import ConfigError, config_from_dict
    from kiban.train.data import PackedCorpusData
    from kiban.train.loop import train

    config = config_from_dict({"out": str(tmp_path / "o"), "data": {"corpus": str(tiny_corpus)}})
    data = PackedCorpusData(tiny_corpus, config.data)
    small = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=50,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
        )
    )
    with pytest.raises(
        ConfigError,
        match=r"tokenizer has \d+ tokens but the model's embedding "
        r"has 50 rows",
    ):
        train(config, data, data.corpus.tokenizer, small)


@pytest.mark.parametrize("mode", ["ddp", "fsdp2"])
def test_two_processes_match_one(tiny_corpus, reference, tmp_path, mode):
    out = tmp_path / mode
    config = write_config(
        tmp_path / f"{mode}.toml",
        tiny_corpus,
        out,
        train={"max_steps": 12, "log_every": 1, "parallel": mode},
    )
    result = torchrun(2, "train", str(config))
    assert result.returncode == 0, result.stderr[-3000:]
    mine, theirs = metrics(out), metrics(reference)
    assert len(mine) == 12
    np.testing.assert_allclose([r["loss"] for r in mine], [r["loss"] for r in theirs], rtol=1e-4)
    np.testing.assert_allclose(mine[-1]["val_loss"], theirs[-1]["val_loss"], rtol=1e-4)
    ours, single = weights(out / "model"), weights(reference / "model")
    for key in single:
        np.testing.assert_allclose(ours[key], single[key], atol=1e-4)
    if mode == "fsdp2":  # the sharded checkpoint of step 8 resumes to the same end
        import shutil

        shutil.rmtree(out / "checkpoints" / "step-00000012")
        shutil.rmtree(out / "model")
        result = torchrun(2, "train", str(config), "--resume")
        assert result.returncode == 0, result.stderr[-3000:]
        again = metrics(out)
        assert [r["loss"] for r in again] == [r["loss"] for r in mine]
        resumed = weights(out / "model")
        assert all(np.array_equal(resumed[k], ours[k]) for k in ours)
