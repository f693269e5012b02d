"""Batch throughput of `TokenIndex.count_batch` versus a Python loop of `count`, next to the peers'
per-call loops (infini-gram ``count``, tokengrams ``count``), on the harness's query sets.

Every figure is the median of ``--repeats`` passes over the whole set (1200 queries), after one
untimed pass; wall and process-CPU time are both recorded (shared 2-core host: CPU is the robust
number). One process measures all engines, one after another, so they see the same load.

    python batch_bench.py --kiban /tmp/csb/kiban/c10m_s1 --ig idx/ig_c10m --tg idx/tg_c10m \
        --queries data/q_c10m.npz --out results/batch_c10m.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np


def timed(fn, repeats):
    walls, cpus = [], []
    fn()  # untimed
    for _ in range(repeats):
        c = time.process_time()
        t = time.perf_counter()
        fn()
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    return statistics.median(walls), statistics.median(cpus)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kiban", action="append", default=[], help="kiban corpus dir (repeatable)")
    ap.add_argument("--ig")
    ap.add_argument("--tg")
    ap.add_argument("--queries", required=True)
    ap.add_argument("--sets", default="in_n1,in_n3,in_n8,in_n32,out_n8,out_n32")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    Q = np.load(a.queries)
    sets = {k: [q.tolist() for q in Q[k]] for k in a.sets.split(",")}
    engines = {}
    for path in a.kiban:
        from kiban.index import TokenIndex

        ix = TokenIndex(path)
        label = f"kiban[{len(ix.shards)} shard{'s' if len(ix.shards) > 1 else ''}]"
        ix.count([1])
        ix.count_batch([[1]])
        engines[f"{label} count_batch"] = lambda qs, ix=ix: ix.count_batch(qs)
        engines[f"{label} loop count"] = lambda qs, ix=ix: [ix.count(q) for q in qs]
    if a.ig:
        sys.path.insert(0, os.path.join(os.path.dirname(a.queries), "..", "harness"))
        from bench import InfiniGramAdapter

        for prefetch in (True, False):
            ig = InfiniGramAdapter(a.ig, prefetch=prefetch)
            engines[f"infini-gram{'' if prefetch else ' no-prefetch'} loop count"] = (
                lambda qs, e=ig.e: [e.count(input_ids=q)["count"] for q in qs]
            )
    if a.tg:
        from tokengrams import MemmapIndex

        tg = MemmapIndex(
            os.path.join(a.tg, "tokens.u16"), os.path.join(a.tg, "index.tg"), vocab=2**16
        )
        engines["tokengrams loop count"] = lambda qs, tg=tg: [tg.count(q) for q in qs]
    res = {"queries": a.queries, "repeats": a.repeats, "host_cpus": os.cpu_count(), "results": {}}
    reference = {}
    for key, qs in sets.items():
        for name, fn in engines.items():
            out = fn(qs)
            ref = reference.setdefault(key, out)
            wall, cpu = timed(lambda: fn(qs), a.repeats)
            r = {
                "n_queries": len(qs),
                "qps_wall": round(len(qs) / wall),
                "qps_cpu": round(len(qs) / cpu),
                "us_per_query_cpu": round(cpu / len(qs) * 1e6, 2),
                "agrees": list(out) == list(ref),
                "loadavg_1m": round(os.getloadavg()[0], 2),
            }
            res["results"][f"{name}/{key}"] = r
            print(f"{name:40s} {key:8s}", json.dumps(r), flush=True)
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    json.dump(res, open(a.out, "w"), indent=1)


if __name__ == "__main__":
    main()
