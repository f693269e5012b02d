"""Helpers for the index tests: bare token corpora written directly, and a brute-force oracle
that answers every `TokenIndex` query by scanning the documents in plain Python."""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from kiban.data import moses_smiles as read_moses
from kiban.index import TokenIndex, build_index

Docs = Sequence[Sequence[Sequence[int]]]  # shards -> documents -> token ids (no end-of-text)


def write_bare_corpus(
    directory: Path,
    shards: Docs,
    *,
    dtype: str = "uint16",
    eos_id: int = 0,
    vocab_size: int = 1000,
    tokenizer_sha256: str = "test-tokenizer",
) -> Path:
    """The part of a kiban corpus the index reads: ``manifest.json`` and ``shards/`` with each
    document followed by ``eos_id`` and int64 offsets (document starts plus the total)."""
    directory = Path(directory)
    (directory / "shards").mkdir(parents=True, exist_ok=True)
    for number, documents in enumerate(shards):
        tokens: list[int] = []
        offsets = [0]
        for document in documents:
            tokens.extend(document)
            tokens.append(eos_id)
            offsets.append(len(tokens))
        np.asarray(tokens, dtype=dtype).tofile(directory / "shards" / f"tokens-{number:06d}.bin")
        np.save(
            directory / "shards" / f"offsets-{number:06d}.npy", np.asarray(offsets, dtype=np.int64)
        )
    manifest = {
        "format": "kiban.corpus",
        "version": 1,
        "shards": len(shards),
        "token_dtype": dtype,
        "eos_id": eos_id,
        "vocab_size": vocab_size,
        "tokenizer_sha256": tokenizer_sha256,
    }
    (directory / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return directory


def scratch_root() -> str | None:
    """Memory-backed temporary files where there are some (builds fsync what they write)."""
    shm = "/dev/shm"
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else None


@contextmanager
def indexed(shards: Docs, **options) -> Iterator[TokenIndex]:
    """A bare corpus of ``shards``, indexed, opened; removed afterwards (usable inside
    hypothesis tests, which cannot take function-scoped fixtures)."""
    directory = Path(tempfile.mkdtemp(prefix="kiban-index-test-", dir=scratch_root()))
    try:
        write_bare_corpus(directory, shards, **options)
        build_index(directory)
        yield TokenIndex(directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


class Brute:
    """Every answer by definition, by scanning the documents (no suffix arrays)."""

    def __init__(self, shards: Docs, eos_id: int):
        self.eos = eos_id
        self.shards = [[list(map(int, d)) for d in docs] for docs in shards]
        # each shard's token stream, as the index stores it, and its documents' starts
        self.streams = [[t for d in docs for t in (*d, eos_id)] for docs in self.shards]
        self.arrays = [np.asarray(s, dtype=np.int64) for s in self.streams]
        self.starts = [np.cumsum([0] + [len(d) + 1 for d in docs])[:-1] for docs in self.shards]
        self.total = sum(len(s) for s in self.streams)

    @classmethod
    def of_corpus(cls, directory: Path, eos_id: int, shards: int) -> Brute:
        """The documents of a built corpus, read from its token shards and offsets."""
        documents = []
        for shard in range(shards):
            tokens = np.fromfile(
                Path(directory) / "shards" / f"tokens-{shard:06d}.bin",
                dtype=json.loads((Path(directory) / "manifest.json").read_text(encoding="utf-8"))[
                    "token_dtype"
                ],
            )
            offsets = np.load(Path(directory) / "shards" / f"offsets-{shard:06d}.npy")
            assert all(tokens[e - 1] == eos_id for e in offsets[1:])
            documents.append([tokens[a : b - 1].tolist() for a, b in zip(offsets, offsets[1:])])
        return cls(documents, eos_id)

    def occurrences(self, query: Sequence[int]) -> list[tuple[int, int, int]]:
        """(shard, position in the shard, document) of every occurrence inside a document: a
        window of a document's tokens equal to the query (so never one with the end-of-text id,
        which ends documents and is in none)."""
        query = np.asarray(list(query), dtype=np.int64)
        n = len(query)
        if n == 0 or self.eos in query.tolist():
            return []
        found = []
        for s, (stream, starts) in enumerate(zip(self.arrays, self.starts)):
            if len(stream) < n:
                continue
            if len(stream) < 500:  # small: plain Python is faster than numpy
                tokens, q = self.streams[s], query.tolist()
                positions = [i for i in range(len(tokens) - n + 1) if tokens[i : i + n] == q]
            else:
                windows = np.lib.stride_tricks.sliding_window_view(stream, n)
                positions = np.flatnonzero((windows == query).all(axis=1)).tolist()
            for position in positions:
                document = int(np.searchsorted(starts, position, side="right") - 1)
                # inside that document: ends before its end-of-text token
                assert position + n <= starts[document] + len(self.shards[s][document])
                found.append((s, position, document))
        return found

    def count(self, query: Sequence[int]) -> int:
        return len(self.occurrences(query)) if len(query) else self.total

    def suffix_order(self, occurrences: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
        """Occurrences in the index's order: shard by shard, then by the suffix starting there
        (a suffix that is a prefix of another sorts first)."""
        return sorted(occurrences, key=lambda o: (o[0], self.streams[o[0]][o[1] :]))

    def continuations(self, prompt: Sequence[int]) -> Counter:
        """The token after each occurrence of ``prompt`` (the end-of-text id after a document's
        last token); for the empty prompt, every token of the corpus."""
        if not len(prompt):
            return Counter(t for stream in self.streams for t in stream)
        n = len(prompt)
        return Counter(self.streams[s][p + n] for s, p, _ in self.occurrences(prompt))

    def ngram_prob(self, prompt: Sequence[int], continuation: int) -> float:
        denominator = self.count(prompt)
        if denominator == 0:
            return -1.0
        return self.continuations(prompt)[continuation] / denominator

    def suffix_length(self, prompt: Sequence[int]) -> int:
        """The longest suffix of ``prompt`` that occurs (0: the empty one)."""
        prompt = list(prompt)
        return max(
            [
                0,
                *(
                    k
                    for k in range(1, len(prompt) + 1)
                    if self.count(prompt[len(prompt) - k :]) > 0
                ),
            ]
        )

    def next_tokens(self, prompt: Sequence[int]) -> tuple[int, int, dict[int, int]]:
        prompt = list(prompt)
        k = self.suffix_length(prompt)
        suffix = prompt[len(prompt) - k :]
        return k, self.count(suffix), dict(sorted(self.continuations(suffix).items()))

    def infgram_prob(self, prompt: Sequence[int], continuation: int) -> tuple[float, int]:
        k, count, following = self.next_tokens(prompt)
        return (following.get(continuation, 0) / count if count else 0.0), k

    def sequence_prob(self, ids: Sequence[int]) -> tuple[list[float], float]:
        ids = list(ids)
        probabilities = [self.infgram_prob(ids[:i], ids[i])[0] for i in range(len(ids))]
        return probabilities, sum(math.log(p) if p > 0 else -math.inf for p in probabilities)

    def maximal_spans(self, ids: Sequence[int]) -> list[tuple[int, int]]:
        """Spans that occur and lie inside no other span that occurs."""
        ids = list(ids)
        occurring = [
            (i, j)
            for i in range(len(ids))
            for j in range(i + 1, len(ids) + 1)
            if self.count(ids[i:j]) > 0
        ]
        return sorted(
            (i, j)
            for i, j in occurring
            if not any(a <= i and j <= b and (a, b) != (i, j) for a, b in occurring)
        )

    def longest_match(self, ids: Sequence[int]) -> int:
        spans = self.maximal_spans(ids)
        return max((j - i for i, j in spans), default=0)


WORDS = (
    "the a molecule crystal solvent binds reacts with strongly weakly under heat pressure "
    "and slowly quickly forms salt water acid base ring chain bond"
).split()
SMILES = ("CCO", "c1ccccc1", "CC(=O)O", "CCN", "CCCC", "NCC(=O)O", "CC(C)O", "OC1CCCCC1")
PHRASE = "zeolite framework"  # in papers 1, 2, 5, 6, 9, 10, ... (twice in 1, 2, 9, 10, ...)
SOURCES = ("arxiv", "chemrxiv")
LICENSES = ("cc-by-4.0", "cc0-1.0")


def small_corpus_records(count: int = 40) -> list[dict]:
    rng = random.Random(7)
    records = []
    for i in range(count):
        words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 10)))
        text = f"Paper {i}: {words}"
        if i % 4 in (1, 2):
            text += f" in the {PHRASE}"
            if i % 8 in (1, 2):
                text += f" and again the {PHRASE}"
        if i % 3 == 0:
            text += f" with <mol>{rng.choice(SMILES)}</mol>"
        text += f" measured <num>{rng.randint(0, 999) / 10}</num> number {i}."
        records.append(
            {
                "id": f"paper-{i}",
                "text": text,
                "source": SOURCES[i % 2],
                "license": LICENSES[(i // 2) % 2],
            }
        )
    return records


def build_small_corpus(directory: Path) -> Path:
    """Papers (JSONL) and molecules with solubilities (CSV), in shards of 16 documents, indexed."""
    from kiban.corpus import BuildConfig, SourceSpec, build_corpus

    directory = Path(directory)
    papers = directory / "papers.jsonl"
    papers.write_text(
        "".join(json.dumps(r) + "\n" for r in small_corpus_records()), encoding="utf-8"
    )
    molecules = directory / "solubility.csv"
    rows = [
        f"{s},{v}"
        for s, v in zip(
            (
                "OCC",
                "c1ccccc1O",
                "CC(=O)Nc1ccccc1",
                "CCOC(=O)C",
                "CCCCCCO",
                "NC(=O)N",
                "CC#N",
                "ClCCl",
            ),
            (1.1, -0.04, -1.33, -0.04, -1.24, 0.96, 0.26, -0.63),
        )
    ]
    molecules.write_text("smiles,logS\n" + "\n".join(rows) + "\n", encoding="utf-8")
    out = directory / "corpus"
    build_corpus(
        BuildConfig(
            sources=(
                SourceSpec(path=str(papers)),
                SourceSpec(path=str(molecules), license="cc0-1.0"),
            ),
            chunk_size=16,
            vocab_size=400,
        ),
        out,
    )
    build_index(out)
    return out


def moses_smiles(limit: int) -> list[str]:
    """The first ``limit`` SMILES of MOSES' test set, or [] when molsets is not installed."""
    try:
        return read_moses("test", limit)
    except FileNotFoundError:
        return []
