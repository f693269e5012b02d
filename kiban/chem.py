"""Chemistry every package shares: reading SMILES, canonical SMILES, Morgan fingerprints, Murcko
scaffolds and the descriptor table (QED, logP, MW, TPSA, SA score), each defined once.

Reading SMILES has one acceptance rule and two ways to fail:

* `parse_smiles` / `canonical_smiles` raise `SmilesError` (a `CodecError`, so a `ValueError`:
  exit 2 at the CLI) carrying RDKit's own reason. Use them wherever a bad SMILES is a mistake
  in someone's input: a span, a config, a target molecule, a file the user handed over.
* `mol_or_none` / `canonical_or_none` return None and log nothing. Use them only in bulk code
  where an invalid molecule is a counted outcome (a sample's validity, an oracle call that
  costs nothing, a reward of 0), never to hide an input error.

The rule is RDKit's reader (``Chem.MolFromSmiles``, sanitised) plus: empty text and molecules
without atoms are invalid. Whitespace is RDKit's business (``"CCO ethanol"`` is ethanol named
"ethanol", as in a ``.smi`` line); the span codec adds its own rule that a span holds no
whitespace. Canonical SMILES is RDKit's isomeric canonical SMILES (``Chem.MolToSmiles``).

>>> canonical_smiles("OCC")
'CCO'
>>> canonical_or_none("C1CC") is None
True
"""

from __future__ import annotations

import gzip
import math
import pickle
import re
from collections.abc import Callable, Mapping, Sequence
from functools import cache, lru_cache
from pathlib import Path
from types import MappingProxyType

import numpy as np
from rdkit import Chem, rdBase
from rdkit.Chem import rdFingerprintGenerator

from kiban.modalities._base import CodecError

#: Morgan fingerprint defaults (ECFP4-like): every call site uses radius 2; MOSES folds to 1024
#: bits, everything else to 2048.
MORGAN_RADIUS = 2
MORGAN_BITS = 2048

_TIMESTAMP = re.compile(r"^\[\d\d:\d\d:\d\d\] ")


class SmilesError(CodecError):
    """Text that is not a valid SMILES; ``reason`` is RDKit's (valence, unclosed ring, the parse
    position of a syntax error, ...)."""

    def __init__(self, text: str, reason: str):
        super().__init__("mol", text, reason)


# --- SMILES -----------------------------------------------------------------------------------
def rdkit_reason(log: str, fallback: str) -> str:
    """The reason in RDKit's error log: its first line, plus the parse position of a syntax
    error ("...syntax error while parsing: X", "...check for mistakes around position N:")."""
    lines = [_TIMESTAMP.sub("", line).strip() for line in log.splitlines() if line.strip()]
    if not lines:
        return fallback
    reason = lines[0].replace("SMILES Parse Error: ", "")
    for line in lines[1:]:
        if "position" in line:
            reason += "; " + line.replace("SMILES Parse Error: ", "").rstrip(":")
            break
    return reason


def parse_smiles(text: str) -> Chem.Mol:
    """The sanitised RDKit molecule of ``text``; raises `SmilesError` with RDKit's reason."""
    if not isinstance(text, str):
        raise TypeError(f"parse_smiles expects a SMILES str, got {type(text).__name__}")
    if not text:
        raise SmilesError(text, "empty SMILES")
    with rdBase.BlockLogs():
        mol = Chem.MolFromSmiles(text)
    if mol is None:  # parse again, only now capturing RDKit's reason (capturing costs ~12 %)
        with rdBase.CaptureErrorLog() as capture:
            Chem.MolFromSmiles(text)
        raise SmilesError(text, rdkit_reason(capture.messages, "RDKit could not parse it"))
    if mol.GetNumAtoms() == 0:
        raise SmilesError(text, "SMILES has no atoms")
    return mol


def mol_or_none(text: str) -> Chem.Mol | None:
    """`parse_smiles` for bulk code: None (nothing logged) where `parse_smiles` would raise."""
    if not text:
        return None
    with rdBase.BlockLogs():
        mol = Chem.MolFromSmiles(text)
    return mol if mol is not None and mol.GetNumAtoms() > 0 else None


def canonical_smiles(molecule: str | Chem.Mol) -> str:
    """RDKit's isomeric canonical SMILES of a SMILES string (raising `SmilesError` when it is
    not one) or of a molecule."""
    if isinstance(molecule, Chem.Mol):
        return Chem.MolToSmiles(molecule)
    return Chem.MolToSmiles(parse_smiles(molecule))


def canonical_or_none(text: str) -> str | None:
    """`canonical_smiles` for bulk code: None where it would raise."""
    mol = mol_or_none(text)
    return None if mol is None else Chem.MolToSmiles(mol)


# --- fingerprints -----------------------------------------------------------------------------
@cache
def _morgan_generator(radius: int, n_bits: int):
    return rdFingerprintGenerator.GetMorganGenerator(radius=radius, fpSize=n_bits)


def morgan_fingerprint(mol: Chem.Mol, *, radius: int = MORGAN_RADIUS, n_bits: int = MORGAN_BITS):
    """RDKit's Morgan bit vector (``ExplicitBitVect``, for ``DataStructs`` similarities)."""
    return _morgan_generator(radius, n_bits).GetFingerprint(mol)


def morgan_fingerprints(
    molecules: Sequence[Chem.Mol],
    *,
    radius: int = MORGAN_RADIUS,
    n_bits: int = MORGAN_BITS,
    dtype: type = np.uint8,
) -> np.ndarray:
    """(len(molecules), n_bits) array of 0/1 Morgan bits (RDKit's MorganGenerator)."""
    generator = _morgan_generator(radius, n_bits)
    out = np.zeros((len(molecules), n_bits), dtype=dtype)
    for row, mol in enumerate(molecules):
        out[row] = generator.GetFingerprintAsNumPy(mol)
    return out


# --- scaffolds --------------------------------------------------------------------------------
def murcko_scaffold(mol: Chem.Mol, *, isomeric: bool = False, min_rings: int = 0) -> str | None:
    """Canonical SMILES of the Bemis–Murcko scaffold (RDKit's ``GetScaffoldForMol``): ``''``
    for an acyclic molecule, None when the scaffold has fewer than ``min_rings`` rings.

    ``isomeric=False`` is RDKit's ``MurckoScaffoldSmiles`` (chemprop, REINVENT: no chirality,
    isotopes or double-bond stereo); MOSES writes the isomeric SMILES and counts only scaffolds
    of two or more rings (``isomeric=True, min_rings=2``). RDKit's ``ValueError`` or
    ``RuntimeError`` for a molecule it cannot reduce propagates.
    """
    from rdkit.Chem.Scaffolds import MurckoScaffold

    with rdBase.BlockLogs():
        scaffold = MurckoScaffold.GetScaffoldForMol(mol)
        smiles = Chem.MolToSmiles(scaffold, isomericSmiles=isomeric)
    # counted after writing, as molsets does: writing the SMILES perceives the rings
    if min_rings and scaffold.GetRingInfo().NumRings() < min_rings:
        return None
    return smiles


# --- descriptors ------------------------------------------------------------------------------
def qed(mol: Chem.Mol) -> float:
    """Quantitative estimate of drug-likeness (Bickerton 2012), RDKit's ``QED.qed``."""
    from rdkit.Chem import QED

    return QED.qed(mol)


def logp(mol: Chem.Mol) -> float:
    """Wildman–Crippen logP, RDKit's ``Crippen.MolLogP``."""
    from rdkit.Chem import Crippen

    return Crippen.MolLogP(mol)


def molecular_weight(mol: Chem.Mol) -> float:
    """Average molecular weight (g/mol), RDKit's ``Descriptors.MolWt``."""
    from rdkit.Chem import Descriptors

    return Descriptors.MolWt(mol)


def tpsa(mol: Chem.Mol) -> float:
    """Topological polar surface area (Å²), RDKit's ``rdMolDescriptors.CalcTPSA``."""
    from rdkit.Chem import rdMolDescriptors

    return rdMolDescriptors.CalcTPSA(mol)


@lru_cache(maxsize=1)
def _fragment_scores() -> dict[int, float]:
    """SA fragment contributions, RDKit Contrib's ``fpscores.pkl.gz`` (the same table molsets
    ships)."""
    from rdkit.Chem import RDConfig

    path = Path(RDConfig.RDContribDir) / "SA_Score" / "fpscores.pkl.gz"
    with gzip.open(path) as handle:
        table = pickle.load(handle)  # RDKit's own file, shipped with RDKit
    return {int(bit): float(row[0]) for row in table for bit in row[1:]}


def sa_score(mol: Chem.Mol) -> float:
    """Synthetic accessibility, 1 (easy) to 10 (hard) (Ertl & Schuffenhauer 2009).

    RDKit Contrib's ``sascorer.calculateScore`` operation for operation, so the values are
    bitwise equal to it and to molsets' copy: fragment contributions minus complexity
    penalties, rescaled onto [1, 10] with the 10-end smoothed.
    """
    from rdkit.Chem import rdMolDescriptors

    n_atoms = mol.GetNumAtoms()
    if not n_atoms:
        raise ValueError("the SA score of a molecule without atoms is undefined")
    counts = _morgan_generator(2, 2048).GetSparseCountFingerprint(mol).GetNonzeroElements()
    scores = _fragment_scores()
    fragment_score = 0.0
    n_fragments = 0
    for bit, count in counts.items():
        n_fragments += count
        fragment_score += scores.get(bit, -4) * count
    fragment_score /= n_fragments

    n_chiral = len(Chem.FindMolChiralCenters(mol, includeUnassigned=True))
    n_spiro = rdMolDescriptors.CalcNumSpiroAtoms(mol)
    n_bridgehead = rdMolDescriptors.CalcNumBridgeheadAtoms(mol)
    macrocycle = math.log10(2) if any(len(r) > 8 for r in mol.GetRingInfo().AtomRings()) else 0.0
    complexity = (
        0.0
        - (n_atoms**1.005 - n_atoms)
        - math.log10(n_chiral + 1)
        - math.log10(n_spiro + 1)
        - math.log10(n_bridgehead + 1)
        - macrocycle
    )
    # symmetric molecules (few distinct environments per atom) are easier to make
    symmetry = math.log(float(n_atoms) / len(counts)) * 0.5 if n_atoms > len(counts) else 0.0

    raw = fragment_score + complexity + symmetry
    score = 11.0 - (raw - -4.0 + 1) / (2.5 - -4.0) * 9.0  # raw range [-4, 2.5] onto [1, 10]
    if score > 8.0:
        score = 8.0 + math.log(score + 1.0 - 9.0)  # as Contrib writes it
    return min(max(score, 1.0), 10.0)


#: The descriptors by the names corpus sources, reports and conditioning prompts use.
DESCRIPTORS: Mapping[str, Callable[[Chem.Mol], float]] = MappingProxyType(
    {"qed": qed, "logp": logp, "mw": molecular_weight, "tpsa": tpsa, "sa": sa_score}
)


__all__ = [
    "DESCRIPTORS",
    "MORGAN_BITS",
    "MORGAN_RADIUS",
    "SmilesError",
    "canonical_or_none",
    "canonical_smiles",
    "logp",
    "mol_or_none",
    "molecular_weight",
    "morgan_fingerprint",
    "morgan_fingerprints",
    "murcko_scaffold",
    "parse_smiles",
    "qed",
    "rdkit_reason",
    "sa_score",
    "tpsa",
]
