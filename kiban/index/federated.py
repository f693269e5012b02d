"""`FederatedIndex`: one query over several indexed corpora (nodes, or corpora added later),
combined exactly as `TokenIndex` combines its own shards — the fan-out of `docs/search.md`,
tested small.

Counts add up; the ∞-gram suffix length is the longest over all parts before counting; a trace
takes the longest match per start over all parts and recounts the chosen spans. With
``allow_partial=True`` a part that cannot be opened is reported in `missing` and the others
answer (counts are then lower bounds).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

import numpy as np

from kiban.corpus.store import Corpus
from kiban.index.build import IndexFormatError
from kiban.index.engine import (
    Match,
    NextTokens,
    QueryError,
    TokenIndex,
    TraceSpan,
    select_spans,
    spans_from_lengths,
)


class FederatedIndex:
    def __init__(
        self,
        parts: Sequence[str | os.PathLike | Corpus | TokenIndex],
        *,
        allow_partial: bool = False,
    ):
        self.parts: list[TokenIndex] = []
        self.names: list[str] = []
        self.missing: list[tuple[str, str]] = []
        for part in parts:
            name = str(
                part.corpus.directory
                if isinstance(part, TokenIndex)
                else part.directory
                if isinstance(part, Corpus)
                else part
            )
            try:
                self.parts.append(part if isinstance(part, TokenIndex) else TokenIndex(part))
                self.names.append(name)
            except (IndexFormatError, OSError) as error:
                if not allow_partial:
                    raise
                self.missing.append((name, str(error)))
        if not self.parts:
            raise IndexFormatError(
                "no part of the federated index could be opened: "
                + "; ".join(f"{n}: {r}" for n, r in self.missing)
            )
        first = self.parts[0]
        for name, part in zip(self.names[1:], self.parts[1:]):
            if (part.corpus.tokenizer_sha256, part.eos_id, part.vocab_size) != (
                first.corpus.tokenizer_sha256,
                first.eos_id,
                first.vocab_size,
            ):
                raise IndexFormatError(
                    f"{name} was tokenized with another tokenizer than "
                    f"{self.names[0]}: parts of one index must share it"
                )
        self.eos_id, self.vocab_size = first.eos_id, first.vocab_size

    @property
    def partial(self) -> bool:
        return bool(self.missing)

    @property
    def total_tokens(self) -> int:
        return sum(p.total_tokens for p in self.parts)

    def as_ids(self, ids, *, allow_empty: bool = False) -> np.ndarray:
        return self.parts[0].as_ids(ids, allow_empty=allow_empty)

    def count(self, ids: Sequence[int]) -> int:
        query = self.as_ids(ids)
        return sum(p.count(query) for p in self.parts)

    def count_batch(self, queries: Sequence[Sequence[int]]) -> list[int]:
        totals = np.zeros(len(queries), dtype=np.int64)
        for part in self.parts:
            totals += np.asarray(part.count_batch(queries), dtype=np.int64)
        return totals.tolist()

    def matches(self, ids: Sequence[int], *, limit: int | None = None) -> list[Match]:
        found: list[Match] = []
        for number, part in enumerate(self.parts):
            remaining = None if limit is None else limit - len(found)
            if remaining is not None and remaining <= 0:
                break
            found += [
                dataclasses.replace(m, part=number) for m in part.matches(ids, limit=remaining)
            ]
        return found

    def _suffix_length(self, prompt: np.ndarray) -> int:
        best, lo, hi = 0, 1, len(prompt)
        while lo <= hi:
            length = (lo + hi) // 2
            if self.count(prompt[len(prompt) - length :]) > 0:
                best, lo = length, length + 1
            else:
                hi = length - 1
        return best

    def next_tokens(self, prompt: Sequence[int]) -> NextTokens:
        query = self.as_ids(prompt, allow_empty=True)
        length = self._suffix_length(query)
        suffix = query[len(query) - length :]
        merged: dict[int, int] = {}
        count = 0
        for part in self.parts:
            if length and part.count(suffix) == 0:
                continue
            result = part.next_tokens(suffix)
            count += result.count
            for token, n in zip(result.tokens.tolist(), result.counts.tolist()):
                merged[token] = merged.get(token, 0) + n
        order = sorted(merged)
        return NextTokens(
            length,
            count,
            np.array(order, dtype=np.int64),
            np.array([merged[t] for t in order], dtype=np.int64),
        )

    def infgram_prob(self, prompt: Sequence[int], continuation: int) -> tuple[float, int]:
        result = self.next_tokens(prompt)
        if continuation < 0 or continuation >= self.vocab_size:
            raise QueryError(
                f"token id {continuation} is outside the vocabulary (0 … {self.vocab_size - 1})"
            )
        total = result.total
        hits = result.counts[result.tokens == continuation]
        return (int(hits[0]) / total if total and hits.size else 0.0), result.suffix_length

    def maximal_spans(self, ids: Sequence[int]) -> list[tuple[int, int]]:
        query = self.as_ids(ids)
        longest = np.zeros(len(query), dtype=np.int64)
        for part in self.parts:
            np.maximum(longest, part.longest_match_lengths(query), out=longest)
        return spans_from_lengths(longest)

    def trace(
        self,
        ids: Sequence[int],
        *,
        min_length: int = 1,
        max_count: int | None = None,
        max_spans: int | None = None,
        matches_per_span: int = 10,
    ) -> list[TraceSpan]:
        return select_spans(
            self,
            self.as_ids(ids),
            min_length=min_length,
            max_count=max_count,
            max_spans=max_spans,
            matches_per_span=matches_per_span,
        )
