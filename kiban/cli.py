"""`kiban` command line: thin wrappers that parse, call one library function, and print.

Heavy libraries (RDKit, pymatgen, torch, tokenizers) are imported inside the commands that need
them, so ``kiban --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def _finite(value: Any) -> Any:
    """JSON has no infinities: -inf log-probabilities are written as null."""
    if isinstance(value, float) and value != value or value in (float("inf"), float("-inf")):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _print(payload: dict[str, Any], as_json: bool, render) -> None:
    if as_json:
        print(json.dumps(_finite(payload), indent=1, ensure_ascii=False, allow_nan=False))
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


def _index_build(args: argparse.Namespace) -> int:
    from kiban.index import IndexFormatError, build_index

    try:
        manifest = build_index(args.corpus, workers=args.workers, verify=args.verify,
                               progress=not args.json and sys.stderr.isatty())
    except IndexFormatError as error:
        print(f"kiban index build: error: {error}", file=sys.stderr)
        return 1
    summary = {"corpus": args.corpus, "shards": len(manifest["shards"]),
               "tokens": sum(e["tokens"] for e in manifest["shards"]),
               "built_now": manifest["built_now"]}
    _print(summary, args.json, lambda p: print(
        f"index of {p['corpus']}: {p['shards']} shards, {p['tokens']:,} tokens; "
        f"built now: {len(p['built_now'])} shard(s), the others were up to date"))
    return 0


# CLI option -> keyword of the CorpusSearch method, per search subcommand
_SEARCH_OPTIONS = {
    "count": {"modality": "modality"},
    "docs": {"modality": "query_modality", "limit": "limit", "source": "source",
             "license": "license", "has_modality": "modality"},
    "next": {"modality": "modality", "top": "top"},
    "prob": {"modality": "modality"},
    "trace": {"modality": "modality", "min_length": "min_length", "max_count": "max_count",
              "max_spans": "max_spans", "docs_per_span": "documents_per_span"},
}


def _read_queries(args: argparse.Namespace) -> list:
    queries = list(args.query or [])
    if args.file:
        with open(args.file, encoding="utf-8") as handle:
            queries += [line.rstrip("\n") for line in handle if line.strip()]
    if not queries:
        raise ValueError("no query given: pass QUERY arguments or --file")
    if args.ids:
        parsed = []
        for query in queries:
            try:
                parsed.append([int(x) for x in query.replace(",", " ").split()])
            except ValueError:
                raise ValueError(f"--ids expects comma-separated integers, got {query!r}") from None
        return parsed
    return queries


def _search(args: argparse.Namespace) -> int:
    from kiban.index import IndexFormatError, QueryError
    from kiban.index.search import CorpusSearch

    try:
        search = CorpusSearch(args.corpus)
        if args.search_command == "contamination":
            report = search.contamination(args.eval_file, n=args.n)
            _print(report, args.json, _render_contamination)
            return 0
        queries = _read_queries(args)
        command = args.search_command
        options = {keyword: getattr(args, dest) for dest, keyword in _SEARCH_OPTIONS[command].items()}
        results = search.run_batch(command, queries, **options)
    except (IndexFormatError, QueryError, ValueError, FileNotFoundError) as error:
        print(f"kiban search {args.search_command}: error: {error}", file=sys.stderr)
        return 1
    payload = {"results": [{"query": q if isinstance(q, str) else list(q), **r}
                           for q, r in zip(queries, results)]}
    _print(payload, args.json, _render_search)
    return 0


def _render_search(payload: dict[str, Any]) -> None:
    for result in payload["results"]:
        print(f"query {result['query']!r}")
        for key, value in result.items():
            if key == "query":
                continue
            if key in ("documents", "spans", "tokens") and isinstance(value, list):
                print(f"  {key}: {len(value)}")
                for item in value[:20]:
                    print(f"    {json.dumps(item, ensure_ascii=False)[:200]}")
            else:
                print(f"  {key}: {value}")


def _render_contamination(report: dict[str, Any]) -> None:
    summary = report["summary"]
    print(f"{summary['contaminated']} of {summary['items']} items share a span of "
          f">= {report['n']} tokens with the corpus "
          f"({summary['contaminated_fraction']:.1%}); mean {report['n']}-gram overlap "
          f"{summary['mean_ngram_overlap']:.3f}")
    for item in report["items"]:
        if item["contaminated"]:
            print(f"  {item['where']}: longest shared span {item['longest_match']} tokens, "
                  f"overlap {item['ngram_overlap']:.2f}")


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

    index = commands.add_parser("index", help="build the exact-search index of a corpus",
                                description="Suffix-array index over a corpus's token shards.")
    index_commands = index.add_subparsers(dest="index_command", required=True, metavar="SUBCOMMAND")
    index_build = index_commands.add_parser(
        "build", help="build missing or stale shard indexes",
        description="Build one suffix array per shard (pydivsufsort). Shards already indexed "
                    "are kept; only new or changed ones are built.")
    index_build.add_argument("corpus", metavar="CORPUS_DIR")
    index_build.add_argument("--workers", type=int, default=1)
    index_build.add_argument("--verify", action="store_true",
                             help="recompute checksums and rebuild any shard that differs")
    index_build.add_argument("--json", action="store_true")
    index_build.set_defaults(handler=_index_build)

    search = commands.add_parser("search", help="exact queries over an indexed corpus",
                                 description="Exact queries over the very tokens a model trains "
                                             "on. A query is text (tokenized with the corpus "
                                             "tokenizer) or, with --ids, token ids.")
    search_commands = search.add_subparsers(dest="search_command", required=True,
                                            metavar="SUBCOMMAND")
    helps = {"count": "number of occurrences", "docs": "documents containing the query",
             "next": "∞-gram next-token distribution", "prob": "∞-gram probability of a sequence",
             "trace": "maximal verbatim spans of a text, with their documents"}
    for name, text in helps.items():
        sub = search_commands.add_parser(name, help=text, description=text[0].upper() + text[1:]
                                         + ". Several queries in one call are answered as a batch.")
        sub.add_argument("corpus", metavar="CORPUS_DIR")
        sub.add_argument("query", nargs="*", metavar="QUERY")
        sub.add_argument("--file", help="more queries, one per line")
        sub.add_argument("--ids", action="store_true", help="queries are token ids: 5,17,9")
        sub.add_argument("--modality", choices=["mol", "crystal", "num", "protein"],
                         help="tokenize a bare query as the inside of this span")
        sub.add_argument("--json", action="store_true")
        sub.set_defaults(handler=_search)
    docs = search_commands.choices["docs"]
    docs.add_argument("--limit", type=int, default=10)
    docs.add_argument("--source", help="only documents of this source")
    docs.add_argument("--license", help="only documents under this license")
    docs.add_argument("--has-modality", choices=["mol", "crystal", "num", "protein"],
                      help="only documents with a span of this modality")
    search_commands.choices["next"].add_argument("--top", type=int, default=20)
    trace = search_commands.choices["trace"]
    trace.add_argument("--min-length", type=int, default=1)
    trace.add_argument("--max-count", type=int, default=None)
    trace.add_argument("--max-spans", type=int, default=None)
    trace.add_argument("--docs-per-span", type=int, default=10)
    contamination = search_commands.add_parser(
        "contamination", help="evaluation items that overlap the corpus",
        description="Per evaluation item: the longest span shared with the corpus and its n-gram "
                    "overlap; summary fractions.")
    contamination.add_argument("corpus", metavar="CORPUS_DIR")
    contamination.add_argument("eval_file", metavar="EVAL_FILE")
    contamination.add_argument("--n", type=int, default=13)
    contamination.add_argument("--json", action="store_true")
    contamination.set_defaults(handler=_search)

    from kiban.train.cli import add_parsers as add_training

    add_training(commands)
    from kiban.generate.cli import add_parser as add_generate

    add_generate(commands)
    from kiban.tasks.cli import add_parser as add_eval
    from kiban.tasks.cli import add_report_parser

    add_eval(commands)
    add_report_parser(commands)
    from kiban.tasks.property_cli import add_parser as add_property

    add_property(commands)
    from kiban.lab.cli import add_parser as add_lab

    add_lab(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        # queries may come after options (`--modality mol CCO c1ccccc1`), which argparse leaves
        # unparsed when a '*' positional came before the options
        if getattr(args, "query", None) is not None and not any(e.startswith("--") for e in extra):
            args.query = list(args.query) + extra
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    from kiban._cli import run_command

    return run_command(_prog(args), args.handler, args)


def _prog(args: argparse.Namespace) -> str:
    """``kiban corpus build``: the words the user typed to reach the handler."""
    words = ["kiban", args.command]
    for name, value in vars(args).items():
        if name.endswith("_command") and name != "command" and isinstance(value, str):
            words.append(value)
    return " ".join(words)


if __name__ == "__main__":
    sys.exit(main())
