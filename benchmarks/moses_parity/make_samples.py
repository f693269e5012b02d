"""Writes the parity sample files: SMILES drawn from MOSES train with corruption.

A real generator's output does not exist yet, so the samples imitate one: 70 % of the molecules
come from MOSES train, 15 % from test and 15 % from test_scaffolds (so novelty and the
scaffold-test scaffold similarity are not trivially 0), some lines are repeated (uniqueness < 1),
some are broken SMILES or plain junk (validity < 1), a few are blank. Seeded: reproducible.

    .venv/bin/python benchmarks/moses_parity/make_samples.py
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from kiban.data import moses_smiles

JUNK = [
    "hello world",
    "C1CC",
    "c1cccc1",
    "CC(C",
    "[Xx]C",
    "C%99C",
    "N(=O)(=O)(=O)=O",
    "12345",
    "<mol>CCO</mol>",
    "\x00\x01\x02",
]


def corrupt(smiles: str, rng: np.random.Generator) -> str:
    """An invalid variant of a valid SMILES (unbalanced branch, lost ring closure or bad atom)."""
    kind = rng.integers(3)
    if kind == 0:
        return smiles + "("
    if kind == 1:
        digits = [i for i, ch in enumerate(smiles) if ch.isdigit()]
        if digits:
            i = digits[int(rng.integers(len(digits)))]
            return smiles[:i] + smiles[i + 1 :]
    return smiles.replace("C", "Q", 1) if "C" in smiles else smiles + "Q"


def make(n: int, seed: int, splits: dict[str, list[str]]) -> list[str]:
    rng = np.random.default_rng(seed)
    picked = []
    for split, share in (("train", 0.70), ("test", 0.15), ("test_scaffolds", 0.15)):
        pool = splits[split]
        picked += [pool[i] for i in rng.choice(len(pool), size=round(n * share), replace=False)]
    picked = [picked[i] for i in rng.permutation(len(picked))]
    lines = []
    for smiles in picked:
        roll = rng.random()
        if roll < 0.03:
            lines.append(corrupt(smiles, rng))
        elif roll < 0.08 and lines:
            lines.append(lines[int(rng.integers(len(lines)))])  # a repeat of an earlier line
        elif roll < 0.081:
            lines.append(JUNK[int(rng.integers(len(JUNK)))])
        elif roll < 0.0815:
            lines.append("")
        else:
            lines.append(smiles)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "samples")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    splits = {split: moses_smiles(split) for split in ("train", "test", "test_scaffolds")}
    for name, n, seed in (("samples-30k.smi", 30_000, 0), ("samples-2k.smi", 2_000, 1)):
        path = args.out / name
        path.write_text("\n".join(make(n, seed, splits)) + "\n", encoding="utf-8")
        print(f"{path}: {n:,} lines")


if __name__ == "__main__":
    main()
