"""Molecules: SMILES <-> `rdkit.Chem.Mol`, read and canonicalised by `kiban.chem` (RDKit's
isomeric canonical SMILES)."""

from __future__ import annotations

import re
from typing import ClassVar

from rdkit import Chem

from kiban.chem import SmilesError, canonical_smiles, parse_smiles
from kiban.modalities._base import Codec

#: The standard atom-level SMILES regex (Schwaller et al., Molecular Transformer), used by the
#: tokenizer: bracket atoms, two-letter organic atoms, aromatic atoms, bonds, branches, ring bonds.
SMILES_TOKEN_PATTERN = r"\[[^\]]+\]|Br?|Cl?|N|O|S|P|F|I|b|c|n|o|s|p|\(|\)|\.|=|#|-|\+|\\|\/|:|~|@|\?|>|\*|\$|%[0-9]{2}|[0-9]"
_WHITESPACE = re.compile(r"\s")


class MoleculeCodec(Codec):
    """SMILES text <-> RDKit molecule. Canonical text is RDKit's isomeric canonical SMILES.

    Invalid SMILES raise `CodecError` with RDKit's own reason (valence, unclosed ring, kekulization,
    the parse position of a syntax error).
    """

    name: ClassVar[str] = "mol"
    examples: ClassVar[tuple[str, ...]] = ("OCC", "c1ccncc1", "[Na+].[Cl-]", "C[C@H](N)C(=O)O")
    invalid_examples: ClassVar[tuple[str, ...]] = ("C1CC", "", "C C", "c1cccc1", "CC(")

    def parse(self, text: str) -> Chem.Mol:
        smiles = text.strip()
        if not smiles:
            raise self.error(text, "empty SMILES")
        if _WHITESPACE.search(smiles):  # a span is one SMILES; RDKit would read a name here
            raise self.error(text, "SMILES contains whitespace")
        try:
            return parse_smiles(smiles)
        except SmilesError as error:
            raise self.error(text, error.reason) from None

    def to_text(self, obj: Chem.Mol) -> str:
        if not isinstance(obj, Chem.Mol):
            raise TypeError(f"expected rdkit.Chem.Mol, got {type(obj).__name__}")
        return canonical_smiles(obj)


def to_selfies(smiles: str) -> str:
    """SELFIES for a SMILES string (canonicalised first); optional representation."""
    import selfies

    return selfies.encoder(MoleculeCodec().canonical(smiles))


def from_selfies(text: str) -> str:
    """Canonical SMILES for a SELFIES string."""
    import selfies

    return MoleculeCodec().canonical(selfies.decoder(text))
