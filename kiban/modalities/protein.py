"""Proteins: one-letter amino-acid sequences."""

from __future__ import annotations

from typing import ClassVar

from kiban.modalities._base import Codec

#: IUPAC one-letter codes: the 20 standard residues, selenocysteine (U), pyrrolysine (O),
#: and the ambiguity codes B (D/N), Z (E/Q), J (I/L), X (any).
RESIDUES = "ACDEFGHIKLMNPQRSTVWYUOBZJX"
_RESIDUE_SET = frozenset(RESIDUES)


class ProteinSequence(str):
    """A validated one-letter protein sequence (a `str`, upper case, no whitespace)."""


class ProteinCodec(Codec):
    """Canonical text: upper-case one-letter codes with whitespace removed."""

    name: ClassVar[str] = "protein"

    def parse(self, text: str) -> ProteinSequence:
        sequence = "".join(text.split()).upper()
        if not sequence:
            raise self.error(text, "empty sequence")
        bad = sorted({c for c in sequence if c not in _RESIDUE_SET})
        if bad:
            position = next(i for i, c in enumerate(sequence) if c not in _RESIDUE_SET)
            raise self.error(text, f"characters {''.join(bad)!r} are not one-letter residue codes "
                                   f"(first at position {position}); expected one of {RESIDUES}")
        return ProteinSequence(sequence)

    def to_text(self, obj: str) -> str:
        return str(self.parse(obj))
