"""Molecules for the proposers: canonical identity, Morgan fingerprints, and sampling new ones
from a kiban model directory (``<mol>`` prompt) through `kiban.generate`."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from kiban.lab.proposers.base import ProposerError, canonical_smiles
from kiban.lab.space import Molecule

#: (n, seed) -> SMILES; what a generative proposer samples from (injectable in tests)
Sampler = Callable[[int, int], list[str]]

_GENERATORS: dict[str, Any] = {}


def unique_canonical(smiles: Iterable[str]) -> list[str]:
    """Valid molecules, canonical, first occurrence kept (order is part of determinism)."""
    from kiban.chem import canonical_or_none

    out: dict[str, None] = {}
    for s in smiles:
        key = canonical_or_none(str(s)) if s else None
        if key is not None:
            out.setdefault(key, None)
    return list(out)


def fingerprints(smiles: list[str], bits: int = 2048, radius: int = 2) -> np.ndarray:
    """Morgan bit vectors (``len(smiles) x bits``, 0/1 floats) for the Tanimoto kernel."""
    from kiban.chem import SmilesError, morgan_fingerprints, parse_smiles

    mols = []
    for s in smiles:
        try:
            mols.append(parse_smiles(s))
        except SmilesError as error:
            raise ProposerError(f"cannot fingerprint {s!r}: {error.reason}") from None
    return morgan_fingerprints(mols, radius=radius, n_bits=bits, dtype=np.float64)


def model_dir(mol: Molecule) -> Path:
    """The molecule parameter's model directory, checked (a clear error naming the path)."""
    if not mol.model:
        raise ProposerError(f"molecule parameter {mol.name!r} has no `model` to sample from")
    path = Path(mol.model)
    if not path.is_dir():
        raise ProposerError(
            f"molecule parameter {mol.name!r}: model directory {str(path)!r} not found"
        )
    if not (path / "config.json").is_file():
        raise ProposerError(
            f"molecule parameter {mol.name!r}: {str(path / 'config.json')!r} "
            "is missing (not a kiban model directory)"
        )
    return path


def model_sampler(
    mol: Molecule,
    *,
    temperature: float = 1.0,
    max_new_tokens: int = 128,
) -> Sampler:
    """A `Sampler` drawing from ``mol.model`` (loaded once per process and path)."""
    path = model_dir(mol)

    def sample(n: int, seed: int) -> list[str]:
        from kiban.generate.generator import load_generator

        key = str(path.resolve())
        if key not in _GENERATORS:
            _GENERATORS[key] = load_generator(path)
        gen = _GENERATORS[key]
        limit = getattr(gen.model.config, "max_position_embeddings", None)
        new_tokens = max_new_tokens if not limit else max(1, min(max_new_tokens, limit - 16))
        completions = gen.generate(
            mol.prompt,
            n=n,
            max_new_tokens=new_tokens,
            temperature=temperature,
            seed=int(seed) % (2**62),
            valid_only=True,
            max_tries=4,
        )
        out = []
        for c in completions:
            for span in c.spans:
                if span.modality == "mol" and span.valid:
                    out.append(span.canonical or span.text)
        return out

    return sample


def sample_pool(
    sample: Sampler, needed: int, seed: int, chunk: int = 64, max_chunks: int = 16
) -> list[str]:
    """Unique valid molecules drawn chunk by chunk until ``needed`` (chunk ``j`` seeded by
    ``(seed, j)``, so a larger request extends a smaller one: prefix-stable)."""
    pool: list[str] = []
    seen: set[str] = set()
    for j in range(max_chunks):
        for s in unique_canonical(sample(chunk, seed * 1_000_003 + j)):
            if s not in seen:
                seen.add(s)
                pool.append(s)
        if len(pool) >= needed:
            break
    return pool


def canonical_candidates(mol: Molecule) -> list[str]:
    """The candidate list, canonical and de-duplicated (invalid entries dropped)."""
    return unique_canonical(mol.candidates)


__all__ = [
    "Sampler",
    "canonical_smiles",
    "canonical_candidates",
    "fingerprints",
    "model_dir",
    "model_sampler",
    "sample_pool",
    "unique_canonical",
]
