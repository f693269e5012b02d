"""The typed run config: unknown keys, types, ranges, round trips (no torch needed)."""

from __future__ import annotations

import pytest

from kiban.train.cli import _setting
from kiban.train.config import (
    ConfigError,
    RunConfig,
    accumulation_steps,
    config_from_dict,
    load_config,
)


def test_defaults_round_trip_through_toml(tmp_path):
    config = config_from_dict(
        {
            "out": "x",
            "data": {"corpus": "c", "modality_weights": {"mol": 2}},
            "finetune": {"lora_target_modules": ["q_proj"]},
        }
    )
    path = tmp_path / "c.toml"
    path.write_text(config.to_toml())
    again = load_config(path)
    assert again == config
    assert again.data.modality_weights == {"mol": 2.0}


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"trian": {}}, "unknown key 'trian' (did you mean 'train'?)"),
        ({"train": {"max_step": 3}}, "unknown key train.max_step (did you mean 'max_steps'?)"),
        ({"optim": {"learning_rate": 1e-3}}, "unknown key optim.learning_rate"),
        ({"train": {"max_steps": "ten"}}, "train.max_steps: expected an integer, got 'ten'"),
        ({"train": {"max_steps": 0}}, "train.max_steps = 0: expected an integer >= 1"),
        ({"optim": {"lr": -1}}, "optim.lr = -1.0: expected a positive number"),
        ({"optim": {"beta2": 1.0}}, "optim.beta2 = 1.0"),
        ({"data": {"seq_len": 1}}, "data.seq_len = 1"),
        ({"data": {"validation_fraction": 1.0}}, "data.validation_fraction = 1.0"),
        (
            {"data": {"modality_weights": {"mol": -1}}},
            "data.modality_weights.mol: expected a weight",
        ),
        ({"model": {"preset": "llama-7b"}}, "model.preset = 'llama-7b'"),
        ({"train": {"parallel": "zero3"}}, "train.parallel = 'zero3'"),
        ({"train": {"compile": 1}}, "train.compile: expected true or false, got 1"),
        ({"finetune": {"lora_dropout": 1.5}}, "finetune.lora_dropout = 1.5"),
    ],
)
def test_bad_configs_name_the_field_and_value(raw, message):
    with pytest.raises(ConfigError) as error:
        config_from_dict(raw, "run.toml")
    assert message in str(error.value)
    assert str(error.value).startswith("run.toml: ")


def test_overrides_and_missing_file(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text("[train]\nmax_steps = 5\n")
    config = load_config(path, **{"train.max_steps": 9, "out": "elsewhere", "data.corpus": None})
    assert config.train.max_steps == 9 and config.out == "elsewhere" and config.data.corpus is None
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.toml")
    path.write_text("[train\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path)


def test_accumulation_splits_the_global_batch():
    config = config_from_dict({"train": {"batch_size": 16, "micro_batch_size": 4}})
    assert accumulation_steps(config, 1) == 4
    assert accumulation_steps(config, 2) == 2
    assert accumulation_steps(config, 4) == 1
    with pytest.raises(ConfigError, match="does not split over 3 processes"):
        accumulation_steps(config, 3)
    config = config_from_dict({"train": {"batch_size": 12, "micro_batch_size": 8}})
    with pytest.raises(ConfigError, match="micro_batch_size = 8 does not divide the 12"):
        accumulation_steps(config, 1)


def test_resume_compares_only_fields_that_change_the_math():
    a = config_from_dict({"out": "a", "train": {"max_steps": 10, "log_every": 1}})
    b = config_from_dict({"out": "b", "train": {"max_steps": 10, "log_every": 5}})
    assert a.changed_fields(b) == []
    c = config_from_dict({"train": {"max_steps": 10}, "optim": {"lr": 0.5}})
    assert [name for name, _, _ in a.changed_fields(c)] == ["optim.lr"]
    assert RunConfig().changed_fields(RunConfig()) == []


def test_set_parses_toml_values():
    assert _setting("train.batch_size=32") == ("train.batch_size", 32)
    assert _setting("optim.lr=1e-3") == ("optim.lr", 0.001)
    assert _setting("train.compile=true") == ("train.compile", True)
    assert _setting("model.base=/some/dir") == ("model.base", "/some/dir")
    import argparse

    with pytest.raises(argparse.ArgumentTypeError, match="expected SECTION.KEY=VALUE"):
        _setting("nonsense")


@pytest.mark.parametrize(
    "name", ["tiny.toml", "demo-model.toml", "moses.toml", "molopt-base.toml", "1b-gpu.toml"]
)
def test_shipped_training_configs_validate(name):
    # the configs the docs point to exist and pass the same checks a run makes first
    from pathlib import Path

    from kiban.train.config import validate

    path = Path(__file__).resolve().parents[2] / "configs" / name
    config = load_config(path)
    validate(config, str(path))
    if name == "1b-gpu.toml":
        assert (config.model.preset, config.data.seq_len, config.train.parallel) == (
            "llama-1b",
            2048,
            "fsdp2",
        )
