"""`TokenIndex`: exact queries over the token ids of an indexed corpus, across its shards.

Token-level and tokenizer-free; `kiban.index.search.CorpusSearch` adds text queries, documents and
provenance on top. Every answer is exact: counts are suffix-array range sizes, next-token
distributions enumerate every continuation (no sampling), traces recount every span.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from kiban.corpus.store import Corpus, CorpusError, offsets_file, tokens_file
from kiban.index import _kernels
from kiban.index.build import (
    IndexFormatError,
    first_rows_path,
    open_corpus,
    read_index_manifest,
    suffix_array_path,
)
from kiban.io import files_sha256


class QueryError(ValueError):
    """A query that cannot be answered as given (empty, ids outside the vocabulary, ...)."""


def _short(value, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


@dataclass(frozen=True)
class Shard:
    number: int
    tokens: np.ndarray
    suffix_array: np.ndarray
    offsets: np.ndarray  # document i of the shard is tokens[offsets[i]:offsets[i+1]]
    first_rows: np.ndarray  # token t's suffix-array rows are first_rows[t]:first_rows[t+1]

    def token_block(self, token: int) -> tuple[int, int]:
        if token + 1 >= len(self.first_rows):
            return 0, 0
        return int(self.first_rows[token]), int(self.first_rows[token + 1])

    def find(self, query: np.ndarray) -> tuple[int, int]:
        """Suffix-array rows [lo, hi) of the suffixes that begin with ``query`` (non-empty): the
        first token's block from the table, then binary search inside it."""
        lo, hi = self.token_block(int(query[0]))
        if len(query) == 1 or hi <= lo:
            return lo, hi
        return _kernels.find_range_within(
            self.tokens, self.suffix_array, lo, hi, query, 0, len(query)
        )


@dataclass(frozen=True)
class NextTokens:
    """∞-gram next-token distribution: the longest suffix of the prompt seen in the corpus
    (``suffix_length`` tokens, ``count`` occurrences) and every token that followed it."""

    suffix_length: int
    count: int
    tokens: np.ndarray
    counts: np.ndarray

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    def probabilities(self) -> dict[int, float]:
        total = self.total
        return {int(t): int(c) / total for t, c in zip(self.tokens, self.counts)} if total else {}


@dataclass(frozen=True)
class Match:
    """One occurrence: shard, token position, and the document (index within the shard);
    ``part`` numbers the corpus in a `FederatedIndex` (0 for a single index)."""

    shard: int
    position: int
    document: int
    part: int = 0


@dataclass(frozen=True)
class TraceSpan:
    """A maximal span ``ids[start:end]`` of a traced text that occurs verbatim ``count`` times."""

    start: int
    end: int
    count: int
    matches: tuple[Match, ...]

    @property
    def length(self) -> int:
        return self.end - self.start


class TokenIndex:
    """Exact n-gram search over one corpus's shards (see `kiban.index.build`).

    Opening checks every file it maps against its sha256 (the corpus manifest's for the tokens
    and offsets, the index manifest's for the suffix arrays and block tables; hashed in parallel
    threads, once per process while a file is unchanged), so a damaged file is an
    `IndexFormatError` naming it rather than wrong counts. ``verify=False`` skips the hashing
    (sizes and structure are still checked) for callers that have just verified."""

    def __init__(self, corpus: Corpus | str | os.PathLike, *, verify: bool = True):
        self.corpus = open_corpus(corpus)
        directory = self.corpus.directory
        manifest = read_index_manifest(self.corpus)
        if manifest is None:
            raise IndexFormatError(f"{directory} has no index: run `kiban index build {directory}`")
        if manifest["tokenizer_sha256"] != self.corpus.tokenizer_sha256:
            raise IndexFormatError(
                f"the index in {self.corpus.index_directory} was built for tokenizer "
                f"{str(manifest['tokenizer_sha256'])[:12]}…, the corpus now has "
                f"{str(self.corpus.tokenizer_sha256)[:12]}…: run `kiban index build "
                f"{directory}` to rebuild it"
            )
        if len(manifest["shards"]) != self.corpus.shard_count:
            raise IndexFormatError(
                f"the index covers {len(manifest['shards'])} shards, the corpus "
                f"has {self.corpus.shard_count}: run `kiban index build "
                f"{directory}` to bring it up to date"
            )
        self.manifest = manifest
        self.eos_id = self.corpus.eos_id
        self.vocab_size = self.corpus.vocab_size
        if verify:
            self._verify(manifest["shards"])
        try:
            self.shards = [self._open_shard(entry) for entry in manifest["shards"]]
        except CorpusError as error:
            raise IndexFormatError(str(error)) from None

    def _verify(self, entries: list[dict]) -> None:
        """Every mapped file against its sha256: the tokens against the corpus manifest's (or,
        for a version-1 corpus, the index's), the index files against the index manifest's."""
        corpus = self.corpus
        expected: list[tuple[Path, str | None, str]] = []
        for entry in entries:
            number = entry["shard"]
            for relative in (tokens_file(number), offsets_file(number)):
                recorded = corpus.checksums.get(relative)
                if recorded is not None:
                    expected.append(
                        (corpus.directory / relative, recorded["sha256"], "the corpus manifest")
                    )
            expected.append(
                (corpus.tokens_path(number), entry["tokens_sha256"], "the index manifest")
            )
            expected.append(
                (
                    suffix_array_path(corpus, number),
                    entry["suffix_array_sha256"],
                    "the index manifest",
                )
            )
            if "first_rows_sha256" in entry:
                expected.append(
                    (
                        first_rows_path(corpus, number),
                        entry["first_rows_sha256"],
                        "the index manifest",
                    )
                )
        for path, _, _ in expected:
            if not path.is_file():
                raise IndexFormatError(
                    f"{path} is missing: run `kiban index build "
                    f"{corpus.directory}` to rebuild it (or rebuild the "
                    "corpus)"
                )
        for entry in entries:  # sizes first: a cheaper check with a plainer message
            self._check_tokens_size(entry)
        digests = files_sha256(list(dict.fromkeys(p for p, _, _ in expected)))
        actual = dict(zip(dict.fromkeys(p for p, _, _ in expected), digests))
        for path, digest, source in expected:
            if actual[path] != digest:
                corpus_file = path.parent.name == "shards"
                remedy = (
                    "the corpus is damaged: rebuild it"
                    if corpus_file
                    else f"run `kiban index build {corpus.directory}` to rebuild it"
                )
                raise IndexFormatError(
                    f"{path}: sha256 {actual[path][:16]}… differs from the "
                    f"{digest[:16]}… in {source}: the file is damaged or "
                    f"changed; {remedy}"
                )

    def _check_tokens_size(self, entry: dict) -> None:
        tokens_path = self.corpus.tokens_path(entry["shard"])
        if not tokens_path.is_file():
            raise IndexFormatError(
                f"{tokens_path} is missing: the corpus is incomplete; rebuild it"
            )
        size = tokens_path.stat().st_size
        if size != entry["tokens"] * self.corpus.token_dtype.itemsize:
            raise IndexFormatError(
                f"{tokens_path} has {size} bytes, the index expects "
                f"{entry['tokens']} tokens: the corpus changed; run `kiban "
                f"index build {self.corpus.directory}` to rebuild the index"
            )

    def _open_shard(self, entry: dict) -> Shard:
        number = entry["shard"]
        corpus = self.corpus
        sa_path = suffix_array_path(corpus, number)
        if not sa_path.is_file():
            raise IndexFormatError(
                f"{sa_path} is missing: run `kiban index build {corpus.directory}` to rebuild it"
            )
        self._check_tokens_size(entry)
        # digests were checked above (or skipped on purpose): sizes and structure only here
        tokens = corpus.tokens(number, verify=False)
        offsets = corpus.offsets(number, verify=False)
        try:
            suffix_array = np.load(sa_path, mmap_mode="r")
        except (ValueError, OSError, EOFError) as error:
            raise IndexFormatError(
                f"{sa_path}: unreadable suffix array ({error}); run `kiban "
                f"index build {corpus.directory}` to rebuild it"
            ) from None
        if suffix_array.shape != (entry["tokens"],) or suffix_array.dtype.kind != "i":
            raise IndexFormatError(
                f"{sa_path}: {suffix_array.shape} {suffix_array.dtype} entries "
                f"for {entry['tokens']} tokens: corrupt; run `kiban index "
                f"build {corpus.directory}` to rebuild it"
            )
        # plain read-only ndarray views of the maps: numba dispatches on them without memmap
        # overhead, and every shard's arrays have one numba type (an empty shard's too)
        tokens, suffix_array = tokens.view(np.ndarray), suffix_array.view(np.ndarray)
        tokens.flags.writeable = False
        suffix_array.flags.writeable = False
        rows_path = first_rows_path(corpus, number)
        try:
            first_rows = np.load(rows_path)
        except (ValueError, OSError, EOFError) as error:
            raise IndexFormatError(
                f"{rows_path}: missing or unreadable ({error}); run "
                f"`kiban index build {corpus.directory}`"
            ) from None
        if (
            first_rows.ndim != 1
            or len(first_rows) < 1
            or int(first_rows[0]) != 0
            or int(first_rows[-1]) != entry["tokens"]
        ):
            raise IndexFormatError(
                f"{rows_path}: does not fit the {entry['tokens']} "
                f"tokens of the shard; run `kiban index build "
                f"{corpus.directory}` to rebuild it"
            )
        return Shard(number, tokens, suffix_array, np.array(offsets), first_rows)

    # --- basics -------------------------------------------------------------------------------
    @cached_property
    def total_tokens(self) -> int:
        """Tokens indexed, one end-of-text token per document included (infini-gram's count of
        the empty query)."""
        return sum(len(s.tokens) for s in self.shards)

    @cached_property
    def documents(self) -> int:
        return sum(len(s.offsets) - 1 for s in self.shards)

    def as_ids(self, ids: Sequence[int] | np.ndarray, *, allow_empty: bool = False) -> np.ndarray:
        """Validated int64 token ids: an error names any id outside the vocabulary and the
        document separator (matches never cross documents)."""
        try:
            array = np.asarray(ids)
        except (TypeError, ValueError, OverflowError):
            raise QueryError(
                f"a query is a flat list of integer token ids, got {_short(ids)}"
            ) from None
        if array.ndim != 1 or isinstance(ids, (str, bytes)):
            raise QueryError(f"a query is a flat list of integer token ids, got {_short(ids)}")
        if array.size == 0:
            if allow_empty:
                return np.zeros(0, dtype=np.int64)
            raise QueryError("empty query: give at least one token")
        if array.dtype.kind not in "iu":
            # 1.5, "5" or True are not token ids (a cast would silently turn them into some)
            if array.dtype.kind == "O" and all(
                isinstance(x, (int, np.integer)) and not isinstance(x, bool) for x in array
            ):
                raise QueryError(
                    f"token ids {array[:5].tolist()} are outside the vocabulary "
                    f"(0 … {self.vocab_size - 1})"
                )  # Python ints past 64 bits
            raise QueryError(f"token ids must be integers, got {_short(ids)}")
        if array.dtype == np.uint64 and int(array.max()) > np.iinfo(np.int64).max:
            raise QueryError(
                f"token ids {array[array > self.vocab_size][:5].tolist()} are "
                f"outside the vocabulary (0 … {self.vocab_size - 1})"
            )
        array = array.astype(np.int64, copy=False)
        bad = _kernels.first_invalid(array, self.vocab_size, self.eos_id)
        if bad >= 0:
            if array[bad] == self.eos_id:
                raise QueryError(
                    f"the query contains the document separator (id {self.eos_id}) "
                    f"at position {bad}; matches never cross documents"
                )
            outside = array[(array < 0) | (array >= self.vocab_size)]
            raise QueryError(
                f"token ids {outside[:5].tolist()} are outside the vocabulary "
                f"(0 … {self.vocab_size - 1})"
            )
        return array

    def as_continuation(self, token: int) -> int:
        """A validated next-token id: any id of the vocabulary, the end-of-text id included (the
        ∞-gram distribution gives it a probability: that of a document ending there)."""
        if isinstance(token, (bool, np.bool_)) or not isinstance(token, (int, np.integer)):
            raise QueryError(f"a continuation is one integer token id, got {_short(token)}")
        if not 0 <= token < self.vocab_size:
            raise QueryError(
                f"token id {token} is outside the vocabulary (0 … {self.vocab_size - 1})"
            )
        return int(token)

    def _ranges(self, ids: np.ndarray) -> list[tuple[Shard, int, int]]:
        return [(s, *s.find(ids)) for s in self.shards]

    # --- count --------------------------------------------------------------------------------
    def count(self, ids: Sequence[int]) -> int:
        """Exact number of occurrences of the token sequence."""
        return self._count(self.as_ids(ids))

    def _count(self, query: np.ndarray) -> int:
        """Count of validated ids (which may end with the end-of-text id: see `ngram_prob`)."""
        total = 0
        for shard in self.shards:
            lo, hi = shard.find(query)
            total += hi - lo
        return total

    def count_batch(self, queries: Sequence[Sequence[int]]) -> list[int]:
        """Counts of many queries in one compiled call per shard."""
        arrays = [self.as_ids(q) for q in queries]
        if not arrays:
            return []
        lengths = np.array([len(a) for a in arrays], dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        packed = np.concatenate(arrays)
        total = np.zeros(len(arrays), dtype=np.int64)
        for shard in self.shards:
            total += _kernels.count_batch(shard.tokens, shard.suffix_array, packed, starts, lengths)
        return total.tolist()

    def count_windows(self, ids: Sequence[int], n: int) -> np.ndarray:
        """Counts of every length-``n`` window of ``ids`` (of ``ids`` itself if shorter)."""
        query = self.as_ids(ids)
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise QueryError(f"the window length n must be an integer >= 1, got {n!r}")
        n = min(int(n), len(query))
        starts = np.arange(len(query) - n + 1, dtype=np.int64)
        lengths = np.full(len(starts), n, dtype=np.int64)
        total = np.zeros(len(starts), dtype=np.int64)
        for shard in self.shards:
            total += _kernels.count_batch(shard.tokens, shard.suffix_array, query, starts, lengths)
        return total

    # --- occurrences --------------------------------------------------------------------------
    def matches(self, ids: Sequence[int], *, limit: int | None = None) -> list[Match]:
        """Occurrences in suffix-array order (shard by shard), at most ``limit``."""
        query = self.as_ids(ids)
        found: list[Match] = []
        for shard, lo, hi in self._ranges(query):
            if limit is not None:
                hi = min(hi, lo + limit - len(found))
            if hi > lo:
                found.extend(self._matches_in(shard, lo, hi))
            if limit is not None and len(found) >= limit:
                break
        return found

    def _matches_in(self, shard: Shard, lo: int, hi: int) -> list[Match]:
        positions = np.asarray(shard.suffix_array[lo:hi], dtype=np.int64)
        documents = np.searchsorted(shard.offsets, positions, side="right") - 1
        return [Match(shard.number, int(p), int(d)) for p, d in zip(positions, documents)]

    # --- n-gram and ∞-gram --------------------------------------------------------------------
    def ngram_prob(self, prompt: Sequence[int], continuation: int) -> float:
        """count(prompt + continuation) / count(prompt); -1.0 when the prompt is unseen."""
        prompt_ids = self.as_ids(prompt, allow_empty=True)
        cont = np.array([self.as_continuation(continuation)], dtype=np.int64)
        denominator = self._count(prompt_ids) if len(prompt_ids) else self.total_tokens
        if denominator == 0:
            return -1.0
        return self._count(np.concatenate([prompt_ids, cont])) / denominator

    def _longest_suffix(self, prompt: np.ndarray) -> tuple[int, list[tuple[Shard, int, int]]]:
        """The longest suffix of ``prompt`` that occurs (binary search on its length: if a
        suffix occurs, every shorter one does), with its ranges."""
        full = [(s, 0, len(s.suffix_array)) for s in self.shards]
        best_length, best_ranges = 0, full
        lo, hi = 1, len(prompt)
        while lo <= hi:
            length = (lo + hi) // 2
            ranges = self._ranges(prompt[len(prompt) - length :])
            if sum(b - a for _, a, b in ranges) > 0:
                best_length, best_ranges = length, ranges
                lo = length + 1
            else:
                hi = length - 1
        return best_length, best_ranges

    def next_tokens(self, prompt: Sequence[int]) -> NextTokens:
        """∞-gram: every token that followed the longest seen suffix of ``prompt``, counted."""
        query = self.as_ids(prompt, allow_empty=True)
        length, ranges = self._longest_suffix(query)
        if length == 0:  # nothing of the prompt was seen: unigram counts, off the block tables
            counts = np.zeros(
                max(len(s.first_rows) for s in self.shards) - 1 if self.shards else 0,
                dtype=np.int64,
            )
            for shard in self.shards:
                block = np.diff(shard.first_rows)
                counts[: len(block)] += block
            tokens = np.flatnonzero(counts)
            return NextTokens(0, self.total_tokens, tokens.astype(np.int64), counts[tokens])
        merged: dict[int, int] = {}
        count = 0
        for shard, lo, hi in ranges:
            count += hi - lo
            if hi > lo:
                tokens, counts = _kernels.next_tokens(
                    shard.tokens, shard.suffix_array, lo, hi, length
                )
                for t, c in zip(tokens.tolist(), counts.tolist()):
                    merged[t] = merged.get(t, 0) + c
        order = sorted(merged)
        return NextTokens(
            length,
            count,
            np.array(order, dtype=np.int64),
            np.array([merged[t] for t in order], dtype=np.int64),
        )

    def infgram_prob(self, prompt: Sequence[int], continuation: int) -> tuple[float, int]:
        """P(continuation | longest seen suffix of prompt), and that suffix's length."""
        query = self.as_ids(prompt, allow_empty=True)
        cont = self.as_continuation(continuation)
        length, ranges = self._longest_suffix(query)
        denominator = numerator = 0
        for shard, lo, hi in ranges:
            denominator += hi - lo
            if hi > lo:
                a, b = _kernels.narrow(shard.tokens, shard.suffix_array, lo, hi, length, cont)
                numerator += b - a
        return (numerator / denominator if denominator else 0.0), length

    def sequence_prob(self, ids: Sequence[int]) -> tuple[list[float], float]:
        """∞-gram probability of each token given all before it, and the sum of their natural
        logs (-inf when some token never followed its longest seen context)."""
        query = self.as_ids(ids)
        probabilities = [self.infgram_prob(query[:i], int(query[i]))[0] for i in range(len(query))]
        log_prob = sum(math.log(p) if p > 0 else -math.inf for p in probabilities)
        return probabilities, log_prob

    # --- trace --------------------------------------------------------------------------------
    def longest_match_lengths(self, ids: Sequence[int]) -> np.ndarray:
        """For every start i, the length of the longest prefix of ids[i:] found in the index."""
        query = self.as_ids(ids)
        longest = np.zeros(len(query), dtype=np.int64)
        for shard in self.shards:
            if len(shard.suffix_array):
                lengths, _, _ = _kernels.longest_matches(shard.tokens, shard.suffix_array, query)
                np.maximum(longest, lengths, out=longest)
        return longest

    def maximal_spans(self, ids: Sequence[int]) -> list[tuple[int, int]]:
        """Spans ``(start, end)`` of ``ids`` that occur verbatim and are not inside a longer such
        span (a span starting earlier that reaches as far)."""
        return spans_from_lengths(self.longest_match_lengths(ids))

    def trace(
        self,
        ids: Sequence[int],
        *,
        min_length: int = 1,
        max_count: int | None = None,
        max_spans: int | None = None,
        matches_per_span: int = 10,
    ) -> list[TraceSpan]:
        """OLMoTrace-style attribution: the maximal verbatim spans of ``ids``, each with its
        exact count and its first ``matches_per_span`` occurrences.

        Spans shorter than ``min_length`` or occurring more than ``max_count`` times are left
        out; of the rest the ``max_spans`` longest are kept (ties: earlier first)."""
        return select_spans(
            self,
            self.as_ids(ids),
            min_length=min_length,
            max_count=max_count,
            max_spans=max_spans,
            matches_per_span=matches_per_span,
        )


def spans_from_lengths(longest: np.ndarray) -> list[tuple[int, int]]:
    """Maximal spans from longest-match lengths: those not inside an earlier-starting span."""
    ends = np.arange(len(longest)) + longest
    reach = np.maximum.accumulate(np.concatenate([[0], ends[:-1]]))
    keep = (longest > 0) & (ends > reach)
    return [(int(i), int(ends[i])) for i in np.flatnonzero(keep)]


def select_spans(
    index,
    query: np.ndarray,
    *,
    min_length: int,
    max_count: int | None,
    max_spans: int | None,
    matches_per_span: int,
) -> list[TraceSpan]:
    """The trace of ``query`` over ``index`` (a `TokenIndex` or a `FederatedIndex`)."""
    spans = []
    for start, end in index.maximal_spans(query):
        if end - start < min_length:
            continue
        count = index.count(query[start:end])
        if max_count is not None and count > max_count:
            continue
        spans.append((start, end, count))
    spans.sort(key=lambda s: (-(s[1] - s[0]), s[0]))
    if max_spans is not None:
        spans = spans[:max_spans]
    return [
        TraceSpan(start, end, count, tuple(index.matches(query[start:end], limit=matches_per_span)))
        for start, end, count in spans
    ]
