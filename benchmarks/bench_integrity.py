"""What the integrity checks of issue 15 cost: kiban before them (commit 531e3f1) against the
working tree, on the same corpus source and the same queries, in one run.

Measured, alternating old and new every repeat (the order flips each time) so that machine
noise falls on both alike; medians over the repeats and the ratio new/old:

* corpus build (``build_corpus``: the new one also hashes its sources and writes the sha256 of
  every shard file and ``documents.parquet``) and index build (the new one hashes every file);
* opening a `CorpusSearch` (the new one checks every mapped file against its sha256: parallel
  threads, warm page cache, once per process) and the first query after it: what one
  ``kiban search count`` pays;
* query latency on the open index: median of ``--queries`` count queries (text, tokenized) and of
  docs queries, each a separate call, per repeat.

Each variant runs in its own Python process with its kiban first on ``PYTHONPATH``; the old code
is ``git archive 531e3f1 kiban`` extracted into a temporary directory (``--base`` to give one).
The corpus source is synthetic, seeded JSONL (prose with ``<mol>`` and ``<num>`` spans).

    .venv/bin/python benchmarks/bench_integrity.py                      # ~10 min on 2 busy cores
    .venv/bin/python benchmarks/bench_integrity.py --docs 20000 --repeats 3   # ~1 min: a smoke run
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CHECKOUT = HERE.parent
RESULTS = HERE / "results"
BASE_COMMIT = "531e3f1"

WORDS = (
    "the a molecule crystal solvent binds reacts with strongly weakly under heat pressure "
    "and slowly quickly forms salt water acid base ring chain bond zeolite framework "
    "catalyst surface yield ligand metal oxide"
).split()
SMILES = (
    "CCO",
    "c1ccccc1",
    "CC(=O)O",
    "CCN",
    "CCCC",
    "NCC(=O)O",
    "CC(C)O",
    "OC1CCCCC1",
    "Cn1cnc2c1c(=O)n(C)c(=O)n2C",
    "CC(=O)Oc1ccccc1C(=O)O",
)


# --- worker: runs inside the variant's Python ----------------------------------------------------
def worker(args: argparse.Namespace) -> None:
    result: dict = {}
    if args.task == "build":
        from kiban.corpus import BuildConfig, SourceSpec, build_corpus
        from kiban.index import build_index

        shutil.rmtree(args.corpus, ignore_errors=True)
        start = time.perf_counter()
        build_corpus(
            BuildConfig(
                sources=(SourceSpec(path=args.source),), vocab_size=4000, chunk_size=args.chunk_size
            ),
            args.corpus,
            workers=1,
        )
        result["corpus_build_s"] = time.perf_counter() - start
        start = time.perf_counter()
        build_index(args.corpus)
        result["index_build_s"] = time.perf_counter() - start
        start = time.perf_counter()
        build_index(args.corpus)  # again: nothing to build, every file checked (new) or stat'ed
        result["index_uptodate_s"] = time.perf_counter() - start
    else:
        from kiban.index.search import CorpusSearch

        queries = json.loads(Path(args.query_file).read_text())
        start, cpu = time.perf_counter(), time.process_time()
        search = CorpusSearch(args.corpus)
        result["open_s"] = time.perf_counter() - start
        result["open_cpu_s"] = time.process_time() - cpu  # hashing threads included
        search.count(queries[0])
        result["open_and_first_count_s"] = time.perf_counter() - start
        # wall and CPU time of each call: on a shared machine the CPU time of this (single
        # threaded) work is the steadier of the two
        counts, count_times, count_cpu = [], [], []
        for query in queries:
            start, cpu = time.perf_counter(), time.thread_time()
            counts.append(search.count(query))
            count_cpu.append(time.thread_time() - cpu)
            count_times.append(time.perf_counter() - start)
        docs_times, docs_cpu = [], []
        for query in queries[: max(1, len(queries) // 5)]:
            start, cpu = time.perf_counter(), time.thread_time()
            search.docs(query, limit=5)
            docs_cpu.append(time.thread_time() - cpu)
            docs_times.append(time.perf_counter() - start)
        result.update(
            count_median_s=statistics.median(count_times),
            count_cpu_median_s=statistics.median(count_cpu),
            docs_median_s=statistics.median(docs_times),
            docs_cpu_median_s=statistics.median(docs_cpu),
            counts=counts,
        )
    print(json.dumps(result))


def run_variant(root: Path, task: str, **options) -> dict:
    env = {**os.environ, "PYTHONPATH": str(root)}
    argv = [sys.executable, str(Path(__file__).resolve()), "--worker", task]
    for key, value in options.items():
        argv += [f"--{key.replace('_', '-')}", str(value)]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"{task} with {root} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- inputs ------------------------------------------------------------------------------------
def write_source(path: Path, documents: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as handle:
        for i in range(documents):
            words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(12, 40)))
            text = (
                f"{words} <mol>{rng.choice(SMILES)}</mol> measured "
                f"<num>{rng.randint(0, 99999) / 100}</num> in run {i}."
            )
            handle.write(json.dumps({"id": f"d{i}", "text": text}) + "\n")


def make_queries(count: int, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    queries = []
    for _ in range(count):
        length = rng.randint(1, 5)
        queries.append(" " + " ".join(rng.choice(WORDS) for _ in range(length)))
    return queries


def extract_base(commit: str, into: Path) -> Path:
    """``git archive COMMIT kiban`` of this checkout, extracted into ``into``."""
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(
        ["git", "-C", str(CHECKOUT), "archive", commit, "kiban"], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def machine_info() -> dict:
    model = ""
    try:
        with open("/proc/cpuinfo") as handle:
            model = next(
                (line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")),
                "",
            )
    except OSError:
        pass
    return {
        "cpu_count": os.cpu_count(),
        "processor": model,
        "python": platform.python_version(),
        "loadavg": os.getloadavg(),
    }


def summarise(rows: list[dict], keys: tuple[str, ...]) -> dict:
    summary = {}
    for key in keys:
        old = statistics.median(r["old"][key] for r in rows)
        new = statistics.median(r["new"][key] for r in rows)
        ratios = [r["new"][key] / r["old"][key] for r in rows if r["old"][key] > 0]
        summary[key] = {
            "old": old,
            "new": new,
            "ratio_of_medians": new / old if old else None,
            "median_ratio": statistics.median(ratios) if ratios else None,
        }
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=200_000, help="documents in the corpus")
    parser.add_argument("--chunk-size", type=int, default=50_000, help="documents per shard")
    parser.add_argument("--queries", type=int, default=300, help="count queries per repeat")
    parser.add_argument("--repeats", type=int, default=7, help="query-latency repeats")
    parser.add_argument("--build-repeats", type=int, default=2, help="corpus-build repeats")
    parser.add_argument(
        "--base",
        type=Path,
        help=f"old kiban (a directory holding kiban/); default: git archive {BASE_COMMIT}",
    )
    parser.add_argument(
        "--new",
        type=Path,
        default=CHECKOUT,
        help="new kiban (a directory holding kiban/); default: this checkout",
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "integrity.json")
    parser.add_argument(
        "--work",
        type=Path,
        help="keep the corpora here (default: a temporary "
        "directory, removed); with --build-repeats 0 "
        "the corpora already there are queried",
    )
    parser.add_argument("--worker", choices=["build", "query"], dest="task", help=argparse.SUPPRESS)
    parser.add_argument("--corpus", help=argparse.SUPPRESS)
    parser.add_argument("--source", help=argparse.SUPPRESS)
    parser.add_argument("--query-file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.task:
        return worker(args)

    if args.work:
        scratch = args.work
        scratch.mkdir(parents=True, exist_ok=True)
    else:
        scratch = Path(
            tempfile.mkdtemp(
                prefix="kiban-bench-integrity-",
                dir="/dev/shm" if os.access("/dev/shm", os.W_OK) else None,
            )
        )
    try:
        base = args.base or extract_base(BASE_COMMIT, scratch / "base")
        roots = {"old": base, "new": args.new}
        source = scratch / "source.jsonl"
        if args.build_repeats or not source.is_file():
            write_source(source, args.docs)
        queries_path = scratch / "queries.json"
        queries_path.write_text(json.dumps(make_queries(args.queries)))
        started = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        machine = machine_info()

        builds = []
        for repeat in range(args.build_repeats):
            order = ("old", "new") if repeat % 2 == 0 else ("new", "old")
            row = {}
            for name in order:
                row[name] = run_variant(
                    roots[name],
                    "build",
                    source=source,
                    corpus=scratch / f"corpus-{name}",
                    chunk_size=args.chunk_size,
                )
                print(f"build {repeat} {name}: {row[name]}", file=sys.stderr)
            builds.append(row)
        queries = []
        for repeat in range(args.repeats):
            order = ("old", "new") if repeat % 2 == 0 else ("new", "old")
            row = {}
            for name in order:
                row[name] = run_variant(
                    roots[name], "query", corpus=scratch / f"corpus-{name}", query_file=queries_path
                )
            if row["old"].pop("counts") != row["new"].pop("counts"):
                raise SystemExit("old and new kiban give different counts")
            print(f"query {repeat}: " + ", ".join(f"{n} {row[n]}" for n in order), file=sys.stderr)
            queries.append(row)
        manifest = json.loads((scratch / "corpus-new" / "manifest.json").read_text())
        result = {
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "started": started,
            "machine": machine,
            "loadavg_at_end": os.getloadavg(),
            "config": {
                "docs": args.docs,
                "chunk_size": args.chunk_size,
                "queries": args.queries,
                "repeats": args.repeats,
                "build_repeats": args.build_repeats,
                "base": BASE_COMMIT,
                "tokens": manifest["tokens"],
                "shards": manifest["shards"],
                "bytes_hashed_on_open": sum(
                    p.stat().st_size
                    for p in (scratch / "corpus-new").rglob("*")
                    if p.suffix in (".bin", ".npy")
                ),
            },
            "build": summarise(builds, ("corpus_build_s", "index_build_s", "index_uptodate_s"))
            if builds
            else {},
            "query": summarise(
                queries,
                (
                    "open_s",
                    "open_cpu_s",
                    "open_and_first_count_s",
                    "count_median_s",
                    "count_cpu_median_s",
                    "docs_median_s",
                    "docs_cpu_median_s",
                ),
            ),
            "raw": {"build": builds, "query": queries},
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
        print(f"| measure | old ({BASE_COMMIT}) | new | new/old |")
        print("|---|---:|---:|---:|")
        for section in ("build", "query"):
            for key, row in result[section].items():  # (no build rows when corpora were reused)
                print(
                    f"| {key} | {row['old'] * 1000:.3f} ms | {row['new'] * 1000:.3f} ms | "
                    f"{row['ratio_of_medians']:.3f} |"
                )
        print(
            f"\n{result['config']['tokens']:,} tokens in {result['config']['shards']} shards; "
            f"written to {args.out}"
        )
    finally:
        if not args.work:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
