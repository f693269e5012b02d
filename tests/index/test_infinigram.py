"""Cross-check against the reference engine, infini-gram (PyPI ``infini-gram``, its compiled
C++ engine), on the same token stream: counts, n-gram probabilities, next-token distributions
and ∞-gram probabilities with their suffix lengths must be identical.

infini-gram's layout (v4) puts a separator (all bits set) *before* each document; we give it each
kiban document with its end-of-text token, so both engines see the same documents and the same
continuations. Its uint16 index is built by its own ``rust_indexing``; that tool cannot build a
uint32 index here (it allocates 2**32 buckets, 32 GiB), so for uint32 we write its suffix table
ourselves by sorting suffixes in Python, in its byte order, and cross-check the query engine.
Skipped when infini_gram is not installed."""

from __future__ import annotations

import contextlib
import io
import math
import os
import random
import types
from pathlib import Path

import numpy as np
import pytest

infini_gram = pytest.importorskip("infini_gram")

from infini_gram.engine import InfiniGramEngine  # noqa: E402

from .helpers import indexed  # noqa: E402

EOS = 0


def write_infinigram_shards(directory: Path, shards, dtype: str) -> None:
    width = np.dtype(dtype).itemsize
    separator = np.iinfo(dtype).max
    for number, documents in enumerate(shards):
        parts, offsets, position = [], [], 0
        for document in documents:
            part = np.array([separator, *document, EOS], dtype=dtype)
            offsets.append(position * width)
            position += len(part)
            parts.append(part)
        np.concatenate(parts).tofile(directory / f"tokenized.{number}")
        np.array(offsets, dtype=np.uint64).tofile(directory / f"offset.{number}")


def build_with_rust_indexing(directory: Path, shards) -> None:
    """infini-gram's own uint16 build (``infini_gram.indexing.build_sa``, which changes the
    working directory to run its bundled binary)."""
    from infini_gram import indexing

    args = types.SimpleNamespace(
        save_dir=str(directory),
        temp_dir=str(directory),
        worker_id=0,
        workers=1,
        shards=len(shards),
        cpus=1,
        mem=1,
        token_width=2,
    )
    cwd = os.getcwd()
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            indexing.build_sa(args)
    except SystemExit as error:  # build_sa exits when its binary fails
        pytest.fail(f"infini-gram's rust_indexing failed ({error})")
    finally:
        os.chdir(cwd)


def write_suffix_tables(directory: Path, shards, dtype: str) -> None:
    """The table infini-gram's engine reads: byte offsets of the suffixes in the byte order of
    the little-endian stream, each in ceil(log2(bytes) / 8) little-endian bytes."""
    width = np.dtype(dtype).itemsize
    for number in range(len(shards)):
        data = (directory / f"tokenized.{number}").read_bytes()
        ratio = math.ceil(math.log2(len(data)) / 8)
        order = sorted(range(0, len(data), width), key=lambda p: data[p:])
        (directory / f"table.{number}").write_bytes(
            b"".join(p.to_bytes(ratio, "little") for p in order)
        )


def random_shards(rng: random.Random, alphabet: list[int], shards: int, documents: int):
    """Documents with many repeats: a few motifs and noise, some documents empty."""
    motifs = [[rng.choice(alphabet) for _ in range(rng.randint(2, 6))] for _ in range(5)]
    out = []
    for _ in range(shards):
        docs = []
        for _ in range(documents):
            doc = []
            while rng.random() < 0.85 and len(doc) < 40:
                doc.extend(rng.choice(motifs) if rng.random() < 0.6 else [rng.choice(alphabet)])
            docs.append(doc)
        out.append(docs)
    return out


@pytest.mark.parametrize("dtype", ["uint16", "uint32"])
def test_same_answers_as_infini_gram(dtype, fast_tmp):
    rng = random.Random(dtype)
    if dtype == "uint16":
        alphabet, vocab_size, documents = [1, 2, 3, 5, 8, 13, 300], 400, 120
    else:
        alphabet, vocab_size, documents = [1, 2, 65_535, 65_536, 70_000, 99_999], 100_000, 40
    shards = random_shards(rng, alphabet, 3, documents)
    ig_dir = fast_tmp / "infini-gram"
    ig_dir.mkdir()
    write_infinigram_shards(ig_dir, shards, dtype)
    if dtype == "uint16":
        build_with_rust_indexing(ig_dir, shards)
    else:
        write_suffix_tables(ig_dir, shards, dtype)
    engine = InfiniGramEngine(
        index_dir=str(ig_dir),
        eos_token_id=EOS,
        vocab_size=int(np.iinfo(dtype).max),
        token_dtype={"uint16": "u16", "uint32": "u32"}[dtype],
    )

    with indexed(shards, dtype=dtype, eos_id=EOS, vocab_size=vocab_size) as index:
        documents_total = sum(len(d) for d in shards)
        # infini-gram's empty query counts its separators too
        assert engine.count([])["count"] == index.total_tokens + documents_total
        stream = [t for docs in shards for d in docs for t in d]
        queries = [[rng.choice(alphabet) for _ in range(rng.randint(1, 4))] for _ in range(150)]
        for _ in range(150):  # windows of the documents, up to 25 tokens: long matches
            doc = rng.choice([d for docs in shards for d in docs if d])
            n = rng.randint(1, min(25, len(doc)))
            start = rng.randrange(len(doc) - n + 1)
            queries.append(doc[start : start + n])
        queries.append([alphabet[0]] * 30)
        counts = index.count_batch(queries)
        assert counts == [engine.count(q)["count"] for q in queries]
        assert sum(c > 0 for c in counts) > 150 and max(counts) > 100
        assert counts[:3] == [index.count(q) for q in queries[:3]]
        assert len(stream) > 1000

        for prompt in queries[::3]:
            for continuation in rng.sample([*alphabet, EOS, 4], 4):
                reference = engine.prob(prompt, continuation)
                assert index.ngram_prob(prompt, continuation) == reference["prob"]
                reference = engine.infgram_prob(prompt, continuation)
                probability, suffix_length = index.infgram_prob(prompt, continuation)
                assert suffix_length == reference["suffix_len"]
                if suffix_length:
                    assert probability == reference["prob"]
                else:  # backed off to nothing: its denominator has the separators too
                    assert reference["prompt_cnt"] == engine.count([])["count"]
                    assert probability == reference["cont_cnt"] / index.total_tokens
            # a prompt whose start occurs nowhere: the ∞-gram backs off
            longer = [4, 4, *prompt]
            probability, suffix_length = index.infgram_prob(longer, prompt[0])
            reference = engine.infgram_prob(longer, prompt[0])
            assert suffix_length == reference["suffix_len"] <= len(prompt)
            if suffix_length:
                assert probability == reference["prob"]
                # every continuation, counted exactly (no sampling: max_support above the count)
                result = index.next_tokens(longer)
                suffix = longer[len(longer) - suffix_length :]
                distribution = engine.ntd(suffix, max_support=10**9)
                assert not distribution["approx"]
                assert distribution["prompt_cnt"] == result.count
                assert {
                    t: r["cont_cnt"] for t, r in distribution["result_by_token_id"].items()
                } == dict(zip(result.tokens.tolist(), result.counts.tolist()))
