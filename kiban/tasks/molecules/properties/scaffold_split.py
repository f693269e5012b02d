"""chemprop's ``scaffold_balanced`` split (chemprop v1 ``chemprop/data/scaffold.py``).

Molecules are grouped by Bemis–Murcko scaffold (`kiban.chem.murcko_scaffold`: RDKit's
``MurckoScaffoldSmiles``, chirality ignored; acyclic molecules share the empty scaffold); the
*big* sets (more than half the validation or the test size) are shuffled by the seed and placed
first, the other sets are shuffled by the seed and follow; each set then goes whole to train while
it fits ``0.8 n``, else to validation while it fits ``0.1 n``, else to test. Every seed gives
another split; the same seed gives the same split.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from rdkit import Chem

from kiban import chem


def murcko_scaffold(mol: Chem.Mol) -> str:
    """Bemis–Murcko scaffold SMILES without chirality ('' for acyclic molecules), as chemprop."""
    return chem.murcko_scaffold(mol)


@dataclass(frozen=True)
class ScaffoldSplit:
    """Positions in the dataset of each part, and every molecule's scaffold."""

    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray
    scaffolds: tuple[str, ...]

    def describe(self) -> dict[str, int]:
        return {
            "train": len(self.train),
            "validation": len(self.validation),
            "test": len(self.test),
            "scaffolds": len(set(self.scaffolds)),
        }


def scaffold_split(
    molecules: Sequence[Chem.Mol],
    *,
    seed: int = 0,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
) -> ScaffoldSplit:
    """chemprop's ``scaffold_balanced`` split (see the module docstring) of ``molecules``."""
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-9:
        raise ValueError(
            f"The 'fractions' parameter of scaffold_split must be three "
            f"non-negative numbers summing to 1. Got {fractions!r} instead."
        )
    n = len(molecules)
    train_size, validation_size = fractions[0] * n, fractions[1] * n
    test_size = n - train_size - validation_size
    scaffolds = tuple(murcko_scaffold(mol) for mol in molecules)
    groups: dict[str, list[int]] = defaultdict(list)
    for index, scaffold in enumerate(scaffolds):
        groups[scaffold].append(index)
    sets = list(groups.values())  # first-seen order: deterministic before the shuffle
    big = [s for s in sets if len(s) > validation_size / 2 or len(s) > test_size / 2]
    small = [s for s in sets if not (len(s) > validation_size / 2 or len(s) > test_size / 2)]
    rng = random.Random(seed)
    rng.shuffle(big)
    rng.shuffle(small)
    parts: tuple[list[int], list[int], list[int]] = ([], [], [])
    for index_set in big + small:
        if len(parts[0]) + len(index_set) <= train_size:
            parts[0].extend(index_set)
        elif len(parts[1]) + len(index_set) <= validation_size:
            parts[1].extend(index_set)
        else:
            parts[2].extend(index_set)
    train, validation, test = (np.array(sorted(p), dtype=np.int64) for p in parts)
    return ScaffoldSplit(train, validation, test, scaffolds)
