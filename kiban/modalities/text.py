"""Prose: text is its own canonical form (Unicode NFC)."""

from __future__ import annotations

import unicodedata
from typing import ClassVar

from kiban.modalities._base import Codec


class TextCodec(Codec):
    name: ClassVar[str] = "text"
    examples: ClassVar[tuple[str, ...]] = ("Ethanol boils at", "Cafe\u0301 au lait")

    def parse(self, text: str) -> str:
        if not isinstance(text, str):
            raise self.error(repr(text), "not a string")
        return unicodedata.normalize("NFC", text)

    def to_text(self, obj: str) -> str:
        return unicodedata.normalize("NFC", obj)
