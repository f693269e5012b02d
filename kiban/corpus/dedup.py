"""Near-duplicate signatures (MinHash) and decontamination against evaluation sets.

Both hash sliding windows with NumPy (no Python loop per character or token):

* MinHash: character 5-gram shingles of the canonical text, each hashed to 32 bits, permuted with
  the same ``(a*x + b) mod (2**61 - 1)`` family as `datasketch`, whose `MinHashLSH` then bands the
  signatures;
* decontamination: 64-bit polynomial hashes of every N-token window of the corpus, looked up in
  the sorted hashes of every evaluation item's N-token windows (items shorter than N tokens
  are matched whole).
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

_MERSENNE = np.uint64((1 << 61) - 1)
_MAX_HASH = np.uint64((1 << 32) - 1)
_BASE = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit constant: polynomial base for window hashes


def _legacy_scheme() -> dict[str, str]:
    """datasketch >= 2.0 defaults to another permutation scheme ("affine32") and insists on being
    told the scheme of given hash values; ours are the mod-(2**61 - 1) one it calls "legacy" (the
    only one before 2.0)."""
    import inspect

    from datasketch import MinHash

    return {"scheme": "legacy"} if "scheme" in inspect.signature(MinHash).parameters else {}


class MinHasher:
    """MinHash signatures of texts, compatible with `datasketch.MinHashLSH`."""

    def __init__(self, num_perm: int = 128, *, seed: int = 1, shingle: int = 5):
        from datasketch import MinHash

        if num_perm < 2:
            raise ValueError(f"num_perm must be at least 2, got {num_perm}")
        self.num_perm, self.seed, self.shingle = num_perm, seed, shingle
        self._scheme = _legacy_scheme()
        self._a, self._b = (
            np.asarray(p, dtype=np.uint64)
            for p in MinHash(num_perm=num_perm, seed=seed, **self._scheme).permutations
        )

    def signature(self, text: str) -> np.ndarray:
        data = np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.uint64)
        if len(data) < self.shingle:
            data = np.concatenate([data, np.zeros(self.shingle - len(data), dtype=np.uint64)])
        windows = sliding_window_view(data, self.shingle)
        hashes = np.zeros(len(windows), dtype=np.uint64)
        for column in range(self.shingle):
            hashes = hashes * _BASE + windows[:, column] + np.uint64(1)
        hashes = np.unique((hashes ^ (hashes >> np.uint64(29))) & _MAX_HASH)
        permuted = (np.outer(hashes, self._a) + self._b) % _MERSENNE & _MAX_HASH
        return permuted.min(axis=0)

    def lean(self, signature: np.ndarray):
        from datasketch import LeanMinHash

        return LeanMinHash(seed=self.seed, hashvalues=signature, **self._scheme)


def window_hashes(tokens: np.ndarray, n: int) -> np.ndarray:
    """64-bit hashes of every length-``n`` window of ``tokens`` (empty if shorter)."""
    tokens = np.asarray(tokens, dtype=np.uint64)
    if len(tokens) < n:
        return np.zeros(0, dtype=np.uint64)
    windows = sliding_window_view(tokens, n)
    hashes = np.full(len(windows), np.uint64(n), dtype=np.uint64)
    for column in range(n):
        hashes = hashes * _BASE + windows[:, column] + np.uint64(1)
    return hashes


class ContaminationIndex:
    """Which evaluation item (if any) shares an N-token span with a document."""

    def __init__(self, items: list[tuple[str, np.ndarray]], n: int):
        if n < 1:
            raise ValueError(f"the decontamination span length must be >= 1, got {n}")
        self.n = n
        self.items = [where for where, _ in items]
        by_length: dict[int, tuple[list[np.ndarray], list[np.ndarray]]] = {}
        for index, (_, tokens) in enumerate(items):
            length = min(n, len(tokens))
            if length == 0:
                continue
            hashes = window_hashes(tokens, length)
            hashes_list, owners = by_length.setdefault(length, ([], []))
            hashes_list.append(hashes)
            owners.append(np.full(len(hashes), index, dtype=np.int64))
        self._tables = {}
        for length, (hashes_list, owners) in by_length.items():
            hashes, owner = np.concatenate(hashes_list), np.concatenate(owners)
            order = np.argsort(hashes, kind="stable")
            self._tables[length] = (hashes[order], owner[order])

    def __len__(self) -> int:
        return len(self.items)

    def match(self, documents: list[np.ndarray]) -> list[int | None]:
        """For each document's tokens, the index of one evaluation item it overlaps, or None."""
        result: list[int | None] = [None] * len(documents)
        if not documents or not self._tables:
            return result
        lengths = np.array([len(d) for d in documents], dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        concatenated = np.concatenate(documents) if lengths.sum() else np.zeros(0, np.int64)
        doc_of_position = np.repeat(np.arange(len(documents)), lengths)
        for length, (table, owner) in sorted(self._tables.items()):
            hashes = window_hashes(concatenated, length)
            if len(hashes) == 0:
                continue
            doc = doc_of_position[: len(hashes)]
            inside = np.arange(len(hashes)) + length <= starts[doc] + lengths[doc]
            slot = np.searchsorted(table, hashes)
            slot_clipped = np.minimum(slot, len(table) - 1)
            hit = inside & (table[slot_clipped] == hashes)
            hit_positions = np.flatnonzero(hit)
            hit_docs, first = np.unique(doc[hit_positions], return_index=True)
            for d, position in zip(hit_docs.tolist(), hit_positions[first].tolist()):
                if result[d] is None:
                    result[d] = int(owner[slot_clipped[position]])
        return result
