"""The number codec: exact at the written precision, uncertainty, unit."""

from __future__ import annotations

import math
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kiban.modalities import CodecError, get_codec
from kiban.modalities.number import NumberCodec, Quantity, format_number

codec = NumberCodec()


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        # every written digit is kept
        ("1.310", "1.310"),
        ("1.31", "1.31"),
        ("0.000", "0.000"),
        ("100", "100"),
        ("-2.50e-3", "-2.50e-3"),
        # the normalisations of the module docstring
        ("+007.50", "7.50"),  # no leading + or leading zeros
        ("+1.31", "1.31"),
        ("00", "0"),
        ("1E+03", "1e3"),  # lower-case e, no + or leading zeros in the exponent
        ("1e+005", "1e5"),
        ("1E-05", "1e-5"),
        ("1e0", "1"),  # no e0
        ("2.5e-0", "2.5"),
        ("-0", "0"),  # no sign on zero
        ("-0.00", "0.00"),
        ("-0e5", "0e5"),
        (".5", "0.5"),
        ("-.5", "-0.5"),
        ("1.", "1"),
        # uncertainty
        ("1.31±0.02", "1.31±0.02"),
        ("1.31 ± 0.02", "1.31±0.02"),
        ("1.31+/-0.02", "1.31±0.02"),
        ("1.31 +/- 0.020", "1.31±0.020"),
        ("1.31±+0.02", "1.31±0.02"),
        ("1.31±2E-2", "1.31±2e-2"),
        ("1.31(2)", "1.31±0.02"),
        ("1.310(25)", "1.310±0.025"),
        ("1.31(02)", "1.31±0.02"),
        ("-0.5(10)", "-0.5±1.0"),
        ("12(3)", "12±3"),
        ("0.0(1)", "0.0±0.1"),
        ("1.31e3(2)", "1.31e3±2e1"),
        ("6.02214076e23(1)", "6.02214076e23±1e15"),
        ("1.5e-3(2)", "1.5e-3±2e-4"),
        # units
        ("298.15 K", "298.15 K"),
        ("1.31±0.02 eV", "1.31±0.02 eV"),
        ("1.31(2) eV", "1.31±0.02 eV"),
        ("5 kJ/mol", "5 kJ/mol"),
        ("5 eV   per  atom", "5 eV per atom"),
        ("2.0 Å", "2.0 Å"),
        ("-40 °C", "-40 °C"),
    ],
)
def test_canonical(text, canonical):
    assert codec.canonical(text) == canonical
    assert codec.canonical(canonical) == canonical


def test_quantity_fields():
    q = codec.parse("+1.310(25) eV")
    assert q == Quantity(Decimal("1.310"), Decimal("0.025"), "eV", "1.310±0.025 eV")
    assert str(q.value) == "1.310" and str(q.uncertainty) == "0.025"
    assert float(q) == 1.31
    plain = codec.parse("42")
    assert (plain.value, plain.uncertainty, plain.unit, plain.text) == (
        Decimal(42),
        None,
        None,
        "42",
    )
    assert get_codec("num").parse("42") == plain


def test_precision_is_kept_where_decimal_equality_ignores_it():
    a, b = codec.parse("1.31"), codec.parse("1.310")
    assert a.value == b.value and a != b and (a.text, b.text) == ("1.31", "1.310")


def test_long_parenthesised_uncertainty_is_exact():
    digits = "9" * 35
    q = codec.parse(f"1.{'1' * 40}({digits})")
    assert q.uncertainty == Decimal(f"0.{'0' * 5}{digits}")
    assert q.text == f"1.{'1' * 40}±0.{'0' * 5}{digits}"


def test_huge_exponent_with_parenthesised_uncertainty():
    assert codec.canonical("1e5000(2)") == "1e5000±2e5000"
    assert codec.canonical("1.5e-99999(3)") == "1.5e-99999±3e-100000"


def test_to_text_of_quantities_without_text():
    assert codec.to_text(Quantity(Decimal("1.50"))) == "1.50"
    assert codec.to_text(Quantity(Decimal("1E+3"), Decimal("0.2"), "eV")) == "1e3±0.2 eV"
    assert codec.to_text(Quantity(Decimal("-0.0"))) == "0.0"
    assert codec.to_text(Quantity(Decimal("1E-7"))) == "1e-7"
    assert codec.to_text(codec.parse("1.310(25) K")) == "1.310±0.025 K"
    with pytest.raises(TypeError, match="expected Quantity, got str"):
        codec.to_text("1.5")


@pytest.mark.parametrize(
    ("value", "kwargs", "text"),
    [
        (1234567.0, {}, "1.235e6"),
        (0.5, {}, "0.5"),
        (1 / 3, {"significant": 3}, "0.333"),
        (-0.0, {}, "0"),
        (0.0001234, {}, "0.0001234"),
        (1.5e-7, {}, "1.5e-7"),
        (2.5, {"unit": "eV", "uncertainty": 0.123}, "2.5±0.12 eV"),
        (98.7654, {"significant": 6, "uncertainty": 0.0123456}, "98.7654±0.01235"),
        (300, {"unit": "K"}, "300 K"),
    ],
)
def test_from_float(value, kwargs, text):
    q = Quantity.from_float(value, **kwargs)
    assert q.text == text
    assert q == codec.parse(text)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_from_float_rejects_non_finite(value):
    with pytest.raises(ValueError, match="a quantity must be finite"):
        Quantity.from_float(value)


def test_from_float_rejects_negative_uncertainty():
    with pytest.raises(CodecError, match="uncertainty must not be negative"):
        Quantity.from_float(1.0, uncertainty=-0.1)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "expected VALUE[±UNCERTAINTY][ UNIT], e.g. '1.31', '-2.5e-3', '1.31±0.02 eV'"),
        ("abc", "expected VALUE[±UNCERTAINTY][ UNIT]"),
        ("1,5", "expected VALUE"),
        ("--1", "expected VALUE"),
        ("1e", "expected VALUE"),
        ("1eV", "expected VALUE"),
        ("1.2.3", "expected VALUE"),
        ("1(2", "expected VALUE"),
        ("1.31±", "expected VALUE"),
        ("1.31±-0.02", "uncertainty must not be negative"),
        ("1 <b", "unit '<b' must not contain '<' or '>'"),
        ("1 m>s", "must not contain"),
    ],
)
def test_invalid_numbers(text, reason):
    with pytest.raises(CodecError) as info:
        codec.parse(text)
    assert info.value.modality == "num" and reason in info.value.reason
    assert str(info.value).startswith(f"invalid num {text!r}: ")


def test_surrounding_whitespace_is_ignored():
    assert codec.canonical(" 1.50 ") == "1.50"
    assert codec.canonical("\t2 eV\n") == "2 eV"


def test_format_number_rejects_non_numbers():
    with pytest.raises(ValueError, match="not a number: 'x'"):
        format_number("x")


# --- properties -------------------------------------------------------------------------------
def _number(signs: str) -> st.SearchStrategy[str]:
    digits = st.text("0123456789", max_size=12)
    exponent = st.none() | st.tuples(
        st.sampled_from("eE"),
        st.sampled_from(["", "+", "-"]),
        st.text("0123456789", min_size=1, max_size=4),
    )
    return (
        st.tuples(st.sampled_from(signs), digits, st.none() | digits, exponent)
        .filter(lambda p: p[1] or p[2])
        .map(
            lambda p: (
                p[0] + p[1] + ("" if p[2] is None else "." + p[2]) + ("".join(p[3]) if p[3] else "")
            )
        )
    )


UNITS = ["eV", "K", "kJ/mol", "g cm^-3", "Å", "°C", "mol L-1", "%"]


def _same_decimal(canonical: str, original: str) -> None:
    """Equal value and the same written precision (digits and exponent, sign of zero aside)."""
    a, b = Decimal(canonical), Decimal(original)
    assert a == b
    assert a.as_tuple()[1:] == b.as_tuple()[1:]


@given(
    value=_number(["", "+", "-"]),
    uncertainty=st.none()
    | st.tuples(st.sampled_from(["±", " ± ", "+/-", " +/- "]), _number(["", "+"])),
    unit=st.none() | st.sampled_from(UNITS),
)
@settings(max_examples=300, deadline=None)
def test_canonical_is_exact_and_a_fixed_point(value, uncertainty, unit):
    text = value + ("".join(uncertainty) if uncertainty else "") + (f" {unit}" if unit else "")
    q = codec.parse(text)
    assert codec.canonical(q.text) == q.text
    assert codec.parse(q.text) == q
    _same_decimal(str(q.value), value)
    _same_decimal(q.text.split("±")[0].split(" ")[0], value)
    if uncertainty:
        _same_decimal(str(q.uncertainty), uncertainty[1])
    else:
        assert q.uncertainty is None
    assert q.unit == unit


@given(value=_number(["", "-"]), digits=st.text("0123456789", min_size=1, max_size=30))
@settings(max_examples=200, deadline=None)
def test_parenthesised_uncertainty_is_exact(value, digits):
    q = codec.parse(f"{value}({digits})")
    mantissa, _, exponent = value.lower().partition("e")
    places = len(mantissa.partition(".")[2])
    expected = Decimal((0, tuple(int(d) for d in digits), int(exponent or 0) - places))
    assert q.uncertainty == expected
    _same_decimal(str(q.value), value)
    assert codec.canonical(q.text) == q.text
