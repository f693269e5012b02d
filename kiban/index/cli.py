"""``kiban index build`` and ``kiban search count|docs|next|prob|trace|contamination``: parse,
call one library function, print.

Handlers raise; `kiban._cli.run_command` turns input errors (a missing or damaged corpus, a bad
query) into exit 2 and runtime failures into exit 1, each as one ``kiban <cmd>: error: ...``
line.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from kiban.io import emit

# CLI option -> keyword of the CorpusSearch method, per search subcommand
_SEARCH_OPTIONS = {
    "count": {"modality": "modality", "as_text": "as_text"},
    "docs": {
        "modality": "query_modality",
        "limit": "limit",
        "source": "source",
        "license": "license",
        "has_modality": "modality",
        "as_text": "as_text",
    },
    "next": {"modality": "modality", "top": "top", "as_text": "as_text"},
    "prob": {"modality": "modality", "as_text": "as_text"},
    "trace": {
        "modality": "modality",
        "min_length": "min_length",
        "max_count": "max_count",
        "max_spans": "max_spans",
        "docs_per_span": "documents_per_span",
        "as_text": "as_text",
    },
}


def span_modalities() -> list[str]:
    """The modalities a query span may have: the registered codecs that are span tags."""
    from kiban.document import MODALITY_TAGS
    from kiban.modalities import codec_names

    return [name for name in codec_names() if name in MODALITY_TAGS]


def add_parsers(commands) -> None:
    """Mount ``index`` and ``search`` on the top-level ``kiban`` subparsers."""
    index = commands.add_parser(
        "index",
        help="build the exact-search index of a corpus",
        description="Suffix-array index over a corpus's token shards.",
    )
    index_commands = index.add_subparsers(dest="index_command", required=True, metavar="SUBCOMMAND")
    build = index_commands.add_parser(
        "build",
        help="build missing, stale or damaged shard indexes",
        description="Build one suffix array per shard (pydivsufsort). Every file is checked "
        "against its sha256 first: a damaged corpus is an error, a damaged index "
        "shard is rebuilt; shards that check out are kept.",
    )
    build.add_argument("corpus", metavar="CORPUS_DIR")
    build.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    build.add_argument(
        "--verify",
        action="store_true",
        help="also check the corpus's values (token ids inside the vocabulary, "
        "documents ending with end-of-text) and documents.parquet",
    )
    build.add_argument(
        "--chem",
        action="store_true",
        help="also compute the fingerprints of the corpus's molecules that kiban search "
        "substructure and similar use (CORPUS/chem/; otherwise computed at their first use)",
    )
    build.add_argument("--json", action="store_true")
    build.set_defaults(handler=index_build)

    search = commands.add_parser(
        "search",
        help="exact queries over an indexed corpus",
        description="Exact queries over the very tokens a model trains "
        "on. A query is text (tokenized with the corpus "
        "tokenizer) or, with --ids, token ids.",
    )
    search_commands = search.add_subparsers(
        dest="search_command", required=True, metavar="SUBCOMMAND"
    )
    modalities = span_modalities()
    helps = {
        "count": "number of occurrences",
        "docs": "documents containing the query",
        "next": "∞-gram next-token distribution",
        "prob": "∞-gram probability of a sequence",
        "trace": "maximal verbatim spans of a text, with their documents",
    }
    for name, text in helps.items():
        sub = search_commands.add_parser(
            name,
            help=text,
            description=text[0].upper()
            + text[1:]
            + ". Several queries in one call are answered as a batch.",
        )
        sub.add_argument("corpus", metavar="CORPUS_DIR")
        sub.add_argument("query", nargs="*", metavar="QUERY")
        sub.add_argument("--file", help="more queries, one per line")
        sub.add_argument("--ids", action="store_true", help="queries are token ids: 5,17,9")
        sub.add_argument(
            "--modality",
            choices=modalities,
            help="tokenize a bare query as the inside of this span",
        )
        sub.add_argument(
            "--as-text",
            action="store_true",
            help="search a span that does not parse (e.g. a SMILES RDKit rejects, or "
            "a fragment of one) as the text written, instead of an error",
        )
        sub.add_argument("--json", action="store_true")
        sub.set_defaults(handler=search_queries)
    docs = search_commands.choices["docs"]
    docs.add_argument("--limit", type=int, default=10)
    docs.add_argument("--source", help="only documents of this source")
    docs.add_argument("--license", help="only documents under this license")
    docs.add_argument(
        "--has-modality", choices=modalities, help="only documents with a span of this modality"
    )
    search_commands.choices["next"].add_argument("--top", type=int, default=20)
    trace = search_commands.choices["trace"]
    trace.add_argument("--min-length", type=int, default=1)
    trace.add_argument("--max-count", type=int, default=None)
    trace.add_argument("--max-spans", type=int, default=None)
    trace.add_argument("--docs-per-span", type=int, default=10)
    _add_chemistry_parsers(search_commands)
    contamination = search_commands.add_parser(
        "contamination",
        help="evaluation items that overlap the corpus",
        description="Per evaluation item: the longest span shared with the corpus and its n-gram "
        "overlap; summary fractions. An unreadable item is an error naming its line "
        "(exit 2), unless --skip-unreadable; no readable item at all is always one.",
    )
    contamination.add_argument("corpus", metavar="CORPUS_DIR")
    contamination.add_argument("eval_file", metavar="EVAL_FILE")
    contamination.add_argument(
        "--ngram",
        "--n",
        dest="ngram",
        type=int,
        default=13,
        metavar="N",
        help="n-gram length in tokens (default 13; --n is an alias)",
    )
    contamination.add_argument(
        "--skip-unreadable",
        action="store_true",
        help="report unreadable items and go on with the others",
    )
    contamination.add_argument("--json", action="store_true")
    contamination.set_defaults(handler=search_contamination)


def _add_chemistry_parsers(search_commands) -> None:
    where = (
        " The molecules are the distinct <mol> spans of the corpus's documents; their "
        "fingerprints are stored in CORPUS/chem/, computed at first use (or by kiban index "
        "build --chem) and again when the corpus changes."
    )
    substructure = search_commands.add_parser(
        "substructure",
        help="molecules that contain a SMARTS pattern (RDKit)",
        description="Molecules of the corpus that contain SMARTS (RDKit substructure "
        "semantics), with match counts: a pattern-fingerprint screen, then RDKit on the "
        "molecules that pass it." + where,
    )
    substructure.add_argument("corpus", metavar="CORPUS_DIR")
    substructure.add_argument("smarts", metavar="SMARTS", help="e.g. c1ccncc1 or [CX3](=O)[OX2H1]")
    substructure.add_argument("--limit", type=int, default=20, help="hits to list (default 20)")
    substructure.add_argument(
        "--workers", type=int, default=1, help="threads for the RDKit check (default 1)"
    )
    substructure.add_argument("--json", action="store_true")
    substructure.set_defaults(handler=search_substructure)
    similar = search_commands.add_parser(
        "similar",
        help="molecules most similar to a SMILES (Tanimoto, Morgan)",
        description="Molecules of the corpus by Tanimoto similarity to SMILES on Morgan "
        "fingerprints (radius 2, 2048 bits), most similar first; equal similarities in "
        "corpus order." + where,
    )
    similar.add_argument("corpus", metavar="CORPUS_DIR")
    similar.add_argument("smiles", metavar="SMILES")
    similar.add_argument("--top", type=int, default=10, help="hits to list (default 10)")
    similar.add_argument(
        "--threshold", type=float, default=0.0, help="least similarity listed (default 0)"
    )
    similar.add_argument("--json", action="store_true")
    similar.set_defaults(handler=search_similar)


def _chem_index(corpus: str, workers: int = 1):
    from kiban.index.chemsearch import ChemIndex

    return ChemIndex.open(
        corpus, workers=workers, notify=lambda line: print(f"note: {line}", file=sys.stderr)
    )


def search_substructure(args: argparse.Namespace) -> None:
    if args.limit < 0:
        raise ValueError(f"--limit must be >= 0, got {args.limit}")
    if args.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {args.workers}")
    from kiban.index.chemsearch import parse_smarts

    parse_smarts(args.smarts)  # a bad pattern is reported before any fingerprint is computed
    result = _chem_index(args.corpus, args.workers).substructure(
        args.smarts, limit=args.limit, workers=args.workers
    )

    def render(p: dict[str, Any]) -> None:
        print(
            f"{p['query']}: {p['molecules']:,} of "
            f"{p['total_molecules']:,} molecules ({p['matches']:,} matches) in "
            f"{p['documents']:,} documents; {p['screened']:,} passed the fingerprint screen; "
            f"{p['seconds']:.3f} s"
        )
        _hit_table(p["hits"], "matches", "{}", p["molecules"])

    emit(result.as_dict(), args.json, render)


def search_similar(args: argparse.Namespace) -> None:
    result = _chem_index(args.corpus).similar(args.smiles, threshold=args.threshold, top=args.top)

    def render(p: dict[str, Any]) -> None:
        print(
            f"{p['query']}: {p['above_threshold']:,} of {p['total_molecules']:,} molecules "
            f"with Tanimoto >= {p['threshold']}; {p['seconds']:.3f} s"
        )
        _hit_table(p["hits"], "similarity", "{:.3f}", p["above_threshold"])

    emit(result.as_dict(), args.json, render)


def _hit_table(hits: list[dict[str, Any]], score: str, style: str, total: int) -> None:
    """Hits as aligned columns: score, documents, first document's file:line (source id), SMILES."""
    if not hits:
        return
    rows = [
        (
            style.format(hit[score]),
            str(hit["documents"]),
            hit["where"] + (f" ({hit['source_id']})" if hit.get("source_id") else ""),
            hit["smiles"],
        )
        for hit in hits
    ]
    _print_table((score, "docs", "first document", "molecule"), rows)
    if total > len(hits):
        print(f"  … {total - len(hits):,} more")


def index_build(args: argparse.Namespace) -> None:
    from kiban.index import build_index

    manifest = build_index(
        args.corpus,
        workers=args.workers,
        verify=args.verify,
        progress=not args.json and sys.stderr.isatty(),
    )
    chem = None
    if args.chem:
        from kiban.index.chemsearch import build_chem_index

        chem = build_chem_index(args.corpus, workers=args.workers)
    summary = {
        "corpus": args.corpus,
        "shards": len(manifest["shards"]),
        "tokens": sum(e["tokens"] for e in manifest["shards"]),
        "built_now": manifest["built_now"],
        "rebuilt_because": manifest["rebuilt_because"],
        "verified": args.verify,
        "chem": chem,
    }

    def render(p: dict[str, Any]) -> None:
        checked = "checked" + (" (with --verify)" if p["verified"] else "")
        print(
            f"index of {p['corpus']}: {p['shards']} shards, {p['tokens']:,} tokens; built now: "
            f"{len(p['built_now'])} shard(s), the others were {checked} and up to date"
        )
        for shard, reason in p["rebuilt_because"].items():
            print(f"  shard {shard} rebuilt: {reason}")
        if p["chem"] is not None:
            print(
                f"  chemistry index: {p['chem']['molecules']:,} molecules fingerprinted in "
                f"{p['chem']['seconds']:.1f} s ({p['chem']['unreadable']} unreadable)"
            )

    emit(summary, args.json, render)


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


def search_queries(args: argparse.Namespace) -> None:
    from kiban.index.search import CorpusSearch

    queries = _read_queries(args)
    search = CorpusSearch(args.corpus)
    command = args.search_command
    options = {keyword: getattr(args, dest) for dest, keyword in _SEARCH_OPTIONS[command].items()}
    results = search.run_batch(command, queries, **options)
    payload = {
        "results": [
            {"query": q if isinstance(q, str) else list(q), **r} for q, r in zip(queries, results)
        ]
    }
    emit(payload, args.json, _render_search)


def search_contamination(args: argparse.Namespace) -> None:
    from kiban.index.search import CorpusSearch

    report = CorpusSearch(args.corpus).contamination(
        args.eval_file, n=args.ngram, skip_unreadable=args.skip_unreadable
    )
    emit(report, args.json, _render_contamination)


def _render_search(payload: dict[str, Any]) -> None:
    notes: dict[str, None] = {}
    for result in payload["results"]:
        query = result["query"]
        shown = repr(query) if isinstance(query, str) else ",".join(map(str, query))
        if "documents" in result:
            _render_documents(shown, result)
        elif set(result) <= {"query", "count", "variants", "note"}:
            line = f"{result['count']:>10,}  {shown}"
            if "variants" in result:
                line += (
                    "  ("
                    + ", ".join(f"{v['text']!r}: {v['count']:,}" for v in result["variants"])
                    + ")"
                )
            print(line)
        else:
            print(f"query {shown}")
            for key, value in result.items():
                if key in ("query", "note"):
                    continue
                if isinstance(value, list):
                    print(f"  {key}: {len(value)}")
                    for item in value:
                        print("    " + _one_line(item))
                else:
                    print(f"  {key}: {value}")
        if result.get("note"):
            notes[result["note"]] = None
    for note in notes:  # once, after the results it is about
        print(f"note: {note}")


def _one_line(item: Any) -> str:
    if not isinstance(item, dict):
        return str(item)
    return "  ".join(
        f"{key}={len(value) if isinstance(value, list) else _flat(value)}"
        + (" documents" if isinstance(value, list) else "")
        for key, value in item.items()
    )


def _flat(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return " ".join(text.split())


def _render_documents(shown: str, result: dict[str, Any]) -> None:
    """docs as a table: the total, then per document file:line, id and the matched text."""
    documents = result["documents"]
    total = result.get("count")
    print(
        f"{shown}: "
        + (f"{total:,} occurrences; " if total is not None else "")
        + f"{len(documents)} document(s) shown"
    )
    if not documents:
        return
    rows = [(d["where"], d["id"], _flat(d["snippet"])) for d in documents]
    _print_table(("file:line", "document", "text"), rows)


def _print_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    """Indented columns, each but the last padded to its widest cell (the last runs on)."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header) - 1)]
    for row in [header, *rows]:
        print(
            "  " + "".join(cell.ljust(width) + "  " for cell, width in zip(row, widths)) + row[-1]
        )


def _render_contamination(report: dict[str, Any]) -> None:
    summary = report["summary"]
    print(
        f"{summary['contaminated']} of {summary['items']} items share a span of "
        f">= {report['n']} tokens with the corpus "
        f"({summary['contaminated_fraction']:.1%}); mean {report['n']}-gram overlap "
        f"{summary['mean_ngram_overlap']:.3f}"
    )
    for item in report["items"]:
        if item["contaminated"]:
            print(
                f"  {item['where']}: longest shared span {item['longest_match']} tokens, "
                f"overlap {item['ngram_overlap']:.2f}"
            )
    for item in report["unreadable"]:
        print(f"  unreadable {item['where']}: {item['reason']}")
