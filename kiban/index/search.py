"""`CorpusSearch`: text queries, documents with provenance, traces and contamination reports over
an indexed kiban corpus. Token-level work is `TokenIndex`'s; this layer tokenizes, filters by
metadata and decodes."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from kiban.corpus.store import Corpus, CorpusError
from kiban.document import MODALITY_TAGS
from kiban.errors import did_you_mean
from kiban.index.build import IndexFormatError
from kiban.index.engine import Match, QueryError, TokenIndex

Query = str | Sequence[int]


@dataclass(frozen=True)
class DocumentHit:
    id: str
    source: str | None
    license: str | None
    where: str
    shard: int
    position: int
    snippet: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class SpanTrace:
    start: int
    end: int
    text: str
    count: int
    documents: list[DocumentHit] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "start": self.start,
            "end": self.end,
            "text": self.text,
            "count": self.count,
            "documents": [d.to_dict() for d in self.documents],
        }


class ContaminationError(QueryError):
    """An evaluation file that cannot be checked as given (unreadable items, none readable)."""


def _canonical_or_as_written(text: str) -> str:
    """``text`` canonicalised as `kiban.corpus.clean.canonical_text` stores documents, or as
    written when a span does not parse or a tag is malformed (a fragment)."""
    from kiban.corpus.clean import canonical_text

    try:
        return canonical_text(text)
    except ValueError:
        return text


class CorpusSearch:
    """Exact search over a built and indexed corpus (a `Corpus` or its directory). Every file is
    checked against its checksum when opened (see `TokenIndex`; ``documents.parquet`` when the
    first documents are looked up)."""

    def __init__(self, corpus: Corpus | str | os.PathLike, *, verify: bool = True):
        self.index = TokenIndex(corpus, verify=verify)
        self.corpus = self.index.corpus
        self.directory = self.corpus.directory
        self._verify = verify
        try:
            self.tokenizer = self.corpus.tokenizer  # checks it is the corpus's own tokenizer
        except CorpusError as error:
            raise IndexFormatError(str(error)) from None

    # --- queries ------------------------------------------------------------------------------
    def encode(
        self, query: Query, *, modality: str | None = None, as_text: bool = False
    ) -> np.ndarray:
        """Token ids of a query: ids as given, or text tokenized with the corpus tokenizer.

        With ``modality``, a bare text is tokenized as the inside of that span, as written (it
        may be a fragment, e.g. part of a SMILES). A tagged text is canonicalised as the corpus's
        documents were (``<mol>OCC</mol>`` is stored as ``<mol>CCO</mol>``). Either way, a span
        its codec cannot read (a SMILES RDKit rejects) is a `QueryError` giving the codec's
        reason, since its count would be 0 for a reason the user cannot see; with ``as_text``
        it is searched as the text written instead."""
        if not isinstance(query, str):
            return self.index.as_ids(query)
        from kiban.document import DocumentError, split_tagged
        from kiban.modalities import CodecError, get_codec

        if modality is not None:
            if modality not in MODALITY_TAGS:
                raise QueryError(
                    f"unknown modality {modality!r}{did_you_mean(modality, MODALITY_TAGS)}"
                    f"; known: {', '.join(MODALITY_TAGS)}"
                )
            if query.strip() and not as_text:
                # as the corpus stores it: a whole molecule's canonical SMILES (OCC -> CCO)
                query = self._check_span(modality, query, get_codec, CodecError)
            try:
                ids = self.tokenizer.encode(f"<{modality}>{query}</{modality}>")[1:-1]
            except ValueError as error:  # a tag inside the query text
                raise QueryError(f"cannot tokenize the query as <{modality}>: {error}") from None
        else:
            if not as_text and "<" in query:  # a span needs a tag (and the split costs 2 %)
                try:
                    segments = split_tagged(query)
                except DocumentError:  # a malformed tag (e.g. an unclosed one): as written
                    segments = []
                for segment in segments:
                    if segment.modality is not None:
                        self._check_span(segment.modality, segment.text, get_codec, CodecError)
            text = _canonical_or_as_written(query)
            try:
                ids = self.tokenizer.encode(text)
            except ValueError as error:  # a malformed tag in the query text
                raise QueryError(f"cannot tokenize the query: {error}") from None
        if not ids:
            raise QueryError(f"the query {query!r} tokenizes to nothing")
        return self.index.as_ids(ids)

    @staticmethod
    def _check_span(modality: str, text: str, get_codec, codec_error) -> str:
        """The canonical text of a query span, or a `QueryError` with the codec's reason."""
        try:
            return get_codec(modality).canonical(text)
        except codec_error as error:
            what = {
                "mol": "a molecule",
                "crystal": "a crystal",
                "num": "a number",
                "protein": "a protein sequence",
            }.get(modality, f"a {modality}")
            reason = getattr(error, "reason", str(error))
            raise QueryError(
                f"{text!r} is not {what} ({reason}): a <{modality}> query is "
                "matched against canonical spans and would count 0; pass --as-text "
                "(as_text=True) to search for it as the text written"
            ) from None

    def variants(
        self, query: Query, *, modality: str | None = None, as_text: bool = False
    ) -> list[tuple[Query, np.ndarray]]:
        """The token sequences a query stands for: one, or for a prose word at the start of a
        query two — with and without its leading space, which BPE tokenizes differently
        (``"kinase"`` at the start of a text, ``" kinase"`` inside a sentence)."""
        first = (query, self.encode(query, modality=modality, as_text=as_text))
        if not isinstance(query, str) or modality is not None or "<" in query:
            return [first]
        other = query[1:] if query.startswith(" ") else " " + query
        if not other.strip() or other.startswith(" " * 2):
            return [first]
        return [first, (other, self.encode(other, as_text=as_text))]

    @staticmethod
    def _combined(variants: list[tuple[Query, np.ndarray]], counts: Sequence[int]) -> int:
        """Occurrences of any variant, each once: the spaced sequence ends with the bare one
        where the tokenizer splits off the space, and then counting the bare one counts both."""
        if len(variants) == 1:
            return int(counts[0])
        (_, a), (_, b) = variants
        shorter, longer = (a, b) if len(a) <= len(b) else (b, a)
        if np.array_equal(longer[len(longer) - len(shorter) :], shorter):
            return int(counts[0] if len(a) <= len(b) else counts[1])
        return int(counts[0]) + int(counts[1])

    def count(self, query: Query, *, modality: str | None = None, as_text: bool = False) -> int:
        """Occurrences of the query (a prose word at its start with or without the leading
        space, see `variants`)."""
        variants = self.variants(query, modality=modality, as_text=as_text)
        return self._combined(variants, self.index.count_batch([ids for _, ids in variants]))

    def count_batch(
        self, queries: Sequence[Query], *, modality: str | None = None, as_text: bool = False
    ) -> list[int]:
        return [r["count"] for r in self.count_details(queries, modality=modality, as_text=as_text)]

    def count_details(
        self, queries: Sequence[Query], *, modality: str | None = None, as_text: bool = False
    ) -> list[dict[str, Any]]:
        """Per query: ``count`` and, where the query stands for two token sequences, the
        count of each (``variants``); all counted in one call of the compiled kernel."""
        expanded = [self.variants(q, modality=modality, as_text=as_text) for q in queries]
        counts = iter(self.index.count_batch([ids for v in expanded for _, ids in v]))
        results = []
        for variants in expanded:
            each = [next(counts) for _ in variants]
            result: dict[str, Any] = {"count": self._combined(variants, each)}
            if len(variants) > 1:
                result["variants"] = [
                    {"text": text, "count": int(c)} for (text, _), c in zip(variants, each)
                ]
            results.append(result)
        return results

    # --- documents ----------------------------------------------------------------------------
    @cached_property
    def _table(self) -> dict[str, np.ndarray]:
        columns = ["id", "source", "license", "where", *[f"n_{m}" for m in MODALITY_TAGS]]
        try:
            table = self.corpus.documents_table(columns, verify=self._verify)
        except CorpusError as error:
            raise IndexFormatError(str(error)) from None
        if table.num_rows != self.index.documents:
            raise IndexFormatError(
                f"{self.corpus.documents_path} has {table.num_rows:,} rows, "
                f"the shards {self.index.documents:,} documents: the corpus "
                "is damaged; rebuild it"
            )
        return {c: table.column(c).to_numpy(zero_copy_only=False) for c in columns}

    @cached_property
    def _first_row(self) -> np.ndarray:
        sizes = [len(s.offsets) - 1 for s in self.index.shards]
        return np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)

    def _row(self, match: Match) -> int:
        return int(self._first_row[match.shard] + match.document)

    def _hit(self, match: Match, length: int, context: int) -> DocumentHit:
        shard = self.index.shards[match.shard]
        start = int(shard.offsets[match.document])
        end = int(shard.offsets[match.document + 1]) - 1  # the end-of-text token left out
        left = max(start, match.position - context)
        right = min(end, match.position + length + context)
        snippet = self.tokenizer.decode(shard.tokens[left:right])
        row = self._row(match)
        table = self._table
        return DocumentHit(
            str(table["id"][row]),
            table["source"][row],
            table["license"][row],
            str(table["where"][row]),
            match.shard,
            match.position,
            snippet,
        )

    def docs(
        self,
        query: Query,
        *,
        limit: int = 10,
        source: str | None = None,
        license: str | None = None,
        modality: str | None = None,
        query_modality: str | None = None,
        context: int = 20,
        scan_limit: int = 1_000_000,
        as_text: bool = False,
    ) -> list[DocumentHit]:
        """Documents containing the query (each once, in suffix-array order), optionally only
        those of a ``source``, a ``license``, or with a span of ``modality``. At most
        ``scan_limit`` occurrences are examined when filtering."""
        if limit < 1:
            raise QueryError(f"limit must be >= 1, got {limit}")
        if modality is not None and modality not in MODALITY_TAGS:
            raise QueryError(
                f"unknown modality filter {modality!r}; known: {', '.join(MODALITY_TAGS)}"
            )
        variants = self.variants(query, modality=query_modality, as_text=as_text)
        filtered = source is not None or license is not None or modality is not None
        # lazily: a frequent query has millions
        matches = itertools.chain.from_iterable(
            ((len(ids), m) for m in self._occurrences(ids)) for _, ids in variants
        )
        if filtered:
            matches = itertools.islice(matches, scan_limit)
        table = self._table
        hits: list[DocumentHit] = []
        seen: set[int] = set()
        for length, match in matches:
            row = self._row(match)
            if row in seen:
                continue
            if (
                (source is not None and table["source"][row] != source)
                or (license is not None and table["license"][row] != license)
                or (modality is not None and table[f"n_{modality}"][row] == 0)
            ):
                continue
            seen.add(row)
            hits.append(self._hit(match, length, context))
            if len(hits) >= limit:
                break
        return hits

    def _occurrences(self, ids: np.ndarray, chunk: int = 4096) -> Iterator[Match]:
        """`TokenIndex.matches` in the same (suffix-array) order, made a chunk at a time."""
        for shard, lo, hi in self.index._ranges(ids):
            for start in range(lo, hi, chunk):
                yield from self.index._matches_in(shard, start, min(hi, start + chunk))

    # --- ∞-gram -------------------------------------------------------------------------------
    def next(
        self,
        query: Query,
        *,
        modality: str | None = None,
        top: int | None = None,
        as_text: bool = False,
    ) -> dict[str, Any]:
        ids = self.encode(query, modality=modality, as_text=as_text)
        result = self.index.next_tokens(ids)
        order = np.argsort(-result.counts, kind="stable")
        if top is not None:
            order = order[:top]
        total = result.total
        return {
            "suffix_length": result.suffix_length,
            "count": result.count,
            "total": total,
            "tokens": [
                {
                    "id": int(result.tokens[i]),
                    "token": self.tokenizer.decode([int(result.tokens[i])]),
                    "count": int(result.counts[i]),
                    "prob": int(result.counts[i]) / total,
                }
                for i in order
            ],
        }

    def prob(
        self, query: Query, *, modality: str | None = None, as_text: bool = False
    ) -> dict[str, Any]:
        ids = self.encode(query, modality=modality, as_text=as_text)
        probabilities, log_prob = self.index.sequence_prob(ids)
        return {
            "tokens": [self.tokenizer.decode([int(t)]) for t in ids],
            "probs": probabilities,
            "log_prob": log_prob,
        }

    # --- trace --------------------------------------------------------------------------------
    def trace(
        self,
        query: Query,
        *,
        modality: str | None = None,
        min_length: int = 1,
        max_count: int | None = None,
        max_spans: int | None = None,
        documents_per_span: int = 10,
        context: int = 20,
        as_text: bool = False,
    ) -> list[SpanTrace]:
        """The maximal spans of a text (e.g. a model's output) found verbatim in the corpus, each
        with its count and the documents it occurs in."""
        ids = self.encode(query, modality=modality, as_text=as_text)
        spans = self.index.trace(
            ids,
            min_length=min_length,
            max_count=max_count,
            max_spans=max_spans,
            matches_per_span=documents_per_span,
        )
        return [
            SpanTrace(
                s.start,
                s.end,
                self.tokenizer.decode(ids[s.start : s.end]),
                s.count,
                [self._hit(m, s.length, context) for m in s.matches],
            )
            for s in spans
        ]

    # --- contamination ------------------------------------------------------------------------
    def contamination(
        self, eval_path: str | os.PathLike, *, n: int = 13, skip_unreadable: bool = False
    ) -> dict[str, Any]:
        """Per evaluation item: the longest span it shares with the corpus (tokens) and the
        fraction of its n-grams found in the corpus; and summary fractions.

        An item that cannot be read (bad JSON or UTF-8, an invalid span, nothing to tokenize)
        is a `ContaminationError` naming its file:line, unless ``skip_unreadable`` (then it is
        listed under ``unreadable``); a file with no readable item is always one: a check of
        nothing must not report "0 contaminated"."""
        from kiban.corpus.clean import clean_record
        from kiban.corpus.readers import Reject, SourceSpec, read_source
        from kiban.index import _kernels

        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise QueryError(f"the n-gram length must be an integer >= 1, got {n!r}")
        items, unreadable = [], []

        def refuse(where: str, reason: str) -> None:
            unreadable.append({"where": where, "reason": reason})
            if not skip_unreadable:
                raise ContaminationError(
                    f"{where}: unreadable evaluation item: {reason} (pass "
                    "--skip-unreadable to report such items and go on)"
                )

        try:
            records = read_source(SourceSpec(path=str(eval_path)))
        except ValueError as error:  # e.g. a file name with no known format
            raise ContaminationError(f"{eval_path}: {error}") from None
        for record in records:
            if isinstance(record, Reject):
                refuse(record.where, record.reason)
                continue
            try:
                text = clean_record(record).text
            except ValueError as error:
                refuse(record.where, getattr(error, "reason", str(error)))
                continue
            ids = self.tokenizer.encode(text)
            if not ids:
                refuse(record.where, "the item tokenizes to nothing")
                continue
            query = np.asarray(ids, dtype=np.int64)
            longest = 0
            for shard in self.index.shards:
                if len(shard.suffix_array):
                    lengths, _, _ = _kernels.longest_matches(
                        shard.tokens, shard.suffix_array, query
                    )
                    longest = max(longest, int(lengths.max()))
            overlap = float((self.index.count_windows(query, n) > 0).mean())
            items.append(
                {
                    "where": record.where,
                    "tokens": len(ids),
                    "longest_match": longest,
                    "ngram_overlap": overlap,
                    "contaminated": longest >= min(n, len(ids)),
                }
            )
        total = len(items)
        if total == 0:
            first = (
                f"; the first: {unreadable[0]['where']}: {unreadable[0]['reason']}"
                if unreadable
                else ""
            )
            raise ContaminationError(
                f"{eval_path}: no readable evaluation item "
                f"({len(unreadable)} unreadable{first}): nothing was checked"
            )
        contaminated = sum(i["contaminated"] for i in items)
        return {
            "n": n,
            "items": items,
            "unreadable": unreadable,
            "summary": {
                "items": total,
                "unreadable": len(unreadable),
                "contaminated": contaminated,
                "contaminated_fraction": contaminated / total,
                "mean_ngram_overlap": sum(i["ngram_overlap"] for i in items) / total,
            },
        }

    # --- batch --------------------------------------------------------------------------------
    def run(self, command: str, query: Query, **options: Any) -> dict[str, Any]:
        """One query of any kind, as a JSON-ready dict: ``command`` is count, docs, next, prob
        or trace; ``options`` are that method's keyword arguments (None means its default)."""
        options = {k: v for k, v in options.items() if v is not None}
        if command == "count":
            return {"count": self.count(query, **options)}
        if command == "docs":
            counted = {k: v for k, v in options.items() if k == "as_text"}
            if "query_modality" in options:
                counted["modality"] = options["query_modality"]
            return {
                "count": self.count(query, **counted),
                "documents": [h.to_dict() for h in self.docs(query, **options)],
            }
        if command == "next":
            return self.next(query, **options)
        if command == "prob":
            return self.prob(query, **options)
        if command == "trace":
            return {"spans": [s.to_dict() for s in self.trace(query, **options)]}
        raise QueryError(f"unknown query kind {command!r}; known: count, docs, next, prob, trace")

    def run_batch(
        self,
        command: str,
        queries: Sequence[Query],
        **options: Any,
    ) -> list[dict[str, Any]]:
        """Many queries of one kind in one call (counts go through the compiled batch kernel)."""
        if command == "count":
            results = self.count_details(
                queries, modality=options.get("modality"), as_text=options.get("as_text", False)
            )
        else:
            results = [self.run(command, q, **options) for q in queries]
        for query, result in zip(queries, results):
            note = self.note(query, command, result, options)
            if note:
                result["note"] = note
        return results

    def note(
        self, query: Query, command: str, result: dict[str, Any], options: dict[str, Any]
    ) -> str | None:
        """What a user should know to read the result: a molecule query is a token-string
        match, not a substructure search; a prose query that found nothing is a SMILES."""
        if not isinstance(query, str) or options.get("as_text"):
            return None
        modality = options.get("modality") or options.get("query_modality")
        if modality == "mol":
            return (
                "matched as the token string of the canonical SMILES inside <mol> spans (the "
                "molecule itself, and larger molecules whose SMILES contain it as text); for "
                "substructures use kiban search substructure, for similar molecules kiban "
                "search similar"
            )
        empty = result.get("count") == 0 or result.get("documents") == []
        if modality is None and empty and "<" not in query and " " not in query.strip():
            from kiban.chem import canonical_or_none

            canonical = canonical_or_none(query.strip())
            if canonical is not None:
                return (
                    f"{query.strip()!r} is read as prose; as a molecule search <mol>{canonical}"
                    "</mol> (--modality mol), or use kiban search substructure / similar"
                )
        return None
