"""Chemistry-aware search over a corpus's molecules: substructure (SMARTS, RDKit semantics) and
Tanimoto similarity (Morgan fingerprints), from fingerprints stored with the corpus.

The molecules are the distinct ``<mol>`` spans of the corpus's documents (the corpus stores them
as canonical SMILES). `build_chem_index` writes, into ``CORPUS/chem/``:

* ``smiles.bin`` + ``smiles_offsets.npy``: the distinct SMILES, in order of first appearance;
* ``pattern.npy``: RDKit pattern fingerprints (the substructure screen), packed into uint64;
* ``morgan.npy`` and ``morgan_count.npy``: Morgan bits (radius 2, 2048) and their popcounts;
* ``postings.npy`` + ``postings_offsets.npy``: the document rows each molecule occurs in;
* ``chem.json``: counts, fingerprint settings and the sha256 of the documents table they were
  computed from. A corpus rebuilt since is stale: `ChemIndex.open` rebuilds (``build=True``) or
  refuses.

A substructure query screens every molecule with one vectorised bit test (a molecule can only
contain the query if its pattern fingerprint has every bit of the query's), then checks the
survivors with RDKit's ``GetSubstructMatches``. Similarity is one vectorised popcount over the
packed Morgan bits: Tanimoto c / (a + b - c), computed exactly as ``BulkTanimotoSimilarity``.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kiban import formats
from kiban.errors import InputError
from kiban.io import cached_file_sha256

CHEM_FORMAT = formats.register("kiban-chem-index", 1)
CHEM_DIRECTORY = "chem"
PATTERN_BITS = 2048
MORGAN_RADIUS = 2
MORGAN_BITS = 2048
_WORDS = PATTERN_BITS // 64
_MOL_SPAN = re.compile(r"<mol>(.*?)</mol>", re.S)
#: query features whose answer needs the smallest set of smallest rings (ring sizes, ring
#: counts, recursive SMARTS that may hold either); other queries are answered on molecules read
#: the fast way (trusted canonical SMILES, ring membership only), as SubstructLibrary does
_NEEDS_SSSR = ("RingSize", "InNRings", "RingBondCount", "Recursive", "RingCount")


class ChemSearchError(InputError):
    """A query that is not chemistry (a SMARTS or SMILES RDKit cannot read) or a chemistry
    index that cannot be used."""


# --- fingerprints -----------------------------------------------------------------------------
def _pack(bits: np.ndarray) -> np.ndarray:
    """0/1 uint8 rows → little-endian uint64 words (the same packing for queries and corpus)."""
    return np.packbits(bits, axis=-1, bitorder="little").view(np.uint64)


def _pattern_bits(mol) -> np.ndarray:
    from rdkit import Chem, DataStructs

    bits = np.zeros(PATTERN_BITS, dtype=np.uint8)
    DataStructs.ConvertToNumpyArray(Chem.PatternFingerprint(mol, PATTERN_BITS), bits)
    return bits


def _morgan_bits(mol) -> np.ndarray:
    from kiban.chem import _morgan_generator

    return _morgan_generator(MORGAN_RADIUS, MORGAN_BITS).GetFingerprintAsNumPy(mol).astype(np.uint8)


def _fingerprint_chunk(smiles: Sequence[str]) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Pattern and Morgan bits of a chunk of SMILES; rows of unreadable ones stay zero (their
    pattern fingerprint is then all ones: never screened out, always rejected by RDKit)."""
    from kiban.chem import mol_or_none

    pattern = np.zeros((len(smiles), PATTERN_BITS), dtype=np.uint8)
    morgan = np.zeros((len(smiles), MORGAN_BITS), dtype=np.uint8)
    bad = []
    for row, text in enumerate(smiles):
        mol = mol_or_none(text)
        if mol is None:
            bad.append(row)
            pattern[row] = 1
            continue
        pattern[row] = _pattern_bits(mol)
        morgan[row] = _morgan_bits(mol)
    return _pack(pattern), _pack(morgan), bad


# --- the index on disk -------------------------------------------------------------------------
def _molecules(corpus) -> tuple[list[str], list[list[int]]]:
    """Distinct ``<mol>`` spans in order of first appearance, and the document rows of each."""
    table = corpus.documents_table(["text", "n_mol"])
    index: dict[str, int] = {}
    smiles: list[str] = []
    postings: list[list[int]] = []
    row = 0
    for batch in table.to_batches(max_chunksize=65536):
        texts = batch.column("text").to_pylist()
        counts = batch.column("n_mol").to_pylist()
        for text, count in zip(texts, counts):
            if count:
                for span in dict.fromkeys(_MOL_SPAN.findall(text)):
                    position = index.get(span)
                    if position is None:
                        position = index[span] = len(smiles)
                        smiles.append(span)
                        postings.append([])
                    postings[position].append(row)
            row += 1
    return smiles, postings


def build_chem_index(corpus, *, workers: int = 1, chunk: int = 20000) -> dict[str, Any]:
    """Compute and write ``CORPUS/chem/`` (atomically: a folder renamed into place); returns its
    metadata. ``workers`` processes compute the fingerprints."""
    from kiban.corpus.store import as_corpus

    corpus = as_corpus(corpus)
    started = time.perf_counter()
    documents_sha256 = cached_file_sha256(corpus.documents_path)
    smiles, postings = _molecules(corpus)
    chunks = [smiles[i : i + chunk] for i in range(0, len(smiles), chunk)]
    if workers > 1 and len(chunks) > 1:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            parts = pool.map(_fingerprint_chunk, chunks)
    else:
        parts = [_fingerprint_chunk(part) for part in chunks]
    empty = np.zeros((0, _WORDS), dtype=np.uint64)
    pattern = np.concatenate([p for p, _, _ in parts]) if parts else empty
    morgan = np.concatenate([m for _, m, _ in parts]) if parts else empty
    unreadable = [i * chunk + r for i, (_, _, bad) in enumerate(parts) for r in bad]
    encoded = [s.encode() for s in smiles]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum([len(e) for e in encoded], out=offsets[1:])
    post_offsets = np.zeros(len(postings) + 1, dtype=np.int64)
    np.cumsum([len(p) for p in postings], out=post_offsets[1:])
    flat = np.fromiter((r for rows in postings for r in rows), dtype=np.int64)

    final = corpus.directory / CHEM_DIRECTORY
    staging = corpus.directory / f".{CHEM_DIRECTORY}.tmp-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    (staging / "smiles.bin").write_bytes(b"".join(encoded))
    for name, array in (
        ("smiles_offsets", offsets),
        ("pattern", pattern),
        ("morgan", morgan),
        ("morgan_count", np.bitwise_count(morgan).sum(axis=1, dtype=np.int32)),
        ("postings", flat),
        ("postings_offsets", post_offsets),
    ):
        np.save(staging / f"{name}.npy", array)
    meta = {
        "documents_sha256": documents_sha256,
        "molecules": len(smiles),
        "unreadable": len(unreadable),
        "unreadable_examples": [smiles[i] for i in unreadable[:5]],
        "pattern_bits": PATTERN_BITS,
        "morgan": {"radius": MORGAN_RADIUS, "bits": MORGAN_BITS},
        "seconds": round(time.perf_counter() - started, 3),
    }
    formats.write_json(staging / "chem.json", CHEM_FORMAT, meta)
    if final.exists():
        shutil.rmtree(final)
    os.replace(staging, final)
    return meta


@dataclass(frozen=True, kw_only=True)
class SubstructureResult:
    query: str
    molecules: int
    matches: int
    documents: int
    screened: int
    total_molecules: int
    seconds: float
    hits: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "molecules": self.molecules,
            "matches": self.matches,
            "documents": self.documents,
            "screened": self.screened,
            "total_molecules": self.total_molecules,
            "seconds": self.seconds,
            "hits": self.hits,
        }


@dataclass(frozen=True, kw_only=True)
class SimilarityResult:
    query: str
    threshold: float
    top: int
    above_threshold: int
    total_molecules: int
    seconds: float
    hits: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "threshold": self.threshold,
            "top": self.top,
            "above_threshold": self.above_threshold,
            "total_molecules": self.total_molecules,
            "seconds": self.seconds,
            "hits": self.hits,
        }


def parse_smarts(smarts: str):
    """The RDKit query molecule of ``smarts``; `ChemSearchError` with RDKit's reason and the
    position where parsing failed."""
    from rdkit import Chem, rdBase

    from kiban.chem import rdkit_reason

    if not smarts.strip():
        raise ChemSearchError("empty SMARTS: give a pattern such as c1ccncc1")
    with rdBase.CaptureErrorLog() as capture:
        query = Chem.MolFromSmarts(smarts)
    if query is None:
        reason = rdkit_reason(capture.messages, "RDKit could not parse it")
        reason = reason.replace("SMARTS Parse Error: ", "")
        raise ChemSearchError(f"invalid SMARTS {smarts!r}: {reason}")
    return query


def _needs_sssr(query) -> bool:
    descriptions = [atom.DescribeQuery() for atom in query.GetAtoms()]
    descriptions += [bond.DescribeQuery() for bond in query.GetBonds()]
    return any(word in text for text in descriptions for word in _NEEDS_SSSR)


def _match_chunk(args: tuple[str, bool, list[str]]) -> list[int]:
    """Unique-match counts of the SMARTS in each SMILES (0: no match)."""
    from rdkit import Chem

    smarts, sssr, smiles = args
    query = Chem.MolFromSmarts(smarts)
    counts = []
    for text in smiles:
        mol = Chem.MolFromSmiles(text, sanitize=sssr)
        if mol is None:
            counts.append(0)
            continue
        if not sssr:
            # canonical SMILES the corpus wrote: read as SubstructLibrary's trusted holder does
            mol.UpdatePropertyCache(strict=False)
            Chem.FastFindRings(mol)
        counts.append(len(mol.GetSubstructMatches(query, uniquify=True, maxMatches=1 << 30)))
    return counts


class ChemIndex:
    """The molecules of a corpus with their fingerprints (``CORPUS/chem/``)."""

    def __init__(self, corpus, directory: Path, meta: dict[str, Any]):
        self.corpus = corpus
        self.directory = directory
        self.meta = meta
        load = lambda name: np.load(directory / f"{name}.npy", mmap_mode="r")  # noqa: E731
        self._smiles = (directory / "smiles.bin").read_bytes()
        self._offsets = load("smiles_offsets")
        self.pattern = load("pattern")
        self.morgan = load("morgan")
        self.morgan_count = load("morgan_count")
        self._postings = load("postings")
        self._post_offsets = load("postings_offsets")

    @classmethod
    def open(cls, corpus, *, build: bool = True, workers: int = 1, notify=None) -> ChemIndex:
        """The chemistry index of ``corpus``: built when missing or stale (``build``; ``notify``
        is called with a line saying so) or a `ChemSearchError`."""
        from kiban.corpus.store import as_corpus

        corpus = as_corpus(corpus)
        directory = corpus.directory / CHEM_DIRECTORY
        meta_path = directory / "chem.json"
        reason = None
        if not meta_path.is_file():
            reason = "has no chemistry index yet"
        else:
            meta = formats.read_json(meta_path, CHEM_FORMAT)
            if meta["documents_sha256"] != cached_file_sha256(corpus.documents_path):
                reason = "changed since its chemistry index was built"
        if reason is not None:
            if not build:
                raise ChemSearchError(
                    f"{corpus.directory} {reason}: run kiban index build {corpus.directory} --chem"
                )
            if notify is not None:
                notify(f"{corpus.directory} {reason}: computing its molecules' fingerprints")
            build_chem_index(corpus, workers=workers)
            meta = formats.read_json(meta_path, CHEM_FORMAT)
        return cls(corpus, directory, meta)

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def smiles(self, position: int) -> str:
        start, end = self._offsets[position], self._offsets[position + 1]
        return self._smiles[start:end].decode()

    def document_rows(self, position: int) -> np.ndarray:
        return self._postings[self._post_offsets[position] : self._post_offsets[position + 1]]

    # --- substructure ---------------------------------------------------------------------
    def screen(self, query) -> np.ndarray:
        """Positions of the molecules whose pattern fingerprint holds every bit of the query's
        (a necessary condition for a match), in corpus order."""
        words = _pack(_pattern_bits(query))
        needed = np.flatnonzero(words)
        if needed.size == 0:
            return np.arange(len(self), dtype=np.int64)
        keep = np.ones(len(self), dtype=bool)
        for word in needed:  # a pass per query word (at most 32), vectorised over molecules
            column = np.asarray(self.pattern[:, word])
            keep &= (column & words[word]) == words[word]
        return np.flatnonzero(keep)

    def substructure(self, smarts: str, *, limit: int = 20, workers: int = 1) -> SubstructureResult:
        started = time.perf_counter()
        query = parse_smarts(smarts)
        candidates = self.screen(query)
        sssr = _needs_sssr(query)
        texts = [self.smiles(int(p)) for p in candidates]
        step = max(1, min(5000, -(-len(texts) // max(1, workers * 4))))
        jobs = [(smarts, sssr, texts[i : i + step]) for i in range(0, len(texts), step)]
        if workers > 1 and len(jobs) > 1:
            with multiprocessing.get_context("spawn").Pool(workers) as pool:
                parts = pool.map(_match_chunk, jobs)
        else:
            parts = [_match_chunk(job) for job in jobs]
        counts = np.fromiter((c for part in parts for c in part), dtype=np.int64)
        hit = candidates[counts > 0] if len(candidates) else candidates
        rows = (
            np.unique(np.concatenate([self.document_rows(int(p)) for p in hit]))
            if len(hit)
            else np.zeros(0, dtype=np.int64)
        )
        shown = [
            {"smiles": self.smiles(int(p)), "matches": int(c)}
            for p, c in zip(hit[:limit], counts[counts > 0][:limit])
        ]
        self._attach_documents(shown, hit[:limit])
        return SubstructureResult(
            query=smarts,
            molecules=int(len(hit)),
            matches=int(counts.sum()),
            documents=int(len(rows)),
            screened=int(len(candidates)),
            total_molecules=len(self),
            seconds=round(time.perf_counter() - started, 4),
            hits=shown,
        )

    # --- similarity -----------------------------------------------------------------------
    def tanimoto(self, smiles: str) -> np.ndarray:
        """Tanimoto similarity of every molecule to ``smiles`` (Morgan radius 2, 2048 bits)."""
        from kiban.chem import SmilesError, parse_smiles

        try:
            mol = parse_smiles(smiles)
        except SmilesError as error:
            raise ChemSearchError(f"query {smiles!r} is not a molecule: {error}") from None
        words = _pack(_morgan_bits(mol))
        common = np.bitwise_count(np.asarray(self.morgan) & words).sum(axis=1, dtype=np.int32)
        union = self.morgan_count + int(np.bitwise_count(words).sum()) - common
        with np.errstate(invalid="ignore", divide="ignore"):
            similarity = np.where(union > 0, common / union, 0.0)
        return similarity

    def similar(self, smiles: str, *, threshold: float = 0.0, top: int = 10) -> SimilarityResult:
        if not 0.0 <= threshold <= 1.0:
            raise ChemSearchError(f"--threshold must be in [0, 1], got {threshold}")
        if top < 1:
            raise ChemSearchError(f"--top must be >= 1, got {top}")
        started = time.perf_counter()
        similarity = self.tanimoto(smiles)
        above = np.flatnonzero(similarity >= threshold)
        # most similar first; ties in corpus order (a stable sort on the negated values)
        order = above[np.argsort(-similarity[above], kind="stable")][:top]
        hits = [
            {"smiles": self.smiles(int(p)), "similarity": round(float(similarity[p]), 6)}
            for p in order
        ]
        self._attach_documents(hits, order)
        return SimilarityResult(
            query=smiles,
            threshold=threshold,
            top=top,
            above_threshold=int(len(above)),
            total_molecules=len(self),
            seconds=round(time.perf_counter() - started, 4),
            hits=hits,
        )

    def _attach_documents(self, hits: list[dict[str, Any]], positions: np.ndarray) -> None:
        """Each hit's document count and its first document's id, file:line and source id."""
        if not hits:
            return
        firsts = [int(self.document_rows(int(p))[0]) for p in positions]
        table = self.corpus.documents_table(["id", "where", "meta"], verify=False)
        rows = table.take(firsts).to_pylist()
        for hit, position, row in zip(hits, positions, rows):
            meta = json.loads(row["meta"]) if row["meta"] else {}
            hit["documents"] = int(len(self.document_rows(int(position))))
            hit["doc"] = row["id"]
            hit["where"] = row["where"]
            hit["source_id"] = meta.get("source_id")
