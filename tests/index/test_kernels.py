"""The numba kernels against plain Python, on suffix arrays made by sorting suffixes in Python
(so neither side trusts pydivsufsort), and pydivsufsort's arrays against that sort."""

from __future__ import annotations

import numpy as np
import pydivsufsort
from hypothesis import given, settings
from hypothesis import strategies as st

from kiban.index import _kernels


def python_suffix_array(tokens: list[int]) -> np.ndarray:
    return np.array(sorted(range(len(tokens)), key=lambda i: tokens[i:]), dtype=np.int64)


def python_range(tokens: list[int], sa: np.ndarray, query: list[int]) -> tuple[int, int]:
    rows = [r for r, p in enumerate(sa) if tokens[p : p + len(query)] == query]
    if not rows:  # empty range: where the query would be inserted
        below = sum(1 for p in sa if tokens[p : p + len(query)] < query)
        return below, below
    assert rows == list(range(rows[0], rows[-1] + 1))  # a contiguous block
    return rows[0], rows[-1] + 1


@st.composite
def token_arrays(draw, max_size=40):
    dtype = draw(st.sampled_from(["uint16", "uint32"]))
    high = 65_535 if dtype == "uint16" else 2**32 - 1
    # few distinct values so that queries repeat; with uint32, values past 65,535
    alphabet = draw(st.lists(st.integers(0, high), min_size=1, max_size=4, unique=True))
    tokens = draw(st.lists(st.sampled_from(alphabet), max_size=max_size))
    return np.array(tokens, dtype=dtype), alphabet


def queries(alphabet, max_size=5):
    return st.lists(st.sampled_from([*alphabet, 7, 70_000]), max_size=max_size)


@settings(deadline=None, max_examples=100)
@given(token_arrays())
def test_pydivsufsort_sorts_like_python(arrays):
    tokens, _ = arrays
    if len(tokens):
        np.testing.assert_array_equal(
            pydivsufsort.divsufsort(tokens), python_suffix_array(tokens.tolist())
        )


@settings(deadline=None, max_examples=100)
@given(st.data())
def test_find_range_and_count_batch(data):
    tokens, alphabet = data.draw(token_arrays())
    as_list = tokens.tolist()
    sa = python_suffix_array(as_list)
    qs = data.draw(st.lists(queries(alphabet), min_size=1, max_size=6))
    packed = np.array([t for q in qs for t in q], dtype=np.int64)
    lengths = np.array([len(q) for q in qs], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    expected = []
    for q, start in zip(qs, starts):
        lo, hi = _kernels.find_range(tokens, sa, packed, start, len(q))
        assert (lo, hi) == python_range(as_list, sa, q)
        expected.append(hi - lo)
    assert _kernels.count_batch(tokens, sa, packed, starts, lengths).tolist() == expected
    for q, n in zip(qs, expected):  # searching inside the first token's block: same range
        if not q:
            continue
        query = np.array(q, dtype=np.int64)
        block = [i for i, p in enumerate(sa.tolist()) if as_list[p] == q[0]]
        lo, hi = (block[0], block[-1] + 1) if block else (0, 0)
        if hi > lo:
            found = _kernels.find_range_within(tokens, sa, lo, hi, query, 0, len(q))
            assert found[1] - found[0] == n and (n == 0 or found == python_range(as_list, sa, q))


@settings(deadline=None, max_examples=100)
@given(st.data())
def test_narrow_and_next_tokens(data):
    tokens, alphabet = data.draw(token_arrays())
    as_list = tokens.tolist()
    sa = python_suffix_array(as_list)
    prefix = data.draw(queries(alphabet, max_size=3))
    lo, hi = python_range(as_list, sa, prefix)
    following = {}
    for p in sa[lo:hi]:
        if p + len(prefix) < len(as_list):  # a suffix ending with the prefix has no next token
            t = as_list[p + len(prefix)]
            following[t] = following.get(t, 0) + 1
    if hi > lo:
        got_tokens, got_counts = _kernels.next_tokens(tokens, sa, lo, hi, len(prefix))
        assert dict(zip(got_tokens.tolist(), got_counts.tolist())) == following
        assert got_tokens.tolist() == sorted(following)
    token = data.draw(st.sampled_from([*alphabet, 7]))
    assert _kernels.narrow(tokens, sa, lo, hi, len(prefix), token) == python_range(
        as_list, sa, [*prefix, token]
    )


@settings(deadline=None, max_examples=100)
@given(st.data())
def test_longest_matches(data):
    tokens, alphabet = data.draw(token_arrays())
    as_list = tokens.tolist()
    sa = python_suffix_array(as_list)
    query = data.draw(queries(alphabet, max_size=12))
    lengths, los, his = _kernels.longest_matches(tokens, sa, np.array(query, dtype=np.int64))

    def occurs(q):
        return any(as_list[i : i + len(q)] == q for i in range(len(as_list) - len(q) + 1))

    for i in range(len(query)):
        longest = max(k for k in range(len(query) - i + 1) if occurs(query[i : i + k]))
        assert lengths[i] == longest
        assert (los[i], his[i]) == python_range(as_list, sa, query[i : i + longest])


def test_next_tokens_more_distinct_than_its_first_buffer():
    # 70,000 distinct followers of token 1: the output buffers (65,536 to start) must grow
    followers = np.arange(2, 70_002, dtype=np.uint32)
    tokens = np.empty(2 * len(followers), dtype=np.uint32)
    tokens[0::2] = 1
    tokens[1::2] = followers
    sa = pydivsufsort.divsufsort(tokens)
    lo, hi = _kernels.find_range(tokens, sa, np.array([1], dtype=np.int64), 0, 1)
    got_tokens, got_counts = _kernels.next_tokens(tokens, sa, lo, hi, 1)
    np.testing.assert_array_equal(got_tokens, followers)
    assert (got_counts == 1).all()


def test_first_invalid():
    ids = np.array([3, 4, 9, 0, 12], dtype=np.int64)
    assert _kernels.first_invalid(ids, 10, 0) == 3  # the separator
    assert _kernels.first_invalid(ids, 10, 5) == 4  # 12 is outside the vocabulary
    assert _kernels.first_invalid(np.array([-1], dtype=np.int64), 10, 0) == 0
    assert _kernels.first_invalid(np.array([1, 2], dtype=np.int64), 10, 0) == -1
