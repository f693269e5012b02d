"""Training: pre-training from scratch, continued pre-training of a local Hugging Face model,
and fine-tuning on a user's own data (see docs/training.md).

Nothing here imports torch or transformers at import time; `kiban.train.run` does when called.
The public step API (`kiban.train.steps`: `train_steps`, `batch_tensors`, `loss_sum`, `Env`,
`TrainingDiverged`) is imported on first use, so ``kiban --help`` does not load it.
"""

from __future__ import annotations

from typing import Any

from kiban.train.config import ConfigError, RunConfig, load_config

_STEPS = ("Env", "StepData", "TrainingDiverged", "batch_tensors", "loss_sum", "train_steps")

__all__ = [
    "ConfigError",
    "Env",
    "RunConfig",
    "StepData",
    "TrainingDiverged",
    "batch_tensors",
    "load_config",
    "loss_sum",
    "train_steps",
]


def __getattr__(name: str) -> Any:
    if name not in _STEPS:
        raise AttributeError(f"module 'kiban.train' has no attribute {name!r}")
    from kiban.train import steps

    return getattr(steps, name)
