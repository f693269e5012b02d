"""Typed options: reading a config table into a frozen keyword-only dataclass."""

from __future__ import annotations

import typing
from collections.abc import Mapping
from dataclasses import dataclass, field

import pytest

from kiban.lab.options import Options, OptionsError, check_type, require


@dataclass(frozen=True, kw_only=True)
class Oven(Options):
    owner = "instrument"
    path: str
    temperature: float = 80.0
    steps: int = 3
    mode: typing.Literal["fast", "slow"] = "fast"
    labels: tuple[str, ...] = ()
    columns: Mapping[str, str] = field(default_factory=dict)
    note: str | None = None

    def __post_init__(self) -> None:
        require(self.steps >= 1, f"steps must be an integer >= 1, got {self.steps!r}")


def test_from_config_reads_converts_and_round_trips():
    oven = Oven.from_config({"path": "a.csv", "temperature": 90, "labels": ["x", "y"]})
    assert oven == Oven(path="a.csv", temperature=90.0, labels=("x", "y"))
    assert isinstance(oven.temperature, float)
    assert oven.to_config() == {
        "path": "a.csv",
        "temperature": 90.0,
        "steps": 3,
        "mode": "fast",
        "labels": ["x", "y"],
        "columns": {},
        "note": None,
    }
    assert Oven.from_config(oven.to_config()) == oven


def test_from_config_errors_say_where_what_and_what_was_given():
    with pytest.raises(
        OptionsError,
        match=r"^oven: unknown option 'temprature' \(did you mean "
        r"'temperature'\?\); expected one of \['columns', ",
    ):
        Oven.from_config({"path": "a", "temprature": 1.0}, where="oven")
    with pytest.raises(OptionsError, match=r"^oven: missing `path`$"):
        Oven.from_config({}, where="oven")
    with pytest.raises(
        OptionsError,
        match=r"^oven: option 'steps' must be an integer, got str "
        r"'3'$",
    ):
        Oven.from_config({"path": "a", "steps": "3"}, where="oven")
    with pytest.raises(OptionsError, match=r"^oven: steps must be an integer >= 1, got 0$"):
        Oven.from_config({"path": "a", "steps": 0}, where="oven")
    with pytest.raises(
        OptionsError,
        match=r"^oven: option 'columns' must be a table of a "
        r"string, got dict \{'x': 1\}$",
    ):
        Oven.from_config({"path": "a", "columns": {"x": 1}}, where="oven")
    with pytest.raises(
        OptionsError,
        match=r"^instrument: expected a table of options, got "
        r"list \[\]$",
    ):
        Oven.from_config([])


def test_check_type_converts_what_toml_gives():
    assert check_type(2, float, "x") == 2.0 and isinstance(check_type(2, float, "x"), float)
    assert check_type(["a", "b"], tuple[str, ...], "x") == ("a", "b")
    assert check_type(None, float | None, "x") is None
    with pytest.raises(OptionsError, match=r"^x must be an integer, got bool True$"):
        check_type(True, int, "x")
    with pytest.raises(OptionsError, match=r"^x must be a finite number, got float inf$"):
        check_type(float("inf"), float, "x")
    with pytest.raises(OptionsError, match=r"^x must be one of 'a', 'b', got str 'c'$"):
        check_type("c", typing.Literal["a", "b"], "x")
