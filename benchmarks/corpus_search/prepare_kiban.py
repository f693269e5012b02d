"""Turn the peer harness's engine-neutral corpus into a kiban corpus layout and build its index.

Input (written by the harness's ``gen_corpus.py``)::

    DATA/tokens.u16       flat little-endian uint16 ids of all documents, no separators
    DATA/doc_starts.u64   uint64 start of every document, plus the total

Output (what `kiban.index` reads; see ``kiban/index/build.py``)::

    OUT/manifest.json                 shards, token_dtype "uint16", eos_id 65534, vocab_size 65535
    OUT/shards/tokens-NNNNNN.bin      each document followed by the eos id (65534)
    OUT/shards/offsets-NNNNNN.npy     int64 document starts in that stream, plus its length
    OUT/index/...                     written by ``kiban.index.build_index``

eos id 65534 and vocab size 65535 are the values the harness's infini-gram adapter uses
(``InfiniGramEngine(eos_token_id=65534, vocab_size=65535)``); the generator draws ids below
``--vocab`` (50,000 by default, asserted < 65535), and this script checks that no corpus token
equals 65534. Shards are contiguous document ranges, split as ``harness/ig_build.py`` splits them.

Timing: the conversion ("prepare", like ig_build.py's writing of ``tokenized.*``) runs in this
process; the index build runs in a child process (``python -c 'build_index(...)'``) so its memory
is measured alone: a sampler thread sums ``VmRSS`` over the child and all its descendants every
20 ms (peak of that sum = peak resident memory of the build, shared pages counted once per
process), and ``ru_maxrss`` of the largest descendant is recorded too. Child CPU time comes from
``RUSAGE_CHILDREN``.

    python prepare_kiban.py --data data/c10m --out /tmp/csb/kiban/c10m_s1 --shards 1 --workers 1
    python prepare_kiban.py --data data/c10m --out /tmp/csb/kiban/c10m_s8 --shards 8 --workers 2
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

EOS = 65534
VOCAB = 65535
KIBAN_ROOT = Path(__file__).resolve().parents[2]


def kiban_fingerprint() -> dict:
    """sha256 of the kiban index sources measured (the files may change between runs)."""
    out = {}
    for name in ("build.py", "engine.py", "_kernels.py"):
        path = KIBAN_ROOT / "kiban" / "index" / name
        out[name] = hashlib.sha256(path.read_bytes()).hexdigest()[:12] if path.is_file() else None
    return out


def convert(data: Path, out: Path, shards: int) -> dict:
    tok = np.fromfile(data / "tokens.u16", dtype=np.uint16)
    starts = np.fromfile(data / "doc_starts.u64", dtype=np.uint64).astype(np.int64)
    n_docs = len(starts) - 1
    bad = int(np.count_nonzero(tok >= EOS))
    if bad:
        raise SystemExit(f"{bad} corpus tokens are >= {EOS}: they would collide with the eos id")
    (out / "shards").mkdir(parents=True, exist_ok=True)
    bounds = np.linspace(0, n_docs, shards + 1).astype(np.int64)  # as harness/ig_build.py
    for s in range(shards):
        d0, d1 = int(bounds[s]), int(bounds[s + 1])
        t0, t1 = int(starts[d0]), int(starts[d1])
        local_ends = starts[d0 + 1 : d1 + 1] - t0  # end of each document in the shard's slice
        stream = np.insert(tok[t0:t1], local_ends, np.uint16(EOS))
        stream.tofile(out / "shards" / f"tokens-{s:06d}.bin")
        offsets = np.concatenate([[0], local_ends + np.arange(1, d1 - d0 + 1)]).astype(np.int64)
        assert offsets[-1] == len(stream)
        np.save(out / "shards" / f"offsets-{s:06d}.npy", offsets)
    # a kiban corpus manifest (checksums of the shards included: TokenIndex checks them on
    # opening, as it does for a corpus kiban built), marked as a benchmark conversion
    from kiban.corpus.store import (
        CORPUS_FORMAT,
        layout_stamp,
        offsets_file,
        tokens_file,
    )
    from kiban.formats import write_json
    from kiban.io import files_sha256

    files = [f(s) for s in range(shards) for f in (tokens_file, offsets_file)]
    checksums = {
        relative: {"bytes": (out / relative).stat().st_size, "sha256": digest}
        for relative, digest in zip(files, files_sha256([out / r for r in files]))
    }
    write_json(
        out / "manifest.json",
        CORPUS_FORMAT,
        {
            "converted_by": "benchmarks/corpus_search/prepare_kiban.py",
            "shards": shards,
            "documents": n_docs,
            "tokens": int(len(tok) + n_docs),
            "token_dtype": "uint16",
            "eos_id": EOS,
            "vocab_size": VOCAB,
            "tokenizer_sha256": None,
            "source": str(data),
            "layout": layout_stamp(),
            "checksums": checksums,
            "source_files": None,
        },
    )
    return {"documents": n_docs, "tokens_corpus": int(len(tok))}


def _tree_rss_kib(root: int) -> int:
    """Sum of VmRSS (KiB) of ``root`` and its descendants."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as handle:
                ppid = vm = 0
                for line in handle:
                    if line.startswith("PPid:"):
                        ppid = int(line.split()[1])
                    elif line.startswith("VmRSS:"):
                        vm = int(line.split()[1])
        except OSError:
            continue
        children.setdefault(ppid, []).append(int(entry))
        rss[int(entry)] = vm
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total


def build(out: Path, workers: int) -> dict:
    code = (
        "import sys, time; sys.path.insert(0, %r); from kiban.index import build_index; "
        "t = time.perf_counter(); build_index(%r, workers=%d); "
        "print('BUILD_INDEX_S', time.perf_counter() - t)"
    ) % (str(KIBAN_ROOT), str(out), workers)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    peak = [0]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], _tree_rss_kib(proc.pid))
            done.wait(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, _ = proc.communicate()
    wall = time.perf_counter() - t
    done.set()
    sampler.join()
    if proc.returncode:
        raise SystemExit(f"build_index failed ({proc.returncode})")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    inner = float(stdout.split("BUILD_INDEX_S")[1].split()[0])
    return {
        "build_wall_s": round(wall, 2),
        "build_index_call_s": round(inner, 2),
        "build_cpu_s": round(
            (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), 2
        ),
        "build_peak_tree_rss_MiB": round(peak[0] / 1024, 1),
        "build_max_rss_largest_process_MiB": round(after.ru_maxrss / 1024, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="harness corpus dir (tokens.u16, doc_starts.u64)")
    ap.add_argument("--out", required=True, help="kiban corpus dir to create (removed first)")
    ap.add_argument("--shards", type=int, default=1)
    ap.add_argument("--workers", type=int, default=1, help="build_index(workers=...)")
    ap.add_argument("--report", help="also copy the build report JSON here")
    a = ap.parse_args()
    data, out = Path(a.data).resolve(), Path(a.out).resolve()
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    rep: dict = {
        "data": str(data),
        "out": str(out),
        "shards": a.shards,
        "workers": a.workers,
        "kiban_index_sources_sha256": kiban_fingerprint(),
        "loadavg_before": [round(x, 2) for x in os.getloadavg()],
    }
    t = time.perf_counter()
    rep.update(convert(data, out, a.shards))
    rep["prepare_s"] = round(time.perf_counter() - t, 2)
    rep["prepare_max_rss_MiB"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    # drop the conversion's page-cache advantage? No: infini-gram's build also reads the files it
    # has just written (page cache warm in both), so both builds are measured the same way.
    rep.update(build(out, a.workers))
    rep["total_s"] = round(rep["prepare_s"] + rep["build_wall_s"], 2)
    sizes = {}
    for sub in ("shards", "index"):
        for f in sorted((out / sub).iterdir()):
            sizes[f"{sub}/{f.name}"] = f.stat().st_size
    rep["files"] = sizes
    tok_b = sum(v for k, v in sizes.items() if "/tokens-" in k)
    sa_b = sum(v for k, v in sizes.items() if "/sa-" in k)
    off_b = sum(v for k, v in sizes.items() if "/offsets-" in k)
    n = rep["tokens_corpus"]
    rep["tokens_incl_separators"] = tok_b // 2
    rep["bytes"] = {"tokens": tok_b, "suffix_array": sa_b, "offsets": off_b}
    rep["bytes_per_token_core(tokens+sa+offsets)"] = round((tok_b + sa_b + off_b) / n, 3)
    rep["bytes_per_token_all"] = round(sum(sizes.values()) / n, 3)
    rep["build_throughput_Mtok_per_s"] = round(n / rep["total_s"] / 1e6, 3)
    # the data itself: the token stream the build must hold (tokens file of the corpus)
    rep["data_MiB"] = round(tok_b / 2**20, 1)
    rep["build_peak_beyond_data_MiB"] = round(rep["build_peak_tree_rss_MiB"] - rep["data_MiB"], 1)
    rep["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    (out / "build_report.json").write_text(json.dumps(rep, indent=1))
    if a.report:
        Path(a.report).parent.mkdir(parents=True, exist_ok=True)
        Path(a.report).write_text(json.dumps(rep, indent=1))
    print(json.dumps(rep, indent=1))


if __name__ == "__main__":
    main()
