"""The codec registry and the codec base class."""

from __future__ import annotations

from typing import ClassVar

import pytest

from kiban.modalities import (
    Codec,
    CodecError,
    UnknownModalityError,
    _registry,
    codec_names,
    get_codec,
    register,
)
from kiban.modalities.number import NumberCodec
from kiban.modalities.protein import ProteinCodec
from kiban.modalities.text import TextCodec


class UpperCodec(Codec):
    name: ClassVar[str] = "upper"

    def parse(self, text: str) -> str:
        if not text.isalpha():
            raise self.error(text, "letters only")
        return text

    def to_text(self, obj: str) -> str:
        return obj.upper()


class OtherUpperCodec(UpperCodec):
    pass


@pytest.fixture
def registry(monkeypatch):
    """A private copy of the loaded codecs, so registering in a test leaves no trace."""
    monkeypatch.setattr(_registry, "_LOADED", dict(_registry._LOADED))


def test_builtin_names():
    assert codec_names() == ["crystal", "mol", "num", "protein", "text"]


def test_unknown_modality_lists_known_names():
    with pytest.raises(UnknownModalityError) as info:
        get_codec("molecule")
    error = info.value
    assert str(error) == (
        "unknown modality 'molecule'; known modalities: crystal, mol, num, protein, text"
    )
    assert isinstance(error, KeyError)
    assert error.name == "molecule"
    assert error.known == ["crystal", "mol", "num", "protein", "text"]


def test_codecs_are_loaded_once():
    assert isinstance(get_codec("num"), NumberCodec)
    assert get_codec("num") is get_codec("num")
    assert isinstance(get_codec("protein"), ProteinCodec)
    assert isinstance(get_codec("text"), TextCodec)


def test_register_and_refuse_silent_overwrite(registry):
    first = UpperCodec()
    register(first)
    assert get_codec("upper") is first
    assert codec_names() == ["crystal", "mol", "num", "protein", "text", "upper"]
    with pytest.raises(ValueError) as info:
        register(OtherUpperCodec())
    assert str(info.value) == (
        "a codec for modality 'upper' is already registered; pass replace=True to replace it"
    )
    assert get_codec("upper") is first
    second = OtherUpperCodec()
    register(second, replace=True)
    assert get_codec("upper") is second
    with pytest.raises(
        UnknownModalityError, match="known modalities: crystal, mol, num, protein, text, upper$"
    ):
        get_codec("nope")


def test_register_refuses_to_replace_a_builtin_even_before_it_is_loaded(registry):
    _registry._LOADED.pop("protein", None)

    class FakeProtein(UpperCodec):
        name: ClassVar[str] = "protein"

    with pytest.raises(ValueError, match="'protein' is already registered"):
        register(FakeProtein())
    assert isinstance(get_codec("protein"), ProteinCodec)
    fake = FakeProtein()
    register(fake, replace=True)
    assert get_codec("protein") is fake


def test_registration_does_not_outlive_the_fixture():
    assert "upper" not in codec_names()
    assert isinstance(get_codec("protein"), ProteinCodec)


def test_codec_base_behaviour():
    codec = UpperCodec()
    assert codec.canonical("abc") == "ABC"
    assert codec.decode("abc") == "abc"
    codec.validate("abc")
    with pytest.raises(CodecError) as info:
        codec.validate("a1")
    assert (info.value.modality, info.value.text, info.value.reason) == (
        "upper",
        "a1",
        "letters only",
    )
    assert str(info.value) == "invalid upper 'a1': letters only"
    assert isinstance(info.value, ValueError)


def test_codec_error_shortens_long_text():
    error = CodecError("mol", "C" * 100, "too long")
    assert str(error) == f"invalid mol {'C' * 77 + '...'!r}: too long"
    assert error.text == "C" * 100
    assert str(CodecError("mol", "C" * 80, "r")) == f"invalid mol {'C' * 80!r}: r"


def test_codec_is_abstract():
    with pytest.raises(TypeError):
        Codec()  # type: ignore[abstract]


def test_text_codec_is_nfc():
    codec = get_codec("text")
    assert codec.canonical("e\u0301") == "\u00e9"
    assert codec.canonical("Å") == "Å" and codec.canonical("x < 5") == "x < 5"
    with pytest.raises(CodecError, match="not a string"):
        codec.parse(5)  # type: ignore[arg-type]
