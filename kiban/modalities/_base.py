from __future__ import annotations

import abc
from typing import Any, ClassVar


class CodecError(ValueError):
    """The text of a span is not a valid object of its modality; ``reason`` says why."""

    def __init__(self, modality: str, text: str, reason: str):
        self.modality = modality
        self.text = text
        self.reason = reason
        shown = text if len(text) <= 80 else text[:77] + "..."
        super().__init__(f"invalid {modality} {shown!r}: {reason}")


class UnknownModalityError(KeyError):
    def __init__(self, name: str, known: list[str]):
        self.name = name
        self.known = known
        super().__init__(f"unknown modality {name!r}; known modalities: {', '.join(known)}")

    def __str__(self) -> str:  # KeyError would quote the whole message
        return self.args[0]


class Codec(abc.ABC):
    """A modality codec: text of a span <-> the modality's object.

    Subclasses implement `parse` (text -> object, raising `CodecError` with the reason) and
    `to_text` (object -> canonical text). ``to_text(parse(t))`` is the canonical form of ``t``,
    and canonical text is a fixed point: ``canonical(canonical(t)) == canonical(t)``.
    """

    name: ClassVar[str]
    #: spellings the codec accepts, and texts it must refuse: every registered codec declares
    #: some, and tests/modalities/test_conformance.py checks the contract on them
    examples: ClassVar[tuple[str, ...]] = ()
    invalid_examples: ClassVar[tuple[str, ...]] = ()

    @abc.abstractmethod
    def parse(self, text: str) -> Any:
        """Parse span text (any accepted spelling) into the modality's object."""

    @abc.abstractmethod
    def to_text(self, obj: Any) -> str:
        """Write an object as canonical span text."""

    def canonical(self, text: str) -> str:
        return self.to_text(self.parse(text))

    def validate(self, text: str) -> None:
        """Raise `CodecError` if ``text`` is not a valid object of this modality."""
        self.parse(text)

    def decode(self, text: str) -> Any:
        """The object that canonical (or any accepted) text stands for."""
        return self.parse(text)

    def error(self, text: str, reason: str) -> CodecError:
        return CodecError(self.name, text, reason)
