"""The typed training configuration: TOML in, dataclasses inside, saved with every run.

A run directory holds ``config.toml`` (re-runnable as is) and ``config.json``. Unknown keys are
errors that name the key and the closest valid one; values are checked by type and range and
errors name the field (``optim.lr``) and the value.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

from kiban.errors import did_you_mean
from kiban.io import toml_value as _toml_value


class ConfigError(ValueError):
    pass


@dataclass
class ModelConfig:
    preset: str | None = "llama-4m"  # a name from kiban.train.models.PRESETS
    base: str | None = None  # or a local Hugging Face model directory to continue from
    hidden_size: int | None = None  # preset overrides
    num_layers: int | None = None
    num_heads: int | None = None
    num_kv_heads: int | None = None
    intermediate_size: int | None = None
    max_position_embeddings: int | None = None
    rope_theta: float | None = None
    tie_embeddings: bool = False
    vocab_multiple: int = 64  # pad the embedding rows to a multiple of this (GPU speed)
    new_token_init: str = "pieces"  # continued pre-training: "pieces" (mean of the base
    #                                   tokenizer's pieces of each new token) or "mean"


@dataclass
class DataConfig:
    corpus: str | None = None  # a built kiban corpus directory
    seq_len: int = 256
    validation_fraction: float = 0.01
    modality_weights: dict[str, float] = field(default_factory=dict)  # {"mol": 1, "crystal": 2}
    source_weights: dict[str, float] = field(default_factory=dict)  # {"moses-train": 0.5}
    seed: int = 0


@dataclass
class OptimConfig:
    lr: float = 3e-3
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    warmup_steps: int = 10
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0  # 0 disables clipping


@dataclass
class TrainConfig:
    max_steps: int = 100
    batch_size: int = 16  # global sequences per optimizer step (all ranks together)
    micro_batch_size: int = 16  # sequences per forward on one rank (accumulation fills up)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    dtype: str = "auto"  # auto (bf16 autocast on GPU, fp32 on CPU) | fp32 | bf16
    compile: bool = False  # torch.compile each block
    activation_checkpointing: bool = False
    parallel: str = "auto"  # under torchrun: auto (= ddp) | ddp | fsdp2
    log_every: int = 1
    eval_every: int = 50  # 0: only at the end
    eval_batches: int = 4
    checkpoint_every: int = 50  # 0: only at the end
    keep_checkpoints: int = 2
    peak_tflops: float = 0.0  # per device, for MFU; 0 = known GPUs only
    progress: bool = True


@dataclass
class FinetuneConfig:
    data: str | None = None  # JSONL or CSV/CSV.gz of the user's own examples
    prompt_field: str = "prompt"
    completion_field: str = "completion"
    prompt_template: str | None = None
    completion_template: str | None = None
    properties: list[str] = field(default_factory=list)  # computed RDKit properties ({qed} ...)
    mol_column: str | None = None  # the SMILES column the properties are computed from
    lora: bool = False
    lora_r: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    lora_target_modules: list[str] = field(default_factory=list)


@dataclass
class RunConfig:
    out: str = "out/run"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)

    # fields that may differ between a run and its resumption: they do not change the math
    RESUMABLE_CHANGES = frozenset(
        {
            "out",
            "data.corpus",
            "model.base",
            "finetune.data",
            "train.log_every",
            "train.checkpoint_every",
            "train.keep_checkpoints",
            "train.progress",
            "train.eval_every",
            "train.eval_batches",
            "train.peak_tflops",
        }
    )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_toml(self) -> str:
        lines = [f"out = {_toml_value(self.out)}"]
        for name in ("model", "data", "optim", "train", "finetune"):
            lines.append(f"\n[{name}]")
            for key, value in dataclasses.asdict(getattr(self, name)).items():
                if value is not None:
                    lines.append(f"{key} = {_toml_value(value)}")
        return "\n".join(lines) + "\n"

    def flat(self) -> dict[str, Any]:
        out = {"out": self.out}
        for name in ("model", "data", "optim", "train", "finetune"):
            for key, value in dataclasses.asdict(getattr(self, name)).items():
                out[f"{name}.{key}"] = value
        return out

    def changed_fields(self, other: RunConfig) -> list[tuple[str, Any, Any]]:
        """(field, this value, other value) for the fields that may not change on resume."""
        mine, theirs = self.flat(), other.flat()
        return [
            (k, mine[k], theirs.get(k))
            for k in mine
            if k not in self.RESUMABLE_CHANGES and mine[k] != theirs.get(k)
        ]


SECTIONS = {
    "model": ModelConfig,
    "data": DataConfig,
    "optim": OptimConfig,
    "train": TrainConfig,
    "finetune": FinetuneConfig,
}


def _closest(key: str, choices: list[str]) -> str:
    hint = did_you_mean(key, choices, cutoff=0.5)
    return hint if hint else f"; valid: {', '.join(sorted(choices))}"


def _coerce(where: str, value: Any, hint: Any) -> Any:
    """Check a TOML value against a dataclass field type (ints are accepted for floats)."""
    text = str(hint)
    optional = "None" in text
    if value is None and optional:
        return None
    if "dict" in text:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table like {{mol = 1.0}}, got {value!r}")
        result = {}
        for k, v in value.items():
            if (
                isinstance(v, bool)
                or not isinstance(v, (int, float))
                or not math.isfinite(v)
                or v < 0
            ):
                raise ConfigError(f"{where}.{k}: expected a weight >= 0, got {v!r}")
            result[str(k)] = float(v)
        return result
    if "list" in text:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}: expected a list of strings, got {value!r}")
        return list(value)
    if "bool" in text:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if "float" in text:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if "int" in text:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if "str" in text:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def _section(name: str, cls: type, table: Any, source: str) -> Any:
    if not isinstance(table, dict):
        raise ConfigError(f"{source}: [{name}] must be a table")
    hints = get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    values = {}
    for key, value in table.items():
        if key not in known:
            raise ConfigError(f"{source}: unknown key {name}.{key}{_closest(key, known)}")
        values[key] = _coerce(f"{source}: {name}.{key}", value, hints[key])
    return cls(**values)


def config_from_dict(raw: dict[str, Any], source: str = "config") -> RunConfig:
    top = ["out", *SECTIONS]
    for key in raw:
        if key not in top:
            raise ConfigError(f"{source}: unknown key {key!r}{_closest(key, top)}")
    sections = {
        name: _section(name, cls, raw.get(name, {}), source) for name, cls in SECTIONS.items()
    }
    out = raw.get("out", RunConfig.out)
    if not isinstance(out, str):
        raise ConfigError(f"{source}: out: expected a directory path, got {out!r}")
    config = RunConfig(out=out, **sections)
    validate(config, source)
    return config


def load_config(path: str | os.PathLike, **overrides: Any) -> RunConfig:
    """Read a TOML config; ``overrides`` use dotted names (``{"train.max_steps": 5}``); relative
    paths in the file are taken relative to the current directory (like the CLI's)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from None
    for dotted, value in overrides.items():
        if value is None:
            continue
        if "." in dotted:
            section, key = dotted.split(".", 1)
            raw.setdefault(section, {})[key] = value
        else:
            raw[dotted] = value
    return config_from_dict(raw, str(path))


def validate(config: RunConfig, source: str = "config") -> None:
    def bad(name: str, value: Any, expected: str) -> ConfigError:
        return ConfigError(f"{source}: {name} = {value!r}: expected {expected}")

    m, d, o, t = config.model, config.data, config.optim, config.train
    from kiban.train.models import PRESETS

    if m.base is None and m.preset not in PRESETS:
        raise bad(
            "model.preset",
            m.preset,
            f"one of {', '.join(PRESETS)} (or set model.base)"
            + (_closest(m.preset, list(PRESETS)) if m.preset else ""),
        )
    for name in (
        "hidden_size",
        "num_layers",
        "num_heads",
        "num_kv_heads",
        "intermediate_size",
        "max_position_embeddings",
    ):
        value = getattr(m, name)
        if value is not None and value < 1:
            raise bad(f"model.{name}", value, "a positive integer")
    if m.vocab_multiple < 1:
        raise bad("model.vocab_multiple", m.vocab_multiple, "a positive integer")
    if m.new_token_init not in ("pieces", "mean"):
        raise bad("model.new_token_init", m.new_token_init, '"pieces" or "mean"')
    if d.seq_len < 2:
        raise bad("data.seq_len", d.seq_len, "an integer >= 2")
    if not 0.0 <= d.validation_fraction < 1.0:
        raise bad("data.validation_fraction", d.validation_fraction, "a fraction in [0, 1)")
    if not (o.lr > 0 and math.isfinite(o.lr)):
        raise bad("optim.lr", o.lr, "a positive number")
    if not 0.0 <= o.min_lr_ratio <= 1.0:
        raise bad("optim.min_lr_ratio", o.min_lr_ratio, "a ratio in [0, 1]")
    if o.warmup_steps < 0:
        raise bad("optim.warmup_steps", o.warmup_steps, "an integer >= 0")
    for name in ("beta1", "beta2"):
        if not 0.0 <= getattr(o, name) < 1.0:
            raise bad(f"optim.{name}", getattr(o, name), "a number in [0, 1)")
    if o.weight_decay < 0 or o.grad_clip < 0 or o.eps <= 0:
        name = "weight_decay" if o.weight_decay < 0 else "grad_clip" if o.grad_clip < 0 else "eps"
        raise bad(f"optim.{name}", getattr(o, name), "a number >= 0 (eps > 0)")
    if t.max_steps < 1:
        raise bad("train.max_steps", t.max_steps, "an integer >= 1")
    if t.batch_size < 1:
        raise bad("train.batch_size", t.batch_size, "an integer >= 1")
    if t.micro_batch_size < 1:
        raise bad("train.micro_batch_size", t.micro_batch_size, "an integer >= 1")
    if t.device not in ("auto", "cpu", "cuda"):
        raise bad("train.device", t.device, '"auto", "cpu" or "cuda"')
    if t.dtype not in ("auto", "fp32", "bf16"):
        raise bad("train.dtype", t.dtype, '"auto", "fp32" or "bf16"')
    if t.parallel not in ("auto", "ddp", "fsdp2"):
        raise bad("train.parallel", t.parallel, '"auto", "ddp" or "fsdp2"')
    for name in ("log_every", "keep_checkpoints"):
        if getattr(t, name) < 1:
            raise bad(f"train.{name}", getattr(t, name), "an integer >= 1")
    for name in ("eval_every", "checkpoint_every", "eval_batches"):
        if getattr(t, name) < 0:
            raise bad(f"train.{name}", getattr(t, name), "an integer >= 0")
    if t.peak_tflops < 0:
        raise bad("train.peak_tflops", t.peak_tflops, "a number >= 0")
    f = config.finetune
    if f.lora_r < 1:
        raise bad("finetune.lora_r", f.lora_r, "an integer >= 1")
    if not 0.0 <= f.lora_dropout < 1.0:
        raise bad("finetune.lora_dropout", f.lora_dropout, "a number in [0, 1)")


def accumulation_steps(config: RunConfig, world: int) -> int:
    """Micro-batches per rank per step: batch_size = micro_batch_size x accumulation x world."""
    t = config.train
    per_rank, remainder = divmod(t.batch_size, world)
    if remainder:
        raise ConfigError(
            f"train.batch_size = {t.batch_size} does not split over {world} "
            "processes: use a multiple of the process count"
        )
    micro = min(t.micro_batch_size, per_rank)
    if per_rank % micro:
        raise ConfigError(
            f"train.micro_batch_size = {t.micro_batch_size} does not divide the "
            f"{per_rank} sequences each of the {world} processes takes per step"
        )
    return per_rank // micro
