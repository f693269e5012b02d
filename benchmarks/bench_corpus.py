"""Throughput of `kiban.corpus.build_corpus` on the MOSES train set (1,584,663 SMILES).

One source, ``<mol>{SMILES}</mol>`` per CSV row, exact dedup, a kiban tokenizer trained on the
corpus (vocab 8000), ``--workers`` worker processes (2 by default). The build starts from an
empty output directory (under ``benchmarks/results/tmp/``, git-ignored; removed afterwards unless
``--keep``).

Measured, without changing kiban: the build's stage functions (``_clean_stage``,
``_dedup_stage``, ``_tokenizer_stage``, ``_shard_stage``, ``_finish``) are wrapped from outside for
the duration of the run, which gives per stage the wall time, the main process's CPU time and the
worker processes' CPU time (``RUSAGE_CHILDREN``, counted when the pool is joined). A sampler thread
reads ``VmRSS`` of this process and all its descendants every 0.2 s: the peak of their sum is the
build's peak resident memory (shared pages counted once per process, so an upper bound);
``ru_maxrss`` of self and of the largest child are recorded too. Output sizes are read from disk.

``--profile`` also runs cProfile over the main process (times are then inflated; use it on a
subset) and profiles the worker-side function, `clean_records`, in-process on one chunk.

    .venv/bin/python benchmarks/bench_corpus.py --limit 100000     # about a minute
    .venv/bin/python benchmarks/bench_corpus.py                    # all 1,584,663 SMILES
    .venv/bin/python benchmarks/bench_corpus.py --limit 100000 --profile
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shutil
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CHECKOUT = HERE.parent
RESULTS = HERE / "results"
STAGES = ("_clean_stage", "_dedup_stage", "_tokenizer_stage", "_shard_stage", "_finish")
MOSES_ROWS = 1_584_663


# --- memory ------------------------------------------------------------------------------------
def _rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _descendants(root: int) -> list[int]:
    parent_of = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    stat = handle.read()
                parent_of[int(entry)] = int(stat[stat.rindex(")") + 2 :].split()[1])
            except (OSError, ValueError):
                continue
    found, frontier = [], [root]
    while frontier:
        pid = frontier.pop()
        children = [c for c, p in parent_of.items() if p == pid]
        found += children
        frontier += children
    return found


class MemorySampler(threading.Thread):
    """Peak of (this process + descendants) VmRSS, overall and per labelled phase."""

    def __init__(self, interval: float = 0.2):
        super().__init__(daemon=True)
        self.interval = interval
        self.peak_kib = 0
        self.peak_processes = 0
        self.phase = "start"
        self.phase_peak_kib: dict[str, int] = {}
        self._halt = threading.Event()

    def run(self) -> None:
        me = os.getpid()
        while not self._halt.is_set():
            pids = [me, *_descendants(me)]
            total = sum(_rss_kib(p) for p in pids)
            if total > self.peak_kib:
                self.peak_kib, self.peak_processes = total, len(pids)
            self.phase_peak_kib[self.phase] = max(self.phase_peak_kib.get(self.phase, 0), total)
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join()


# --- stage timing ------------------------------------------------------------------------------
def instrument(build_module, sampler: MemorySampler) -> tuple[dict, callable]:
    """Wrap the stage functions of kiban.corpus.build (restored by the returned function)."""
    timings: dict[str, dict] = {}
    originals = {name: getattr(build_module, name) for name in STAGES}

    def wrap(name, function):
        def timed(*args, **kwargs):
            sampler.phase = name.strip("_")
            children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu0, wall0 = time.process_time(), time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                children1 = resource.getrusage(resource.RUSAGE_CHILDREN)
                timings[name.strip("_")] = {
                    "wall_s": time.perf_counter() - wall0,
                    "main_cpu_s": time.process_time() - cpu0,
                    "workers_cpu_s": (children1.ru_utime + children1.ru_stime)
                    - (children0.ru_utime + children0.ru_stime),
                }
                sampler.phase = "between stages"

        return timed

    for name, function in originals.items():
        setattr(build_module, name, wrap(name, function))

    def restore():
        for name, function in originals.items():
            setattr(build_module, name, function)

    return timings, restore


# --- sizes -------------------------------------------------------------------------------------
def directory_bytes(path: Path, pattern: str = "**/*") -> int:
    return sum(p.stat().st_size for p in path.glob(pattern) if p.is_file())


def input_stats(path: Path, limit: int | None) -> dict:
    import gzip

    rows = chars = 0
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        handle.readline()
        for line in handle:
            if limit is not None and rows >= limit:
                break
            rows += 1
            chars += len(line.rstrip("\r\n"))
    return {
        "file": str(path),
        "file_bytes": path.stat().st_size,
        "rows": rows,
        "smiles_chars": chars,
    }


def machine_info() -> dict:
    import tokenizers

    model = None
    try:
        model = next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            None,
        )
    except OSError:
        pass
    return {
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": model,
        "tokenizers": tokenizers.__version__,
        "RAYON_NUM_THREADS": os.environ.get("RAYON_NUM_THREADS"),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "loadavg_at_start": os.getloadavg(),
    }


def profile_rows(stats, top: int) -> list[dict]:
    rows = []
    for (filename, line, name), (_cc, nc, tottime, cumtime, _) in stats.stats.items():
        # paths relative to site-packages or to this checkout, wherever it is
        short = filename.split("site-packages/")[-1].removeprefix(f"{CHECKOUT}/")
        where = f"{short}:{line}({name})" if filename != "~" else name
        rows.append(
            {
                "function": where,
                "ncalls": nc,
                "tottime_s": round(tottime, 3),
                "cumtime_s": round(cumtime, 3),
            }
        )
    rows.sort(key=lambda r: -r["tottime_s"])
    return rows[:top]


def profile_clean_chunk(spec, records: int) -> dict:
    """cProfile of clean_records (the worker-side function) on the first ``records`` records."""
    import cProfile
    import dataclasses
    import pstats

    from kiban.corpus.clean import clean_records
    from kiban.corpus.readers import read_source

    items = list(read_source(dataclasses.replace(spec, limit=records)))
    profiler = cProfile.Profile()
    wall0 = time.perf_counter()
    profiler.enable()
    clean_records(items)
    profiler.disable()
    wall = time.perf_counter() - wall0
    return {
        "records": len(items),
        "wall_s_profiled": wall,
        "top": profile_rows(pstats.Stats(profiler), 20),
    }


# --- main --------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--limit", type=int, default=None, help=f"first N SMILES only (default: all {MOSES_ROWS:,})"
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--chunk-size",
        type=int,
        default=None,
        help="records per chunk/shard (default: BuildConfig's)",
    )
    parser.add_argument("--dedup", default="exact", choices=["none", "exact", "near"])
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument(
        "--work-dir",
        default=None,
        help="corpus output directory (default benchmarks/results/tmp/corpus-N)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the built corpus")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="cProfile the main process and clean_records on one chunk",
    )
    parser.add_argument(
        "--name", default=None, help="result name (default bench_corpus[-LIMIT][-profile])"
    )
    args = parser.parse_args(argv)

    from kiban.corpus import build as build_module
    from kiban.corpus.build import BuildConfig, build_corpus
    from kiban.corpus.readers import SourceSpec

    name = args.name or "bench_corpus" + (f"-{args.limit}" if args.limit else "") + (
        "-profile" if args.profile else ""
    )
    out = Path(args.work_dir or RESULTS / "tmp" / f"corpus-{args.limit or 'all'}")
    if out.exists():
        shutil.rmtree(out)  # a fresh build: an existing one would resume or return at once
    spec = SourceSpec(
        package="moses",
        path="dataset/data/train.csv.gz",
        name="moses-train",
        columns={"SMILES": "mol"},
        template="<mol>{SMILES}</mol>",
        limit=args.limit,
    )
    options = {"dedup": args.dedup, "vocab_size": args.vocab_size}
    if args.chunk_size:
        options["chunk_size"] = args.chunk_size
    config = BuildConfig(sources=(spec,), **options)

    result = {
        "benchmark": "corpus",
        "name": name,
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine_info(),
        "args": vars(args),
        "config": json.loads(json.dumps(config.to_dict(), default=str)),
        "input": input_stats(spec.resolved_path, args.limit),
        "profiled": args.profile,
    }
    print(
        f"building {result['input']['rows']:,} records -> {out} (workers={args.workers})",
        file=sys.stderr,
    )

    sampler = MemorySampler()
    sampler.start()
    timings, restore = instrument(build_module, sampler)
    profiler = None
    if args.profile:
        import cProfile

        profiler = cProfile.Profile()
    wall0, cpu0 = time.perf_counter(), time.process_time()
    try:
        if profiler:
            profiler.enable()
        manifest = build_corpus(config, out, workers=args.workers)
        if profiler:
            profiler.disable()
    finally:
        restore()
        sampler.stop()
    wall = time.perf_counter() - wall0
    main_cpu = time.process_time() - cpu0
    children = resource.getrusage(resource.RUSAGE_CHILDREN)

    documents, tokens = manifest["documents"], manifest["tokens"]
    shard_bytes = directory_bytes(out / "shards", "tokens-*.bin")
    sizes = {
        "shard_tokens_bytes": shard_bytes,
        "shard_offsets_bytes": directory_bytes(out / "shards", "offsets-*.npy"),
        "documents_parquet_bytes": (out / "documents.parquet").stat().st_size,
        "tokenizer_bytes": directory_bytes(out / "tokenizer"),
        "total_bytes": directory_bytes(out),
    }
    result["manifest"] = {
        k: manifest[k]
        for k in (
            "documents",
            "tokens",
            "shards",
            "rejected",
            "exact_duplicates",
            "duplicate_ids",
            "vocab_size",
            "token_dtype",
        )
    }
    result["sizes"] = sizes
    records = result["input"]["rows"]
    result["throughput"] = {
        "wall_s": wall,
        "main_cpu_s": main_cpu,
        "workers_cpu_s": children.ru_utime + children.ru_stime,
        "input_records_per_s": records / wall,
        "documents_per_s": documents / wall,
        "tokens_per_s": tokens / wall,
        "shard_bytes_per_token": shard_bytes / tokens,
        "output_bytes_per_token": sizes["total_bytes"] / tokens,
        "offsets_bytes_per_document": sizes["shard_offsets_bytes"] / documents,
        "tokens_per_document": tokens / documents,
        "smiles_chars_per_token": result["input"]["smiles_chars"] / tokens,
    }
    stage_records = {
        "clean_stage": records,
        "dedup_stage": records - manifest["rejected"],
        "tokenizer_stage": documents,
        "shard_stage": documents,
        "finish": documents,
    }
    for stage, entry in timings.items():
        entry["records_per_s"] = stage_records[stage] / entry["wall_s"]
        entry["share_of_wall"] = entry["wall_s"] / wall
        entry["peak_rss_mib"] = sampler.phase_peak_kib.get(stage, 0) / 1024
    result["stages"] = timings
    result["stages_other_wall_s"] = wall - sum(t["wall_s"] for t in timings.values())
    result["memory"] = {
        "peak_rss_sum_mib": sampler.peak_kib / 1024,
        "peak_rss_sum_processes": sampler.peak_processes,
        "self_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "largest_child_maxrss_mib": children.ru_maxrss / 1024,
        "sampler_interval_s": sampler.interval,
    }
    if profiler:
        import pstats

        result["profile_main_process_top"] = profile_rows(pstats.Stats(profiler), 30)
        result["profile_clean_records"] = profile_clean_chunk(
            spec, min(args.limit or config.chunk_size, config.chunk_size, 20_000)
        )
    result["machine"]["loadavg_at_end"] = os.getloadavg()
    if not args.keep:
        shutil.rmtree(out)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(markdown(result))
    print(f"\nwritten {path}", file=sys.stderr)
    return 0


def markdown(result: dict) -> str:
    t, m, mem = result["throughput"], result["manifest"], result["memory"]
    lines = [
        f"build_corpus, MOSES train, {result['input']['rows']:,} records, workers="
        f"{result['args']['workers']}, dedup {result['config']['dedup']}, chunk "
        f"{result['config']['chunk_size']:,}"
        + (" (PROFILED: times inflated)" if result["profiled"] else ""),
        "",
        "| documents | tokens | wall s | docs/s | tokens/s | shard B/token | output B/token "
        "| peak RSS (sum) MiB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {m['documents']:,} | {m['tokens']:,} | {t['wall_s']:.1f} | "
        f"{t['documents_per_s']:,.0f} | {t['tokens_per_s']:,.0f} | "
        f"{t['shard_bytes_per_token']:.2f} | {t['output_bytes_per_token']:.2f} | "
        f"{mem['peak_rss_sum_mib']:,.0f} |",
        "",
        "| stage | wall s | share | main CPU s | workers CPU s | records/s | peak RSS MiB |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for stage, s in result["stages"].items():
        lines.append(
            f"| {stage} | {s['wall_s']:.1f} | {s['share_of_wall']:.0%} | "
            f"{s['main_cpu_s']:.1f} | {s['workers_cpu_s']:.1f} | "
            f"{s['records_per_s']:,.0f} | {s['peak_rss_mib']:,.0f} |"
        )
    lines.append(
        f"\n{m['exact_duplicates']:,} exact duplicates, {m['rejected']:,} rejected; "
        f"{t['tokens_per_document']:.1f} tokens/document, "
        f"{t['smiles_chars_per_token']:.2f} SMILES chars/token; self maxrss "
        f"{mem['self_maxrss_mib']:,.0f} MiB, largest worker maxrss "
        f"{mem['largest_child_maxrss_mib']:,.0f} MiB"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
