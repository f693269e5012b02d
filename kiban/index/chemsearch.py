"""Chemistry-aware search over a corpus's molecules: substructure (SMARTS, RDKit semantics) and
Tanimoto similarity (Morgan fingerprints), from fingerprints stored with the corpus.

The molecules are the distinct ``<mol>`` spans of the corpus's documents (the corpus stores them
as canonical SMILES). `build_chem_index` writes, into ``CORPUS/chem/``:

* ``smiles.bin`` + ``smiles_offsets.npy``: the distinct SMILES, in order of first appearance;
* ``pattern.npy``: RDKit pattern fingerprints (the substructure screen), packed into uint64,
  stored word-major (32 rows of one word per molecule) so the screen reads each word it needs
  as one contiguous run;
* ``morgan.npy``, ``morgan_count.npy``, ``morgan_order.npy``: Morgan bits (radius 2, 2048)
  and their popcounts, sorted by popcount (``morgan_order`` maps a row to its molecule), so a
  threshold query reads only the rows whose popcount can reach it;
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
import math
import multiprocessing
import os
import re
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numba
import numpy as np

from kiban import formats
from kiban.errors import InputError

CHEM_FORMAT = formats.register("kiban-chem-index", 1)
CHEM_DIRECTORY = "chem"
PATTERN_BITS = 2048
MORGAN_RADIUS = 2
MORGAN_BITS = 2048
_WORDS = PATTERN_BITS // 64
_SCREENED_ELEMENTS = (5, 6, 7, 8, 9, 14, 15, 16, 17, 34, 35, 53)
#: the element-count screen's columns: ("code", Z) aliphatic Z, ("code", 1000 + Z) aromatic Z,
#: ("any", Z) either — the codes of RDKit's SMARTS "AtomType" / "AtomAtomicNum" queries
ELEMENT_KEYS = (
    [("code", z) for z in _SCREENED_ELEMENTS]
    + [("code", 1000 + z) for z in _SCREENED_ELEMENTS]
    + [("any", z) for z in _SCREENED_ELEMENTS]
)
_MOL_SPAN = re.compile(r"<mol>(.*?)</mol>", re.S)
#: query features whose answer needs the smallest set of smallest rings (ring sizes, ring
#: counts, recursive SMARTS that may hold either): their matches are counted on molecules read
#: as RDKit reads them by default; other queries on molecules read the fast way (trusted
#: canonical SMILES, ring membership only)
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


def _element_counts(mol) -> np.ndarray:
    """Atoms of each `ELEMENT_KEYS` kind in ``mol`` (saturating at 255)."""
    atoms = np.array(
        [(a.GetAtomicNum(), a.GetIsAromatic()) for a in mol.GetAtoms()], dtype=np.int64
    )
    codes = atoms[:, 0] + 1000 * atoms[:, 1]
    counts = np.zeros(len(ELEMENT_KEYS), dtype=np.int64)
    for column, (kind, number) in enumerate(ELEMENT_KEYS):
        counts[column] = np.count_nonzero(
            atoms[:, 0] == number if kind == "any" else codes == number
        )
    return np.minimum(counts, 255).astype(np.uint8)


def _fingerprint_chunk(smiles: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, list]:
    """Pattern bits, Morgan bits and element counts of a chunk of SMILES; rows of unreadable
    ones pass every screen (pattern all ones, counts 255) so RDKit, not the screen, rejects
    them."""
    from kiban.chem import mol_or_none

    pattern = np.zeros((len(smiles), PATTERN_BITS), dtype=np.uint8)
    morgan = np.zeros((len(smiles), MORGAN_BITS), dtype=np.uint8)
    elements = np.zeros((len(smiles), len(ELEMENT_KEYS)), dtype=np.uint8)
    bad = []
    for row, text in enumerate(smiles):
        mol = mol_or_none(text)
        if mol is None:
            bad.append(row)
            pattern[row] = 1
            elements[row] = 255
            continue
        pattern[row] = _pattern_bits(mol)
        morgan[row] = _morgan_bits(mol)
        elements[row] = _element_counts(mol)
    return _pack(pattern), _pack(morgan), elements, bad


def _and_leaves(description: str) -> list[list[str]]:
    """The nodes of an RDKit query description reachable from its root through AtomAnd only."""
    lines = [
        ((len(line) - len(line.lstrip(" "))) // 2, line.split())
        for line in description.splitlines()
        if line.strip()
    ]
    leaves: list[list[str]] = []

    def walk(position: int) -> None:
        depth, words = lines[position]
        if words[0] != "AtomAnd":
            leaves.append(words)
            return
        for child in range(position + 1, len(lines)):
            if lines[child][0] <= depth:
                break
            if lines[child][0] == depth + 1:
                walk(child)

    if lines:
        walk(0)
    return leaves


def element_requirements(query) -> dict[int, int]:
    """Least atom counts a molecule needs to contain ``query``, per `ELEMENT_KEYS` column:
    a query atom whose query is, at the top or under AND only, "AtomType Z" (aliphatic Z;
    1000 + Z aromatic) or "AtomAtomicNum Z" (either) claims one atom of that kind; anything
    else (OR, NOT, recursion, a wildcard) claims nothing."""
    columns = {key: column for column, key in enumerate(ELEMENT_KEYS)}
    needed: dict[int, int] = {}
    for atom in query.GetAtoms():
        keys = [
            ("code" if words[0] == "AtomType" else "any", int(words[1]))
            for words in _and_leaves(atom.DescribeQuery())
            if words[0] in ("AtomType", "AtomAtomicNum") and words[2:4] == ["=", "val"]
        ]
        keys = [key for key in keys if key in columns]
        if keys:  # one atom: claim its most specific kind once (an AtomType over AtomAtomicNum)
            kind, number = min(keys, key=lambda key: key[0] != "code")
            for key in {(kind, number), ("any", number % 1000)}:
                needed[columns[key]] = needed.get(columns[key], 0) + 1
    return needed


_M1, _M2, _M4 = (np.uint64(0x5555555555555555), np.uint64(0x3333333333333333),
                 np.uint64(0x0F0F0F0F0F0F0F0F))  # fmt: skip
_H01 = np.uint64(0x0101010101010101)
_ONE, _TWO, _FOUR, _BYTE7 = np.uint64(1), np.uint64(2), np.uint64(4), np.uint64(56)


@numba.njit(cache=True, nogil=True)
def _tanimoto_kernel(rows, row_bits, query, query_bits, out):  # pragma: no cover - compiled
    """Per row: the popcount of (row & query) word by word (the SWAR bit count; every constant
    uint64, so numba never promotes to float), then c / (a + b - c)."""
    for row in range(rows.shape[0]):
        common = 0
        for word in range(rows.shape[1]):
            x = rows[row, word] & query[word]
            x = x - ((x >> _ONE) & _M1)
            x = (x & _M2) + ((x >> _TWO) & _M2)
            x = (x + (x >> _FOUR)) & _M4
            common += int((x * _H01) >> _BYTE7)
        union = row_bits[row] + query_bits - common
        out[row] = 0.0 if union == 0 else common / union


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
    from kiban.corpus.store import as_corpus, documents_sha256

    corpus = as_corpus(corpus)
    started = time.perf_counter()
    digest = documents_sha256(corpus)
    smiles, postings = _molecules(corpus)
    chunks = [smiles[i : i + chunk] for i in range(0, len(smiles), chunk)]
    if workers > 1 and len(chunks) > 1:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            parts = pool.map(_fingerprint_chunk, chunks)
    else:
        parts = [_fingerprint_chunk(part) for part in chunks]
    empty = np.zeros((0, _WORDS), dtype=np.uint64)
    pattern = np.concatenate([part[0] for part in parts]) if parts else empty
    morgan = np.concatenate([part[1] for part in parts]) if parts else empty
    elements = (
        np.concatenate([part[2] for part in parts])
        if parts
        else np.zeros((0, len(ELEMENT_KEYS)), dtype=np.uint8)
    )
    unreadable = [i * chunk + r for i, part in enumerate(parts) for r in part[3]]
    encoded = [s.encode() for s in smiles]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum([len(e) for e in encoded], out=offsets[1:])
    post_offsets = np.zeros(len(postings) + 1, dtype=np.int64)
    np.cumsum([len(p) for p in postings], out=post_offsets[1:])
    flat = np.fromiter((r for rows in postings for r in rows), dtype=np.int64)

    counts = np.bitwise_count(morgan).sum(axis=1, dtype=np.int32)
    by_count = np.argsort(counts, kind="stable").astype(np.int64)
    final = corpus.directory / CHEM_DIRECTORY
    staging = corpus.directory / f".{CHEM_DIRECTORY}.tmp-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    (staging / "smiles.bin").write_bytes(b"".join(encoded))
    for name, array in (
        ("smiles_offsets", offsets),
        ("pattern", np.ascontiguousarray(pattern.T)),  # word-major: the screen reads words
        ("morgan", morgan[by_count]),
        ("morgan_order", by_count),
        ("elements", np.ascontiguousarray(elements.T)),
        ("morgan_count", counts[by_count]),
        ("postings", flat),
        ("postings_offsets", post_offsets),
    ):
        np.save(staging / f"{name}.npy", array)
    meta = {
        "documents_sha256": digest,
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
        return asdict(self)


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
        return asdict(self)


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


def _matching(query, texts: list[str], workers: int) -> np.ndarray:
    """Positions in ``texts`` of the molecules that contain ``query``: RDKit's SubstructLibrary
    over the screened molecules (read as trusted canonical SMILES, matched in C++ on
    ``workers`` threads; no second fingerprint screen)."""
    from rdkit.Chem import rdSubstructLibrary

    holder = rdSubstructLibrary.CachedTrustedSmilesMolHolder()
    for text in texts:
        holder.AddSmiles(text)
    library = rdSubstructLibrary.SubstructLibrary(holder)
    found = library.GetMatches(
        query, maxResults=len(texts) + 1, numThreads=workers, useChirality=False
    )
    return np.sort(np.fromiter(found, dtype=np.int64, count=len(found)))


def _match_counts(query, texts: list[str], sssr: bool) -> np.ndarray:
    """Unique-match counts of ``query`` in each SMILES, on molecules read as RDKit reads them
    by default where the query depends on ring sizes, else the fast way."""
    from rdkit import Chem

    counts = np.zeros(len(texts), dtype=np.int64)
    for row, text in enumerate(texts):
        mol = Chem.MolFromSmiles(text, sanitize=sssr)
        if not sssr:
            mol.UpdatePropertyCache(strict=False)
            Chem.FastFindRings(mol)
        counts[row] = len(mol.GetSubstructMatches(query, uniquify=True, maxMatches=1 << 30))
    return counts


class ChemIndex:
    """The molecules of a corpus with their fingerprints (``CORPUS/chem/``)."""

    def __init__(self, corpus, directory: Path, meta: dict[str, Any]):
        self.corpus = corpus
        self.directory = directory
        self.meta = meta
        load = lambda name: np.load(directory / f"{name}.npy", mmap_mode="r")  # noqa: E731
        blob = directory / "smiles.bin"
        # mapped, not read: a query touches only the SMILES it reports
        self._smiles = np.memmap(blob, mode="r") if blob.stat().st_size else np.zeros(0, np.uint8)
        self._offsets = load("smiles_offsets")
        self.pattern = load("pattern")
        self.morgan = load("morgan")
        self.elements = load("elements")
        self.morgan_count = load("morgan_count")
        self.morgan_order = load("morgan_order")
        self._postings = load("postings")
        self._post_offsets = load("postings_offsets")

    @classmethod
    def open(cls, corpus, *, build: bool = True, workers: int = 1, notify=None) -> ChemIndex:
        """The chemistry index of ``corpus``: built when missing or stale (``build``; ``notify``
        is called with a line saying so) or a `ChemSearchError`."""
        from kiban.corpus.store import as_corpus, documents_sha256

        corpus = as_corpus(corpus)
        directory = corpus.directory / CHEM_DIRECTORY
        meta_path = directory / "chem.json"
        reason = None
        if not meta_path.is_file():
            reason = "has no chemistry index yet"
        else:
            meta = formats.read_json(meta_path, CHEM_FORMAT)
            if meta["documents_sha256"] != documents_sha256(corpus):
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
        return self._smiles[start:end].tobytes().decode()

    def document_rows(self, position: int) -> np.ndarray:
        return self._postings[self._post_offsets[position] : self._post_offsets[position + 1]]

    # --- substructure ---------------------------------------------------------------------
    def screen(self, query) -> np.ndarray:
        """Positions of the molecules whose pattern fingerprint holds every bit of the query's
        and that have at least the atoms of each element the query's atoms name (necessary
        conditions for a match), in corpus order."""
        words = _pack(_pattern_bits(query))
        needed = np.flatnonzero(words)
        if needed.size == 0:
            return np.arange(len(self), dtype=np.int64)
        keep = np.ones(len(self), dtype=bool)
        for word in needed:  # a pass per query word (at most 32), vectorised over molecules
            column = self.pattern[word]
            keep &= (column & words[word]) == words[word]
        for column, count in element_requirements(query).items():
            keep &= self.elements[column] >= count
        return np.flatnonzero(keep)

    def match(
        self, smarts: str, *, workers: int = 1, count: bool = True
    ) -> tuple[np.ndarray, np.ndarray | None, int]:
        """Positions of the molecules that contain ``smarts`` (corpus order), their unique-match
        counts (None unless ``count``) and how many molecules passed the screen."""
        query = parse_smarts(smarts)
        candidates = self.screen(query)
        texts = [self.smiles(int(p)) for p in candidates]
        found = _matching(query, texts, workers) if texts else np.zeros(0, dtype=np.int64)
        counts = (
            _match_counts(query, [texts[i] for i in found], _needs_sssr(query)) if count else None
        )
        return candidates[found], counts, int(len(candidates))

    def substructure(
        self, smarts: str, *, limit: int = 20, workers: int = 1, documents: bool = True
    ) -> SubstructureResult:
        """The molecules that contain ``smarts``: counts, and the first ``limit`` hits (with
        their first document's id, file:line and metadata unless ``documents`` is False)."""
        started = time.perf_counter()
        hit, counts, screened = self.match(smarts, workers=workers)
        rows = (
            np.unique(np.concatenate([self.document_rows(int(p)) for p in hit]))
            if len(hit)
            else np.zeros(0, dtype=np.int64)
        )
        shown = [
            {"smiles": self.smiles(int(p)), "matches": int(c)}
            for p, c in zip(hit[:limit], counts[:limit])
        ]
        if documents:
            self._attach_documents(shown, hit[:limit])
        return SubstructureResult(
            query=smarts,
            molecules=int(len(hit)),
            matches=int(counts.sum()),
            documents=int(len(rows)),
            screened=screened,
            total_molecules=len(self),
            seconds=round(time.perf_counter() - started, 4),
            hits=shown,
        )

    # --- similarity -----------------------------------------------------------------------
    def _query_words(self, smiles: str) -> np.ndarray:
        from kiban.chem import SmilesError, parse_smiles

        try:
            mol = parse_smiles(smiles)
        except SmilesError as error:
            raise ChemSearchError(f"query {smiles!r} is not a molecule: {error}") from None
        return _pack(_morgan_bits(mol))

    def _tanimoto_rows(self, words: np.ndarray, start: int, stop: int) -> np.ndarray:
        """Tanimoto c / (a + b - c) of the popcount-sorted rows start:stop (0 where a + b = 0,
        as RDKit), in one compiled pass."""
        out = np.empty(stop - start, dtype=np.float64)
        _tanimoto_kernel(
            self.morgan[start:stop],
            self.morgan_count[start:stop],
            np.ascontiguousarray(words, dtype=np.uint64),
            int(np.bitwise_count(words).sum()),
            out,
        )
        return out

    def tanimoto(self, smiles: str) -> np.ndarray:
        """Tanimoto similarity of every molecule to ``smiles`` (Morgan radius 2, 2048 bits), in
        corpus order."""
        similarity = np.empty(len(self), dtype=np.float64)
        similarity[self.morgan_order] = self._tanimoto_rows(self._query_words(smiles), 0, len(self))
        return similarity

    def similar(
        self, smiles: str, *, threshold: float = 0.0, top: int = 10, documents: bool = True
    ) -> SimilarityResult:
        """The ``top`` molecules most similar to ``smiles`` with Tanimoto >= ``threshold`` (with
        their first document unless ``documents`` is False)."""
        if not 0.0 <= threshold <= 1.0:
            raise ChemSearchError(f"--threshold must be in [0, 1], got {threshold}")
        if top < 1:
            raise ChemSearchError(f"--top must be >= 1, got {top}")
        started = time.perf_counter()
        words = self._query_words(smiles)
        start, stop = 0, len(self)
        if threshold > 0:
            # Tanimoto <= min(a, b) / max(a, b): only popcounts b in [t·a, a/t] can reach t
            bits = int(np.bitwise_count(words).sum())
            start = int(np.searchsorted(self.morgan_count, math.floor(threshold * bits), "left"))
            stop = int(np.searchsorted(self.morgan_count, math.ceil(bits / threshold), "right"))
        values = self._tanimoto_rows(words, start, stop)
        keep = np.flatnonzero(values >= threshold)
        positions = np.asarray(self.morgan_order[start:stop])[keep]
        values = values[keep]
        # most similar first; equal similarities in corpus order
        ranked = np.lexsort((positions, -values))[:top]
        order = positions[ranked]
        hits = [
            {"smiles": self.smiles(int(p)), "similarity": round(float(v), 6)}
            for p, v in zip(order, values[ranked])
        ]
        if documents:
            self._attach_documents(hits, order)
        return SimilarityResult(
            query=smiles,
            threshold=threshold,
            top=top,
            above_threshold=int(len(keep)),
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
            hit["meta"] = meta  # the row's other columns (a CSV's ID and text columns)
