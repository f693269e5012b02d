"""Property models on a scientist's own data: the library behind ``kiban property train``,
``predict`` and ``evaluate``.

Data. ``data`` is a shipped set's name (`DATASETS`: ``logs``, ``bbbp``, ``hiv``, ...) or a
CSV/TSV file (tab-separated when it ends in ``.tsv`` / ``.tab``) with a header. In a file the
SMILES column defaults to the one named ``smiles`` (any case) and the target column to the only
other column; regression targets are numbers, classification targets 0/1. A row whose SMILES
RDKit cannot parse is skipped and reported (``file:line``, reason); a row whose target is not a
number (or not 0/1) stops training with an error naming the rows: it means a wrong column or a
damaged file, and guessing would train on the wrong thing.

Model directory (format ``kiban.property-model``, version 1). ``manifest.json`` names the method,
task, columns, the question the LM is asked, the featurisation, the training data (source,
SHA-256 of the file, molecule and bad-row counts) and the options it was trained with; beside it
``forest.pkl`` (the scikit-learn forest, pickled: load only directories you trust) for ``rf``, or
``model/`` (the fine-tuned Hugging Face directory with its kiban tokenizer) for ``lm``. The
directory is built next to its destination and renamed into place, so it is whole or absent.

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
from collections.abc import Sequence
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
    base: str | None = None
    trees: int = 500
    steps: int = 200
    batch_size: int = 16
    lr: float = 1e-3
    n_jobs: int = 1
    device: str = "auto"

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
        )

    def _check_base(self, methods: Sequence[str]) -> None:
        if "lm" in methods and not self.base:
            raise ValueError("method 'lm' needs --base MODEL_DIR: the kiban model to fine-tune")
        if "lm" in methods and not (Path(self.base) / "config.json").is_file():
            raise ValueError(f"--base {self.base}: not a model directory (no config.json)")


@dataclass(frozen=True, kw_only=True)
class TrainOptions(PropertyOptions):
    method: str = "rf"
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
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


def _smiles_column(header: list[str], path: Path) -> str:
    named = [h for h in header if h.lower() == "smiles"]
    if named:
        return named[0]
    if len(header) == 1:
        return header[0]
    raise PropertyDataError(
        f"{path}: no column named 'smiles'; pass --smiles-column, one of {header}"
    )


def resolve_spec(
    data: str,
    *,
    task: str | None = None,
    smiles_column: str | None = None,
    target_column: str | None = None,
) -> DatasetSpec:
    """The `DatasetSpec` for ``data``: a file (columns and task as in the module docstring) or a
    shipped set's name. Raises `PropertyDataError` for an unknown name (with the closest names)
    or options that do not apply, `FileNotFoundError` for a path that does not exist."""
    path = Path(data)
    if path.is_file():
        delimiter = _delimiter(path)
        header = _header(path, delimiter)
        smiles_column = smiles_column or _smiles_column(header, path)
        if target_column is None:
            others = [h for h in header if h != smiles_column]
            if len(others) != 1:
                raise PropertyDataError(
                    f"{path}: pass --target-column, one of {others} (the header has {header})"
                )
            target_column = others[0]
        task = task or "regression"
        return DatasetSpec(
            name=path.stem,
            task=task,
            path=str(path),
            delimiter=delimiter,
            smiles_column=smiles_column,
            target_column=target_column,
            labels=BINARY_LABELS if task == "classification" else None,
            question=f"What is its {target_column}?",
            description=f"{target_column} from {path}",
        )
    if data in DATASETS:
        spec = DATASETS[data]
        if smiles_column or target_column:
            raise PropertyDataError(
                f"--smiles-column / --target-column apply to a file, not to "
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
    options: TrainOptions, out: str | os.PathLike, *, overwrite: bool = False
) -> dict[str, Any]:
    """Train ``options.method`` on all of ``options.data`` and save the model directory ``out``.
    Returns its manifest (with ``bad_examples``: the first unparseable rows, not saved)."""
    from kiban import __version__
    from kiban.io import atomic_open

    out = Path(out)
    _check_out(out, overwrite)
    spec = resolve_spec(
        options.data,
        task=options.task,
        smiles_column=options.smiles_column,
        target_column=options.target_column,
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

    def predict(self, molecules: Sequence[Chem.Mol]) -> tuple[np.ndarray, dict[int, str]]:
        """Values (regression) or P(1) (classification) for each molecule, and {position:
        reason} of those with no prediction (NaN): an LM whose decoded text is not a number."""
        if not molecules:
            return np.zeros(0), {}
        if self.method == "rf":
            return np.asarray(self.forest.predict(molecules), dtype=np.float64), {}
        smiles = [canonical_smiles(mol) for mol in molecules]
        question = self.manifest["question"]
        if self.task == "classification":
            return self.lm.smiles_class_probabilities(smiles, question), {}
        decoded = self.lm.smiles_values(smiles, question, fallback=float("nan"))
        return decoded.values, {
            i: f"the model wrote {decoded.texts[i]!r}, not a number" for i in decoded.unparsed
        }


# --- prediction on a file ---------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PredictedRow:
    """One input row: ``where`` is ``file:line``; ``prediction`` is None when ``error`` says
    why (an unparseable SMILES, an LM output that is not a number)."""

    where: str
    smiles: str
    prediction: float | None
    error: str = ""


@dataclass(frozen=True)
class Predictions:
    model: str
    source: str
    method: str
    task: str
    rows: list[PredictedRow] = field(default_factory=list)

    @property
    def failed(self) -> list[PredictedRow]:
        return [row for row in self.rows if row.prediction is None]

    def as_dict(self, *, rows: bool = True) -> dict[str, Any]:
        out = {
            "model": self.model,
            "input": self.source,
            "method": self.method,
            "task": self.task,
            "prediction": "P(class 1)" if self.task == "classification" else "value",
            "rows": len(self.rows),
            "predicted": len(self.rows) - len(self.failed),
            "failed": len(self.failed),
            "failures": [
                {"where": r.where, "smiles": r.smiles, "reason": r.error} for r in self.failed
            ],
        }
        if rows:
            out["predictions"] = [
                {"smiles": r.smiles, "prediction": r.prediction} for r in self.rows
            ]
        return out

    def to_csv(self) -> str:
        import io

        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["smiles", "prediction", "error"])
        for row in self.rows:
            writer.writerow(
                [row.smiles, "" if row.prediction is None else f"{row.prediction:.6g}", row.error]
            )
        return buffer.getvalue()


def read_smiles_rows(
    path: str | os.PathLike, *, smiles_column: str | None = None, default_column: str = "smiles"
) -> list[tuple[str, str]]:
    """(``file:line``, SMILES text) of every row of ``path``: a ``.smi`` / ``.txt`` file (one
    molecule a line, the first whitespace-separated field; blank lines are rows too and fail), or
    a CSV/TSV with a header, read from ``smiles_column`` (else ``default_column``, else a column
    named ``smiles`` in any case, else the only column)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if path.suffix.lower() in (".smi", ".txt", ".smiles"):
        return [
            (f"{path}:{number}", (line.split() or [""])[0])
            for number, line in enumerate(read_lines(path), start=1)
        ]
    delimiter = _delimiter(path)
    header = _header(path, delimiter)
    if smiles_column is None:
        smiles_column = default_column if default_column in header else _smiles_column(header, path)
    if smiles_column not in header:
        raise PropertyDataError(
            f"{path}: missing column {smiles_column!r}; the header has {header}"
        )
    at = header.index(smiles_column)
    rows = []
    with open(path, newline="", encoding="utf-8", errors="replace") as handle:
        reader = csv.reader(handle, delimiter=delimiter)
        next(reader)
        start = reader.line_num
        for row in reader:
            rows.append((f"{path}:{start + 1}", row[at].strip() if len(row) > at else ""))
            start = reader.line_num
    return rows


def predict_file(
    model_dir: str | os.PathLike, path: str | os.PathLike, *, smiles_column: str | None = None
) -> Predictions:
    """Every row of ``path`` (see `read_smiles_rows`) scored by the model in ``model_dir``;
    rows that cannot be scored keep their place with ``prediction=None`` and the reason."""
    model = PropertyModel(model_dir)
    rows = read_smiles_rows(path, smiles_column=smiles_column, default_column=model.smiles_column)
    parsed = [parse_line(text) if text else (None, "no SMILES in this row") for _, text in rows]
    good = [i for i, (mol, _) in enumerate(parsed) if mol is not None]
    values, failures = model.predict([parsed[i][0] for i in good])
    predictions: dict[int, float | None] = {i: float(values[k]) for k, i in enumerate(good)}
    errors = {i: reason for i, (mol, reason) in enumerate(parsed) if mol is None}
    for k, reason in failures.items():
        predictions[good[k]] = None
        errors[good[k]] = reason
    return Predictions(
        str(model_dir),
        str(path),
        model.method,
        model.task,
        [
            PredictedRow(where, text, predictions.get(i), errors.get(i, ""))
            for i, (where, text) in enumerate(rows)
        ],
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
