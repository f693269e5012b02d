"""`kiban` command line: thin wrappers that parse, call one library function, and print.

Heavy libraries (RDKit, pymatgen, torch, tokenizers) are imported inside the commands that need
them, so ``kiban --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def _print(payload: dict[str, Any], as_json: bool, render) -> None:
    if as_json:
        print(json.dumps(payload, indent=1, ensure_ascii=False))
    else:
        render(payload)


def _corpus_build(args: argparse.Namespace) -> int:
    from kiban.corpus import BuildConfig, SourceSpec, build_corpus, load_recipe
    from kiban.corpus.build import BuildError
    from kiban.corpus.store import CorpusError

    overrides = {"dedup": args.dedup, "near_threshold": args.near_threshold,
                 "decontaminate": tuple(args.decontaminate) if args.decontaminate else None,
                 "decontaminate_n": args.decontaminate_n, "vocab_size": args.vocab_size,
                 "tokenizer": args.tokenizer, "base_tokenizer": args.base_tokenizer,
                 "chunk_size": args.chunk_size, "strict": args.strict or None}
    try:
        recipes = [s for s in args.sources if s.endswith(".toml")]
        if recipes:
            if len(args.sources) != 1:
                raise CorpusError("give either one .toml recipe or data files, not both")
            config = load_recipe(recipes[0], **overrides)
        else:
            config = BuildConfig(sources=tuple(SourceSpec(path=p) for p in args.sources),
                                 **{k: v for k, v in overrides.items() if v is not None})
        manifest = build_corpus(config, args.out, workers=args.workers,
                                progress=not args.json and sys.stderr.isatty())
    except (BuildError, CorpusError, FileNotFoundError, ValueError) as error:
        print(f"kiban corpus build: error: {error}", file=sys.stderr)
        return 1
    from kiban.corpus.store import Corpus

    info = Corpus(args.out).info()
    _print(info, args.json, _render_info)
    if args.strict and manifest["rejected"]:
        return 1
    return 0


def _render_info(info: dict[str, Any]) -> None:
    print(f"corpus {info['directory']}")
    for key in ("documents", "tokens", "shards", "rejected", "exact_duplicates", "near_duplicates",
                "duplicate_ids", "decontaminated", "vocab_size", "token_dtype"):
        value = info[key]
        print(f"  {key:<17} {value:,}" if isinstance(value, int) else f"  {key:<17} {value}")
    print("  spans            " + ", ".join(f"{m} {n:,}" for m, n in info["modalities"].items()))
    print("  sources          " + ", ".join(f"{s} {n:,}" for s, n in info["sources"].items()))
    if info["rejected"]:
        print(f"  rejects are listed with file:line and reason in {info['directory']}/rejects.jsonl")


def _corpus_info(args: argparse.Namespace) -> int:
    from kiban.corpus.store import Corpus, CorpusError

    try:
        info = Corpus(args.directory).info()
    except CorpusError as error:
        print(f"kiban corpus info: error: {error}", file=sys.stderr)
        return 1
    _print(info, args.json, _render_info)
    return 0


def _corpus_show(args: argparse.Namespace) -> int:
    from kiban.corpus.store import Corpus, CorpusError

    try:
        row = Corpus(args.directory).document_row(args.doc_id)
    except CorpusError as error:
        print(f"kiban corpus show: error: {error}", file=sys.stderr)
        return 1

    def render(row: dict[str, Any]) -> None:
        print(row["text"])
        print()
        for key in ("id", "source", "license", "where", "sha256", "n_tokens", "shard",
                    "token_offset", "meta"):
            print(f"{key:<13} {row[key]}")

    _print(row, args.json, render)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kiban", description="Transparent scientific "
                                     "foundation models: corpora, search, models, tasks, lab.")
    parser.add_argument("--version", action="version", version="kiban 0.1.0")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    corpus = commands.add_parser("corpus", help="build and inspect corpora",
                                 description="Build and inspect token-shard corpora.")
    corpus_commands = corpus.add_subparsers(dest="corpus_command", required=True,
                                            metavar="SUBCOMMAND")
    build = corpus_commands.add_parser(
        "build", help="build a corpus from files or a TOML recipe",
        description="Read sources (JSONL, CSV/CSV.gz, SDF, CIF, pymatgen structure JSON, or one "
                    ".toml recipe), canonicalise, deduplicate, decontaminate, train the "
                    "tokenizer and write token shards. Rerun the same command to resume a build "
                    "that was interrupted.")
    build.add_argument("sources", nargs="+", metavar="SOURCE")
    build.add_argument("--out", required=True, help="output directory")
    build.add_argument("--dedup", choices=["none", "exact", "near"], default=None,
                       help="duplicate removal on canonical text (default: exact)")
    build.add_argument("--near-threshold", type=float, default=None,
                       help="Jaccard threshold for --dedup near (default 0.8)")
    build.add_argument("--decontaminate", nargs="+", metavar="FILE", default=None,
                       help="evaluation files: drop documents sharing a span of N tokens")
    build.add_argument("--decontaminate-n", type=int, default=None, metavar="N",
                       help="span length in tokens for --decontaminate (default 13)")
    build.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    build.add_argument("--strict", action="store_true", help="stop at the first rejected record")
    build.add_argument("--vocab-size", type=int, default=None, help="prose BPE size (default 8000)")
    build.add_argument("--chunk-size", type=int, default=None,
                       help="records per shard (default 50000)")
    build.add_argument("--tokenizer", default=None, help="use this kiban tokenizer directory")
    build.add_argument("--base-tokenizer", default=None,
                       help="extend the tokenizer of this local Hugging Face model directory")
    build.add_argument("--json", action="store_true", help="print the summary as JSON")
    build.set_defaults(handler=_corpus_build)

    info = corpus_commands.add_parser("info", help="summary counts of a built corpus",
                                      description="Counts of a built corpus.")
    info.add_argument("directory")
    info.add_argument("--json", action="store_true")
    info.set_defaults(handler=_corpus_info)

    show = corpus_commands.add_parser("show", help="one document's canonical text and provenance",
                                      description="Print a document's canonical text and "
                                                  "provenance.")
    show.add_argument("directory")
    show.add_argument("doc_id", metavar="DOC_ID")
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=_corpus_show)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
