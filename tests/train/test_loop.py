"""`kiban.train.loop`: a run that diverges stops with exit 1, names the step and the last good
checkpoint, and never saves a model or checkpoint that is not finite."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from .conftest import run_kiban, write_config

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")


def checkpoints(out: Path) -> list[str]:
    return sorted(p.name for p in (out / "checkpoints").glob("step-*"))


def test_a_huge_learning_rate_exits_1_and_writes_no_model(tiny_corpus, tmp_path):
    out = tmp_path / "run"
    config = write_config(tmp_path / "run.toml", tiny_corpus, out, optim={"lr": 1e30})
    result = run_kiban("train", str(config))
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith(
        "kiban train: error: training diverged at step 2: the loss "
        "is nan and the gradient norm nan; nothing from this step "
        "was saved and no model was written; no checkpoint was "
        "saved before it (optim.lr = 1e+30)"
    )
    assert "Traceback" not in result.stderr
    assert not (out / "model").exists() and not (out / "summary.json").exists()
    assert checkpoints(out) == []
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == [1] and math.isfinite(logged[0]["loss"])


def _nan_after(calls: int):
    """A `loss_sum` that returns NaN from its ``calls``-th call on (micro-batches count)."""
    from kiban.train import loop

    real, seen = loop.loss_sum, []

    def loss_sum(model, tensors, env):
        seen.append(1)
        loss = real(model, tensors, env)
        return loss * float("nan") if len(seen) >= calls else loss

    return loss_sum


def test_divergence_after_a_checkpoint_names_it_and_saves_nothing_more(
    tiny_corpus, tmp_path, monkeypatch, capsys
):
    from kiban.cli import main
    from kiban.train import loop

    out = tmp_path / "run"
    config = write_config(
        tmp_path / "run.toml", tiny_corpus, out, train={"max_steps": 8, "eval_every": 0}
    )
    # 2 micro-batches per step: call 11 is the first micro-batch of step 6
    monkeypatch.setattr(loop, "loss_sum", _nan_after(11))
    assert main(["train", str(config)]) == 1
    err = capsys.readouterr().err
    good = out / "checkpoints" / "step-00000004"
    assert err == (
        f"kiban train: error: training diverged at step 6: the loss is nan and the "
        f"gradient norm nan; nothing from this step was saved and no model was "
        f"written; the last good checkpoint is {good} (optim.lr = 0.01). --resume from "
        f"it replays the same steps; lower optim.lr (or raise optim.warmup_steps) and "
        f"start a new run (another --out)\n"
    )
    assert checkpoints(out) == ["step-00000004"] and not (out / "model").exists()


@pytest.mark.filterwarnings("ignore:Seems like `optimizer.step\\(\\)` has been overridden")
def test_non_finite_parameters_are_never_checkpointed(tiny_corpus, tmp_path, monkeypatch, capsys):
    """A finite loss whose update leaves an infinite weight (the next loss would show it, one
    step too late for the checkpoint written now) is caught before the save."""
    from kiban.cli import main
    from kiban.train import loop

    real = loop.make_optimizer

    def make_optimizer(model, config, env):
        optimizer, scheduler = real(model, config, env)
        step = optimizer.step

        def poisoned_step(*args, **kwargs):
            result = step(*args, **kwargs)
            if scheduler.last_epoch == 3:  # the update of step 4, before its checkpoint
                with torch.no_grad():
                    next(model.parameters()).view(-1)[0] = float("inf")
            return result

        optimizer.step = poisoned_step
        return optimizer, scheduler

    monkeypatch.setattr(loop, "make_optimizer", make_optimizer)
    out = tmp_path / "run"
    config = write_config(tmp_path / "run.toml", tiny_corpus, out, train={"max_steps": 8})
    assert main(["train", str(config)]) == 1
    err = capsys.readouterr().err
    assert (
        "training diverged at step 4: the parameters are not finite after the update (loss " in err
        and "no checkpoint was saved before it" in err
    )
    assert checkpoints(out) == [] and not (out / "model").exists()


def test_a_finished_run_has_finite_weights_and_versioned_metadata(tiny_corpus, tmp_path):
    from safetensors.numpy import load_file

    from kiban.formats import read_json
    from kiban.train.loop import RUN, SUMMARY

    out = tmp_path / "run"
    config = write_config(tmp_path / "run.toml", tiny_corpus, out, train={"max_steps": 2})
    assert run_kiban("train", str(config)).returncode == 0
    assert all(
        np.isfinite(w).all() for w in load_file(out / "model" / "model.safetensors").values()
    )
    run = read_json(out / "run.json", RUN)
    assert (run["format"], run["version"]) == ("kiban.train.run", 2)
    assert run["data_fingerprint"]["contents"]["documents"] == 600
    summary = read_json(out / "summary.json", SUMMARY)
    assert (summary["format"], summary["version"], summary["steps"]) == (
        "kiban.train.summary",
        2,
        2,
    )
    assert read_json(out / "model" / "kiban_run.json", SUMMARY)["steps"] == 2
