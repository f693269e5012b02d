"""``kiban corpus build|info|show|verify``: parse, call one library function, print.

Handlers raise; `kiban._cli.run_command` turns input errors into exit 2 and runtime failures
into exit 1, each as one ``kiban corpus <cmd>: error: ...`` line.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from kiban.io import emit


def add_parsers(commands) -> None:
    """Mount ``corpus`` and its subcommands on the top-level ``kiban`` subparsers."""
    corpus = commands.add_parser(
        "corpus",
        help="build and inspect corpora",
        description="Build and inspect token-shard corpora.",
    )
    sub = corpus.add_subparsers(dest="corpus_command", required=True, metavar="SUBCOMMAND")
    build = sub.add_parser(
        "build",
        help="build a corpus from files or a TOML recipe",
        description="Read sources (JSONL, CSV/CSV.gz, SDF, CIF, pymatgen structure JSON, or one "
        ".toml recipe), canonicalise, deduplicate, decontaminate, train the "
        "tokenizer and write token shards. Rerun the same command to resume a build "
        "that was interrupted; a source that changed since is an error unless "
        "--rebuild.",
    )
    build.add_argument("sources", nargs="+", metavar="SOURCE")
    build.add_argument("--out", required=True, help="output directory")
    build.add_argument(
        "--dedup",
        choices=["none", "exact", "near"],
        default=None,
        help="duplicate removal on canonical text (default: exact)",
    )
    build.add_argument(
        "--near-threshold",
        type=float,
        default=None,
        help="Jaccard threshold for --dedup near (default 0.8)",
    )
    build.add_argument(
        "--decontaminate",
        nargs="+",
        metavar="FILE",
        default=None,
        help="evaluation files: drop documents sharing a span of N tokens",
    )
    build.add_argument(
        "--decontaminate-n",
        type=int,
        default=None,
        metavar="N",
        help="span length in tokens for --decontaminate (default 13)",
    )
    build.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    build.add_argument("--strict", action="store_true", help="stop at the first rejected record")
    build.add_argument(
        "--rebuild",
        action="store_true",
        help="replace what --out holds (a corpus, or an unfinished build) when a "
        "source changed since it was built",
    )
    build.add_argument("--vocab-size", type=int, default=None, help="prose BPE size (default 8000)")
    build.add_argument(
        "--chunk-size", type=int, default=None, help="records per shard (default 50000)"
    )
    build.add_argument("--tokenizer", default=None, help="use this kiban tokenizer directory")
    build.add_argument(
        "--base-tokenizer",
        default=None,
        help="extend the tokenizer of this local Hugging Face model directory",
    )
    build.add_argument("--json", action="store_true", help="print the summary as JSON")
    build.set_defaults(handler=corpus_build)

    info = sub.add_parser(
        "info", help="summary counts of a built corpus", description="Counts of a built corpus."
    )
    info.add_argument("directory")
    info.add_argument("--json", action="store_true")
    info.set_defaults(handler=corpus_info)

    show = sub.add_parser(
        "show",
        help="one document's canonical text and provenance",
        description="Print a document's canonical text and provenance.",
    )
    show.add_argument("directory")
    show.add_argument("doc_id", metavar="DOC_ID")
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=corpus_show)

    verify = sub.add_parser(
        "verify",
        help="check every file of a corpus against its checksums",
        description="Check the token shards, offsets and documents.parquet "
        "against the sha256 in the manifest, and the shards' "
        "values (token ids inside the vocabulary, documents "
        "ending with end-of-text).",
    )
    verify.add_argument("directory")
    verify.add_argument("--json", action="store_true")
    verify.set_defaults(handler=corpus_verify)


def corpus_build(args: argparse.Namespace) -> int:
    from kiban.corpus import BuildConfig, SourceSpec, build_corpus, load_recipe
    from kiban.corpus.store import Corpus, CorpusError

    overrides = {
        "dedup": args.dedup,
        "near_threshold": args.near_threshold,
        "decontaminate": tuple(args.decontaminate) if args.decontaminate else None,
        "decontaminate_n": args.decontaminate_n,
        "vocab_size": args.vocab_size,
        "tokenizer": args.tokenizer,
        "base_tokenizer": args.base_tokenizer,
        "chunk_size": args.chunk_size,
        "strict": args.strict or None,
    }
    recipes = [s for s in args.sources if s.endswith(".toml")]
    if recipes:
        if len(args.sources) != 1:
            raise CorpusError("give either one .toml recipe or data files, not both")
        config = load_recipe(recipes[0], **overrides)
    else:
        config = BuildConfig(
            sources=tuple(SourceSpec(path=p) for p in args.sources),
            **{k: v for k, v in overrides.items() if v is not None},
        )
    manifest = build_corpus(
        config,
        args.out,
        workers=args.workers,
        rebuild=args.rebuild,
        progress=not args.json and sys.stderr.isatty(),
    )
    emit(Corpus(args.out).info(), args.json, render_info)
    return 1 if args.strict and manifest["rejected"] else 0


def render_info(info: dict[str, Any]) -> None:
    print(f"corpus {info['directory']}")
    for key in (
        "documents",
        "tokens",
        "shards",
        "rejected",
        "exact_duplicates",
        "near_duplicates",
        "duplicate_ids",
        "decontaminated",
        "vocab_size",
        "token_dtype",
    ):
        value = info[key]
        print(f"  {key:<17} {value:,}" if isinstance(value, int) else f"  {key:<17} {value}")
    print("  spans            " + ", ".join(f"{m} {n:,}" for m, n in info["modalities"].items()))
    print("  sources          " + ", ".join(f"{s} {n:,}" for s, n in info["sources"].items()))
    if info["rejected"]:
        print(
            f"  rejects are listed with file:line and reason in {info['directory']}/rejects.jsonl"
        )


def corpus_info(args: argparse.Namespace) -> None:
    from kiban.corpus.store import Corpus

    emit(Corpus(args.directory).info(), args.json, render_info)


def corpus_show(args: argparse.Namespace) -> None:
    from kiban.corpus.store import Corpus

    def render(row: dict[str, Any]) -> None:
        print(row["text"])
        print()
        for key in (
            "id",
            "source",
            "license",
            "where",
            "sha256",
            "n_tokens",
            "shard",
            "token_offset",
            "meta",
        ):
            print(f"{key:<13} {row[key]}")

    emit(Corpus(args.directory).document_row(args.doc_id), args.json, render)


def corpus_verify(args: argparse.Namespace) -> None:
    from kiban.corpus.store import Corpus

    corpus = Corpus(args.directory)
    report = {"corpus": str(corpus.directory), **corpus.verify(values=True)}
    if not corpus.checksums:
        report["note"] = (
            "a version-1 corpus records no checksums: only the shards' values were "
            "checked; rebuild it to add them"
        )
    emit(
        report,
        args.json,
        lambda r: print(
            f"corpus {r['corpus']}: {r['files']} file(s) match their checksums, the values of "
            f"{r['shards']} shard(s) are valid" + (f" ({r['note']})" if "note" in r else "")
        ),
    )
