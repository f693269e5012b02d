"""Numbers: a value with optional uncertainty and unit, exact at the precision it was written.

Span text: ``VALUE[±UNCERTAINTY][ UNIT]``, e.g. ``1.31``, ``-2.50e-3``, ``1.31±0.02 eV``,
``298.15 K``. Accepted spellings: ``+/-`` for ``±``, parenthesised uncertainty (``1.31(2)`` =
``1.31±0.02``), ``E`` for ``e``, a leading ``+``. Canonical text keeps every written digit
(``1.310`` stays ``1.310``: trailing zeros carry precision) and normalises the rest: no leading
``+`` or leading zeros, lower-case ``e``, no ``+`` or leading zeros in the exponent, no ``e0``,
no sign on zero. Values are `decimal.Decimal`, so nothing is lost to binary floating point.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import ClassVar

from kiban.modalities._base import Codec

_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_QUANTITY = re.compile(
    rf"^(?P<value>{_NUMBER})"
    rf"(?: ?(?:±|\+/-) ?(?P<unc>{_NUMBER})|\((?P<paren>\d+)\))?"
    r"(?: (?P<unit>\S(?:.*\S)?))?$"
)
_PARTS = re.compile(r"^(?P<sign>[-+]?)(?P<int>\d*)(?:\.(?P<frac>\d*))?(?:[eE](?P<exp>[-+]?\d+))?$")


def format_number(text: str) -> str:
    """Canonical spelling of one number, keeping every significant written digit."""
    parts = _PARTS.match(text)
    if parts is None:
        raise ValueError(f"not a number: {text!r}")
    integer = parts["int"].lstrip("0") or "0"
    fraction = parts["frac"]
    exponent = int(parts["exp"]) if parts["exp"] else 0
    out = integer
    if fraction:  # "1." -> "1", ".5" -> "0.5"
        out += "." + fraction
    if exponent:
        out += f"e{exponent}"
    is_zero = not any(c in "123456789" for c in integer + (fraction or ""))
    if parts["sign"] == "-" and not is_zero:
        out = "-" + out
    return out


@dataclass(frozen=True, slots=True)
class Quantity:
    """A measured or computed number: value, optional uncertainty (same unit), optional unit."""

    value: Decimal
    uncertainty: Decimal | None = None
    unit: str | None = None
    #: The canonical spelling; keeps the written precision that `Decimal` equality ignores.
    text: str = ""

    def __float__(self) -> float:
        return float(self.value)

    @classmethod
    def from_float(
        cls,
        value: float,
        *,
        significant: int = 4,
        unit: str | None = None,
        uncertainty: float | None = None,
    ) -> Quantity:
        """A quantity rounded to ``significant`` digits (for computed properties)."""
        if not math.isfinite(value):
            raise ValueError(f"a quantity must be finite, got {value!r}")
        text = f"{value:.{significant}g}"
        if uncertainty is not None:
            text += f"±{uncertainty:.{max(1, significant - 2)}g}"
        if unit:
            text += f" {unit}"
        return NumberCodec().parse(text)


class NumberCodec(Codec):
    name: ClassVar[str] = "num"
    examples: ClassVar[tuple[str, ...]] = ("78.37 °C", "-5.0 kcal/mol", "1e3", "2.5 ± 0.1 eV")
    invalid_examples: ClassVar[tuple[str, ...]] = ("abc", "", "1..2")

    def parse(self, text: str) -> Quantity:
        match = _QUANTITY.match(text.strip())
        if match is None:
            raise self.error(
                text,
                "expected VALUE[±UNCERTAINTY][ UNIT], e.g. '1.31', '-2.5e-3', '1.31±0.02 eV'",
            )
        value_text = format_number(match["value"])
        uncertainty_text = None
        if match["unc"] is not None:
            uncertainty_text = format_number(match["unc"].lstrip("+"))
            if uncertainty_text.startswith("-"):
                raise self.error(text, "uncertainty must not be negative")
        elif match["paren"] is not None:
            uncertainty_text = _parenthesised(match["value"], match["paren"])
        unit = " ".join(match["unit"].split()) if match["unit"] else None
        if unit is not None and ("<" in unit or ">" in unit):
            raise self.error(text, f"unit {unit!r} must not contain '<' or '>'")
        canonical = value_text
        if uncertainty_text is not None:
            canonical += "±" + uncertainty_text
        if unit:
            canonical += " " + unit
        return Quantity(
            Decimal(value_text),
            Decimal(uncertainty_text) if uncertainty_text else None,
            unit,
            canonical,
        )

    def to_text(self, obj: Quantity) -> str:
        if not isinstance(obj, Quantity):
            raise TypeError(f"expected Quantity, got {type(obj).__name__}")
        return obj.text or self.parse(_plain(obj)).text


def _plain(q: Quantity) -> str:
    text = format_number(str(q.value).replace("E", "e"))
    if q.uncertainty is not None:
        text += "±" + format_number(str(q.uncertainty).replace("E", "e"))
    return text + (f" {q.unit}" if q.unit else "")


def _parenthesised(value: str, digits: str) -> str:
    """``1.31(2)`` -> ``0.02``: the digits apply to the last written decimal places."""
    parts = _PARTS.match(value)
    places = len(parts["frac"] or "")
    if parts["exp"]:  # 6.02214076e23(1) -> 1e15: keep the exponent form (exact, never huge)
        return format_number(f"{digits}e{int(parts['exp']) - places}")
    # exact (Decimal arithmetic would round past 28 digits): 1.31(2) -> 0.02, 12(3) -> 3
    scaled = Decimal((0, tuple(int(d) for d in digits), -places))
    return format_number(f"{scaled:f}")
