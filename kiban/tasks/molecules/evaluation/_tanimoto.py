"""Tanimoto similarity between bit fingerprints packed into 64-bit words.

MOSES compares 1024-bit Morgan fingerprints: SNN takes, for every generated molecule, the
largest similarity to any of the 176,074 test molecules, and IntDiv averages the similarity
over all pairs of generated molecules. Packed into 16 words a pair costs 16 AND + POPCNT, which
LLVM vectorises (about 16 s for 30,000 x 176,074 pairs on two cores, ~10x a float32 matmul on
the unpacked bits). On an accelerator `device != "cpu"` uses a matmul of the bits instead.

A pair of empty fingerprints has similarity 1 (0/0), as in molsets.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange
from numba.core import types
from numba.extending import intrinsic


@intrinsic
def _popcount(typingctx, word):
    def codegen(context, builder, signature, args):
        return builder.ctpop(args[0])

    return types.uint64(types.uint64), codegen


def pack_fingerprints(bits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, n_bits) 0/1 array → ((n, n_bits/64) uint64 words, (n,) int64 on-bit counts)."""
    bits = np.asarray(bits)
    if bits.ndim != 2 or bits.shape[1] % 64:
        raise ValueError(f"fingerprints must be (n, k*64) bits, got shape {bits.shape}")
    words = np.ascontiguousarray(np.packbits(bits.astype(bool), axis=1)).view(np.uint64)
    return words, bits.astype(bool).sum(axis=1).astype(np.int64)


@njit(parallel=True, nogil=True, cache=True)
def _nearest(query, query_counts, reference, reference_counts):  # pragma: no cover - compiled
    n_words = query.shape[1]
    best = np.empty(query.shape[0])
    for i in prange(query.shape[0]):
        # the best fraction is kept as (numerator, denominator): comparing by cross-multiplication
        # keeps integer arithmetic in the loop over the reference set
        best_num, best_den = 0, 1
        for j in range(reference.shape[0]):
            common = 0
            for w in range(n_words):
                common += _popcount(query[i, w] & reference[j, w])
            union = query_counts[i] + reference_counts[j] - common
            if union == 0:
                best_num, best_den = 1, 1
            elif common * best_den > best_num * union:
                best_num, best_den = common, union
        best[i] = best_num / best_den
    return best


@njit(parallel=True, nogil=True, cache=True)
def _row_means(words, counts):  # pragma: no cover - compiled
    n, n_words = words.shape
    mean = np.empty(n)
    mean_square = np.empty(n)
    for i in prange(n):
        total, total_square = 0.0, 0.0
        for j in range(n):
            common = 0
            for w in range(n_words):
                common += _popcount(words[i, w] & words[j, w])
            union = counts[i] + counts[j] - common
            similarity = 1.0 if union == 0 else common / union
            total += similarity
            total_square += similarity * similarity
        mean[i] = total / n
        mean_square[i] = total_square / n
    return mean, mean_square


def nearest_similarity(
    query: np.ndarray,
    reference: np.ndarray,
    *,
    device: str = "cpu",
) -> np.ndarray:
    """For each query fingerprint (rows of 0/1 bits), the largest Tanimoto similarity to any
    reference fingerprint: shape (n_query,)."""
    if device != "cpu":
        return _torch_aggregate(query, reference, device, "max")[0]
    return nearest_similarity_packed(*pack_fingerprints(query), *pack_fingerprints(reference))


def nearest_similarity_packed(
    query_words: np.ndarray,
    query_counts: np.ndarray,
    reference_words: np.ndarray,
    reference_counts: np.ndarray,
) -> np.ndarray:
    """`nearest_similarity` on fingerprints already packed by `pack_fingerprints`."""
    return _nearest(query_words, query_counts, reference_words, reference_counts)


def mean_similarity(
    fingerprints: np.ndarray,
    *,
    device: str = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """Per fingerprint, the mean Tanimoto similarity and the mean squared similarity to every
    fingerprint of the set (itself included): two arrays of shape (n,)."""
    if device != "cpu":
        return _torch_aggregate(fingerprints, fingerprints, device, "mean")
    words, counts = pack_fingerprints(fingerprints)
    return _row_means(words, counts)


def _torch_aggregate(query, reference, device, how, batch_size=8192):
    import torch

    query_t = torch.as_tensor(np.asarray(query), dtype=torch.float32)
    reference_t = torch.as_tensor(np.asarray(reference), dtype=torch.float32)
    first = np.zeros(len(query_t))
    second = np.zeros(len(query_t))
    for start in range(0, len(reference_t), batch_size):
        ref = reference_t[start : start + batch_size].to(device)  # (R, bits)
        ref_counts = ref.sum(1)
        for q_start in range(0, len(query_t), batch_size):
            block = query_t[q_start : q_start + batch_size].to(device)  # (Q, bits)
            common = block @ ref.T  # (Q, R), exact small integers in float32
            union = block.sum(1, keepdim=True) + ref_counts[None, :] - common
            similarity = torch.where(union > 0, common / union.clamp(min=1), 1.0).double()
            rows = slice(q_start, q_start + len(block))
            if how == "max":
                first[rows] = np.maximum(first[rows], similarity.max(1).values.cpu().numpy())
            else:
                first[rows] += similarity.sum(1).cpu().numpy()
                second[rows] += (similarity * similarity).sum(1).cpu().numpy()
    if how == "mean":
        return first / len(reference_t), second / len(reference_t)
    return first, second
