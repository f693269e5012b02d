"""The protein codec: one-letter sequences, upper case, whitespace removed."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kiban.modalities import CodecError, get_codec
from kiban.modalities.protein import RESIDUES, ProteinCodec, ProteinSequence

codec = ProteinCodec()


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("MKTAYIAKQR", "MKTAYIAKQR"),
        ("mktayiakqr", "MKTAYIAKQR"),
        ("MkTa", "MKTA"),
        ("MKT AYI\nAKQ\tR\r\n", "MKTAYIAKQR"),
        ("  m k  ", "MK"),
        ("M\u3000K\u00a0T", "MKT"),  # Unicode whitespace is whitespace
        (RESIDUES, RESIDUES),
        (RESIDUES.lower(), RESIDUES),
    ],
)
def test_canonical(text, canonical):
    result = codec.parse(text)
    assert isinstance(result, ProteinSequence) and isinstance(result, str)
    assert result == canonical
    assert codec.canonical(text) == canonical == codec.to_text(text)
    assert codec.canonical(canonical) == canonical


def test_residue_alphabet():
    assert RESIDUES == "ACDEFGHIKLMNPQRSTVWYUOBZJX" and len(set(RESIDUES)) == 26
    assert get_codec("protein").canonical("ac") == "AC"


@pytest.mark.parametrize(
    ("text", "bad", "position"),
    [
        ("MK1T", "1", 2),
        ("MK@T#", "#@", 2),
        ("MK T*", "*", 4),  # the position is in the text as written
        ("m\nk-", "-", 3),
        ("ıK", "ı", 0),  # dotless i: "ı".upper() == "I", but it is not a residue code
        ("Aß", "ß", 1),  # "ß".upper() == "SS"
        ("ＭＫ", "ＫＭ", 0),  # full-width letters
    ],
)
def test_invalid_letters_name_characters_and_position(text, bad, position):
    with pytest.raises(CodecError) as info:
        codec.parse(text)
    assert info.value.modality == "protein" and info.value.text == text
    assert info.value.reason == (
        f"characters {bad!r} are not one-letter residue codes "
        f"(first at position {position}); expected one of {RESIDUES}"
    )


@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
def test_empty(text):
    with pytest.raises(CodecError, match="empty sequence"):
        codec.parse(text)


SPACES = st.sampled_from([" ", "\n", "\t", "  ", "\r\n"])


@given(
    st.lists(
        st.tuples(st.sampled_from(RESIDUES + RESIDUES.lower()), st.none() | SPACES),
        min_size=1,
        max_size=60,
    )
)
@settings(max_examples=200, deadline=None)
def test_round_trip(pieces):
    text = "".join(c + (s or "") for c, s in pieces)
    expected = "".join(c for c, _ in pieces).upper()
    assert codec.canonical(text) == expected
    assert codec.canonical(expected) == expected


@given(
    st.text(RESIDUES, max_size=20),
    st.characters(exclude_categories=("Cs",)),
    st.text(RESIDUES, max_size=20),
)
@settings(max_examples=200, deadline=None)
def test_any_other_character_is_an_error_at_its_position(before, char, after):
    text = before + char + after
    if char.isspace():
        if before + after:
            assert codec.canonical(text) == before + after
        return
    if char.isascii() and char.upper() in RESIDUES:
        assert codec.canonical(text) == before + char.upper() + after
        return
    with pytest.raises(CodecError, match=f"first at position {len(before)}\\)"):
        codec.parse(text)
