"""What every registered instrument and proposer kind must do (scikit-learn's
``check_estimator`` for the lab's extension points).

Parametrised from the registries, so a kind registered tomorrow is checked without a line
added here: a ``kind`` equal to its registered name; an ``Options`` class that is a frozen,
keyword-only dataclass deriving from the extension point's options base; ``from_config`` that
round-trips the defaults, refuses an unknown key naming it (and the closest valid key), refuses
a value of the wrong type for every option, and refuses a missing required option.
"""

from __future__ import annotations

import dataclasses
import typing

import pytest

from kiban.lab.instruments import INSTRUMENTS, Instrument, InstrumentError, InstrumentOptions
from kiban.lab.options import Options
from kiban.lab.proposers import PROPOSERS, Proposer, ProposerError, ProposerOptions

KINDS = [
    ("instrument", INSTRUMENTS, Instrument, InstrumentOptions, InstrumentError, kind)
    for kind in INSTRUMENTS.names()
] + [
    ("proposer", PROPOSERS, Proposer, ProposerOptions, ProposerError, kind)
    for kind in PROPOSERS.names()
]
IDS = [f"{point}-{kind}" for point, *_, kind in KINDS]


def _example(options: type[Options]) -> dict:
    return dict(getattr(options, "example", {}))


@pytest.mark.parametrize("point, registry, base, options_base, error, kind", KINDS, ids=IDS)
def test_a_kind_is_registered_under_its_own_name(point, registry, base, options_base, error, kind):
    cls = registry.get(kind)
    assert issubclass(cls, base) and cls.kind == kind
    assert kind in registry.names()


@pytest.mark.parametrize("point, registry, base, options_base, error, kind", KINDS, ids=IDS)
def test_options_are_a_frozen_keyword_only_dataclass(
    point, registry, base, options_base, error, kind
):
    options = registry.get(kind).Options
    assert issubclass(options, options_base) and dataclasses.is_dataclass(options)
    params = options.__dataclass_params__
    assert params.frozen
    fields = dataclasses.fields(options)
    assert all(f.kw_only for f in fields)
    made = options.from_config(_example(options))
    if fields:
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(made, fields[0].name, getattr(made, fields[0].name))
    hash_safe = [f.name for f in fields if isinstance(getattr(made, f.name), (list, set))]
    assert hash_safe == []  # sequences are tuples: the options stay immutable


@pytest.mark.parametrize("point, registry, base, options_base, error, kind", KINDS, ids=IDS)
def test_from_config_round_trips_the_defaults(point, registry, base, options_base, error, kind):
    options = registry.get(kind).Options
    made = options.from_config(_example(options))
    assert options.from_config(made.to_config()) == made
    defaults = {
        f.name: f.default
        for f in dataclasses.fields(options)
        if f.default is not dataclasses.MISSING
    }
    assert {k: getattr(made, k) for k in defaults} == defaults


@pytest.mark.parametrize("point, registry, base, options_base, error, kind", KINDS, ids=IDS)
def test_an_unknown_key_is_refused_naming_it(point, registry, base, options_base, error, kind):
    options = registry.get(kind).Options
    with pytest.raises(error, match="unknown option 'no_such_option'"):
        options.from_config({**_example(options), "no_such_option": 1})
    fields = [f.name for f in dataclasses.fields(options)]
    if fields:  # a typo of a real key: did you mean it?
        typo = fields[0][:-1] + ("x" if fields[0][-1] != "x" else "y")
        with pytest.raises(error, match=f"did you mean '{fields[0]}'"):
            options.from_config({**_example(options), typo: 1})


@pytest.mark.parametrize("point, registry, base, options_base, error, kind", KINDS, ids=IDS)
def test_a_value_of_the_wrong_type_is_refused_for_every_option(
    point, registry, base, options_base, error, kind
):
    options = registry.get(kind).Options
    hints = typing.get_type_hints(options)
    for field in dataclasses.fields(options):
        # a complex number fits no option type that a TOML table can give
        with pytest.raises(error, match=f"option '{field.name}' must be"):
            options.from_config({**_example(options), field.name: 1 + 2j})
        if hints[field.name] is int:
            with pytest.raises(error, match=f"option '{field.name}' must be an integer"):
                options.from_config({**_example(options), field.name: 1.5})


@pytest.mark.parametrize("point, registry, base, options_base, error, kind", KINDS, ids=IDS)
def test_a_missing_required_option_is_refused(point, registry, base, options_base, error, kind):
    options = registry.get(kind).Options
    for name in _example(options):
        rest = {k: v for k, v in _example(options).items() if k != name}
        with pytest.raises(error, match=f"missing `{name}`"):
            options.from_config(rest)


def test_the_registries_hold_the_built_in_kinds():
    assert INSTRUMENTS.names() == [
        "csv",
        "function",
        "gauche",
        "lookup",
        "olympus",
        "summit",
        "xtb",
    ]
    assert PROPOSERS.names() == ["botorch", "generative", "random", "sobol"]
    with pytest.raises(
        InstrumentError,
        match=r"unknown instrument kind 'olympuss' \(did you "
        r"mean 'olympus'\?\); known kinds: csv, ",
    ):
        INSTRUMENTS.get("olympuss")
    with pytest.raises(
        ProposerError,
        match=r"unknown proposer kind 'sobl' \(did you mean "
        r"'sobol'\?\)",
    ):
        PROPOSERS.get("sobl")
