"""What MOSES needs to know about one sample, computed in a worker process.

MOSES scores the molecule *re-read from its canonical SMILES* (molsets canonicalises the valid
samples first and parses them again), so every feature below is computed on that second parse:
that is what keeps the metrics equal to molsets' on molecules whose perception changes on a
round trip.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from rdkit import Chem
from rdkit.Chem import rdmolops

from kiban import chem
from kiban.data import package_file
from kiban.tasks.molecules._smiles_file import parse_line

FINGERPRINT_BITS = 1024
MORGAN_RADIUS = 2
ALLOWED_ELEMENTS = frozenset({"C", "N", "S", "O", "F", "Cl", "Br", "H"})
MIN_SCAFFOLD_RINGS = 2  # molsets counts only scaffolds with at least two rings
MAX_RING_SIZE = 7  # rings of 8 or more atoms fail the filters


@dataclass(frozen=True, slots=True)
class MoleculeFeatures:
    """Per-molecule values behind the MOSES metrics (``fingerprint``: packed Morgan bits)."""

    canonical: str
    fingerprint: bytes
    fragments: tuple[str, ...]
    scaffold: str | None
    passes_filters: bool
    logp: float
    sa: float
    qed: float
    weight: float


@dataclass(frozen=True, slots=True)
class InvalidSample:
    """A sample that is not a valid molecule: ``where`` is ``file:line`` (or ``sample N``)."""

    where: str
    text: str
    reason: str


@lru_cache(maxsize=1)
def filter_patterns() -> tuple[Chem.Mol, ...]:
    """The MCF and PAINS (WEHI) SMARTS shipped with molsets, parsed."""
    patterns = []
    mcf = package_file("moses", "metrics/mcf.csv")
    pains = package_file("moses", "metrics/wehi_pains.csv")
    with open(mcf, newline="", encoding="utf-8") as handle:
        rows = [(row["smarts"], f"{mcf.name}:{row['names']}") for row in csv.DictReader(handle)]
    with open(pains, newline="", encoding="utf-8") as handle:  # no header: smarts, name
        rows += [(row[0].strip(), f"{pains.name}:{row[1]}") for row in csv.reader(handle)]
    for smarts, name in rows:
        pattern = Chem.MolFromSmarts(smarts)
        if pattern is None:
            raise ValueError(f"RDKit cannot parse the filter SMARTS {smarts!r} ({name})")
        patterns.append(pattern)
    return tuple(patterns)


def passes_filters(mol: Chem.Mol) -> bool:
    """MOSES' medicinal-chemistry filters: no ring of 8+ atoms, no charge, only C N S O F Cl Br H,
    no MCF/PAINS match (on the molecule with explicit hydrogens), and a SMILES that re-parses."""
    if any(len(ring) > MAX_RING_SIZE for ring in mol.GetRingInfo().AtomRings()):
        return False
    atoms = mol.GetAtoms()
    if any(atom.GetFormalCharge() != 0 for atom in atoms):
        return False
    if any(atom.GetSymbol() not in ALLOWED_ELEMENTS for atom in atoms):
        return False
    with_hydrogens = Chem.AddHs(mol)
    if any(with_hydrogens.HasSubstructMatch(pattern) for pattern in filter_patterns()):
        return False
    # molsets' last filter, kept as molsets writes it: the non-isomeric SMILES must re-parse (a
    # property of the molecule, not its identity, so not kiban.chem's canonical SMILES)
    smiles = Chem.MolToSmiles(mol, isomericSmiles=False)
    return bool(smiles) and Chem.MolFromSmiles(smiles) is not None


def murcko_scaffold(mol: Chem.Mol) -> str | None:
    """Canonical (isomeric) SMILES of the Bemis–Murcko scaffold, if it has at least two rings."""
    try:
        return chem.murcko_scaffold(mol, isomeric=True, min_rings=MIN_SCAFFOLD_RINGS)
    except (ValueError, RuntimeError):  # molsets counts a molecule RDKit cannot reduce as none
        return None


def brics_fragments(mol: Chem.Mol) -> tuple[str, ...]:
    """Canonical SMILES of the BRICS fragments (with their dummy-atom attachment points)."""
    return tuple(chem.canonical_smiles(rdmolops.FragmentOnBRICSBonds(mol)).split("."))


NOT_REREAD = "RDKit cannot re-read its own canonical SMILES of this molecule"


def reread(smiles: str) -> tuple[Chem.Mol | None, str]:
    """The molecule MOSES scores (a line parsed, written as canonical SMILES, parsed again) and
    ``""``, or None and the reason. Novelty compares ``chem.canonical_smiles`` of it, so a
    training set read with this compares with the samples exactly."""
    mol, reason = parse_line(smiles)
    if mol is None:
        return None, reason
    canonical = chem.mol_or_none(chem.canonical_smiles(mol))
    return (None, NOT_REREAD) if canonical is None else (canonical, "")


def reread_canonical(smiles: str) -> tuple[str | None, str]:
    """`reread` as the canonical SMILES a sample's ``canonical`` is compared with (a string, so
    worker processes return it cheaply)."""
    mol, reason = reread(smiles)
    return (None, reason) if mol is None else (chem.canonical_smiles(mol), "")


def describe(smiles: str) -> MoleculeFeatures | str:
    """Features of one sample, or the reason it is not a valid molecule."""
    canonical, reason = reread(smiles)
    if canonical is None:
        return reason
    bits = chem.morgan_fingerprints([canonical], radius=MORGAN_RADIUS, n_bits=FINGERPRINT_BITS)
    return MoleculeFeatures(
        canonical=chem.canonical_smiles(canonical),
        fingerprint=np.packbits(bits[0].astype(bool)).tobytes(),
        fragments=brics_fragments(canonical),
        scaffold=murcko_scaffold(canonical),
        passes_filters=passes_filters(canonical),
        logp=chem.logp(canonical),
        sa=chem.sa_score(canonical),
        qed=chem.qed(canonical),
        weight=chem.molecular_weight(canonical),
    )
