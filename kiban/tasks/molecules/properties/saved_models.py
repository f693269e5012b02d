"""Property models on a scientist's own data: the library behind ``kiban property train``,
``predict`` and ``evaluate``.

Data. ``data`` is a shipped set's name (`DATASETS`: ``logs``, ``bbbp``, ``hiv``, ...) or a
CSV/TSV file (tab-separated when it ends in ``.tsv`` / ``.tab``) with a header. In a file the
columns are found as ``kiban corpus build`` finds them (`detect_columns`): the SMILES column, the
ID/text columns, and the target (the only numeric non-ID column unless named); regression targets
are numbers, classification targets 0/1. A row whose SMILES
RDKit cannot parse is skipped and reported (``file:line``, reason); a row whose target is not a
number (or not 0/1) stops training with an error naming the rows: it means a wrong column or a
damaged file, and guessing would train on the wrong thing.

Model directory (format ``kiban.property-model``, version 1). ``manifest.json`` names the method,
task, columns, the question the LM is asked, the featurisation, the training data (source,
SHA-256 of the file, molecule and bad-row counts) and the options it was trained with; beside it
``forest.pkl`` (the scikit-learn forest, pickled: load only directories you trust) for ``rf``, or
``model/`` (the fine-tuned Hugging Face directory with its kiban tokenizer) for ``lm``. The
directory is built next to its destination and renamed into place, so it is whole or absent.

Cross-validation. ``train`` first scores the method on k folds (`cross_validation`) and saves
the scores in the manifest (``cross_validation``).

Prediction. `predict_file` keeps every input column and adds one named after the target, the
forest's tree spread (``<target>_std``) and the reason a row has none (``error``);
`PropertyModel.predict(mols, return_std=True)` gives the same values to library callers.

Evaluation. Per seed, chemprop's scaffold_balanced split (80/10/10, `scaffold_split`); each
method trains on the training part and is scored on the test part (RMSE / ROC-AUC), as
``benchmarks/bench_properties.py`` does (both call `evaluate_split`).
"""

from __future__ import annotations

import csv
import os
import pickle
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rdkit import Chem

from kiban.chem import MORGAN_BITS, MORGAN_RADIUS, canonical_smiles
from kiban.errors import did_you_mean
from kiban.formats import read_json, register, write_json
from kiban.io import _UMASK, file_sha256
from kiban.tasks.molecules._smiles_file import parse_line, read_lines
from kiban.tasks.molecules.properties.cross_validation import CV_SPLITS, cross_validate
from kiban.tasks.molecules.properties.datasets import (
    DATASETS,
    TASKS,
    DatasetSpec,
    PropertyDataError,
    PropertyDataset,
    read_property_file,
)
from kiban.tasks.molecules.properties.predictors import (
    METHODS,
    METRIC,
    FingerprintForest,
    LMSettings,
    PropertyLM,
    evaluate_split,
    finetune_property_model,
    summarize_runs,
)
from kiban.tasks.molecules.properties.scaffold_split import scaffold_split

MANIFEST = "manifest.json"
#: ``manifest.json`` of a saved property model directory (see the module docstring)
PROPERTY_MODEL = register(
    "kiban.property-model", 1, description="a saved property model directory's manifest.json"
)
FORMAT, FORMAT_VERSION = PROPERTY_MODEL.name, PROPERTY_MODEL.version
FOREST_FILE = "forest.pkl"
LM_DIR = "model"
MIN_EVALUATE_MOLECULES = 10
# classification targets in a user's file; pandas writes 0/1 integers as 0.0/1.0
BINARY_LABELS = {"0": 0, "1": 1, "0.0": 0, "1.0": 1}
BAD_ROWS_SHOWN = 5


class PropertyModelError(ValueError):
    """A model directory that cannot be written or read (exists, not a model, wrong version)."""


# --- options ----------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class PropertyOptions:
    """What data to read and how each method is trained (shared by train and evaluate).

    ``task``, ``smiles_column`` and ``target_column`` apply to a file (``None``: the defaults in
    the module docstring); a shipped set has its own. ``base`` is the kiban model directory the
    LM is fine-tuned from (``steps`` steps of ``batch_size`` examples at learning rate ``lr``);
    ``trees`` is the forest's size.
    """

    data: str
    task: str | None = None
    smiles_column: str | None = None
    target_column: str | None = None
    id_column: str | None = None
    base: str | None = None
    trees: int = 500
    steps: int = 200
    batch_size: int = 16
    lr: float = 1e-3
    n_jobs: int = 1
    device: str = "auto"
    progress: bool = False  # the LM's progress bar on stderr

    def __post_init__(self) -> None:
        if self.task is not None and self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        for name in ("trees", "steps", "batch_size", "n_jobs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")

    def lm_settings(self, seed: int) -> LMSettings:
        return LMSettings(
            max_steps=self.steps,
            batch_size=self.batch_size,
            lr=self.lr,
            warmup_steps=min(10, self.steps),
            seed=seed,
            device=self.device,
            progress=self.progress,
        )

    def _check_base(self, methods: Sequence[str]) -> None:
        if "lm" in methods and not self.base:
            raise ValueError("method 'lm' needs --base MODEL_DIR: the kiban model to fine-tune")
        if "lm" in methods and not (Path(self.base) / "config.json").is_file():
            raise ValueError(f"--base {self.base}: not a model directory (no config.json)")


@dataclass(frozen=True, kw_only=True)
class TrainOptions(PropertyOptions):
    """``cv_folds``-fold cross-validation (0: none) on ``cv_split`` folds runs before the final
    fit on all the data (see `cross_validate`)."""

    method: str = "rf"
    seed: int = 0
    cv_folds: int = 5
    cv_split: str = "scaffold"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.cv_folds == 1 or self.cv_folds < 0:
            raise ValueError(
                f"cv_folds must be 0 (no cross-validation) or >= 2, got {self.cv_folds}"
            )
        if self.cv_split not in CV_SPLITS:
            raise ValueError(f"cv_split must be one of {CV_SPLITS}, got {self.cv_split!r}")
        self._check_base([self.method])


@dataclass(frozen=True, kw_only=True)
class EvaluateOptions(PropertyOptions):
    methods: tuple[str, ...] = ("rf",)
    seeds: tuple[int, ...] = (0, 1, 2)
    work: str | None = None  # where LM fine-tuning runs go (default: a temporary directory)

    def __post_init__(self) -> None:
        super().__post_init__()
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            raise ValueError(f"methods must be some of {METHODS}, got {list(self.methods)}")
        if not self.seeds:
            raise ValueError("give at least one seed")
        self._check_base(self.methods)


# --- data -------------------------------------------------------------------------------------
def _delimiter(path: Path) -> str:
    return "\t" if path.suffix.lower() in (".tsv", ".tab") else ","


def _header(path: Path, delimiter: str) -> list[str]:
    with open(path, newline="", encoding="utf-8", errors="replace") as handle:
        header = next(csv.reader(handle, delimiter=delimiter), None)
    if not header:
        raise PropertyDataError(f"{path}: empty file (expected a header line)")
    return [h.strip() for h in header]


def _sample_rows(path: Path, delimiter: str, width: int) -> list[list[str]]:
    """The first rows (as many as ``corpus build`` samples) with ``width`` fields."""
    from kiban.corpus.readers import SAMPLE_ROWS

    sample = []
    with open(path, newline="", encoding="utf-8", errors="replace") as handle:
        reader = csv.reader(handle, delimiter=delimiter)
        next(reader, None)
        for row in reader:
            if len(row) == width:
                sample.append([field.strip() for field in row])
                if len(sample) == SAMPLE_ROWS:
                    break
    return sample


def _check_named(path: Path, header: list[str], named: dict[str, str | None]) -> None:
    for option, column in named.items():
        if column is not None and column not in header:
            raise PropertyDataError(
                f"{path}: {option} {column!r} is not a column"
                f"{did_you_mean(column, header)}; the header has {header}"
            )


@dataclass(frozen=True, kw_only=True)
class FileColumns:
    """The columns of a user's table: SMILES, target (None: none found), ID / text columns
    (kept as metadata, never a target) and the numeric columns a target can be."""

    smiles: str | None
    target: str | None
    ids: tuple[str, ...]
    numeric: tuple[str, ...]


def detect_columns(
    path: str | os.PathLike,
    *,
    smiles_column: str | None = None,
    target_column: str | None = None,
    id_column: str | None = None,
) -> FileColumns:
    """The columns of the CSV/TSV ``path`` as ``kiban corpus build`` reads them (its default
    rendering, `kiban.corpus.readers`): the SMILES column is the given one, else a column named
    ``smiles`` or ``canonical_smiles`` (any case), else the only column; ID and text columns (a
    name ``id``/``name``/``index``/``split``, ``id_column``, or non-numeric values in the first
    rows) are metadata; the target is the given one, else the only numeric other column."""
    from kiban.corpus.readers import META_COLUMN_NAMES, SourceSpec, _rendering

    path = Path(path)
    delimiter = _delimiter(path)
    header = _header(path, delimiter)
    _check_named(
        path,
        header,
        {
            "--smiles-column": smiles_column,
            "--target": target_column,
            "--id-column": id_column,
        },
    )
    sample = _sample_rows(path, delimiter, len(header))
    rendering = _rendering(
        SourceSpec(path=str(path), smiles_column=smiles_column, id_column=id_column),
        header,
        sample,
    )
    smiles = rendering.mol_column or (header[0] if len(header) == 1 else None)
    numeric = tuple(c for c in rendering.numbers if c != smiles)
    target = target_column or (numeric[0] if len(numeric) == 1 else None)
    if target is None and not numeric:
        # no column is all numbers: a target with a few bad values ("<4", "n/a") is still the
        # target, and its bad rows are then reported by file:line rather than guessed away
        others = [
            c for c in header if c not in (smiles, id_column) and c.lower() not in META_COLUMN_NAMES
        ]
        mostly = [c for c in others if _mostly_numbers(sample, header.index(c))]
        guess = mostly or others
        target = guess[0] if len(guess) == 1 else None
    ids = tuple(
        c
        for c in header
        if (c == id_column or c in rendering.meta_columns) and c not in (smiles, target)
    )
    return FileColumns(smiles=smiles, target=target, ids=ids, numeric=numeric)


def _mostly_numbers(sample: list[list[str]], at: int) -> bool:
    from kiban.corpus.readers import _is_number

    values = [row[at] for row in sample if row[at]]
    return bool(values) and sum(map(_is_number, values)) > len(values) / 2


def resolve_spec(
    data: str,
    *,
    task: str | None = None,
    smiles_column: str | None = None,
    target_column: str | None = None,
    id_column: str | None = None,
) -> DatasetSpec:
    """The `DatasetSpec` for ``data``: a file (columns found by `detect_columns`, task as in the
    module docstring) or a shipped set's name. Raises `PropertyDataError` for an unknown name
    (with the closest names), a column that is missing or cannot be told, or options that do not
    apply; `FileNotFoundError` for a path that does not exist."""
    path = Path(data)
    if path.is_file():
        columns = detect_columns(
            path, smiles_column=smiles_column, target_column=target_column, id_column=id_column
        )
        header = _header(path, _delimiter(path))
        if columns.smiles is None:
            raise PropertyDataError(
                f"{path}: no SMILES column (none is named smiles or canonical_smiles); pass "
                f"--smiles-column, one of {header}"
            )
        if columns.target is None:
            others = [h for h in header if h != columns.smiles]
            found = (
                f"the numeric columns are {list(columns.numeric)}"
                if columns.numeric
                else "no column holds only numbers in its first rows"
            )
            raise PropertyDataError(
                f"{path}: cannot tell the target column ({found}); pass --target, one of "
                f"{others} (ID/text columns: {list(columns.ids)}; the header has {header})"
            )
        task = task or "regression"
        return DatasetSpec(
            name=path.stem,
            task=task,
            path=str(path),
            delimiter=_delimiter(path),
            smiles_column=columns.smiles,
            target_column=columns.target,
            id_columns=columns.ids,
            labels=BINARY_LABELS if task == "classification" else None,
            question=f"What is its {columns.target}?",
            description=f"{columns.target} from {path}",
        )
    if data in DATASETS:
        spec = DATASETS[data]
        if smiles_column or target_column or id_column:
            raise PropertyDataError(
                f"--smiles-column / --target / --id-column apply to a file, not to "
                f"the shipped dataset {data!r}"
            )
        if task is not None and task != spec.task:
            raise PropertyDataError(
                f"dataset {data!r} is a {spec.task} set; --task {task} does not apply"
            )
        return spec
    if path.suffix or os.sep in data:
        raise FileNotFoundError(f"{data}: no such file")
    raise PropertyDataError(
        f"{data!r} is neither a file nor a shipped dataset"
        f"{did_you_mean(data.lower(), DATASETS, n=3, cutoff=0.4)}; "
        f"shipped: {', '.join(DATASETS)}"
    )


def _rows_text(records: Sequence[Any]) -> str:
    shown = "; ".join(f"{r.where}: {r.reason}" for r in records[:BAD_ROWS_SHOWN])
    more = len(records) - BAD_ROWS_SHOWN
    return shown + (f"; and {more} more" if more > 0 else "")


def load_training_data(spec: DatasetSpec) -> PropertyDataset:
    """Read ``spec``'s file. Rows with a bad target (or too few fields) are an error listing
    them; rows with an unparseable SMILES stay in ``bad_records`` for the caller to report."""
    dataset = read_property_file(spec.resolved_path, spec)
    wrong = [r for r in dataset.bad_records if r.kind != "smiles"]
    if wrong:
        hint = (
            " (a classification target must be 0 or 1)"
            if spec.task == "classification"
            else " (regression targets must be numbers)"
        )
        raise PropertyDataError(f"{len(wrong)} row(s) with a bad target{hint}: {_rows_text(wrong)}")
    return dataset


# --- the model directory ----------------------------------------------------------------------
def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise PropertyModelError(f"--out {out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise PropertyModelError(
            f"--out {out}: directory exists and is not empty (pass --overwrite to replace it)"
        )


def _place(built: Path, out: Path) -> None:
    """Rename the finished directory ``built`` to ``out`` (replacing an old ``out``)."""
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
        os.replace(out, old / "model")
    os.replace(built, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def train_property_model(
    options: TrainOptions,
    out: str | os.PathLike,
    *,
    overwrite: bool = False,
    on_fold: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Cross-validate ``options.method`` on ``options.data`` (unless ``options.cv_folds`` is 0;
    ``on_fold(fold, folds)`` is called before each fold), train it on all of the data and save
    the model directory ``out``. Returns its manifest (``cross_validation`` holds the folds'
    scores; ``bad_examples``, the first unparseable rows, is not saved)."""
    from kiban import __version__
    from kiban.io import atomic_open

    out = Path(out)
    _check_out(out, overwrite)
    spec = resolve_spec(
        options.data,
        task=options.task,
        smiles_column=options.smiles_column,
        target_column=options.target_column,
        id_column=options.id_column,
    )
    dataset = load_training_data(spec)
    if len(dataset) < 2:
        raise PropertyDataError(
            f"{options.data}: {len(dataset)} usable molecule(s); training needs at least 2"
        )
    if dataset.task == "classification" and len(set(dataset.targets.tolist())) < 2:
        raise PropertyDataError(
            f"{options.data}: every target is {int(dataset.targets[0])}; "
            "a classifier needs molecules of both classes"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    built = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    os.chmod(built, 0o777 & ~_UMASK)  # mkdtemp makes 0700; give what mkdir would have given
    start = time.perf_counter()
    try:
        validation = None
        if options.cv_folds:
            validation = cross_validate(
                dataset,
                method=options.method,
                folds=options.cv_folds,
                split=options.cv_split,
                seed=options.seed,
                trees=options.trees,
                n_jobs=options.n_jobs,
                lm_base=options.base,
                lm_settings=options.lm_settings(options.seed),
                work=built / "cv",
                on_fold=on_fold,
            )
            shutil.rmtree(built / "cv", ignore_errors=True)
        if options.method == "rf":
            forest = FingerprintForest(
                dataset.task, n_estimators=options.trees, seed=options.seed, n_jobs=options.n_jobs
            )
            forest.fit(dataset.molecules, dataset.targets)
            with atomic_open(built / FOREST_FILE, "wb") as handle:
                pickle.dump(forest.forest_, handle, protocol=pickle.HIGHEST_PROTOCOL)
            import sklearn

            predictor = {
                "file": FOREST_FILE,
                "scikit_learn": sklearn.__version__,
                "n_estimators": options.trees,
                "fingerprint": {
                    "kind": "morgan",
                    "radius": MORGAN_RADIUS,
                    "n_bits": MORGAN_BITS,
                    "generator": "rdkit rdFingerprintGenerator",
                },
            }
        else:
            summary = finetune_property_model(
                options.base,
                dataset,
                range(len(dataset)),
                built / "run",
                settings=options.lm_settings(options.seed),
            )
            os.replace(built / "run" / "model", built / LM_DIR)
            shutil.rmtree(built / "run")
            predictor = {
                "directory": LM_DIR,
                "base": str(options.base),
                "steps": summary.get("steps"),
                "final_loss": summary.get("loss"),
                "rejected_prompts": summary.get("rejected"),
                "prompt": "<mol>{smiles}</mol> {question}",
                "completion": " <num>{value}</num>",
            }
        description = dataset.describe()
        manifest = {
            "method": options.method,
            "task": dataset.task,
            "question": dataset.question,
            "smiles_column": spec.smiles_column,
            "target_column": spec.target_column,
            "id_columns": list(spec.id_columns),
            "training_data": {
                "source": options.data,
                "dataset": spec.name,
                "file": str(spec.resolved_path),
                "sha256": file_sha256(spec.resolved_path),
                "molecules": len(dataset),
                "bad_rows": len(dataset.bad_records),
                **{
                    k: description[k]
                    for k in ("positives", "target_mean", "target_std")
                    if k in description
                },
            },
            "predictor": predictor,
            "cross_validation": validation,
            "options": asdict(options),
            "train_seconds": round(time.perf_counter() - start, 3),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "kiban": __version__,
        }
        manifest = write_json(built / MANIFEST, PROPERTY_MODEL, manifest)
        _place(built, out)
    except BaseException:
        shutil.rmtree(built, ignore_errors=True)
        raise
    return {**manifest, "bad_examples": [r.as_dict() for r in dataset.bad_records[:5]]}


class PropertyModel:
    """A saved property model directory, read back; ``predict(molecules)`` scores molecules."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        path = self.directory / MANIFEST
        if not path.is_file():
            raise PropertyModelError(
                f"{self.directory}: not a kiban property model (no {MANIFEST})"
            )
        self.manifest = read_json(path, PROPERTY_MODEL)
        missing = [
            k
            for k in ("method", "task", "question", "smiles_column", "predictor")
            if k not in self.manifest
        ]
        if missing:
            raise PropertyModelError(f"{path}: manifest lacks {missing}")
        self.method, self.task = self.manifest["method"], self.manifest["task"]
        if self.method not in METHODS or self.task not in TASKS:
            raise PropertyModelError(
                f"{path}: method {self.method!r} / task {self.task!r}; "
                f"expected one of {METHODS} / {TASKS}"
            )
        if self.method == "rf":
            fingerprint = self.manifest["predictor"]["fingerprint"]
            self.forest = FingerprintForest(
                self.task, radius=fingerprint["radius"], n_bits=fingerprint["n_bits"]
            )
            with open(self.directory / self.manifest["predictor"]["file"], "rb") as handle:
                self.forest.forest_ = pickle.load(handle)
        else:
            from transformers.utils import logging as transformers_logging

            transformers_logging.disable_progress_bar()
            self.lm = PropertyLM(self.directory / self.manifest["predictor"]["directory"])

    @property
    def smiles_column(self) -> str:
        return self.manifest["smiles_column"]

    @property
    def target_column(self) -> str:
        """The name of what the model predicts (the training file's target column)."""
        return self.manifest.get("target_column") or "prediction"

    @property
    def has_std(self) -> bool:
        """Whether ``predict(..., return_std=True)`` gives a spread (the forest's trees); a
        fine-tuned LM gives none."""
        return self.method == "rf"

    @property
    def cross_validation(self) -> dict[str, Any] | None:
        """The train-time cross-validation scores (None: trained with ``--cv 0`` or before
        kiban recorded them)."""
        return self.manifest.get("cross_validation")

    def predict(self, molecules: Sequence[Chem.Mol], *, return_std: bool = False) -> tuple:
        """Values (regression) or P(1) (classification) for each molecule, and {position:
        reason} of those with no prediction (NaN): an LM whose decoded text is not a number.

        With ``return_std=True``: ``(values, std, failures)``, ``std`` the standard deviation
        of the forest's trees around each value (``np.std`` over trees), or None for an LM."""
        if not molecules:
            empty = np.zeros(0)
            return (empty, empty if self.has_std else None, {}) if return_std else (empty, {})
        std = None
        if self.method == "rf":
            if return_std:
                values, std = self.forest.predict_with_std(molecules)
            else:
                values = np.asarray(self.forest.predict(molecules), dtype=np.float64)
            failures: dict[int, str] = {}
        else:
            smiles = [canonical_smiles(mol) for mol in molecules]
            question = self.manifest["question"]
            if self.task == "classification":
                values, failures = self.lm.smiles_class_probabilities(smiles, question), {}
            else:
                decoded = self.lm.smiles_values(smiles, question, fallback=float("nan"))
                values = decoded.values
                failures = {
                    i: f"the model wrote {decoded.texts[i]!r}, not a number"
                    for i in decoded.unparsed
                }
        values = np.asarray(values, dtype=np.float64)
        return (values, std, failures) if return_std else (values, failures)


# --- prediction on a file ---------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PredictedRow:
    """One input row: ``where`` is ``file:line``; ``fields`` every input column's text;
    ``prediction`` is None when ``error`` says why (an unparseable SMILES, an LM output that is
    not a number); ``std`` the trees' spread (None for an LM or a failed row)."""

    where: str
    smiles: str
    prediction: float | None
    error: str = ""
    std: float | None = None
    fields: tuple[str, ...] = ()


def _free_name(name: str, taken: Sequence[str]) -> str:
    """``name``, or ``name_predicted`` (then ``_2``, ...) when the input already has it: a file
    of measured values scored by the model keeps its measured column."""
    if name not in taken:
        return name
    candidate, count = f"{name}_predicted", 2
    while candidate in taken:
        candidate, count = f"{name}_predicted_{count}", count + 1
    return candidate


@dataclass(frozen=True)
class Predictions:
    """Every input row with its prediction. The output table is the input's columns, then
    ``target`` (named after the model's target column), ``target_std`` (forests only) and
    ``error`` (each renamed by `_free_name` if the input has it)."""

    model: str
    source: str
    method: str
    task: str
    rows: list[PredictedRow] = field(default_factory=list)
    header: tuple[str, ...] = ("smiles",)
    target: str = "prediction"
    has_std: bool = False
    id_column: str | None = None
    cross_validation: dict[str, Any] | None = None  # the model's train-time scores

    @property
    def failed(self) -> list[PredictedRow]:
        return [row for row in self.rows if row.prediction is None]

    @property
    def output_columns(self) -> tuple[str, str | None, str]:
        """(prediction, std or None, error) column names of the output table."""
        taken = list(self.header)
        value = _free_name(self.target, taken)
        std = _free_name(f"{value}_std", taken + [value]) if self.has_std else None
        error = _free_name("error", taken + [value, str(std)])
        return value, std, error

    def label(self, row: PredictedRow) -> str:
        """``file:line``, and the row's ID when the table has an ID column."""
        if self.id_column and self.id_column in self.header:
            return (
                f"{row.where} ({self.id_column} {row.fields[self.header.index(self.id_column)]!r})"
            )
        return row.where

    def as_dict(self, *, rows: bool = True) -> dict[str, Any]:
        value, std, error = self.output_columns
        out = {
            "model": self.model,
            "input": self.source,
            "method": self.method,
            "task": self.task,
            "prediction": "P(class 1)" if self.task == "classification" else "value",
            "columns": {"prediction": value, "std": std, "error": error},
            "rows": len(self.rows),
            "predicted": len(self.rows) - len(self.failed),
            "failed": len(self.failed),
            "failures": [
                {"where": r.where, "smiles": r.smiles, "reason": r.error} for r in self.failed
            ],
        }
        if rows:
            out["predictions"] = [
                {
                    **dict(zip(self.header, r.fields)),
                    "where": r.where,
                    "smiles": r.smiles,
                    "prediction": r.prediction,
                    **({"std": r.std} if self.has_std else {}),
                    "error": r.error,
                }
                for r in self.rows
            ]
        return out

    def to_csv(self) -> str:
        import io

        value, std, error = self.output_columns
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow([*self.header, value, *([std] if std else []), error])
        for row in self.rows:
            cells = [*row.fields, "" if row.prediction is None else f"{row.prediction:.6g}"]
            if std:
                cells.append("" if row.std is None else f"{row.std:.6g}")
            writer.writerow([*cells, row.error])
        return buffer.getvalue()


@dataclass(frozen=True)
class InputTable:
    """A file to score: its columns, every row's fields and ``file:line``, the SMILES column."""

    header: tuple[str, ...]
    rows: list[tuple[str, tuple[str, ...]]]
    smiles_column: str

    def smiles(self) -> list[tuple[str, str]]:
        at = self.header.index(self.smiles_column)
        return [(where, fields[at].strip()) for where, fields in self.rows]


def read_input_table(
    path: str | os.PathLike, *, smiles_column: str | None = None, default_column: str = "smiles"
) -> InputTable:
    """Every row of ``path``: a ``.smi`` / ``.txt`` file (columns ``smiles`` and ``name``: the
    first whitespace-separated field and the rest of the line; blank lines are rows too and
    fail), or a CSV/TSV with a header, its SMILES column ``smiles_column``, else
    ``default_column`` if the header has it, else found as ``kiban corpus build`` finds it
    (`detect_columns`). Short rows are padded with empty fields so every column is kept."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if path.suffix.lower() in (".smi", ".txt", ".smiles"):
        rows = []
        for number, line in enumerate(read_lines(path), start=1):
            parts = line.strip().split(None, 1)
            rows.append(
                (
                    f"{path}:{number}",
                    (parts[0] if parts else "", parts[1] if len(parts) > 1 else ""),
                )
            )
        return InputTable(("smiles", "name"), rows, "smiles")
    delimiter = _delimiter(path)
    header = _header(path, delimiter)
    if smiles_column is None:
        if default_column in header:
            smiles_column = default_column
        else:
            smiles_column = detect_columns(path).smiles
            if smiles_column is None:
                raise PropertyDataError(
                    f"{path}: no SMILES column (none is named smiles or canonical_smiles, nor "
                    f"{default_column!r} as in training); pass --smiles-column, one of {header}"
                )
    _check_named(path, header, {"--smiles-column": smiles_column})
    rows = []
    with open(path, newline="", encoding="utf-8", errors="replace") as handle:
        reader = csv.reader(handle, delimiter=delimiter)
        next(reader)
        start = reader.line_num
        for row in reader:
            fields = tuple(row[: len(header)]) + ("",) * (len(header) - len(row))
            rows.append((f"{path}:{start + 1}", fields))
            start = reader.line_num
    return InputTable(tuple(header), rows, smiles_column)


def read_smiles_rows(
    path: str | os.PathLike, *, smiles_column: str | None = None, default_column: str = "smiles"
) -> list[tuple[str, str]]:
    """(``file:line``, SMILES text) of every row of ``path`` (see `read_input_table`)."""
    return read_input_table(
        path, smiles_column=smiles_column, default_column=default_column
    ).smiles()


def predict_file(
    model_dir: str | os.PathLike,
    path: str | os.PathLike,
    *,
    smiles_column: str | None = None,
    id_column: str | None = None,
) -> Predictions:
    """Every row of ``path`` (see `read_input_table`) scored by the model in ``model_dir``, with
    all its input columns; rows that cannot be scored keep their place with
    ``prediction=None`` and the reason. ``id_column`` (default: the model's first ID column
    when the input has it) labels the rows in messages."""
    model = PropertyModel(model_dir)
    table = read_input_table(path, smiles_column=smiles_column, default_column=model.smiles_column)
    if id_column is not None:
        _check_named(Path(path), list(table.header), {"--id-column": id_column})
    else:
        id_column = next(
            (c for c in model.manifest.get("id_columns", []) if c in table.header), None
        )
    rows = table.smiles()
    parsed = [parse_line(text) if text else (None, "no SMILES in this row") for _, text in rows]
    good = [i for i, (mol, _) in enumerate(parsed) if mol is not None]
    values, std, failures = model.predict([parsed[i][0] for i in good], return_std=True)
    predictions: dict[int, float | None] = {i: float(values[k]) for k, i in enumerate(good)}
    spreads: dict[int, float] = (
        {} if std is None else {i: float(std[k]) for k, i in enumerate(good)}
    )
    errors = {i: reason for i, (mol, reason) in enumerate(parsed) if mol is None}
    for k, reason in failures.items():
        predictions[good[k]] = None
        spreads.pop(good[k], None)
        errors[good[k]] = reason
    return Predictions(
        str(model_dir),
        str(path),
        model.method,
        model.task,
        [
            PredictedRow(where, text, predictions.get(i), errors.get(i, ""), spreads.get(i), fields)
            for i, ((where, text), (_, fields)) in enumerate(zip(rows, table.rows))
        ],
        header=table.header,
        target=model.target_column,
        has_std=model.has_std,
        id_column=id_column,
        cross_validation=model.cross_validation,
    )


# --- evaluation -------------------------------------------------------------------------------
def evaluate_property_data(options: EvaluateOptions) -> dict[str, Any]:
    """Per seed: a scaffold split of ``options.data``, each method trained on its training part
    and scored on its test part. Returns the data summary, the runs and mean ± sd per method."""
    spec = resolve_spec(
        options.data,
        task=options.task,
        smiles_column=options.smiles_column,
        target_column=options.target_column,
        id_column=options.id_column,
    )
    dataset = load_training_data(spec)
    if len(dataset) < MIN_EVALUATE_MOLECULES:
        raise PropertyDataError(
            f"{options.data}: {len(dataset)} usable molecule(s); an "
            f"80/10/10 scaffold split needs at least "
            f"{MIN_EVALUATE_MOLECULES}"
        )
    start = time.perf_counter()
    runs = []
    with tempfile.TemporaryDirectory(prefix="kiban-property-") as scratch:
        work = Path(options.work or scratch)
        for seed in options.seeds:
            split = scaffold_split(dataset.molecules, seed=seed)
            if not len(split.train) or not len(split.test):
                raise PropertyDataError(
                    f"{options.data}: the scaffold split of seed {seed} has "
                    f"{len(split.train)} training and {len(split.test)} test molecules "
                    f"({len(set(split.scaffolds))} scaffolds in {len(dataset)} molecules): "
                    "too few scaffolds to split"
                )
            run = evaluate_split(
                dataset,
                split,
                seed=seed,
                methods=options.methods,
                trees=options.trees,
                n_jobs=options.n_jobs,
                lm_base=options.base,
                lm_settings=options.lm_settings(seed),
                work=work / f"ft-seed{seed}",
            )
            if "lm" in options.methods and not options.work:
                shutil.rmtree(work / f"ft-seed{seed}", ignore_errors=True)
            runs.append(run)
    return {
        "data": dataset.describe(),
        "source": options.data,
        "task": dataset.task,
        "metric": METRIC[dataset.task],
        "methods": list(options.methods),
        "seeds": list(options.seeds),
        "options": asdict(options),
        "split": "chemprop scaffold_balanced 80/10/10 (test part scored; validation unused)",
        "runs": runs,
        "summary": summarize_runs(runs),
        "seconds": round(time.perf_counter() - start, 3),
    }
