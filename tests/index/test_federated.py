"""FederatedIndex over several corpora answers exactly as one index over all their shards."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from kiban.index import FederatedIndex, IndexFormatError, QueryError, TokenIndex, build_index

from .helpers import write_bare_corpus


def random_shards(rng, shards: int, documents: int, alphabet: int = 5):
    return [
        [
            rng.integers(1, alphabet, size=int(rng.integers(0, 25))).tolist()
            for _ in range(documents)
        ]
        for _ in range(shards)
    ]


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    """Three corpora (2, 1 and 3 shards) and one corpus holding all six shards."""
    rng = np.random.default_rng(7)
    root = tmp_path_factory.mktemp("federated")
    groups = [random_shards(rng, n, 30) for n in (2, 1, 3)]
    directories = []
    for number, group in enumerate(groups):
        directory = write_bare_corpus(root / f"part{number}", group, vocab_size=8)
        build_index(directory)
        directories.append(directory)
    whole = write_bare_corpus(root / "whole", [s for g in groups for s in g], vocab_size=8)
    build_index(whole)
    return directories, TokenIndex(whole)


def test_every_query_equals_the_single_index(parts):
    directories, whole = parts
    federated = FederatedIndex(directories)
    rng = np.random.default_rng(1)
    queries = [rng.integers(1, 5, size=int(rng.integers(1, 6))).tolist() for _ in range(200)]
    assert [federated.count(q) for q in queries] == [whole.count(q) for q in queries]
    assert federated.count_batch(queries) == whole.count_batch(queries)
    assert federated.total_tokens == whole.total_tokens
    for prompt in queries[:60] + [[], [4, 4, 4, 4, 4, 4, 4, 4, 4]]:
        mine, theirs = federated.next_tokens(prompt), whole.next_tokens(prompt)
        assert (mine.suffix_length, mine.count) == (theirs.suffix_length, theirs.count)
        assert mine.tokens.tolist() == theirs.tokens.tolist()
        assert mine.counts.tolist() == theirs.counts.tolist()
        assert federated.infgram_prob(prompt, 3) == pytest.approx(whole.infgram_prob(prompt, 3))
    text = rng.integers(1, 5, size=80).tolist()
    assert federated.maximal_spans(text) == whole.maximal_spans(text)
    mine = federated.trace(text, max_spans=5, matches_per_span=3)
    theirs = whole.trace(text, max_spans=5, matches_per_span=3)
    assert [(s.start, s.end, s.count) for s in mine] == [(s.start, s.end, s.count) for s in theirs]
    assert all(len(s.matches) == min(3, s.count) for s in mine)


def test_matches_name_their_part(parts):
    directories, _ = parts
    federated = FederatedIndex(directories)
    matches = federated.matches([1])
    assert {m.part for m in matches} == {0, 1, 2}
    assert len(matches) == federated.count([1])
    assert len(federated.matches([1], limit=7)) == 7


def test_partial_results_name_the_missing_part(parts, tmp_path):
    directories, _ = parts
    broken = tmp_path / "broken"
    shutil.copytree(directories[1], broken)
    shutil.rmtree(broken / "index")
    with pytest.raises(IndexFormatError, match="has no index"):
        FederatedIndex([directories[0], broken, directories[2]])
    federated = FederatedIndex([directories[0], broken, directories[2]], allow_partial=True)
    assert federated.partial and federated.missing[0][0] == str(broken)
    assert "has no index" in federated.missing[0][1]
    expected = TokenIndex(directories[0]).count([2, 3]) + TokenIndex(directories[2]).count([2, 3])
    assert federated.count([2, 3]) == expected


def test_parts_must_share_the_tokenizer(tmp_path):
    a = write_bare_corpus(tmp_path / "a", [[[1, 2]]], vocab_size=8, tokenizer_sha256="one")
    b = write_bare_corpus(tmp_path / "b", [[[1, 2]]], vocab_size=8, tokenizer_sha256="two")
    build_index(a)
    build_index(b)
    with pytest.raises(IndexFormatError, match="another tokenizer"):
        FederatedIndex([a, b])


def test_bad_queries_are_query_errors(parts):
    federated = FederatedIndex(parts[0])
    with pytest.raises(QueryError, match="empty query"):
        federated.count([])
    with pytest.raises(QueryError, match="outside the vocabulary"):
        federated.count([99])
