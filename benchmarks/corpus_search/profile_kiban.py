"""Where kiban's index spends its time: per-call breakdowns of count / ∞-gram prob / trace, a
cProfile of trace, and the build's phases (suffix sort, post-processing, checksums) with memory.

Every figure is process-CPU per call, median over 5 passes over the query set (shared host).

    python profile_kiban.py --index /tmp/csb/kiban/c100m_s1 --queries data/q_c100m.npz \
        --out results/profile_c100m_s1.json [--build_phases data/c100m]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import statistics
import time

import numpy as np


def per_call_us(fn, items, repeats=5):
    fn_items = list(items)
    for x in fn_items:
        fn(x)
    cpus = []
    for _ in range(repeats):
        c = time.process_time()
        for x in fn_items:
            fn(x)
        cpus.append(time.process_time() - c)
    return round(statistics.median(cpus) / len(fn_items) * 1e6, 2)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--index", required=True)
    ap.add_argument("--queries", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--build_phases", help="harness corpus dir: time/measure the build's phases")
    a = ap.parse_args()

    from kiban.index import TokenIndex, _kernels

    ix = TokenIndex(a.index)
    Q = np.load(a.queries)
    res = {
        "index": a.index,
        "shards": len(ix.shards),
        "loadavg_1m": os.getloadavg()[0],
        "count": {},
        "infgram_prob_n32": {},
        "trace": {},
    }
    sh = ix.shards[0]

    # --- count: API call vs its parts ---------------------------------------------------------
    for n in (1, 3, 8, 32):
        qs = [q.tolist() for q in Q[f"in_n{n}"]]
        arrs = [np.asarray(q, dtype=np.int64) for q in qs]
        r = {
            "TokenIndex.count": per_call_us(ix.count, qs),
            "as_ids (asarray + first_invalid)": per_call_us(ix.as_ids, qs),
            "np.asarray(list, int64) only": per_call_us(
                lambda q: np.asarray(q, dtype=np.int64), qs
            ),
            "first_invalid kernel only": per_call_us(
                lambda x: _kernels.first_invalid(x, ix.vocab_size, ix.eos_id), arrs
            ),
            "Shard.find (first-token block, then search), per shard": per_call_us(
                lambda x: [s.find(x) for s in ix.shards], arrs
            ),
            "find_range kernel, plain arrays, per shard": per_call_us(
                lambda x: [
                    _kernels.find_range(s.tokens, s.suffix_array, x, 0, len(x)) for s in ix.shards
                ],
                arrs,
            ),
            "count_batch, per query (whole set in one call)": round(
                per_call_us(lambda _: ix.count_batch(qs), [0]) / len(qs), 2
            ),
        }
        # frequent unigrams: the 20 most frequent ids (p99 blow-up check)
        res["count"][f"n{n}"] = r
    tok = np.asarray(sh.tokens[: min(len(sh.tokens), 20_000_000)])
    freq = np.bincount(tok, minlength=65536)
    top = [[int(t)] for t in np.argsort(freq)[::-1][:20]]
    res["count"]["top20_unigrams"] = {
        "TokenIndex.count": per_call_us(ix.count, top),
        "counts": [ix.count(q) for q in top[:5]],
    }

    # --- ∞-gram prob, 32-token prompts (31 + 1) ------------------------------------------------
    calls = {"n": 0}
    orig = ix._ranges

    def counting(ids):
        calls["n"] += 1
        return orig(ids)

    qs = [q.tolist() for q in Q["in_n32"]] + [q.tolist() for q in Q["out_n32"]]
    ix._ranges = counting
    for q in qs:
        ix.infgram_prob(q[:-1], q[-1])
    ix._ranges = orig
    arrs = [np.asarray(q[:-1], dtype=np.int64) for q in qs]
    res["infgram_prob_n32"] = {
        "TokenIndex.infgram_prob": per_call_us(lambda q: ix.infgram_prob(q[:-1], q[-1]), qs),
        "_longest_suffix only": per_call_us(ix._longest_suffix, arrs),
        "_ranges calls per query": round(calls["n"] / len(qs), 2),
        "_ranges per call": per_call_us(ix._ranges, arrs),
        "lower bound: 1 find_range per shard": per_call_us(
            lambda x: [
                _kernels.find_range(s.tokens, s.suffix_array, x, 0, len(x)) for s in ix.shards
            ],
            arrs,
        ),
    }

    # --- trace ---------------------------------------------------------------------------------
    for L in (128, 512):
        qs = [q.tolist() for q in Q[f"trace_L{L}"]][:100]
        arrs = [np.asarray(q, dtype=np.int64) for q in qs]
        import math

        kw = dict(
            min_length=1, max_count=10, max_spans=int(math.ceil(L * 0.05)), matches_per_span=10
        )
        spans = [ix.maximal_spans(x) for x in arrs]
        r = {
            "TokenIndex.trace": per_call_us(lambda q: ix.trace(q, **kw), qs, repeats=3),
            "maximal_spans": per_call_us(ix.maximal_spans, arrs, repeats=3),
            "longest_matches kernel (all shards)": per_call_us(
                lambda x: [
                    _kernels.longest_matches(s.tokens, s.suffix_array, x) for s in ix.shards
                ],
                arrs,
                repeats=3,
            ),
            "maximal spans per text": round(statistics.fmean(len(s) for s in spans), 1),
            "count() of every maximal span": per_call_us(
                lambda p: [ix.count(p[0][a:b]) for a, b in p[1]], list(zip(arrs, spans)), repeats=3
            ),
        }
        pr = cProfile.Profile()
        pr.enable()
        for q in qs:
            ix.trace(q, **kw)
        pr.disable()
        s = io.StringIO()
        pstats.Stats(pr, stream=s).sort_stats("tottime").print_stats(12)
        r["cprofile_tottime_top"] = s.getvalue().splitlines()[:40]
        res["trace"][f"L{L}"] = r

    if a.build_phases:
        res["build_phases"] = build_phases(a.build_phases)
    json.dump(res, open(a.out, "w"), indent=1)
    print(json.dumps(res, indent=1))


def build_phases(data):
    """The pieces of `kiban.index.build._build_shard` on one shard of the harness corpus, each in
    a fresh child so its peak RSS is its own (ru_maxrss of the child)."""
    import subprocess
    import sys

    prog = r"""
import sys, time, resource, hashlib, numpy as np, pydivsufsort
tok = np.fromfile(sys.argv[1] + "/tokens.u16", dtype=np.uint16)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
phase = sys.argv[2]
t = time.perf_counter()
if phase == "pydivsufsort_u16":           # what kiban calls: u16 -> big-endian bytes, 2N-byte SA, filter
    sa = pydivsufsort.divsufsort(tok)
elif phase == "divsufsort_bytes_only":    # the byte-level suffix sort alone
    b = tok.astype(">u2").view(np.uint8); sa = pydivsufsort.divsufsort(b)
elif phase == "sha256_tokens":
    hashlib.sha256(tok.tobytes()).hexdigest()
dt = time.perf_counter() - t
print(dt, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024, tok.nbytes / 2**20)
"""
    out = {}
    for phase in ("pydivsufsort_u16", "divsufsort_bytes_only", "sha256_tokens"):
        r = subprocess.run(
            [sys.executable, "-c", prog, data, phase], capture_output=True, text=True, check=True
        )
        dt, extra, data_mib = map(float, r.stdout.split())
        out[phase] = {
            "seconds": round(dt, 2),
            "peak_rss_beyond_loaded_tokens_MiB": round(extra, 1),
            "tokens_MiB": round(data_mib, 1),
        }
    return out


if __name__ == "__main__":
    main()
