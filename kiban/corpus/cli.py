"""``kiban corpus build|info|show|verify``: parse, call one library function, print.

Handlers raise; `kiban._cli.run_command` turns input errors into exit 2 and runtime failures
into exit 1, each as one ``kiban corpus <cmd>: error: ...`` line.
"""

from __future__ import annotations

import argparse
import shutil
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
    build.add_argument(
        "--template",
        default=None,
        help='render each CSV row / SD record with this template, e.g. "<mol>{smiles}</mol> has '
        'pIC50 <num>{pIC50}</num>." (default: molecule column as <mol>, numeric columns as '
        "NAME <num>VALUE</num>, ID and text columns kept as metadata)",
    )
    build.add_argument(
        "--smiles-column",
        default=None,
        metavar="COLUMN",
        help="the CSV column holding SMILES (default: a column named smiles or canonical_smiles)",
    )
    build.add_argument(
        "--id-column",
        default=None,
        metavar="COLUMN",
        help="the column whose value is each document's source id (kept in its metadata as "
        "source_id, not rendered into the text)",
    )
    build.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    build.add_argument("--strict", action="store_true", help="stop at the first rejected record")
    build.add_argument(
        "--rebuild",
        action="store_true",
        help="replace what --out holds (a corpus, or an unfinished build) when a "
        "source changed since it was built",
    )
    build.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the corpus (or unfinished build) --out holds, whatever it was built from",
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
    show.add_argument("doc_id", metavar="DOC_ID", nargs="?", help="the document's id")
    show.add_argument(
        "--row", type=int, default=None, metavar="N", help="the N-th document (from 0, as head)"
    )
    show.add_argument(
        "--where", default=None, metavar="FILE:LINE", help="the document read from FILE:LINE"
    )
    show.add_argument(
        "--id",
        dest="source_id",
        default=None,
        metavar="SOURCE_ID",
        help="the document whose source id (the build's --id-column) is SOURCE_ID",
    )
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=corpus_show)

    head = sub.add_parser(
        "head",
        help="the first documents: row, id, file:line, source id and text",
        description="List the first documents of a corpus with the row, id, file:line and "
        "source id that `kiban corpus show` takes.",
    )
    head.add_argument("directory")
    head.add_argument("-n", type=int, default=10, help="how many (default 10)")
    head.add_argument("--json", action="store_true")
    head.set_defaults(handler=corpus_head)

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
    from kiban.corpus import BuildConfig, build_corpus, load_recipe
    from kiban.corpus.build import BuildError
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
    rendering = {
        "template": args.template,
        "smiles_column": args.smiles_column,
        "id_column": args.id_column,
    }
    rendering = {key: value for key, value in rendering.items() if value is not None}
    recipes = [s for s in args.sources if s.endswith(".toml")]
    if recipes:
        if len(args.sources) != 1:
            raise CorpusError("give either one .toml recipe or data files, not both")
        if rendering:
            options = ", ".join("--" + key.replace("_", "-") for key in rendering)
            raise CorpusError(
                f"{options}: a recipe gives these per source (template = ..., smiles_column = "
                f"..., id_column = ... in its [[source]] tables), not on the command line"
            )
        config = load_recipe(recipes[0], **overrides)
    else:
        sources = tuple(_source_spec(path, rendering) for path in args.sources)
        if rendering and not any(spec.file_format in ("csv", "sdf") for spec in sources):
            options = ", ".join("--" + key.replace("_", "-") for key in rendering)
            raise CorpusError(f"{options}: apply to CSV and SDF sources, and none was given")
        config = BuildConfig(
            sources=sources,
            **{k: v for k, v in overrides.items() if v is not None},
        )
    try:
        manifest = build_corpus(
            config,
            args.out,
            workers=args.workers,
            rebuild=args.rebuild or args.overwrite,
            progress=not args.json and sys.stderr.isatty(),
        )
    except BuildError:
        _print_reject_summary(args.out)
        raise
    if manifest["rejected"] >= manifest["documents"]:  # mostly failed: say why
        _print_reject_summary(args.out)
    emit(Corpus(args.out).info(), args.json, render_info)
    return 1 if args.strict and manifest["rejected"] else 0


def _source_spec(path: str, rendering: dict[str, str]):
    """A command-line source: the rendering options apply to CSV and SD files only."""
    from kiban.corpus import SourceSpec

    spec = SourceSpec(path=path)
    if rendering and spec.file_format in ("csv", "sdf"):
        spec = SourceSpec(path=path, **rendering)
    return spec


def _print_reject_summary(out: str) -> None:
    """The most common reject reasons of the build in ``out``, one example each, on stderr."""
    from kiban.corpus.build import reject_summary

    summary = reject_summary(out)
    if not summary:
        return
    total = sum(entry["count"] for entry in summary["reasons"])
    print(f"{summary['rejected']:,} records rejected; the most common reasons:", file=sys.stderr)
    for entry in summary["reasons"]:
        print(f"  {entry['count']:>7,}  {entry['reason']}", file=sys.stderr)
        print(f"           e.g. {entry['where']}: {entry['example']}", file=sys.stderr)
    if total < summary["rejected"]:
        print(f"  {summary['rejected'] - total:>7,}  other reasons", file=sys.stderr)


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
    from kiban.corpus.store import Corpus, CorpusError

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

    corpus = Corpus(args.directory)
    if args.doc_id is not None and (args.row, args.where, args.source_id) == (None, None, None):
        row = corpus.document_row(args.doc_id)
    elif args.doc_id is not None:
        raise CorpusError(
            "give either a document id or --row/--where/--id, not both; "
            f"got {args.doc_id!r} and another"
        )
    else:
        row = corpus.find_document_row(row=args.row, where=args.where, source_id=args.source_id)
    emit(row, args.json, render)


def corpus_head(args: argparse.Namespace) -> None:
    from kiban.corpus.store import Corpus

    def render(rows: list[dict[str, Any]]) -> None:
        width = shutil.get_terminal_size((100, 20)).columns
        print(f"{'row':>5}  {'id':<16}  {'where':<20}  {'source id':<12}  text")
        for row in rows:
            line = (
                f"{row['row']:>5}  {row['id']:<16}  {row['where']:<20}  "
                f"{row['source_id'] or '':<12}  {row['text']}"
            )
            print(line if len(line) <= width else line[: width - 1] + "…")

    emit(Corpus(args.directory).head(args.n), args.json, render)


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
