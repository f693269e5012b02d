"""A campaign's search space, objectives and constraints, read from TOML.

Parameters are continuous (optionally log-scaled), integer, categorical, molecules (a candidate
list, a kiban model to sample, or both) and compositions (fractions of named components that sum
to a total). A proposal's parameters are a flat ``dict``: one key per parameter, and one key per
component for a composition (``params["Cu"] = 0.25``), so proposals map one-to-one onto CSV rows.

The numeric parameters map onto the unit cube for the models (:meth:`Space.to_unit` /
:meth:`Space.from_unit`): continuous and integer to [0, 1] (log-scaled where asked), categorical
one-hot, composition fractions divided by their total. Molecules are not in the cube; proposers
featurise them (fingerprints) and pair them with the cube part.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from kiban.errors import did_you_mean


class SpaceError(ValueError):
    """A campaign config or a parameter value that does not fit the declared space."""


# --------------------------------------------------------------------------------------------
# parameters


@dataclass(frozen=True)
class Continuous:
    name: str
    low: float
    high: float
    log: bool = False
    kind: str = field(default="continuous", init=False)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.low) and math.isfinite(self.high)) or self.low >= self.high:
            raise SpaceError(
                f"parameter {self.name!r}: need finite low < high, got "
                f"low={self.low}, high={self.high}"
            )
        if self.log and self.low <= 0:
            raise SpaceError(f"parameter {self.name!r}: log scale needs low > 0, got {self.low}")

    @property
    def width(self) -> int:
        return 1

    def encode(self, value: Any) -> list[float]:
        v = float(value)
        if self.log:
            return [(math.log(v) - math.log(self.low)) / (math.log(self.high) - math.log(self.low))]
        return [(v - self.low) / (self.high - self.low)]

    def decode(self, u: np.ndarray) -> float:
        x = float(np.clip(u[0], 0.0, 1.0))
        if self.log:
            lo, hi = math.log(self.low), math.log(self.high)
            return float(math.exp(lo + x * (hi - lo)))
        return float(self.low + x * (self.high - self.low))

    def check(self, value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"expected a number in [{self.low}, {self.high}], got {value!r}"
        if not math.isfinite(value) or not self.low <= value <= self.high:
            return f"expected a number in [{self.low}, {self.high}], got {value!r}"
        return None


@dataclass(frozen=True)
class Integer:
    name: str
    low: int
    high: int
    kind: str = field(default="integer", init=False)

    def __post_init__(self) -> None:
        if int(self.low) != self.low or int(self.high) != self.high or self.low >= self.high:
            raise SpaceError(
                f"parameter {self.name!r}: need integers low < high, got "
                f"low={self.low}, high={self.high}"
            )

    @property
    def width(self) -> int:
        return 1

    def encode(self, value: Any) -> list[float]:
        return [(float(value) - self.low) / (self.high - self.low)]

    def decode(self, u: np.ndarray) -> int:
        return int(round(self.low + float(np.clip(u[0], 0.0, 1.0)) * (self.high - self.low)))

    def check(self, value: Any) -> str | None:
        ok = isinstance(value, (int, np.integer)) or (
            isinstance(value, float) and value.is_integer()
        )
        if isinstance(value, bool) or not ok or not self.low <= value <= self.high:
            return f"expected an integer in [{self.low}, {self.high}], got {value!r}"
        return None


@dataclass(frozen=True)
class Categorical:
    name: str
    choices: tuple[str, ...]
    kind: str = field(default="categorical", init=False)

    def __post_init__(self) -> None:
        if len(self.choices) < 2 or len(set(self.choices)) != len(self.choices):
            raise SpaceError(
                f"parameter {self.name!r}: need at least two distinct choices, "
                f"got {list(self.choices)}"
            )

    @property
    def width(self) -> int:
        return len(self.choices)

    def encode(self, value: Any) -> list[float]:
        return [1.0 if c == value else 0.0 for c in self.choices]

    def decode(self, u: np.ndarray) -> str:
        return self.choices[int(np.argmax(u))]

    def check(self, value: Any) -> str | None:
        if value not in self.choices:
            return (
                f"expected one of {list(self.choices)}, got {value!r}"
                f"{did_you_mean(value, self.choices)}"
            )
        return None


@dataclass(frozen=True)
class Molecule:
    """A molecule as SMILES: from ``candidates`` (a list, a file with one SMILES per line, or a
    CSV table with a SMILES column and ``id_column``) and/or sampled from a kiban ``model``
    directory (prompt ``<mol>``). ``ids``: the candidates' IDs (``id_column`` of the table, one
    per candidate), carried next to the SMILES through proposals, records and the report;
    ``names``: their names (``name_column``), carried next to the IDs."""

    name: str
    candidates: tuple[str, ...] = ()
    model: str | None = None
    prompt: str = "<mol>"
    id_column: str | None = None
    smiles_column: str | None = None
    ids: tuple[str, ...] = field(default=(), metadata={"config": False})
    name_column: str | None = None
    names: tuple[str, ...] = field(default=(), metadata={"config": False})
    kind: str = field(default="molecule", init=False)

    def __post_init__(self) -> None:
        if not self.candidates and not self.model:
            raise SpaceError(
                f"parameter {self.name!r}: a molecule parameter needs `candidates` "
                "(a list or a file of SMILES) or `model` (a kiban model directory)"
            )

    @property
    def width(self) -> int:
        return 0

    def check(self, value: Any) -> str | None:
        if not isinstance(value, str) or not value.strip():
            return f"expected a SMILES string, got {value!r}"
        from kiban.chem import SmilesError, parse_smiles

        try:
            parse_smiles(value)
        except SmilesError as error:
            return f"expected a valid SMILES, RDKit cannot parse {value!r}: {error.reason}"
        return None


@dataclass(frozen=True)
class Composition:
    """Fractions of ``components`` that sum to ``total`` (a simplex); each component a key."""

    name: str
    components: tuple[str, ...]
    total: float = 1.0
    kind: str = field(default="composition", init=False)

    def __post_init__(self) -> None:
        if len(self.components) < 2 or len(set(self.components)) != len(self.components):
            raise SpaceError(
                f"parameter {self.name!r}: a composition needs at least two distinct "
                f"components, got {list(self.components)}"
            )
        if not self.total > 0:
            raise SpaceError(f"parameter {self.name!r}: total must be > 0, got {self.total}")

    @property
    def width(self) -> int:
        return len(self.components)

    def encode(self, values: dict[str, Any]) -> list[float]:
        return [float(values[c]) / self.total for c in self.components]

    def decode(self, u: np.ndarray) -> dict[str, float]:
        w = np.clip(np.asarray(u, dtype=float), 0.0, None)
        w = w / w.sum() if w.sum() > 0 else np.full(len(w), 1.0 / len(w))
        return {c: float(x * self.total) for c, x in zip(self.components, w)}

    def check(self, values: dict[str, Any]) -> str | None:
        bad = [
            c
            for c in self.components
            if isinstance(values.get(c), bool)
            or not isinstance(values.get(c), (int, float))
            or not math.isfinite(values[c])
            or values[c] < 0
        ]
        if bad:
            return f"components {bad} need non-negative numbers"
        s = sum(float(values[c]) for c in self.components)
        if abs(s - self.total) > 1e-6 * max(1.0, self.total):
            return f"components {list(self.components)} must sum to {self.total}, got {s:g}"
        return None


Parameter = Continuous | Integer | Categorical | Molecule | Composition


# --------------------------------------------------------------------------------------------
# objectives and constraints


@dataclass(frozen=True)
class Objective:
    """``goal``: "max", "min" or "target" (closeness to ``target``). ``low``/``high``: the
    physically possible range; a measured value outside it is rejected as a failure.
    ``threshold``: the worst acceptable value (the reference point of hypervolume)."""

    name: str
    goal: str = "max"
    target: float | None = None
    low: float | None = None
    high: float | None = None
    threshold: float | None = None

    def __post_init__(self) -> None:
        if self.goal not in ("max", "min", "target"):
            raise SpaceError(
                f"objective {self.name!r}: goal must be max, min or target, got {self.goal!r}"
            )
        if self.goal == "target" and self.target is None:
            raise SpaceError(f"objective {self.name!r}: goal = 'target' needs `target`")

    def utility(self, value: float) -> float:
        """The value turned into something to maximise."""
        if self.goal == "max":
            return float(value)
        if self.goal == "min":
            return -float(value)
        return -abs(float(value) - float(self.target))

    def check(self, value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"objective {self.name!r}: expected a number, got {value!r}"
        if not math.isfinite(value):
            return f"objective {self.name!r}: value is {value!r} (not finite)"
        if self.low is not None and value < self.low or self.high is not None and value > self.high:
            return (
                f"objective {self.name!r}: {value!r} is outside the declared range "
                f"[{self.low}, {self.high}]"
            )
        return None


_TERM = re.compile(
    r"\s*([+-]?)\s*"  # sign
    r"(?:(\d+(?:\.\d*)?(?:[eE][+-]?\d+)?)\s*\*?\s*)?"  # coefficient
    r"([A-Za-z_][\w.]*)\s*"
)  # parameter


@dataclass(frozen=True)
class LinearConstraint:
    """``sum(coefficients[name] * params[name]) <= bound`` (``>=`` is stored negated)."""

    expression: str
    coefficients: tuple[tuple[str, float], ...]
    bound: float

    @classmethod
    def parse(cls, text: str, names: set[str]) -> LinearConstraint:
        m = re.fullmatch(r"(.+?)(<=|>=)\s*([+-]?\d+(?:\.\d*)?(?:[eE][+-]?\d+)?)\s*", text)
        if not m:
            raise SpaceError(
                f"constraint {text!r}: expected a linear form like 'x + 2*y <= 10' or 'a - b >= 0'"
            )
        lhs, op, rhs = m.group(1), m.group(2), float(m.group(3))
        coefs: dict[str, float] = {}
        pos = 0
        while pos < len(lhs):
            t = _TERM.match(lhs, pos)
            if not t or t.end() == pos:
                raise SpaceError(f"constraint {text!r}: cannot read {lhs[pos:]!r}")
            sign = -1.0 if t.group(1) == "-" else 1.0
            if pos > 0 and not t.group(1):
                raise SpaceError(f"constraint {text!r}: missing + or - before {t.group(3)!r}")
            name = t.group(3)
            if name not in names:
                raise SpaceError(
                    f"constraint {text!r}: {name!r} is not a numeric parameter"
                    f"{did_you_mean(name, sorted(names))}"
                )
            coefs[name] = coefs.get(name, 0.0) + sign * float(t.group(2) or 1.0)
            pos = t.end()
        if op == ">=":
            coefs = {k: -v for k, v in coefs.items()}
            rhs = -rhs
        return cls(text, tuple(sorted(coefs.items())), rhs)

    def satisfied(self, params: dict[str, Any], tol: float = 1e-9) -> bool:
        return sum(c * float(params[n]) for n, c in self.coefficients) <= self.bound + tol


# --------------------------------------------------------------------------------------------
# the space


@dataclass(frozen=True)
class Space:
    parameters: tuple[Parameter, ...]
    objectives: tuple[Objective, ...]
    constraints: tuple[LinearConstraint, ...] = ()
    same_in_batch: tuple[str, ...] = ()  # parameters every member of a batch shares

    def __post_init__(self) -> None:
        if not self.parameters:
            raise SpaceError("a campaign needs at least one parameter")
        if not self.objectives:
            raise SpaceError("a campaign needs at least one objective")
        keys = self.keys
        dup = sorted({k for k in keys if keys.count(k) > 1})
        if dup:
            raise SpaceError(f"names used twice among parameters/components: {dup}")
        onames = [o.name for o in self.objectives]
        if len(set(onames)) != len(onames) or set(onames) & set(keys):
            raise SpaceError(
                f"objective names must be distinct and differ from parameter names, got {onames}"
            )
        for name in self.same_in_batch:
            if name not in {p.name for p in self.parameters}:
                raise SpaceError(f"same_in_batch names {name!r}, which is not a parameter")

    # -- names and layout
    @property
    def keys(self) -> list[str]:
        """The flat keys of a proposal's params (components of compositions spelled out)."""
        out: list[str] = []
        for p in self.parameters:
            out.extend(p.components if isinstance(p, Composition) else [p.name])
        return out

    @property
    def numeric_keys(self) -> set[str]:
        out: set[str] = set()
        for p in self.parameters:
            if isinstance(p, (Continuous, Integer)):
                out.add(p.name)
            elif isinstance(p, Composition):
                out.update(p.components)
        return out

    @property
    def cube_parameters(self) -> list[Parameter]:
        return [p for p in self.parameters if not isinstance(p, Molecule)]

    @property
    def molecules(self) -> list[Molecule]:
        return [p for p in self.parameters if isinstance(p, Molecule)]

    @property
    def dim(self) -> int:
        return sum(p.width for p in self.cube_parameters)

    def slices(self) -> dict[str, slice]:
        """Where each cube parameter lives in the unit-cube vector."""
        out, at = {}, 0
        for p in self.cube_parameters:
            out[p.name] = slice(at, at + p.width)
            at += p.width
        return out

    # -- encoding
    def to_unit(self, params: dict[str, Any]) -> np.ndarray:
        row: list[float] = []
        for p in self.cube_parameters:
            row.extend(p.encode(params) if isinstance(p, Composition) else p.encode(params[p.name]))
        return np.asarray(row, dtype=float)

    def from_unit(self, u: np.ndarray, molecules: dict[str, str] | None = None) -> dict[str, Any]:
        """Cube vector (plus the molecule choices) to params; rounds integers, picks the arg-max
        category, renormalises compositions."""
        u = np.asarray(u, dtype=float)
        if u.shape != (self.dim,):
            raise SpaceError(f"expected a vector of length {self.dim}, got shape {u.shape}")
        out: dict[str, Any] = {}
        for p, s in zip(self.cube_parameters, self.slices().values()):
            v = p.decode(u[s])
            if isinstance(p, Composition):
                out.update(v)
            else:
                out[p.name] = v
        for m in self.molecules:
            if not molecules or m.name not in molecules:
                raise SpaceError(f"molecule parameter {m.name!r} needs a value")
            out[m.name] = molecules[m.name]
        return {k: out[k] for k in self.keys}

    # -- checks
    def check_params(self, params: dict[str, Any]) -> list[str]:
        """Every problem with one proposal's params (empty when it fits)."""
        problems = []
        unknown = sorted(set(params) - set(self.keys))
        if unknown:
            problems.append(f"unknown parameters {unknown}")
        for p in self.parameters:
            need = p.components if isinstance(p, Composition) else (p.name,)
            missing = [k for k in need if k not in params]
            if missing:
                problems.append(f"missing {missing}")
                continue
            msg = p.check(params) if isinstance(p, Composition) else p.check(params[p.name])
            if msg:
                problems.append(f"{p.name}: {msg}")
        if not problems:
            for c in self.constraints:
                if not c.satisfied(params):
                    problems.append(f"violates constraint {c.expression!r}")
        return problems

    def check_values(self, values: dict[str, Any]) -> list[str]:
        problems = []
        for o in self.objectives:
            if o.name not in values:
                problems.append(f"objective {o.name!r} missing")
            else:
                msg = o.check(values[o.name])
                if msg:
                    problems.append(msg)
        return problems

    def utilities(self, values: dict[str, float]) -> np.ndarray:
        return np.asarray([o.utility(values[o.name]) for o in self.objectives], dtype=float)

    # -- constraints in the unit cube: A u <= b (for BoTorch's inequality constraints)
    def unit_constraints(self) -> list[tuple[dict[int, float], float]]:
        """Linear constraints rewritten over cube coordinates: ``sum(a_i * u_i) <= b``.
        Log-scaled parameters cannot appear in linear constraints (refused at load time)."""
        sl = self.slices()
        index: dict[str, tuple[int, float, float]] = {}
        for p in self.cube_parameters:
            if isinstance(p, (Continuous, Integer)):
                index[p.name] = (sl[p.name].start, float(p.low), float(p.high - p.low))
            elif isinstance(p, Composition):
                for j, c in enumerate(p.components):
                    index[c] = (sl[p.name].start + j, 0.0, float(p.total))
        out = []
        for c in self.constraints:
            a: dict[int, float] = {}
            b = c.bound
            for name, coef in c.coefficients:
                i, low, scale = index[name]
                a[i] = a.get(i, 0.0) + coef * scale
                b -= coef * low
            out.append((a, b))
        return out


# --------------------------------------------------------------------------------------------
# the campaign config


@dataclass(frozen=True)
class CampaignConfig:
    name: str
    space: Space
    instrument: dict[str, Any]
    proposer: str = "botorch"  # botorch | random | sobol | generative
    batch_size: int = 1
    initial: int = 5  # design points before the model takes over
    center: bool = True  # the design opens with the centre of the space (Ax)
    seed: int = 0
    proposer_options: dict[str, Any] = field(default_factory=dict)
    source: str = ""  # the TOML text as read
    base: str = "."  # the folder relative paths in the config resolve against

    def fingerprint(self) -> str:
        """A hash of everything that changes what the campaign does (not its name or source)."""
        payload = {
            # candidate IDs name molecules, they do not change what the campaign does (and
            # campaigns created before they existed keep their fingerprint)
            "space": asdict(
                self.space,
                dict_factory=lambda items: {k: v for k, v in items if k not in _LABEL_KEYS},
            ),
            "instrument": self.instrument,
            "proposer": self.proposer,
            "batch_size": self.batch_size,
            "initial": self.initial,
            "center": self.center,
            "seed": self.seed,
            "options": self.proposer_options,
        }
        text = json.dumps(payload, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "proposer": self.proposer,
            "batch_size": self.batch_size,
            "initial": self.initial,
            "center": self.center,
            "seed": self.seed,
            "instrument": self.instrument,
            "parameters": [asdict(p) for p in self.space.parameters],
            "objectives": [asdict(o) for o in self.space.objectives],
            "constraints": [c.expression for c in self.space.constraints],
            "same_in_batch": list(self.space.same_in_batch),
        }


_LABEL_KEYS = ("id_column", "smiles_column", "ids", "name_column", "names")
_TOP = {"campaign", "parameters", "objectives", "constraints", "instrument", "proposer"}
_CAMPAIGN = {"name", "batch_size", "initial", "center", "seed", "proposer", "same_in_batch"}


def _keys(cls: type) -> set[str]:
    """The config keys of a parameter or objective table: its dataclass's init fields, so the
    accepted keys can never drift from the classes ("type" names the class)."""
    return {f.name for f in fields(cls) if f.init and f.metadata.get("config", True)}


_PARAMETER_CLASSES = (Continuous, Integer, Categorical, Molecule, Composition)
_PARAM = {cls.kind: _keys(cls) | {"type"} for cls in _PARAMETER_CLASSES}
_OBJECTIVE = _keys(Objective)


def _unknown(where: str, got: set[str], allowed: set[str]) -> None:
    for key in sorted(got - allowed):
        raise SpaceError(
            f"{where}: unknown key {key!r}"
            f"{did_you_mean(key, sorted(allowed), cutoff=0.5)}; expected one of "
            f"{sorted(allowed)}"
        )


def _candidates(value: Any, base: Path, where: str) -> tuple[str, ...]:
    if isinstance(value, list):
        return tuple(str(v) for v in value)
    if isinstance(value, str) and value.startswith("moses:"):
        # "moses:SPLIT[:N]": the first N SMILES of a MOSES split (molsets' package data)
        from kiban.data import moses_smiles

        parts = value.split(":")
        if (
            len(parts) not in (2, 3)
            or parts[1] not in ("train", "test", "test_scaffolds")
            or (len(parts) == 3 and not parts[2].isdigit())
        ):
            raise SpaceError(
                f"{where}: candidates {value!r}: expected 'moses:SPLIT[:N]' with "
                "SPLIT train, test or test_scaffolds"
            )
        try:
            return tuple(moses_smiles(parts[1], int(parts[2]) if len(parts) == 3 else None))
        except (FileNotFoundError, ValueError) as error:
            raise SpaceError(f"{where}: {error}") from None
    path = (base / str(value)) if not Path(str(value)).is_absolute() else Path(str(value))
    if not path.is_file():
        raise SpaceError(f"{where}: candidates file {str(path)!r} not found")
    lines = [
        ln.split()[0]
        for ln in path.read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    if lines and lines[0].lower() in ("smiles", "smi"):
        lines = lines[1:]
    return tuple(lines)


def _candidate_table(
    value: Any,
    base: Path,
    where: str,
    smiles_column: str | None,
    id_column: str | None,
    name_column: str | None = None,
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """SMILES, IDs and names of a candidate CSV table (``smiles_column``: default the one column
    whose name contains "smiles"; ``id_column``, ``name_column``: optional)."""
    import csv

    path = (base / str(value)) if not Path(str(value)).is_absolute() else Path(str(value))
    if not isinstance(value, str) or not path.is_file():
        raise SpaceError(f"{where}: candidates table {str(path)!r} not found (a CSV file)")
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = list(reader.fieldnames or [])
        if smiles_column is None:
            found = [c for c in columns if "smiles" in c.lower()]
            if len(found) != 1:
                raise SpaceError(
                    f"{where}: {path}: give smiles_column: {len(found)} columns name SMILES "
                    f"({found}); the columns are {columns}"
                )
            smiles_column = found[0]
        named = (("smiles_column", smiles_column), ("id_column", id_column))
        for key, column in (*named, ("name_column", name_column)):
            if column is not None and column not in columns:
                raise SpaceError(
                    f"{where}: {key} {column!r} is not a column of {path}"
                    f"{did_you_mean(column, columns)}; the columns are {columns}"
                )
        rows = [r for r in reader if (r.get(smiles_column) or "").strip()]
    smiles = tuple(r[smiles_column].strip() for r in rows)
    ids = tuple((r.get(id_column) or "").strip() for r in rows) if id_column else ()
    names = tuple((r.get(name_column) or "").strip() for r in rows) if name_column else ()
    return smiles, ids, names


def _parameter(raw: dict[str, Any], i: int, base: Path) -> Parameter:
    where = f"parameters[{i}]"
    kind = raw.get("type")
    if kind not in _PARAM:
        raise SpaceError(f"{where}: type must be one of {sorted(_PARAM)}, got {kind!r}")
    _unknown(f"{where} ({kind})", set(raw), _PARAM[kind])
    if "name" not in raw:
        raise SpaceError(f"{where}: missing `name`")
    name = str(raw["name"])
    try:
        if kind == "continuous":
            return Continuous(
                name, float(raw["low"]), float(raw["high"]), bool(raw.get("log", False))
            )
        if kind == "integer":
            return Integer(name, int(raw["low"]), int(raw["high"]))
        if kind == "categorical":
            return Categorical(name, tuple(str(c) for c in raw["choices"]))
        if kind == "molecule":
            id_column, smiles_column = raw.get("id_column"), raw.get("smiles_column")
            name_column = raw.get("name_column")
            ids: tuple[str, ...] = ()
            names: tuple[str, ...] = ()
            if id_column or smiles_column or name_column:
                if "candidates" not in raw:
                    raise SpaceError(
                        f"{where} ({name!r}): id_column/name_column/smiles_column name columns "
                        "of a `candidates` CSV table; there is no `candidates`"
                    )
                cands, ids, names = _candidate_table(
                    raw["candidates"], base, where, smiles_column, id_column, name_column
                )
            else:
                cands = _candidates(raw["candidates"], base, where) if "candidates" in raw else ()
            model = raw.get("model")
            if model and not Path(model).is_absolute():
                model = str(base / model)
            return Molecule(
                name,
                cands,
                model,
                str(raw.get("prompt", "<mol>")),
                id_column,
                smiles_column,
                ids=ids,
                name_column=name_column,
                names=names,
            )
        return Composition(
            name, tuple(str(c) for c in raw["components"]), float(raw.get("total", 1.0))
        )
    except KeyError as missing:
        raise SpaceError(f"{where} ({name!r}): missing {missing}") from None
    except (TypeError, ValueError) as error:
        if isinstance(error, SpaceError):
            raise
        raise SpaceError(f"{where} ({name!r}): {error}") from None


def config_toml(raw: dict[str, Any]) -> str:
    """A config given as a dict, written as the TOML a user would write (stored with the
    campaign, re-read on every run)."""
    from kiban.io import toml_value

    lines = (
        [f"constraints = {toml_value(list(raw['constraints']))}"] if raw.get("constraints") else []
    )
    for table in ("campaign", "proposer", "instrument"):
        if raw.get(table):
            lines += ["", f"[{table}]"] + [f"{k} = {toml_value(v)}" for k, v in raw[table].items()]
    for array in ("parameters", "objectives"):
        for item in raw.get(array, []):
            lines += ["", f"[[{array}]]"] + [
                f"{k} = {toml_value(v)}" for k, v in item.items() if v is not None
            ]
    return "\n".join(lines).lstrip("\n") + "\n"


def parse_config(raw: dict[str, Any], base: Path = Path("."), source: str = "") -> CampaignConfig:
    _unknown("config", set(raw), _TOP)
    source = source or config_toml(raw)
    camp = raw.get("campaign", {})
    _unknown("[campaign]", set(camp), _CAMPAIGN)
    params = tuple(_parameter(p, i, base) for i, p in enumerate(raw.get("parameters", [])))
    objectives = []
    for i, o in enumerate(raw.get("objectives", [])):
        _unknown(f"objectives[{i}]", set(o), _OBJECTIVE)
        if "name" not in o:
            raise SpaceError(f"objectives[{i}]: missing `name`")
        objectives.append(
            Objective(
                str(o["name"]),
                str(o.get("goal", "max")),
                *(
                    None if o.get(k) is None else float(o[k])
                    for k in ("target", "low", "high", "threshold")
                ),
            )
        )
    numeric = set()
    for p in params:
        if isinstance(p, (Continuous, Integer)) and not getattr(p, "log", False):
            numeric.add(p.name)
        elif isinstance(p, Composition):
            numeric.update(p.components)
    constraints = []
    for i, c in enumerate(raw.get("constraints", [])):
        text = c if isinstance(c, str) else c.get("expr") if isinstance(c, dict) else None
        if not isinstance(text, str):
            raise SpaceError(f"constraints[{i}]: expected a string like 'x + y <= 1'")
        constraints.append(LinearConstraint.parse(text, numeric))
    space = Space(
        params, tuple(objectives), tuple(constraints), tuple(camp.get("same_in_batch", ()))
    )
    proposer = str(camp.get("proposer", "botorch"))
    from kiban.lab.proposers import PROPOSERS  # the registry (imports no proposer module)

    if proposer not in PROPOSERS:
        raise SpaceError(
            f"[campaign] proposer must be one of {PROPOSERS.names()}, got "
            f"{proposer!r}{did_you_mean(proposer, PROPOSERS.names())}"
        )
    instrument = dict(raw.get("instrument", {}))
    if "kind" not in instrument:
        raise SpaceError("[instrument]: missing `kind` (xtb, olympus, lookup, csv, …)")
    batch, initial = int(camp.get("batch_size", 1)), int(camp.get("initial", 5))
    if batch < 1 or initial < 0:
        raise SpaceError(
            f"[campaign]: batch_size must be ≥ 1 and initial ≥ 0, got "
            f"batch_size={batch}, initial={initial}"
        )
    center = camp.get("center", True)
    if not isinstance(center, bool):
        raise SpaceError(f"[campaign] center must be true or false, got {center!r}")
    return CampaignConfig(
        name=str(camp.get("name", "campaign")),
        space=space,
        instrument=instrument,
        proposer=proposer,
        batch_size=batch,
        initial=initial,
        center=center,
        seed=int(camp.get("seed", 0)),
        proposer_options=dict(raw.get("proposer", {})),
        source=source,
        base=str(base),
    )


def load_config(path: str | Path) -> CampaignConfig:
    path = Path(path)
    if not path.is_file():
        raise SpaceError(f"campaign config {str(path)!r} not found")
    text = path.read_text()
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise SpaceError(f"{path}: not valid TOML: {error}") from None
    try:
        return parse_config(raw, path.parent, text)
    except SpaceError as error:
        raise SpaceError(f"{path}: {error}") from None


def config_from_text(text: str, base: Path = Path(".")) -> CampaignConfig:
    """Re-read a config stored in a campaign database."""
    return parse_config(tomllib.loads(text), base, text)
