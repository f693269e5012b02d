"""Molecules: SMILES <-> `rdkit.Chem.Mol`, canonicalised by RDKit (isomeric canonical SMILES)."""

from __future__ import annotations

import re
from typing import ClassVar

from rdkit import Chem, rdBase

from kiban.modalities._base import Codec

#: The standard atom-level SMILES regex (Schwaller et al., Molecular Transformer), used by the
#: tokenizer: bracket atoms, two-letter organic atoms, aromatic atoms, bonds, branches, ring bonds.
SMILES_TOKEN_PATTERN = (
    r"\[[^\]]+\]|Br?|Cl?|N|O|S|P|F|I|b|c|n|o|s|p|\(|\)|\.|=|#|-|\+|\\|\/|:|~|@|\?|>|\*|\$|%[0-9]{2}|[0-9]"
)
_TIMESTAMP = re.compile(r"^\[\d\d:\d\d:\d\d\] ")
_WHITESPACE = re.compile(r"\s")


def _rdkit_reason(log: str, fallback: str) -> str:
    lines = [_TIMESTAMP.sub("", line).strip() for line in log.splitlines() if line.strip()]
    if not lines:
        return fallback
    # RDKit writes: "...syntax error while parsing: X", "...check for mistakes around position N:"
    reason = lines[0].replace("SMILES Parse Error: ", "")
    for line in lines[1:]:
        if "position" in line:
            reason += "; " + line.replace("SMILES Parse Error: ", "").rstrip(":")
            break
    return reason


class MoleculeCodec(Codec):
    """SMILES text <-> RDKit molecule. Canonical text is RDKit's isomeric canonical SMILES.

    Invalid SMILES raise `CodecError` with RDKit's own reason (valence, unclosed ring, kekulization,
    the parse position of a syntax error).
    """

    name: ClassVar[str] = "mol"

    def parse(self, text: str) -> Chem.Mol:
        smiles = text.strip()
        if not smiles:
            raise self.error(text, "empty SMILES")
        if _WHITESPACE.search(smiles):
            raise self.error(text, "SMILES contains whitespace")
        with rdBase.BlockLogs():
            mol = Chem.MolFromSmiles(smiles)
        if mol is None:  # parse again, only now capturing RDKit's reason (capturing costs ~12 %)
            with rdBase.CaptureErrorLog() as capture:
                Chem.MolFromSmiles(smiles)
            raise self.error(text, _rdkit_reason(capture.messages, "RDKit could not parse it"))
        if mol.GetNumAtoms() == 0:
            raise self.error(text, "SMILES has no atoms")
        return mol

    def to_text(self, obj: Chem.Mol) -> str:
        if not isinstance(obj, Chem.Mol):
            raise TypeError(f"expected rdkit.Chem.Mol, got {type(obj).__name__}")
        return Chem.MolToSmiles(obj)


def to_selfies(smiles: str) -> str:
    """SELFIES for a SMILES string (canonicalised first); optional representation."""
    import selfies

    return selfies.encoder(MoleculeCodec().canonical(smiles))


def from_selfies(text: str) -> str:
    """Canonical SMILES for a SELFIES string."""
    import selfies

    return MoleculeCodec().canonical(selfies.decoder(text))
