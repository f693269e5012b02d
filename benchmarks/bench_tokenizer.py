"""Throughput of kiban's `ScienceTokenizer.encode_batch` as a ratio to plain byte-level BPE.

Both tokenizers are trained here, on the same texts, with the same vocabulary size, and then
encode the same texts in the same batches with the same number of Rust threads
(``RAYON_NUM_THREADS``, set before `tokenizers` is imported). Methods timed, interleaved (the
order rotates every repeat) so that machine load hits them alike:

* ``kiban``       `ScienceTokenizer.encode_batch` (returns one int64 array per text);
* ``plain``       `tokenizers.Tokenizer.encode_batch` + ``.ids`` (a list per text);
* ``plain_fast``  `tokenizers.Tokenizer.encode_batch_fast` + ``.ids``;

Text sets, built from the first ``--docs`` SMILES of the MOSES train set (read from the installed
``moses`` package's data file without importing ``moses``):

* ``mol``   ``<mol>SMILES</mol>``;
* ``mixed`` a prose sentence with a ``<mol>`` and a ``<num>`` span, from a few templates
            (``The solubility of <mol>...</mol> is <num>-2.31</num> logS.``).

Also recorded, for kiban: the top of a cProfile of one pass (``--no-profile`` skips it).

    .venv/bin/python benchmarks/bench_tokenizer.py                 # 200k docs, 5 repeats
    .venv/bin/python benchmarks/bench_tokenizer.py --docs 20000 --repeats 3   # quick
"""

from __future__ import annotations

import argparse
import datetime
import gzip
import importlib.util
import json
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"

TEMPLATES = (
    "The solubility of <mol>{s}</mol> is <num>{v}</num> logS.",
    "<mol>{s}</mol> melts at <num>{v}</num> K under ambient pressure.",
    "We measured a logP of <num>{v}</num> for <mol>{s}</mol> in octanol/water.",
    "Compound <mol>{s}</mol> inhibits the kinase with an IC50 of <num>{v}</num> nM.",
    "The computed HOMO-LUMO gap of <mol>{s}</mol> (B3LYP/6-31G*) is <num>{v}</num> eV.",
    "In the assay, <mol>{s}</mol> showed a binding free energy of <num>{v}</num> kcal/mol.",
)


def moses_train_path() -> Path:
    spec = importlib.util.find_spec("moses")  # locate the package without importing it
    if spec is None or not spec.submodule_search_locations:
        sys.exit("the 'moses' package (molsets) is not installed; see the Makefile's setup step")
    return Path(list(spec.submodule_search_locations)[0]) / "dataset/data/train.csv.gz"


def read_smiles(limit: int) -> list[str]:
    smiles = []
    with gzip.open(moses_train_path(), "rt", encoding="utf-8") as handle:
        header = handle.readline().strip().split(",")
        column = header.index("SMILES")
        for line in handle:
            smiles.append(line.rstrip("\r\n").split(",")[column])
            if len(smiles) >= limit:
                break
    return smiles


def text_sets(smiles: list[str], seed: int) -> dict[str, list[str]]:
    rng = random.Random(seed)

    def number() -> str:
        kind = rng.random()
        if kind < 0.6:
            return f"{rng.uniform(-10, 10):.2f}"
        if kind < 0.8:
            return str(rng.randint(1, 5000))
        return f"{rng.uniform(1, 9):.1f}e-{rng.randint(2, 9)}"

    return {
        "mol": [f"<mol>{s}</mol>" for s in smiles],
        "mixed": [rng.choice(TEMPLATES).format(s=s, v=number()) for s in smiles],
    }


def machine_info() -> dict:
    import numpy
    import tokenizers

    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": _cpu_model(),
        "tokenizers": tokenizers.__version__,
        "numpy": numpy.__version__,
        "RAYON_NUM_THREADS": os.environ.get("RAYON_NUM_THREADS"),
        "loadavg_at_start": load,
    }


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


# --- tokenizers --------------------------------------------------------------------------------
def train_plain(texts: list[str], vocab_size: int):
    """GPT-2-style byte-level BPE (ByteLevel pre-tokenizer and decoder) trained on the raw tagged
    texts, with kiban's special and tag tokens as special tokens so tags are single tokens in
    both tokenizers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from kiban.tokenizer import SPECIAL_TOKENS, TAG_TOKENS

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        show_progress=False,
        special_tokens=[*SPECIAL_TOKENS, *TAG_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


# --- measurement -------------------------------------------------------------------------------
def batches(texts: list[str], size: int):
    for start in range(0, len(texts), size):
        yield texts[start : start + size]


def methods(kiban_tok, plain_tok) -> dict:
    def plain(batch):
        return [e.ids for e in plain_tok.encode_batch(batch, add_special_tokens=False)]

    def plain_fast(batch):
        return [e.ids for e in plain_tok.encode_batch_fast(batch, add_special_tokens=False)]

    found = {"kiban": kiban_tok.encode_batch, "plain": plain, "plain_fast": plain_fast}
    return found


def count_tokens(function, texts: list[str], batch_size: int) -> int:
    return sum(len(ids) for batch in batches(texts, batch_size) for ids in function(batch))


def time_interleaved(functions: dict, texts: list[str], batch_size: int, repeats: int) -> dict:
    """Wall and CPU (all threads) seconds per full pass; the order rotates every repeat."""
    names = list(functions)
    wall = {n: [] for n in names}
    cpu = {n: [] for n in names}
    for repeat in range(repeats):
        order = names[repeat % len(names) :] + names[: repeat % len(names)]
        for name in order:
            function = functions[name]
            c0, t0 = time.process_time(), time.perf_counter()
            for batch in batches(texts, batch_size):
                function(batch)
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    return {"wall_s": wall, "cpu_s": cpu}


def profile_top(function, texts: list[str], batch_size: int, top: int = 12) -> list[dict]:
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    for batch in batches(texts, batch_size):
        function(batch)
    profiler.disable()
    stats = pstats.Stats(profiler)
    rows = []
    for (filename, line, name), (_cc, nc, tottime, cumtime, _) in stats.stats.items():
        where = f"{Path(filename).name}:{line}({name})" if filename != "~" else name
        rows.append(
            {
                "function": where,
                "ncalls": nc,
                "tottime_s": round(tottime, 4),
                "cumtime_s": round(cumtime, 4),
            }
        )
    rows.sort(key=lambda r: -r["tottime_s"])
    return rows[:top]


# --- main --------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=200_000, help="documents per text set")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved timed repeats")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=8192,
        help="texts per encode_batch call (8192, as build_corpus uses)",
    )
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="RAYON_NUM_THREADS for both tokenizers (default: the environment's, "
        "else the CPU count)",
    )
    parser.add_argument("--sets", nargs="+", default=["mol", "mixed"], choices=["mol", "mixed"])
    parser.add_argument(
        "--no-profile", action="store_true", help="skip the stage breakdown and cProfile of kiban"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(RESULTS / "bench_tokenizer.json"))
    args = parser.parse_args(argv)

    # the Rust thread pool reads RAYON_NUM_THREADS once, when tokenizers first parallelises
    threads = args.threads or int(os.environ.get("RAYON_NUM_THREADS") or os.cpu_count() or 1)
    os.environ["RAYON_NUM_THREADS"] = str(threads)
    os.environ["TOKENIZERS_PARALLELISM"] = "true"
    if "tokenizers" in sys.modules:
        raise RuntimeError("tokenizers imported before RAYON_NUM_THREADS was set")

    from kiban.tokenizer import train_tokenizer

    started = time.perf_counter()
    result = {
        "benchmark": "tokenizer",
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine_info(),
        "config": vars(args) | {"threads": threads},
        "sets": {},
    }
    smiles = read_smiles(args.docs)
    sets = text_sets(smiles, args.seed)
    for name in args.sets:
        texts = sets[name]
        print(f"[{name}] {len(texts)} docs, e.g. {texts[0]!r}", file=sys.stderr)
        t0 = time.perf_counter()
        kiban_tok = train_tokenizer(texts, vocab_size=args.vocab_size)
        t1 = time.perf_counter()
        plain_tok = train_plain(texts, args.vocab_size)
        t2 = time.perf_counter()
        functions = methods(kiban_tok, plain_tok)
        tokens = {n: count_tokens(f, texts, args.batch_size) for n, f in functions.items()}
        chars = sum(map(len, texts))
        print(
            f"[{name}] trained in {t1 - t0:.1f}s (kiban) / {t2 - t1:.1f}s (plain); timing",
            file=sys.stderr,
        )
        timings = time_interleaved(functions, texts, args.batch_size, args.repeats)
        entry = {
            "docs": len(texts),
            "chars": chars,
            "example": texts[0],
            "vocab_size": {
                "kiban": kiban_tok.vocab_size,
                "plain": plain_tok.get_vocab_size(with_added_tokens=True),
            },
            "train_s": {"kiban": t1 - t0, "plain": t2 - t1},
            "tokens": tokens,
            "methods": {},
        }
        for method, wall in timings["wall_s"].items():
            median = statistics.median(wall)
            entry["methods"][method] = {
                "median_wall_s": median,
                "median_cpu_s": statistics.median(timings["cpu_s"][method]),
                "docs_per_s": len(texts) / median,
                "tokens_per_s": tokens[method] / median,
                "chars_per_token": chars / tokens[method],
                "wall_s": wall,
                "cpu_s": timings["cpu_s"][method],
            }
        # ratios (docs/s of A over docs/s of B = time of B over time of A), per repeat, median:
        # the members of a pair ran next to each other, under the same load
        ratios = {}
        for method in functions:
            for base in ("plain", "plain_fast"):
                if method == base:
                    continue
                pairs = zip(timings["wall_s"][base], timings["wall_s"][method])
                ratios[f"{method}/{base}"] = statistics.median(b / a for b, a in pairs)
        entry["docs_per_s_ratio"] = ratios
        cpu = timings["cpu_s"]
        entry["cpu_ratio"] = {
            key: statistics.median(
                b / a for a, b in zip(cpu[key.split("/")[0]], cpu[key.split("/")[1]])
            )
            for key in ratios
        }
        if not args.no_profile:
            print(f"[{name}] profile", file=sys.stderr)
            entry["kiban_profile_top"] = profile_top(kiban_tok.encode_batch, texts, args.batch_size)
        result["sets"][name] = entry
    result["machine"]["loadavg_at_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    result["wall_s_total"] = time.perf_counter() - started
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(markdown(result))
    print(f"\nwritten {out}", file=sys.stderr)
    return 0


def markdown(result: dict) -> str:
    threads = result["config"]["threads"]
    lines = [
        f"RAYON_NUM_THREADS={threads}, {result['machine']['cpu_count']} CPUs, tokenizers "
        f"{result['machine']['tokenizers']}, batch {result['config']['batch_size']}, median "
        f"of {result['config']['repeats']} interleaved repeats",
        "",
        "| set | method | docs/s | tokens/s | chars/token | wall s | docs/s vs plain | "
        "vs plain_fast |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, entry in result["sets"].items():
        ratios = entry["docs_per_s_ratio"]
        for method, m in entry["methods"].items():
            vs_plain = f"{ratios.get(f'{method}/plain', 1.0):.2f}"
            vs_fast = f"{ratios.get(f'{method}/plain_fast', 1.0):.2f}"
            lines.append(
                f"| {name} | {method} | {m['docs_per_s']:,.0f} | "
                f"{m['tokens_per_s']:,.0f} | {m['chars_per_token']:.2f} | "
                f"{m['median_wall_s']:.2f} | {vs_plain} | {vs_fast} |"
            )
    for name, entry in result["sets"].items():
        stages = entry.get("kiban_stages")
        if stages:
            total = sum(v for k, v in stages["median_s"].items() if k != "spans_python_re")
            lines += [
                "",
                f"kiban stages, {name} ({stages['prose_segments']:,} prose / "
                f"{stages['span_segments']:,} span segments):",
                "",
                "| stage | s | share |",
                "|---|---:|---:|",
            ]
            for stage, seconds in stages["median_s"].items():
                share = f"{seconds / total:.0%}" if stage != "spans_python_re" else "(alt.)"
                lines.append(f"| {stage} | {seconds:.2f} | {share} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
