"""Packed pre-training sequences: exact windows over the shuffled document stream."""

from __future__ import annotations

import numpy as np
import pytest

from kiban.corpus.store import Corpus
from kiban.train.batches import epoch_permutation
from kiban.train.config import ConfigError, DataConfig
from kiban.train.data import PackedCorpusData


def document_tokens(corpus: Corpus) -> tuple[list[str], list[np.ndarray]]:
    table = corpus.documents_table(["id", "shard", "token_offset", "n_tokens"]).to_pylist()
    return [r["id"] for r in table], [
        np.asarray(
            corpus.tokens(r["shard"])[r["token_offset"] : r["token_offset"] + r["n_tokens"]],
            dtype=np.int64,
        )
        for r in table
    ]


def test_windows_are_the_shuffled_concatenation(tiny_corpus):
    data = PackedCorpusData(tiny_corpus, DataConfig(seq_len=32, validation_fraction=0.1, seed=5))
    ids, docs = document_tokens(data.corpus)
    train = [i for i, d in enumerate(ids) if i not in set(data._valid_docs.tolist())]
    order = np.array(train)[epoch_permutation(len(train), 5, 0)]
    stream = np.concatenate([docs[i] for i in order])
    assert len(stream) == data.epoch_tokens
    per_epoch = data.sequences_per_epoch
    assert per_epoch == (len(stream) - 1) // 32
    batch = data.global_batch(0, per_epoch)  # the whole first epoch
    expected = np.stack([stream[k * 32 : k * 32 + 33] for k in range(per_epoch)])
    np.testing.assert_array_equal(batch.input_ids, expected[:, :-1])
    np.testing.assert_array_equal(batch.labels, expected[:, 1:])
    # every token of the epoch (but the last window's tail) is a target exactly once
    assert batch.n_targets == per_epoch * 32
    # documents end with <|endoftext|> (id 0) inside the windows
    assert (batch.input_ids == data.corpus.manifest["eos_id"]).sum() > 0


def test_steps_are_deterministic_and_cross_epochs(tiny_corpus):
    config = DataConfig(seq_len=32, seed=1)
    a, b = PackedCorpusData(tiny_corpus, config), PackedCorpusData(tiny_corpus, config)
    per_epoch = a.sequences_per_epoch
    step = per_epoch // 4  # batch of 4 straddles... pick a step that crosses the epoch end
    size = 5
    crossing = next(s for s in range(per_epoch) if (s * size) < per_epoch < (s + 1) * size)
    for s in (0, 3, crossing, crossing + 7):
        np.testing.assert_array_equal(
            a.global_batch(s, size).input_ids, b.global_batch(s, size).input_ids
        )
    # epoch 1 is a different order of the same documents
    first = a.global_batch(0, size).input_ids
    second = a.global_batch(per_epoch // size + 1, size).input_ids
    assert not np.array_equal(first, second)
    other = PackedCorpusData(tiny_corpus, DataConfig(seq_len=32, seed=2))
    assert not np.array_equal(
        other.global_batch(step, size).input_ids, a.global_batch(step, size).input_ids
    )


def test_validation_documents_are_held_out(tiny_corpus):
    data = PackedCorpusData(tiny_corpus, DataConfig(seq_len=16, validation_fraction=0.2))
    ids, docs = document_tokens(data.corpus)
    valid = set(data._valid_docs.tolist())
    assert 0.1 < len(valid) / len(ids) < 0.3
    assert valid.isdisjoint(data._items.tolist())
    held = np.concatenate([docs[i] for i in sorted(valid)])
    rows = np.concatenate([b.input_ids for b in data.validation_batches(4)])
    np.testing.assert_array_equal(rows.reshape(-1), held[: rows.size])
    assert len(list(data.validation_batches(4, max_batches=1))) == 1
    none = PackedCorpusData(tiny_corpus, DataConfig(seq_len=16, validation_fraction=0.0))
    assert list(none.validation_batches(4)) == []


def test_weights_repeat_documents(tiny_corpus):
    plain = PackedCorpusData(tiny_corpus, DataConfig(seq_len=16, validation_fraction=0.0))
    doubled = PackedCorpusData(
        tiny_corpus, DataConfig(seq_len=16, validation_fraction=0.0, modality_weights={"mol": 2.0})
    )
    assert len(doubled._items) == 2 * len(plain._items)  # every test document holds a molecule
    half = PackedCorpusData(
        tiny_corpus, DataConfig(seq_len=16, validation_fraction=0.0, source_weights={"docs": 0.5})
    )
    assert 0.4 < len(half._items) / len(plain._items) < 0.6
    with pytest.raises(ConfigError, match="unknown modality 'mols'"):
        PackedCorpusData(tiny_corpus, DataConfig(modality_weights={"mols": 1.0}))
    with pytest.raises(ConfigError, match="no source 'papers' in the corpus"):
        PackedCorpusData(tiny_corpus, DataConfig(source_weights={"papers": 1.0}))
    with pytest.raises(ConfigError, match="no training documents left"):
        PackedCorpusData(tiny_corpus, DataConfig(modality_weights={"mol": 0.0}))
    with pytest.raises(ConfigError, match="do not fill one sequence"):
        PackedCorpusData(tiny_corpus, DataConfig(seq_len=10_000_000))
