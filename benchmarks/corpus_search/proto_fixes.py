"""Prototypes of the fixes suggested in README.md, measured against kiban as it is (nothing in
``kiban/`` is changed; these kernels live only here). Every prototype's output is checked equal
to kiban's own answer on the same queries.

1. first-token buckets: ``bucket[t]`` = first suffix-array row whose suffix starts with token t
   (cumulative token counts, 65,537 int64 = 512 KiB per shard, computed at open time from the
   tokens), so every search starts inside its first token's block and a unigram count is O(1).
2. ∞-gram longest suffix in one compiled call (binary search on the suffix length inside numba,
   existence probes by a lower-bound search only) instead of ``_ranges`` from Python 5 times.
3. trace counts from ``longest_matches``' own ranges (no ``count()`` per maximal span).

    python proto_fixes.py --index /tmp/csb/kiban/c100m_s1 --queries data/q_c100m.npz --out results/proto_fixes_c100m_s1.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time

import numpy as np
from numba import njit


@njit(cache=False, nogil=True)
def _cmp(tokens, position, query, start, length, skip):
    n = tokens.shape[0]
    for j in range(skip, length):
        if position + j >= n:
            return -1
        a = tokens[position + j]
        b = query[start + j]
        if a < b:
            return -1
        if a > b:
            return 1
    return 0


@njit(cache=False, nogil=True)
def find_range_b(tokens, sa, bucket, query, start, length):
    """find_range, started inside the first token's bucket (compares from token 1)."""
    t = query[start]
    lo, hi = bucket[t], bucket[t + 1]
    if length == 1 or lo >= hi:
        return lo, hi
    upper = hi
    while lo < hi:
        mid = (lo + hi) >> 1
        c = _cmp(tokens, sa[mid], query, start, length, 1)
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
        if _cmp(tokens, sa[mid], query, start, length, 1) <= 0:
            lo = mid + 1
        else:
            hi = mid
    return first, lo


@njit(cache=False, nogil=True)
def exists_b(tokens, sa, bucket, query, start, length):
    """Does query[start:start+length] occur? One lower-bound search (no upper bound)."""
    t = query[start]
    lo, hi = bucket[t], bucket[t + 1]
    if lo >= hi:
        return False
    if length == 1:
        return True
    end = hi
    while lo < hi:
        mid = (lo + hi) >> 1
        if _cmp(tokens, sa[mid], query, start, length, 1) < 0:
            lo = mid + 1
        else:
            hi = mid
    return lo < end and _cmp(tokens, sa[lo], query, start, length, 1) == 0


@njit(cache=False, nogil=True)
def longest_suffix_b(tokens, sa, bucket, prompt):
    """Longest suffix of prompt occurring in the shard (binary search on its length)."""
    m = prompt.shape[0]
    lo, hi, best = 1, m, 0
    while lo <= hi:
        length = (lo + hi) >> 1
        if exists_b(tokens, sa, bucket, prompt, m - length, length):
            best = length
            lo = length + 1
        else:
            hi = length - 1
    return best


@njit(cache=False, nogil=True)
def narrow(tokens, sa, lo, hi, depth, token):
    a, b = lo, hi
    n = tokens.shape[0]
    while a < b:
        mid = (a + b) >> 1
        p = sa[mid] + depth
        v = np.int64(tokens[p]) if p < n else np.int64(-1)
        if v < token:
            a = mid + 1
        else:
            b = mid
    first = a
    b = hi
    while a < b:
        mid = (a + b) >> 1
        p = sa[mid] + depth
        v = np.int64(tokens[p]) if p < n else np.int64(-1)
        if v <= token:
            a = mid + 1
        else:
            b = mid
    return first, a


@njit(cache=False, nogil=True)
def longest_matches_b(tokens, sa, bucket, query):
    """kiban's longest_matches, with bucketed searches and an existence probe first: a start
    whose match cannot reach past the previous end costs one lower-bound search."""
    m = query.shape[0]
    lengths = np.zeros(m, dtype=np.int64)
    los = np.zeros(m, dtype=np.int64)
    his = np.zeros(m, dtype=np.int64)
    previous = 0
    for i in range(m):
        length = max(previous - 1, 0)
        if length > 0:
            if i + length < m and not exists_b(tokens, sa, bucket, query, i, length + 1):
                # cannot extend: match length is previous - 1 (range only needed for counts of
                # maximal spans, and this start is not one: its end equals the previous end)
                lengths[i] = length
                los[i] = -1
                his[i] = -1
                previous = length
                continue
            lo, hi = find_range_b(tokens, sa, bucket, query, i, length)
        else:
            lo, hi = 0, sa.shape[0]
        while i + length < m:
            a, b = narrow(tokens, sa, lo, hi, length, np.int64(query[i + length]))
            if a >= b:
                break
            lo, hi = a, b
            length += 1
        lengths[i] = length
        los[i] = lo
        his[i] = hi
        previous = length
    return lengths, los, his


def per_call_us(fn, items, repeats=5):
    for x in items:
        fn(x)
    cpus = []
    for _ in range(repeats):
        c = time.process_time()
        for x in items:
            fn(x)
        cpus.append(time.process_time() - c)
    return round(statistics.median(cpus) / len(items) * 1e6, 2)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--index", required=True)
    ap.add_argument("--queries", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    from kiban.index import TokenIndex, _kernels

    ix = TokenIndex(a.index)
    Q = np.load(a.queries)
    t = time.perf_counter()
    buckets = []
    for s in ix.shards:
        c = np.bincount(s.tokens, minlength=65536).astype(np.int64)
        buckets.append(np.concatenate([[0], np.cumsum(c)]))
    res = {"index": a.index, "shards": len(ix.shards), "bucket_build_s": round(time.perf_counter() - t, 2),
           "bucket_bytes_per_shard": int(buckets[0].nbytes), "loadavg_1m": os.getloadavg()[0]}
    sh = list(zip(ix.shards, buckets))

    def count_b(x):
        total = 0
        for s, b in sh:
            lo, hi = find_range_b(s.tokens, s.suffix_array, b, x, 0, len(x))
            total += hi - lo
        return total

    for n in (1, 3, 8, 32):
        arrs = [np.asarray(q, dtype=np.int64) for q in Q[f"in_n{n}"]] + \
               [np.asarray(q, dtype=np.int64) for q in Q[f"out_n{n}"]]
        assert [count_b(x) for x in arrs] == [ix.count(x) for x in arrs]
        res[f"count_n{n}"] = {
            "kiban TokenIndex.count (validated ids)": per_call_us(ix.count, arrs),
            "kiban find_range, per shard from Python": per_call_us(
                lambda x: sum(h - l for l, h in (_kernels.find_range(s.tokens, s.suffix_array, x, 0, len(x)) for s in ix.shards)), arrs),
            "bucketed find_range, per shard from Python": per_call_us(count_b, arrs),
        }

    # ∞-gram prob, 32-token queries (31-token prompt)
    qs = [np.asarray(q, dtype=np.int64) for q in Q["in_n32"]] + [np.asarray(q, dtype=np.int64) for q in Q["out_n32"]]

    def infgram_b(q):
        prompt, cont = q[:-1], int(q[-1])
        best = max(longest_suffix_b(s.tokens, s.suffix_array, b, prompt) for s, b in sh)
        num = den = 0
        for s, b in sh:
            if best:
                lo, hi = find_range_b(s.tokens, s.suffix_array, b, prompt, len(prompt) - best, best)
            else:
                lo, hi = 0, len(s.suffix_array)
            den += hi - lo
            if hi > lo:
                x, y = narrow(s.tokens, s.suffix_array, lo, hi, best, cont)
                num += y - x
        return (num / den if den else 0.0), best

    for q in qs:
        assert infgram_b(q) == ix.infgram_prob(q[:-1], int(q[-1])), q
    res["infgram_prob_n32"] = {
        "kiban TokenIndex.infgram_prob": per_call_us(lambda q: ix.infgram_prob(q[:-1], int(q[-1])), qs),
        "compiled longest suffix + bucketed searches": per_call_us(infgram_b, qs),
    }

    # trace: spans and counts from the per-shard longest_matches ranges
    for L in (128, 512):
        texts = [np.asarray(q, dtype=np.int64) for q in Q[f"trace_L{L}"]][:100]
        kw = dict(min_length=1, max_count=10, max_spans=int(math.ceil(L * 0.05)), matches_per_span=10)

        def trace_b(x):
            per = [longest_matches_b(s.tokens, s.suffix_array, b, x) for s, b in sh]
            longest = np.max(np.stack([p[0] for p in per]), axis=0)
            ends = np.arange(len(x)) + longest
            reach = np.maximum.accumulate(np.concatenate([[0], ends[:-1]]))
            keep = np.flatnonzero((longest > 0) & (ends > reach))
            spans = []
            for i in keep:
                c = sum(int(p[2][i] - p[1][i]) for p in per if p[0][i] == longest[i])
                if c <= kw["max_count"]:
                    spans.append((int(i), int(ends[i]), c))
            spans.sort(key=lambda s: (-(s[1] - s[0]), s[0]))
            spans = spans[:kw["max_spans"]]
            return [(s0, e0, c, ix.matches(x[s0:e0], limit=10)) for s0, e0, c in spans]

        for x in texts:
            mine = [(s0, e0, c, tuple(m)) for s0, e0, c, m in trace_b(x)]
            ref = [(t.start, t.end, t.count, t.matches) for t in ix.trace(x, **kw)]
            assert mine == ref
        res[f"trace_L{L}"] = {
            "kiban TokenIndex.trace": per_call_us(lambda x: ix.trace(x, **kw), texts, repeats=3),
            "kiban longest_matches kernel, all shards": per_call_us(
                lambda x: [_kernels.longest_matches(s.tokens, s.suffix_array, x) for s in ix.shards], texts, repeats=3),
            "bucketed + existence-probe longest_matches, all shards": per_call_us(
                lambda x: [longest_matches_b(s.tokens, s.suffix_array, b, x) for s, b in sh], texts, repeats=3),
            "trace with both (counts from the kernel's ranges)": per_call_us(trace_b, texts, repeats=3),
        }
    json.dump(res, open(a.out, "w"), indent=1)
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
