"""Packed pre-training sequences from a built kiban corpus.

Documents (each already ending with ``<|endoftext|>`` in the shards) are laid end to end in a
seeded order that is reshuffled every epoch; sequence ``k`` of the stream is the window of
``seq_len + 1`` tokens starting at ``k * seq_len`` of its epoch's concatenation (inputs are the
first ``seq_len`` tokens, targets the last ``seq_len``: every token is predicted once). Windows
cross document boundaries; the separator token tells the model where one ends (GPT-2 / nanoGPT
packing). The tail of an epoch shorter than one window is dropped.

Modality and source weights repeat documents within every epoch: weight 2 puts a document in
twice, 0.5 in half of the epochs' item lists (which half is fixed by the seed), 0 leaves it out.
A document's modality is the span kind it holds most of (``mol``, ``crystal``, ``protein``; ``num``
only when it has nothing else; ``text`` when it has no spans). Validation documents are held out
by a hash of their id (stable when the corpus grows) and packed in corpus order.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from kiban.train.batches import Batch, epoch_permutation, held_out
from kiban.train.config import ConfigError, DataConfig

KINDS = ("mol", "crystal", "protein", "num")


def document_kinds(table) -> np.ndarray:
    counts = np.stack([table.column(f"n_{k}").to_numpy() for k in KINDS[:3]], axis=1)
    kinds = np.array(KINDS[:3], dtype=object)[counts.argmax(axis=1)]
    none = counts.max(axis=1) == 0
    num = table.column("n_num").to_numpy() > 0
    kinds[none & num] = "num"
    kinds[none & ~num] = "text"
    return kinds


class PackedCorpusData:
    """`TrainData` over a corpus directory (see the module docstring)."""

    def __init__(self, corpus_dir: str | Path, config: DataConfig):
        from kiban.corpus.store import Corpus

        self.corpus = Corpus(corpus_dir)
        self.config = config
        self.seq_len = config.seq_len
        table = self.corpus.documents_table(
            ["id", "source", "n_tokens", "shard", "token_offset", *(f"n_{k}" for k in KINDS)]
        )
        self.n_documents = table.num_rows
        lengths = table.column("n_tokens").to_numpy().astype(np.int64)
        shards = table.column("shard").to_numpy().astype(np.int64)
        offsets = table.column("token_offset").to_numpy().astype(np.int64)
        # one global address per token: shard s occupies [base[s], base[s] + its length)
        shard_lengths = np.array(
            [len(self.corpus.tokens(s)) for s in range(self.corpus.shard_count)], dtype=np.int64
        )
        self._shard_base = np.concatenate([[0], np.cumsum(shard_lengths)])
        self._shard_documents = np.bincount(shards, minlength=self.corpus.shard_count)
        self._shard_tokens = shard_lengths
        starts = self._shard_base[shards] + offsets
        ids = table.column("id").to_numpy(zero_copy_only=False)
        valid = held_out(ids, config.validation_fraction, config.seed)
        self.kinds = document_kinds(table)
        sources = table.column("source").to_numpy(zero_copy_only=False)
        self._check_weights(sources)
        weights = np.ones(self.n_documents)
        for kind, w in config.modality_weights.items():
            weights[self.kinds == kind] *= w
        for source, w in config.source_weights.items():
            weights[sources == source] *= w
        train = ~valid
        rng = np.random.default_rng([config.seed, 7])
        whole = np.floor(weights).astype(np.int64)
        whole += rng.random(self.n_documents) < (weights - np.floor(weights))
        whole[~train] = 0
        self._items = np.repeat(np.arange(self.n_documents), whole)  # item -> document
        if len(self._items) == 0:
            raise ConfigError(
                f"{corpus_dir}: no training documents left (all held out for "
                "validation or weighted 0)"
            )
        self._starts, self._lengths = starts, lengths
        self.epoch_tokens = int(lengths[self._items].sum())
        self.sequences_per_epoch = (self.epoch_tokens - 1) // self.seq_len
        if self.sequences_per_epoch < 1:
            raise ConfigError(
                f"{corpus_dir}: {self.epoch_tokens} training tokens do not fill one "
                f"sequence of data.seq_len = {self.seq_len} (+1)"
            )
        self._valid_docs = np.flatnonzero(valid)
        self._epochs: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._tokens = [self.corpus.tokens(s) for s in range(self.corpus.shard_count)]

    def _check_weights(self, sources: np.ndarray) -> None:
        known_kinds = set(KINDS) | {"text"}
        for kind in self.config.modality_weights:
            if kind not in known_kinds:
                raise ConfigError(
                    f"data.modality_weights: unknown modality {kind!r}; known: "
                    f"{', '.join(sorted(known_kinds))}"
                )
        known_sources = set(sources.tolist())
        for source in self.config.source_weights:
            if source not in known_sources:
                raise ConfigError(
                    f"data.source_weights: no source {source!r} in the corpus; "
                    f"it has {', '.join(sorted(known_sources))}"
                )

    @property
    def vocab_size(self) -> int:
        return int(self.corpus.manifest["vocab_size"])

    def fingerprint(self) -> dict:
        """What ``--resume`` checks is unchanged (`kiban.train.fingerprint`)."""
        from kiban.train.fingerprint import corpus_fingerprint

        return corpus_fingerprint(
            self.corpus,
            shard_documents=self._shard_documents.tolist(),
            shard_tokens=self._shard_tokens.tolist(),
        )

    def describe(self) -> dict:
        return {
            "documents": self.n_documents,
            "validation_documents": len(self._valid_docs),
            "items_per_epoch": len(self._items),
            "tokens_per_epoch": self.epoch_tokens,
            "sequences_per_epoch": self.sequences_per_epoch,
            "seq_len": self.seq_len,
            "kinds": {k: int((self.kinds == k).sum()) for k in (*KINDS, "text")},
        }

    # --- the stream -------------------------------------------------------------------------
    def _epoch(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """(token start of each item in order, cumulative end of each item) for ``epoch``."""
        if epoch not in self._epochs:
            order = self._items[epoch_permutation(len(self._items), self.config.seed, epoch)]
            self._epochs[epoch] = (self._starts[order], np.cumsum(self._lengths[order]))
            while len(self._epochs) > 2:
                self._epochs.popitem(last=False)
        return self._epochs[epoch]

    def _gather(self, addresses: np.ndarray) -> np.ndarray:
        """Tokens at global addresses (vectorised per shard)."""
        out = np.empty(addresses.shape, dtype=np.int64)
        shard = np.searchsorted(self._shard_base, addresses, side="right") - 1
        for s in np.unique(shard):
            mask = shard == s
            out[mask] = self._tokens[s][addresses[mask] - self._shard_base[s]]
        return out

    def _windows(
        self, starts: np.ndarray, item_starts: np.ndarray, cum_ends: np.ndarray
    ) -> np.ndarray:
        positions = starts[:, None] + np.arange(self.seq_len + 1)[None, :]
        item = np.searchsorted(cum_ends, positions, side="right")
        begin = cum_ends[item] - self._lengths_of(cum_ends, item)
        return self._gather(item_starts[item] + (positions - begin))

    @staticmethod
    def _lengths_of(cum_ends: np.ndarray, item: np.ndarray) -> np.ndarray:
        previous = np.where(item > 0, cum_ends[np.maximum(item - 1, 0)], 0)
        return cum_ends[item] - previous

    def global_batch(self, step: int, batch_size: int) -> Batch:
        sequences = step * batch_size + np.arange(batch_size, dtype=np.int64)
        epochs, index = np.divmod(sequences, self.sequences_per_epoch)
        rows = np.empty((batch_size, self.seq_len + 1), dtype=np.int64)
        for epoch in np.unique(epochs):
            mask = epochs == epoch
            item_starts, cum_ends = self._epoch(int(epoch))
            rows[mask] = self._windows(index[mask] * self.seq_len, item_starts, cum_ends)
        return Batch(np.ascontiguousarray(rows[:, :-1]), np.ascontiguousarray(rows[:, 1:]))

    def validation_batches(
        self, batch_size: int, max_batches: int | None = None
    ) -> Iterator[Batch]:
        if len(self._valid_docs) == 0:
            return
        item_starts = self._starts[self._valid_docs]
        cum_ends = np.cumsum(self._lengths[self._valid_docs])
        n_windows = (int(cum_ends[-1]) - 1) // self.seq_len
        if n_windows == 0:  # fewer held-out tokens than one window: one short row
            tokens = self._gather(
                np.concatenate(
                    [
                        np.arange(a, a + n)
                        for a, n in zip(item_starts, self._lengths[self._valid_docs])
                    ]
                )
            )
            yield Batch(tokens[None, :-1], tokens[None, 1:])
            return
        limit = n_windows if max_batches is None else min(n_windows, max_batches * batch_size)
        for first in range(0, limit, batch_size):
            starts = np.arange(first, min(first + batch_size, limit), dtype=np.int64) * self.seq_len
            rows = self._windows(starts, item_starts, cum_ends)
            yield Batch(rows[:, :-1], rows[:, 1:])
