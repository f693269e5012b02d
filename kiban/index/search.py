"""`CorpusSearch`: text queries, documents with provenance, traces and contamination reports over
an indexed kiban corpus. Token-level work is `TokenIndex`'s; this layer tokenizes, filters by
metadata and decodes."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from kiban.document import MODALITY_TAGS
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
        return {"start": self.start, "end": self.end, "text": self.text, "count": self.count,
                "documents": [d.to_dict() for d in self.documents]}


class CorpusSearch:
    """Exact search over a built and indexed corpus directory."""

    def __init__(self, corpus_dir: str | os.PathLike, *, verify: bool = False):
        from kiban.corpus.store import Corpus

        self.directory = Path(corpus_dir)
        self.corpus = Corpus(self.directory)
        self.index = TokenIndex(self.directory, verify=verify)
        self.tokenizer = self.corpus.tokenizer  # checks it is the corpus's own tokenizer

    # --- queries ------------------------------------------------------------------------------
    def encode(self, query: Query, *, modality: str | None = None) -> np.ndarray:
        """Token ids of a query: ids as given, or text tokenized with the corpus tokenizer; with
        ``modality``, a bare text is tokenized as the inside of that span (as written: it may be
        a fragment). A tagged text is first canonicalised as the corpus's documents were
        (``<mol>OCC</mol>`` is stored as ``<mol>CCO</mol>``), unless a span does not parse."""
        if isinstance(query, str):
            if modality is not None:
                if modality not in MODALITY_TAGS:
                    raise QueryError(f"unknown modality {modality!r}; known: "
                                     f"{', '.join(MODALITY_TAGS)}")
                try:
                    ids = self.tokenizer.encode(f"<{modality}>{query}</{modality}>")[1:-1]
                except ValueError as error:  # a tag inside the query text
                    raise QueryError(f"cannot tokenize the query as <{modality}>: {error}") \
                        from None
            else:
                from kiban.corpus.clean import canonical_text

                try:
                    text = canonical_text(query)
                except ValueError:  # a span that is a fragment, or a malformed tag: as written
                    text = query
                try:
                    ids = self.tokenizer.encode(text)
                except ValueError as error:  # a malformed tag in the query text
                    raise QueryError(f"cannot tokenize the query: {error}") from None
            if not ids:
                raise QueryError(f"the query {query!r} tokenizes to nothing")
            return self.index.as_ids(ids)
        return self.index.as_ids(query)

    def count(self, query: Query, *, modality: str | None = None) -> int:
        return self.index.count(self.encode(query, modality=modality))

    def count_batch(self, queries: Sequence[Query], *, modality: str | None = None) -> list[int]:
        return self.index.count_batch([self.encode(q, modality=modality) for q in queries])

    # --- documents ----------------------------------------------------------------------------
    @cached_property
    def _table(self) -> dict[str, np.ndarray]:
        columns = ["id", "source", "license", "where", *[f"n_{m}" for m in MODALITY_TAGS]]
        table = self.corpus.documents_table(columns)
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
        return DocumentHit(str(table["id"][row]), table["source"][row], table["license"][row],
                           str(table["where"][row]), match.shard, match.position, snippet)

    def docs(self, query: Query, *, limit: int = 10, source: str | None = None,
             license: str | None = None, modality: str | None = None,
             query_modality: str | None = None, context: int = 20,
             scan_limit: int = 1_000_000) -> list[DocumentHit]:
        """Documents containing the query (each once, in suffix-array order), optionally only
        those of a ``source``, a ``license``, or with a span of ``modality``. At most
        ``scan_limit`` occurrences are examined when filtering."""
        if limit < 1:
            raise QueryError(f"limit must be >= 1, got {limit}")
        if modality is not None and modality not in MODALITY_TAGS:
            raise QueryError(f"unknown modality filter {modality!r}; known: "
                             f"{', '.join(MODALITY_TAGS)}")
        ids = self.encode(query, modality=query_modality)
        filtered = source is not None or license is not None or modality is not None
        matches = self._occurrences(ids)  # lazily: a frequent query has millions
        if filtered:
            matches = itertools.islice(matches, scan_limit)
        table = self._table
        hits: list[DocumentHit] = []
        seen: set[int] = set()
        for match in matches:
            row = self._row(match)
            if row in seen:
                continue
            if (source is not None and table["source"][row] != source) or \
               (license is not None and table["license"][row] != license) or \
               (modality is not None and table[f"n_{modality}"][row] == 0):
                continue
            seen.add(row)
            hits.append(self._hit(match, len(ids), context))
            if len(hits) >= limit:
                break
        return hits

    def _occurrences(self, ids: np.ndarray, chunk: int = 4096) -> Iterator[Match]:
        """`TokenIndex.matches` in the same (suffix-array) order, made a chunk at a time."""
        for shard, lo, hi in self.index._ranges(ids):
            for start in range(lo, hi, chunk):
                yield from self.index._matches_in(shard, start, min(hi, start + chunk))

    # --- ∞-gram -------------------------------------------------------------------------------
    def next(self, query: Query, *, modality: str | None = None, top: int | None = None,
             ) -> dict[str, Any]:
        ids = self.encode(query, modality=modality)
        result = self.index.next_tokens(ids)
        order = np.argsort(-result.counts, kind="stable")
        if top is not None:
            order = order[:top]
        total = result.total
        return {"suffix_length": result.suffix_length, "count": result.count, "total": total,
                "tokens": [{"id": int(result.tokens[i]),
                            "token": self.tokenizer.decode([int(result.tokens[i])]),
                            "count": int(result.counts[i]),
                            "prob": int(result.counts[i]) / total} for i in order]}

    def prob(self, query: Query, *, modality: str | None = None) -> dict[str, Any]:
        ids = self.encode(query, modality=modality)
        probabilities, log_prob = self.index.sequence_prob(ids)
        return {"tokens": [self.tokenizer.decode([int(t)]) for t in ids],
                "probs": probabilities, "log_prob": log_prob}

    # --- trace --------------------------------------------------------------------------------
    def trace(self, query: Query, *, modality: str | None = None, min_length: int = 1,
              max_count: int | None = None, max_spans: int | None = None,
              documents_per_span: int = 10, context: int = 20) -> list[SpanTrace]:
        """The maximal spans of a text (e.g. a model's output) found verbatim in the corpus, each
        with its count and the documents it occurs in."""
        ids = self.encode(query, modality=modality)
        spans = self.index.trace(ids, min_length=min_length, max_count=max_count,
                                 max_spans=max_spans, matches_per_span=documents_per_span)
        return [SpanTrace(s.start, s.end, self.tokenizer.decode(ids[s.start:s.end]), s.count,
                          [self._hit(m, s.length, context) for m in s.matches]) for s in spans]

    # --- contamination ------------------------------------------------------------------------
    def contamination(self, eval_path: str | os.PathLike, *, n: int = 13) -> dict[str, Any]:
        """Per evaluation item: the longest span it shares with the corpus (tokens) and the
        fraction of its n-grams found in the corpus; and summary fractions."""
        from kiban.corpus.clean import clean_record
        from kiban.corpus.readers import Reject, SourceSpec, read_source
        from kiban.index import _kernels

        if n < 1:
            raise QueryError(f"n must be >= 1, got {n}")
        items, unreadable = [], []
        for record in read_source(SourceSpec(path=str(eval_path))):
            if isinstance(record, Reject):
                unreadable.append(record.to_dict())
                continue
            try:
                text = clean_record(record).text
            except ValueError as error:
                unreadable.append({"where": record.where, "reason": str(error)})
                continue
            ids = self.tokenizer.encode(text)
            if not ids:
                continue
            query = np.asarray(ids, dtype=np.int64)
            longest = 0
            for shard in self.index.shards:
                if len(shard.suffix_array):
                    lengths, _, _ = _kernels.longest_matches(shard.tokens, shard.suffix_array,
                                                              query)
                    longest = max(longest, int(lengths.max()))
            overlap = float((self.index.count_windows(query, n) > 0).mean())
            items.append({"where": record.where, "tokens": len(ids), "longest_match": longest,
                          "ngram_overlap": overlap, "contaminated": longest >= min(n, len(ids))})
        total = len(items)
        return {"n": n, "items": items, "unreadable": unreadable,
                "summary": {"items": total,
                            "contaminated": sum(i["contaminated"] for i in items),
                            "contaminated_fraction": (sum(i["contaminated"] for i in items) / total
                                                      if total else 0.0),
                            "mean_ngram_overlap": (sum(i["ngram_overlap"] for i in items) / total
                                                   if total else 0.0)}}

    # --- batch --------------------------------------------------------------------------------
    def run(self, command: str, query: Query, **options: Any) -> dict[str, Any]:
        """One query of any kind, as a JSON-ready dict: ``command`` is count, docs, next, prob
        or trace; ``options`` are that method's keyword arguments (None means its default)."""
        options = {k: v for k, v in options.items() if v is not None}
        if command == "count":
            return {"count": self.count(query, **options)}
        if command == "docs":
            return {"documents": [h.to_dict() for h in self.docs(query, **options)]}
        if command == "next":
            return self.next(query, **options)
        if command == "prob":
            return self.prob(query, **options)
        if command == "trace":
            return {"spans": [s.to_dict() for s in self.trace(query, **options)]}
        raise QueryError(f"unknown query kind {command!r}; known: count, docs, next, prob, trace")

    def run_batch(self, command: str, queries: Sequence[Query], **options: Any,
                  ) -> list[dict[str, Any]]:
        """Many queries of one kind in one call (counts go through the compiled batch kernel)."""
        if command == "count":
            return [{"count": c} for c in self.count_batch(
                queries, modality=options.get("modality"))]
        return [self.run(command, q, **options) for q in queries]
