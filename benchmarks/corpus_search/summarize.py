"""Markdown summary of one corpus size's runs (build reports, bench.py results, batch throughput,
output agreement with infini-gram), with the kiban goals checked.

    python summarize.py --tag c100m --results benchmarks/corpus_search/results \
        --harness_results /tmp/csb/corpus-search/results --out .../summary_c100m.md
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

ENGINES = [  # (label, bench result stem)
    ("kiban 1 shard", "kiban_{tag}_s1"),
    ("kiban 8 shards", "kiban_{tag}_s8"),
    ("infini-gram prefetch", "ig_{tag}_mmap"),
    ("infini-gram no-prefetch", "ig_{tag}_noprefetch"),
    ("tokengrams+glue", "tg_{tag}"),
]
REF = "infini-gram no-prefetch"


def load(path):
    return json.load(open(path)) if os.path.exists(path) else None


def fmt(x, nd=1):
    if x is None:
        return "–"
    if isinstance(x, float) and abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:.{nd}f}" if isinstance(x, float) else f"{x:,}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tag", required=True)
    ap.add_argument("--results", required=True)
    ap.add_argument("--harness_results", default="/tmp/csb/corpus-search/results")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    tag, R = a.tag, a.results
    L = []
    P = L.append
    P(f"# kiban TokenIndex vs infini-gram 2.6.0 vs tokengrams 0.3.3 — corpus `{tag}`\n")

    # --- build -------------------------------------------------------------------------------
    ig = load(f"{R}/build_ig_{tag}.json")
    tg = load(f"{R}/build_tg_{tag}.json")
    ks = {s: load(f"{R}/build_kiban_{tag}_{s}.json") for s in ("s1", "s8")}
    P("## Build\n")
    P("| engine | wall s | ratio to infini-gram | Mtok/s | peak RSS MiB | peak RSS beyond data MiB | bytes/token (tokens+SA+offsets) |")
    P("|---|---:|---:|---:|---:|---:|---:|")
    if ig:
        data_mib = ig["files"]["tokenized.0"] / 2**20 if "tokenized.0" in ig["files"] else None
        peak = ig["children_max_rss_MiB"]
        P(f"| infini-gram (1 shard, rust_indexing, --cpus 2) | {ig['total_s']} | 1.00 | {ig['build_throughput_Mtok_per_s']} | "
          f"{peak} (largest child) | {fmt(peak - data_mib) if data_mib else '–'} | {ig['bytes_per_token_core(tokenized+table+offset)']} |")
    for s, k in ks.items():
        if not k:
            continue
        ratio = k["total_s"] / ig["total_s"] if ig else float("nan")
        P(f"| kiban {k['shards']} shard{'s' if k['shards'] > 1 else ''} (workers={k['workers']}) | {k['total_s']} | "
          f"{ratio:.2f} | {k['build_throughput_Mtok_per_s']} | {k['build_peak_tree_rss_MiB']} (process tree) | "
          f"{k['build_peak_beyond_data_MiB']} | {k['bytes_per_token_core(tokens+sa+offsets)']} |")
    if tg:
        P(f"| tokengrams | {tg['build_s']} | {tg['build_s'] / ig['total_s']:.2f} | {tg['Mtok_per_s']} | {tg['max_rss_MiB']} | – | {tg['bytes_per_token_total']} |")
    P("")

    # --- latency -----------------------------------------------------------------------------
    res = {}
    for label, stem in ENGINES:
        r = load(f"{R}/bench_{stem.format(tag=tag)}.json")
        if r:
            res[label] = r
    if res:
        P("## Latency (harness `bench.py --warm_pass --heavy_limit 100`; µs; wall p50 / wall p99 / **CPU p50** / CPU p99)\n")
        labels = list(res)
        P("| method/set | " + " | ".join(labels) + f" | kiban 1 shard / {REF} (CPU p50) |")
        P("|---|" + "---:|" * (len(labels) + 1))
        keys = list(next(iter(res.values()))["results"])
        for k in keys:
            cells = []
            for lab in labels:
                s = res[lab]["results"].get(k)
                cells.append("–" if not s else f"{fmt(s['p50_us'])} / {fmt(s['p99_us'])} / **{fmt(s['cpu_p50_us'])}** / {fmt(s['cpu_p99_us'])}")
            kr, rr = res.get("kiban 1 shard", {}).get("results", {}).get(k), res.get(REF, {}).get("results", {}).get(k)
            ratio = f"{kr['cpu_p50_us'] / rr['cpu_p50_us']:.3f}" if kr and rr else "–"
            P(f"| {k} | " + " | ".join(cells) + f" | {ratio} |")
        P("")
        P("Loadavg (1 min) during each run, min–max: " + "; ".join(
            f"{lab}: {min(s['loadavg_1m'] for s in r['results'].values())}–{max(s['loadavg_1m'] for s in r['results'].values())}"
            for lab, r in res.items()) + "\n")
        P("## Trace (OLMoTrace defaults) and extras\n")
        P("| engine | trace L128 wall p50 / p99 / CPU p50 ms | recall | trace L512 wall p50 / p99 / CPU p50 ms | recall | mean spans 128/512 |")
        P("|---|---:|---:|---:|---:|---:|")
        for lab, r in res.items():
            t1, t5 = r["results"].get("trace/trace_L128"), r["results"].get("trace/trace_L512")
            if not t1:
                continue
            P(f"| {lab} | {t1['p50_us']/1e3:.2f} / {t1['p99_us']/1e3:.2f} / **{t1['cpu_p50_us']/1e3:.2f}** | {t1['injected_span_recall']} | "
              f"{t5['p50_us']/1e3:.2f} / {t5['p99_us']/1e3:.2f} / **{t5['cpu_p50_us']/1e3:.2f}** | {t5['injected_span_recall']} | {t1['mean_spans']} / {t5['mean_spans']} |")
        P("")

    # --- agreement ---------------------------------------------------------------------------
    H = a.harness_results
    refp = f"{H}/ig_{tag}_noprefetch.outputs.npz"
    if os.path.exists(refp):
        ref = np.load(refp)
        P(f"## Output agreement with {REF} (per query)\n")
        names = [(lab, stem.format(tag=tag)) for lab, stem in ENGINES if lab != REF]
        present = [(lab, np.load(f"{H}/{st}.outputs.npz")) for lab, st in names if os.path.exists(f"{H}/{st}.outputs.npz")]
        P("| output | " + " | ".join(lab for lab, _ in present) + " |")
        P("|---|" + "---:|" * len(present))
        for k in sorted(ref.files):
            cells = []
            for lab, o in present:
                if k not in o.files:
                    cells.append("–"); continue
                x, y = ref[k], o[k]
                if k.startswith("trace_"):
                    same_rows = 0
                    # spans per query as sets of (l, r, count)
                    A = {}; B = {}
                    for row in x: A.setdefault(int(row[0]), set()).add(tuple(row[1:]))
                    for row in y: B.setdefault(int(row[0]), set()).add(tuple(row[1:]))
                    qs = set(A) | set(B)
                    same_rows = sum(A.get(q, set()) == B.get(q, set()) for q in qs)
                    cells.append(f"{same_rows}/{len(qs)} texts same span set ({len(x)} vs {len(y)} spans)")
                    continue
                if x.dtype.kind == "f":
                    same = np.isclose(x, y, rtol=1e-9, atol=1e-12)
                else:
                    same = x == y
                cells.append(f"{int(same.sum())}/{len(same)}")
            P(f"| {k} | " + " | ".join(cells) + " |")
        P("")

    # --- batch -------------------------------------------------------------------------------
    b = load(f"{R}/batch_{tag}.json")
    if b:
        P("## count throughput, 1200 queries per set (queries/s of process CPU; median of 5 passes)\n")
        sets = sorted({k.split("/")[1] for k in b["results"]}, key=lambda s: (s.split("_")[0], int(s.split("n")[-1])))
        engines = list(dict.fromkeys(k.split("/")[0] for k in b["results"]))
        P("| engine | " + " | ".join(sets) + " |")
        P("|---|" + "---:|" * len(sets))
        for e in engines:
            P(f"| {e} | " + " | ".join(
                f"{b['results'][f'{e}/{s}']['qps_cpu']:,}" + ("" if b['results'][f'{e}/{s}']['agrees'] else " (DIFFERS)")
                for s in sets) + " |")
        P("")
    open(a.out, "w").write("\n".join(L) + "\n")
    print("\n".join(L))


if __name__ == "__main__":
    main()
