"""What the training loop consumes: deterministic global batches addressed by step.

A data source (packed corpus sequences, supervised prompt → completion pairs) implements
`TrainData`: ``global_batch(step)`` returns the same rows for the same (seed, step) on every
rank and every run, so a resumed or distributed run needs no data state beyond the step it is
at. Each rank takes its own contiguous rows of the global batch (`Batch.shard`).

Arrays are NumPy (int64) so data code and its tests need no torch import.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np

IGNORE = -100  # label value that takes no loss (the PyTorch / Hugging Face convention)


@dataclass(frozen=True)
class Batch:
    """Rows of equal length. ``labels[b, t]`` is the target for position ``t`` (already shifted);
    ``attention_mask`` (1 = token, 0 = right padding) is None when every row is full."""

    input_ids: np.ndarray
    labels: np.ndarray
    attention_mask: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.input_ids.shape != self.labels.shape or self.input_ids.ndim != 2:
            raise ValueError(
                f"input_ids {self.input_ids.shape} and labels {self.labels.shape} "
                "must be equal 2-d shapes"
            )
        if self.attention_mask is not None and self.attention_mask.shape != self.input_ids.shape:
            raise ValueError(
                f"attention_mask {self.attention_mask.shape} must match input_ids "
                f"{self.input_ids.shape}"
            )

    @property
    def rows(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def n_targets(self) -> int:
        """Label positions that take loss: the loss of a step is summed and divided by this
        count over the whole global batch, so accumulation and ranks do not change it."""
        return int((self.labels != IGNORE).sum())

    def slice(self, start: int, stop: int) -> Batch:
        mask = None if self.attention_mask is None else self.attention_mask[start:stop]
        return Batch(self.input_ids[start:stop], self.labels[start:stop], mask)

    def shard(self, rank: int, world: int) -> Batch:
        """This rank's contiguous rows (the global batch must divide evenly)."""
        if self.rows % world:
            raise ValueError(
                f"a global batch of {self.rows} rows does not split over {world} ranks"
            )
        size = self.rows // world
        return self.slice(rank * size, (rank + 1) * size)

    def micro_batches(self, size: int) -> list[Batch]:
        return [self.slice(start, start + size) for start in range(0, self.rows, size)]


class TrainData(Protocol):
    """A deterministic source of training batches (see the module docstring)."""

    seq_len: int

    def global_batch(self, step: int, batch_size: int) -> Batch:
        """Rows for optimizer step ``step`` (0-based): identical for identical (seed, step)."""
        ...

    def validation_batches(
        self, batch_size: int, max_batches: int | None = None
    ) -> Iterator[Batch]:
        """The held-out rows, always the same, in the same order."""
        ...

    def describe(self) -> dict:
        """Counts for the run log (documents/examples, tokens, held-out share, rejects)."""
        ...


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """The order of ``n`` items in ``epoch`` (a fresh shuffle per epoch, fixed by the seed)."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def stream_indices(n: int, seed: int, start: int, count: int) -> np.ndarray:
    """Positions ``start .. start+count`` of the endless stream epoch 0 order, epoch 1 order, …"""
    if n <= 0:
        raise ValueError("no items to draw from")
    out = np.empty(count, dtype=np.int64)
    filled = 0
    position = start
    while filled < count:
        epoch, offset = divmod(position, n)
        take = min(n - offset, count - filled)
        out[filled : filled + take] = epoch_permutation(n, seed, epoch)[offset : offset + take]
        filled += take
        position += take
    return out


def held_out(keys: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A stable validation mask: an item is held out by a hash of its key (a document id), so
    adding documents to a corpus does not move the others between splits."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"validation fraction {fraction} must be in [0, 1)")
    import hashlib

    if fraction == 0.0 or len(keys) == 0:
        return np.zeros(len(keys), dtype=bool)
    salt = str(seed).encode()
    values = np.fromiter(
        (
            int.from_bytes(
                hashlib.blake2b(str(k).encode(), digest_size=8, key=salt).digest(), "little"
            )
            for k in keys
        ),
        dtype=np.uint64,
        count=len(keys),
    )
    return values < np.uint64(int(fraction * 2**64))
