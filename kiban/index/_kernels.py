"""Compiled query kernels over one shard: ``tokens`` (the shard's token ids, documents separated
by the end-of-text id) and ``suffix_array`` (start positions of all suffixes in sorted order).

All searches are binary searches over the suffix array, comparing tokens in place (memory-mapped
arrays work as they are). A suffix that ends inside the compared span sorts before every longer
one (it is a shorter string), which is how the end of the shard is handled.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def _compare(tokens, position, query, start, length):
    """Sign of (suffix at ``position``)[:length] versus query[start:start+length]."""
    n = tokens.shape[0]
    for j in range(length):
        if position + j >= n:
            return -1
        a = tokens[position + j]
        b = query[start + j]
        if a < b:
            return -1
        if a > b:
            return 1
    return 0


@njit(cache=True, nogil=True)
def find_range(tokens, suffix_array, query, start, length):
    """[lo, hi): the suffix-array rows whose suffix begins with query[start:start+length]."""
    return find_range_within(tokens, suffix_array, 0, suffix_array.shape[0], query, start, length)


@njit(cache=True, nogil=True)
def find_range_within(tokens, suffix_array, lo, hi, query, start, length):
    """As `find_range`, searching only rows [lo, hi) (known to hold every match)."""
    upper = hi
    # lower bound, narrowing the upper bound on the way
    while lo < hi:
        mid = (lo + hi) >> 1
        c = _compare(tokens, suffix_array[mid], query, start, length)
        if c < 0:
            lo = mid + 1
        else:
            if c > 0:
                upper = mid
            hi = mid
    first = lo
    hi = upper
    while lo < hi:
        mid = (lo + hi) >> 1
        if _compare(tokens, suffix_array[mid], query, start, length) <= 0:
            lo = mid + 1
        else:
            hi = mid
    return first, lo


@njit(cache=True, nogil=True)
def _token_at(tokens, position):
    return np.int64(tokens[position]) if position < tokens.shape[0] else np.int64(-1)


@njit(cache=True, nogil=True)
def _first_row_after(tokens, suffix_array, a, b, depth, token, inclusive):
    """First row in [a, b) whose token at ``depth`` is > ``token`` (>= when not inclusive);
    rows of [a, b) are sorted by that token."""
    while a < b:
        mid = (a + b) >> 1
        here = _token_at(tokens, suffix_array[mid] + depth)
        if here < token or (inclusive and here == token):
            a = mid + 1
        else:
            b = mid
    return a


@njit(cache=True, nogil=True)
def narrow(tokens, suffix_array, lo, hi, depth, token):
    """Within [lo, hi) (suffixes sharing their first ``depth`` tokens), the rows whose token at
    ``depth`` is ``token``."""
    first = _first_row_after(tokens, suffix_array, lo, hi, depth, token, False)
    return first, _first_row_after(tokens, suffix_array, first, hi, depth, token, True)


@njit(cache=True, nogil=True)
def next_tokens(tokens, suffix_array, lo, hi, depth):
    """Distinct tokens following the shared prefix of rows [lo, hi), with their counts.

    Rows are sorted by that next token, so each distinct token is one block, found by one
    binary search: cost is (distinct tokens) x log(hi - lo), exact, no sampling.
    A suffix that ends at the shard's end has no next token and is skipped."""
    out_tokens = np.empty(min(hi - lo, 1 << 16), dtype=np.int64)
    out_counts = np.empty(min(hi - lo, 1 << 16), dtype=np.int64)
    k = 0
    row = lo
    while row < hi:
        token = _token_at(tokens, suffix_array[row] + depth)
        a = _first_row_after(tokens, suffix_array, row, hi, depth, token, True)
        if token >= 0:
            if k == out_tokens.shape[0]:
                grown_t = np.empty(2 * k, dtype=np.int64)
                grown_c = np.empty(2 * k, dtype=np.int64)
                grown_t[:k] = out_tokens
                grown_c[:k] = out_counts
                out_tokens, out_counts = grown_t, grown_c
            out_tokens[k] = token
            out_counts[k] = a - row
            k += 1
        row = a
    return out_tokens[:k], out_counts[:k]


@njit(cache=True, nogil=True)
def longest_matches(tokens, suffix_array, query):
    """For every start i of ``query``, the length of the longest prefix of query[i:] that occurs
    in the shard, and the suffix-array range of that prefix.

    Uses match(i+1) >= match(i) - 1: each start re-finds the previous match minus its first
    token, then extends it one token at a time (each extension narrows the range)."""
    m = query.shape[0]
    lengths = np.zeros(m, dtype=np.int64)
    los = np.zeros(m, dtype=np.int64)
    his = np.zeros(m, dtype=np.int64)
    previous = 0
    for i in range(m):
        length = max(previous - 1, 0)
        if length > 0:
            lo, hi = find_range(tokens, suffix_array, query, i, length)
        else:
            lo, hi = 0, suffix_array.shape[0]
        while i + length < m:
            a, b = narrow(tokens, suffix_array, lo, hi, length, np.int64(query[i + length]))
            if a >= b:
                break
            lo, hi = a, b
            length += 1
        lengths[i] = length
        los[i] = lo
        his[i] = hi
        previous = length
    return lengths, los, his


@njit(cache=True, nogil=True)
def count_batch(tokens, suffix_array, queries, starts, lengths):
    """Counts for many queries packed in one array (query k is queries[starts[k]:+lengths[k]])."""
    out = np.empty(starts.shape[0], dtype=np.int64)
    for k in range(starts.shape[0]):
        lo, hi = find_range(tokens, suffix_array, queries, starts[k], lengths[k])
        out[k] = hi - lo
    return out


@njit(cache=True, nogil=True)
def first_invalid(ids, vocab_size, separator):
    """Index of the first id outside [0, vocab_size) or equal to ``separator``; -1 if none."""
    for i in range(ids.shape[0]):
        if ids[i] < 0 or ids[i] >= vocab_size or ids[i] == separator:
            return i
    return -1


@njit(cache=True, nogil=True)
def compact_aligned(byte_suffix_array, width):
    """In place: keep the byte suffixes that start on a token (offset divisible by ``width``),
    as token positions. Returns how many were kept (the token suffix array's length)."""
    kept = 0
    for i in range(byte_suffix_array.shape[0]):
        position = byte_suffix_array[i]
        if position % width == 0:
            byte_suffix_array[kept] = position // width
            kept += 1
    return kept
