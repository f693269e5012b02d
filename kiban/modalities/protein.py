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
    examples: ClassVar[tuple[str, ...]] = ("MKTAYIAK", "mkt ayiak", "ACDEFGHIKLMNPQRSTVWY")
    invalid_examples: ClassVar[tuple[str, ...]] = ("MKT1", "ßeta")

    def parse(self, text: str) -> ProteinSequence:
        # checked before upper-casing: str.upper maps some non-ASCII letters onto residue codes
        # ("ı" -> "I", "ß" -> "SS"), which must be errors, not residues
        bad_at = [
            i
            for i, c in enumerate(text)
            if not c.isspace() and (not c.isascii() or c.upper() not in _RESIDUE_SET)
        ]
        if bad_at:
            bad = "".join(sorted({text[i] for i in bad_at}))
            raise self.error(
                text,
                f"characters {bad!r} are not one-letter residue codes "
                f"(first at position {bad_at[0]}); expected one of {RESIDUES}",
            )
        sequence = "".join(text.split()).upper()
        if not sequence:
            raise self.error(text, "empty sequence")
        return ProteinSequence(sequence)

    def to_text(self, obj: str) -> str:
        return str(self.parse(obj))
