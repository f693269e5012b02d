"""The public step API: a few optimizer steps on a model in this process, for code outside
training (design loops that fine-tune between rounds) that must not reach into the loop's
private helpers.

>>> optimizer = train_steps(model, data, steps=4, batch_size=8, lr=1e-4)   # doctest: +SKIP
>>> optimizer = train_steps(model, data, steps=4, batch_size=8, lr=1e-4,
...                         optimizer=optimizer)   # Adam's moments carry over   # doctest: +SKIP

``data`` is any object with ``global_batch(step, batch_size) -> Batch`` and ``train_examples``
(`kiban.train.sft.SupervisedData` is one). The loss of a step is the sum of token
cross-entropies over the batch divided by its target tokens (as in `kiban.train.loop`).
"""

from __future__ import annotations

import math
from typing import Any, Protocol

from kiban.train.batches import Batch
from kiban.train.loop import Env, TrainingDiverged, batch_tensors, loss_sum

__all__ = ["Env", "StepData", "TrainingDiverged", "batch_tensors", "loss_sum", "train_steps"]


class StepData(Protocol):
    train_examples: int

    def global_batch(self, step: int, batch_size: int) -> Batch: ...


def train_steps(
    model: Any,
    data: StepData,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    optimizer: Any = None,
    max_grad_norm: float = 1.0,
    device: Any = "cpu",
) -> Any:
    """``steps`` AdamW steps (``lr``, weight decay 0; a given ``optimizer`` is used as is) on
    batches ``data.global_batch(step, min(batch_size, data.train_examples))`` for step 0, 1, ...,
    gradients clipped to ``max_grad_norm``; the model is in train mode during the steps and in
    eval mode after. Returns the optimizer. Raises `TrainingDiverged` on a non-finite loss,
    before that step is applied."""
    import torch

    for name, value, minimum in (("steps", steps, 0), ("batch_size", batch_size, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise ValueError(
                f"The '{name}' parameter of train_steps must be an integer >= "
                f"{minimum}. Got {value!r} instead."
            )
    if not (isinstance(lr, int | float) and math.isfinite(lr) and lr > 0):
        raise ValueError(
            f"The 'lr' parameter of train_steps must be a finite number > 0. Got {lr!r} instead."
        )
    env = Env.local(device)
    if optimizer is None:
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    rows = min(batch_size, data.train_examples)
    model.train()
    try:
        for step in range(steps):
            batch = data.global_batch(step, rows)
            loss = loss_sum(model, batch_tensors(batch, env.device), env) / batch.n_targets
            if not torch.isfinite(loss):
                raise TrainingDiverged(
                    f"train_steps diverged at step {step + 1} of {steps}: "
                    f"the loss is {float(loss.detach())} (lr = {lr}); the "
                    "step was not applied"
                )
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    finally:
        model.eval()
    return optimizer
