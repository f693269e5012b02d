"""What MOSES needs to know about one sample, computed in a worker process.

MOSES scores the molecule *re-read from its canonical SMILES* (molsets canonicalises the valid
samples first and parses them again), so every feature below is computed on that second parse:
that is what keeps the metrics equal to molsets' on molecules whose perception changes on a
round trip.
"""

from __future__ import annotations

import csv
import gzip
import math
import pickle
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from rdkit import Chem, rdBase
from rdkit.Chem import QED, Crippen, Descriptors, rdFingerprintGenerator, rdMolDescriptors, rdmolops
from rdkit.Chem.Scaffolds import MurckoScaffold

from kiban.data import package_file

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


@lru_cache(maxsize=1)
def _fragment_scores() -> dict[int, float]:
    """SA score fragment contributions (Ertl & Schuffenhauer 2009), as shipped with molsets."""
    path = package_file("moses", "metrics/SA_Score/fpscores.pkl.gz")
    with gzip.open(path) as handle:
        table = pickle.load(handle)
    return {int(bit): float(row[0]) for row in table for bit in row[1:]}


@lru_cache(maxsize=1)
def _generators():
    return (rdFingerprintGenerator.GetMorganGenerator(radius=MORGAN_RADIUS,
                                                      fpSize=FINGERPRINT_BITS),
            rdFingerprintGenerator.GetMorganGenerator(radius=2))


def synthetic_accessibility(mol: Chem.Mol) -> float:
    """SA score, 1 (easy) to 10 (hard): fragment contributions minus complexity penalties."""
    counts = _generators()[1].GetSparseCountFingerprint(mol).GetNonzeroElements()
    scores = _fragment_scores()
    n_fragments = sum(counts.values())
    fragment_score = sum(scores.get(bit, -4.0) * n for bit, n in counts.items()) / n_fragments

    n_atoms = mol.GetNumAtoms()
    n_chiral = len(Chem.FindMolChiralCenters(mol, includeUnassigned=True))
    n_spiro = rdMolDescriptors.CalcNumSpiroAtoms(mol)
    n_bridgehead = rdMolDescriptors.CalcNumBridgeheadAtoms(mol)
    has_macrocycle = any(len(ring) > 8 for ring in mol.GetRingInfo().AtomRings())
    complexity = -(n_atoms ** 1.005 - n_atoms) - math.log10(n_chiral + 1) \
        - math.log10(n_spiro + 1) - math.log10(n_bridgehead + 1) \
        - (math.log10(2) if has_macrocycle else 0.0)
    # symmetric molecules (few distinct environments per atom) are easier to make
    symmetry = math.log(n_atoms / len(counts)) * 0.5 if n_atoms > len(counts) else 0.0

    raw = fragment_score + complexity + symmetry
    score = 11.0 - (raw + 4.0 + 1.0) / 6.5 * 9.0  # raw range [-4, 2.5] onto [1, 10]
    if score > 8.0:
        score = 8.0 + math.log(score - 8.0)
    return min(max(score, 1.0), 10.0)


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
    smiles = Chem.MolToSmiles(mol, isomericSmiles=False)
    return bool(smiles) and Chem.MolFromSmiles(smiles) is not None


def murcko_scaffold(mol: Chem.Mol) -> str | None:
    """Canonical SMILES of the Bemis–Murcko scaffold, if it has at least two rings."""
    try:
        scaffold = MurckoScaffold.GetScaffoldForMol(mol)
    except (ValueError, RuntimeError):
        return None
    smiles = Chem.MolToSmiles(scaffold)
    if not smiles or scaffold.GetRingInfo().NumRings() < MIN_SCAFFOLD_RINGS:
        return None
    return smiles


def brics_fragments(mol: Chem.Mol) -> tuple[str, ...]:
    """Canonical SMILES of the BRICS fragments (with their dummy-atom attachment points)."""
    return tuple(Chem.MolToSmiles(rdmolops.FragmentOnBRICSBonds(mol)).split("."))


def parse(smiles: str) -> tuple[Chem.Mol | None, str]:
    """RDKit molecule (sanitised) or None with RDKit's reason."""
    if not smiles:
        return None, "empty line"
    if "\ufffd" in smiles:
        return None, "not UTF-8 text (undecodable bytes)"
    if any(ord(ch) < 32 and ch != "\t" for ch in smiles):
        return None, "contains control characters (binary data, not a SMILES)"
    with rdBase.BlockLogs():
        mol = Chem.MolFromSmiles(smiles)
    if mol is not None:
        if mol.GetNumAtoms() == 0:
            return None, "SMILES has no atoms"
        return mol, ""
    with rdBase.CaptureErrorLog() as capture:  # parse again, only now keeping RDKit's reason
        Chem.MolFromSmiles(smiles)
    lines = [line.split("]", 1)[-1].strip() if line.startswith("[") else line.strip()
             for line in capture.messages.splitlines() if line.strip()]
    return None, "not a valid SMILES: " + ("; ".join(lines[:2]) or "RDKit could not parse it")


def describe(smiles: str) -> MoleculeFeatures | str:
    """Features of one sample, or the reason it is not a valid molecule."""
    mol, reason = parse(smiles)
    if mol is None:
        return reason
    with rdBase.BlockLogs():
        canonical = Chem.MolFromSmiles(Chem.MolToSmiles(mol))
    if canonical is None:
        return "RDKit cannot re-read its own canonical SMILES of this molecule"
    bits = _generators()[0].GetFingerprintAsNumPy(canonical)
    return MoleculeFeatures(
        canonical=Chem.MolToSmiles(canonical),
        fingerprint=np.packbits(bits.astype(bool)).tobytes(),
        fragments=brics_fragments(canonical),
        scaffold=murcko_scaffold(canonical),
        passes_filters=passes_filters(canonical),
        logp=Crippen.MolLogP(canonical),
        sa=synthetic_accessibility(canonical),
        qed=QED.qed(canonical),
        weight=Descriptors.MolWt(canonical),
    )
