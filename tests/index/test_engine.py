"""`TokenIndex` against brute force on random multi-shard corpora: small alphabets (queries
repeat), empty documents and shards, uint16 and uint32 tokens, ids past 65,535, the end-of-text
id anywhere in the vocabulary. Every comparison is exact."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kiban.index import Match, QueryError

from .helpers import Brute, indexed


@st.composite
def corpora(draw):
    """(shards, options): shards -> documents -> ids, and `write_bare_corpus` options."""
    dtype = draw(st.sampled_from(["uint16", "uint32"]))
    if dtype == "uint16":
        vocab_size = draw(st.sampled_from([8, 300, 65_536]))
    else:
        vocab_size = draw(st.sampled_from([65_537, 70_000, 1 << 20]))
    eos_id = draw(st.sampled_from(sorted({0, 1, vocab_size // 2, vocab_size - 1})))
    # a small alphabet; uint32 corpora always use ids on both sides of 65,535
    pool = [i for i in sorted({1, 2, 3, 5, 7, vocab_size - 2, vocab_size // 3}) if i != eos_id]
    if dtype == "uint32":
        pool += [65_535, 65_536, vocab_size - 3]
    alphabet = draw(
        st.lists(st.sampled_from(sorted(set(pool) - {eos_id})), min_size=1, max_size=4, unique=True)
    )
    document = st.lists(st.sampled_from(alphabet), max_size=9)  # length-0 documents included
    shards = draw(st.lists(st.lists(document, max_size=5), min_size=1, max_size=4))
    return shards, {"dtype": dtype, "eos_id": eos_id, "vocab_size": vocab_size}, alphabet


def query_lists(data, shards, alphabet, *, count=8, max_size=5):
    """Queries: random ones over the alphabet (plus a valid id absent from the corpus) and
    windows cut from the documents, so that most occur."""
    windows = [
        d[i:j]
        for docs in shards
        for d in docs
        for i in range(len(d))
        for j in range(i + 1, min(len(d), i + max_size) + 1)
    ]
    random_query = st.lists(st.sampled_from(alphabet), min_size=1, max_size=max_size)
    choice = st.one_of(random_query, st.sampled_from(windows)) if windows else random_query
    return data.draw(st.lists(choice, min_size=1, max_size=count))


def usable(alphabet, options):
    """Alphabet plus one in-vocabulary id that is not in the corpus."""
    absent = 4 if 4 < options["vocab_size"] and 4 != options["eos_id"] else None
    return [*alphabet, *([absent] if absent is not None and absent not in alphabet else [])]


@settings(parent=settings.get_profile("kiban-index"))
@given(st.data())
def test_count_batch_windows_and_matches(data):
    shards, options, alphabet = data.draw(corpora())
    brute = Brute(shards, options["eos_id"])
    with indexed(shards, **options) as index:
        assert index.total_tokens == brute.total
        assert index.documents == sum(len(docs) for docs in shards)
        queries = query_lists(data, shards, usable(alphabet, options))
        expected = [brute.count(q) for q in queries]
        assert [index.count(q) for q in queries] == expected
        assert index.count_batch(queries) == expected
        assert index.count_batch([]) == []
        for q in queries:
            occurrences = brute.suffix_order(brute.occurrences(q))
            assert index.matches(q) == [Match(*o) for o in occurrences]
            assert index.matches(q, limit=2) == [Match(*o) for o in occurrences[:2]]
            # the numpy and tuple forms of a query are the same query
            assert index.count(np.array(q, dtype=np.uint32)) == len(occurrences)
        ids = data.draw(st.lists(st.sampled_from(alphabet), min_size=1, max_size=10))
        n = data.draw(st.integers(1, 12))
        width = min(n, len(ids))
        assert index.count_windows(ids, n).tolist() == [
            brute.count(ids[i : i + width]) for i in range(len(ids) - width + 1)
        ]


@settings(parent=settings.get_profile("kiban-index"))
@given(st.data())
def test_ngram_and_infgram(data):
    shards, options, alphabet = data.draw(corpora())
    eos = options["eos_id"]
    brute = Brute(shards, eos)
    symbols = usable(alphabet, options)
    with indexed(shards, **options) as index:
        prompts = [[], *query_lists(data, shards, symbols, count=5, max_size=6)]
        for prompt in prompts:
            # the end-of-text id is a continuation like any other (a document ending there)
            for continuation in [*symbols, eos]:
                assert index.ngram_prob(prompt, continuation) == brute.ngram_prob(
                    prompt, continuation
                )
                assert index.infgram_prob(prompt, continuation) == brute.infgram_prob(
                    prompt, continuation
                )
            # a longer prompt whose start never occurs: the ∞-gram backs off to a suffix
            longer = [*data.draw(st.lists(st.sampled_from(symbols), max_size=4)), *prompt]
            for p in (prompt, longer):
                result = index.next_tokens(p)
                length, count, following = brute.next_tokens(p)
                assert (result.suffix_length, result.count) == (length, count)
                assert dict(zip(result.tokens.tolist(), result.counts.tolist())) == following
                assert result.tokens.tolist() == sorted(following)
                assert result.total == count  # every occurrence has a next token (maybe eos)
                if count:
                    assert math.isclose(sum(result.probabilities().values()), 1.0)
        ids = data.draw(st.lists(st.sampled_from(symbols), min_size=1, max_size=8))
        assert index.sequence_prob(ids) == brute.sequence_prob(ids)


@settings(parent=settings.get_profile("kiban-index"))
@given(st.data())
def test_maximal_spans_and_trace(data):
    shards, options, alphabet = data.draw(corpora())
    brute = Brute(shards, options["eos_id"])
    symbols = usable(alphabet, options)
    with indexed(shards, **options) as index:
        # a text made of document pieces and random ids, as a model's output might be
        pieces = query_lists(data, shards, symbols, count=3, max_size=8)
        ids = [
            t
            for piece in pieces
            for t in (*piece, *data.draw(st.lists(st.sampled_from(symbols), max_size=2)))
        ]
        spans = brute.maximal_spans(ids)
        assert index.maximal_spans(ids) == spans
        min_length = data.draw(st.integers(1, 3))
        max_count = data.draw(st.none() | st.integers(0, 4))
        max_spans = data.draw(st.none() | st.integers(1, 3))
        per_span = data.draw(st.integers(0, 3))
        kept = [(i, j, brute.count(ids[i:j])) for i, j in spans if j - i >= min_length]
        kept = [s for s in kept if max_count is None or s[2] <= max_count]
        kept.sort(key=lambda s: (s[0] - s[1], s[0]))
        kept = kept[:max_spans]
        traced = index.trace(
            ids,
            min_length=min_length,
            max_count=max_count,
            max_spans=max_spans,
            matches_per_span=per_span,
        )
        assert [(s.start, s.end, s.count) for s in traced] == kept
        for span in traced:
            occurrences = brute.suffix_order(brute.occurrences(ids[span.start : span.end]))
            assert list(span.matches) == [Match(*o) for o in occurrences[:per_span]]
            assert span.length == span.end - span.start


def test_matches_never_cross_documents_or_shards():
    # 11 ends documents (and shard 0), 12 starts them: [11, 12] is in the token stream of
    # shard 0 only across the end-of-text token, and across the shards not at all
    shards = [[[1, 11], [12, 2], [3, 11]], [[12, 3]]]
    brute = Brute(shards, 0)
    with indexed(shards, eos_id=0, vocab_size=20) as index:
        assert index.count([11]) == 2 and index.count([12]) == 2
        assert index.count([11, 12]) == 0 == brute.count([11, 12])
        assert index.count_batch([[11, 12], [1, 11], [12, 2]]) == [0, 1, 1]
        assert index.count_windows([1, 11, 12, 2], 2).tolist() == [1, 0, 1]
        assert index.matches([11, 12]) == []
        assert index.maximal_spans([1, 11, 12, 2]) == [(0, 2), (2, 4)]
        assert index.ngram_prob([11], 12) == 0.0
        assert index.ngram_prob([11], 0) == 1.0  # 11 always ends a document
        assert index.infgram_prob([2, 11], 12) == (0.0, 1)
        result = index.next_tokens([3, 11])
        assert (result.suffix_length, result.tokens.tolist()) == (2, [0])
        for query in ([11, 0, 12], [0], [0, 1], [1, 0]):
            with pytest.raises(QueryError, match="document separator"):
                index.count(query)
        with pytest.raises(QueryError, match="document separator"):
            index.next_tokens([11, 0])


def test_matches_limit_and_documents():
    shards = [[[5, 5, 5], [], [5]], [], [[6, 5], [5]]]
    with indexed(shards, eos_id=9, vocab_size=10) as index:
        assert index.count([5]) == 6
        assert {(m.shard, m.position, m.document) for m in index.matches([5])} == {
            (0, 0, 0),
            (0, 1, 0),
            (0, 2, 0),
            (0, 5, 2),
            (2, 1, 0),
            (2, 3, 1),
        }
        assert index.matches([5], limit=0) == []
        assert len(index.matches([5], limit=4)) == 4
        assert index.matches([5], limit=4) == index.matches([5])[:4]
        assert index.count([5, 5, 5, 5]) == 0 and index.count([5, 5]) == 2
        assert index.next_tokens([7]).suffix_length == 0  # 7 never occurs: back off to nothing
        assert index.next_tokens([7]).count == index.total_tokens == 12


def test_every_shard_empty():
    with indexed([[], []], eos_id=0, vocab_size=5) as index:
        assert index.count([1]) == 0 and index.total_tokens == 0
        assert index.next_tokens([1]).count == 0 and index.next_tokens([]).tokens.size == 0
        assert index.ngram_prob([], 1) == -1.0 and index.ngram_prob([1], 2) == -1.0
        assert index.infgram_prob([1], 2) == (0.0, 0)
        assert index.maximal_spans([1, 2]) == [] and index.trace([1, 2]) == []
        assert index.sequence_prob([1]) == ([0.0], -math.inf)


BAD_QUERIES = [
    ([], "empty query"),
    ([1, 99], r"outside the vocabulary \(0 … 9\)"),
    ([-1], "outside the vocabulary"),
    ([2**70], "outside the vocabulary"),
    (np.array([2**63], dtype=np.uint64), "outside the vocabulary"),
    ([1.5], "must be integers"),
    ([1.0, 2.0], "must be integers"),
    (np.array([1.0]), "must be integers"),
    (["5"], "must be integers"),
    ([True], "must be integers"),
    ([1, None], "must be integers"),
    ([[1, 2]], "flat list"),
    ([[1], [2, 3]], "flat list"),
    ("12", "flat list"),
    (b"12", "flat list"),
    (None, "flat list"),
    (7, "flat list"),
    ({1: 2}, "flat list|integers"),
    ([0], "document separator"),
]


@pytest.mark.parametrize(
    ("query", "message"), BAD_QUERIES, ids=[repr(q)[:30] for q, _ in BAD_QUERIES]
)
def test_bad_queries(query, message):
    with indexed([[[1, 2, 3]]], eos_id=0, vocab_size=10) as index:
        for method in (
            index.count,
            index.matches,
            index.maximal_spans,
            index.trace,
            index.sequence_prob,
            lambda q: index.count_batch([[1], q]),
            lambda q: index.count_windows(q, 2),
        ):
            with pytest.raises(QueryError, match=message):
                method(query)
        if message != "empty query":  # an empty prompt is the ∞-gram's shortest context
            for method in (
                index.next_tokens,
                lambda q: index.ngram_prob(q, 1),
                lambda q: index.infgram_prob(q, 1),
            ):
                with pytest.raises(QueryError, match=message):
                    method(query)


def test_bad_continuations_and_windows():
    with indexed([[[1, 2, 3]]], eos_id=0, vocab_size=10) as index:
        for continuation, message in (
            (10, "outside the vocabulary"),
            (-1, "outside"),
            (1.0, "one integer"),
            (True, "one integer"),
            ([1], "one integer"),
            ("1", "one integer"),
        ):
            for method in (index.ngram_prob, index.infgram_prob):
                with pytest.raises(QueryError, match=message):
                    method([1], continuation)
        assert index.ngram_prob([3], np.int64(0)) == 1.0
        for n in (0, -2, 1.5, None):
            with pytest.raises(QueryError, match="window length"):
                index.count_windows([1, 2], n)


def test_counts_use_the_first_token_blocks_over_all_shards():
    """Counts start from each shard's first-token table (one-token queries need no search); the
    empty-prompt next-token distribution is read off the tables: the same answers."""
    shards = [[[1, 2, 1], [2, 1]], [], [[1, 2, 2, 1]], [[2]]]
    brute = Brute(shards, 0)
    queries = [[1], [2], [1, 2], [2, 1], [2, 2], [1, 2, 2, 1], [3], [1, 1], [4]]
    with indexed(shards, eos_id=0, vocab_size=5) as index:
        assert [index.count(q) for q in queries] == [brute.count(q) for q in queries]
        assert index.ngram_prob([1], 0) == brute.ngram_prob([1], 0)
        unigram = index.next_tokens([])
        assert unigram.suffix_length == 0 and unigram.count == index.total_tokens
        assert dict(zip(unigram.tokens.tolist(), unigram.counts.tolist())) == {0: 4, 1: 5, 2: 5}
