"""MOSES (Polykovskiy et al. 2020): every metric of ``moses.get_all_metrics``, computed by kiban.

The reference data is molsets' own (the ``molsets`` package, installed data-only): the test and
scaffold-test statistics in ``test_stats.npz`` / ``test_scaffolds_stats.npz`` (ChemNet mean and
covariance, Morgan fingerprints, fragment and scaffold counts, property values) and the training
SMILES for novelty. The ChemNet weights come from ``fcd_torch``. Parity with molsets'
``get_all_metrics`` is measured in ``benchmarks/moses_parity`` (see ``docs/moses.md``).

Semantics follow molsets exactly, with one deliberate change: a metric that cannot be computed is
``None`` with a reason instead of a warning and a number (``unique@10000`` of fewer than 10,000
valid molecules), NaN, or an exception (no valid molecule, an empty input).

    result = evaluate_moses(["CCO", "c1ccccc1", "not a smiles"])
    result["valid"], result["unique@1000"], result.reasons["unique@1000"]
    # (0.666…, None, 'needs at least 1,000 valid molecules, got 2')
"""

from __future__ import annotations

import math
import multiprocessing
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from kiban.data import moses_smiles, package_file
from kiban.formats import register
from kiban.tasks.molecules._smiles_file import read_lines
from kiban.tasks.molecules.evaluation._moses_features import (
    InvalidSample,
    MoleculeFeatures,
    describe,
    reread_canonical,
)


def _name_moses_train(result: dict[str, Any]) -> dict[str, Any]:
    # version 1 had no --train: its novelty was always against MOSES train
    return {**result, "training_set": {"name": MOSES_TRAIN}}


#: `MosesResult.as_dict` (``kiban eval moses --json``); version 2 names the training set
MOSES_RESULT = register(
    "kiban.moses_result",
    2,
    description="MOSES metrics of one sample set",
    upgrades={1: _name_moses_train},
)
RESULT_FORMAT, RESULT_VERSION = MOSES_RESULT.name, MOSES_RESULT.version
UNIQUE_AT = (1000, 10000)
REFERENCE_SETS = (("Test", "test"), ("TestSF", "test_scaffolds"))
PROPERTIES = ("logP", "SA", "QED", "weight")
METRIC_NAMES = (
    "valid",
    "unique@1000",
    "unique@10000",
    "FCD/Test",
    "SNN/Test",
    "Frag/Test",
    "Scaf/Test",
    "FCD/TestSF",
    "SNN/TestSF",
    "Frag/TestSF",
    "Scaf/TestSF",
    "IntDiv",
    "IntDiv2",
    "Filters",
    *PROPERTIES,
    "Novelty",
)
MAX_INVALID_LISTED = 20
MOSES_TRAIN = "MOSES train"
USER_TRAIN = "your training set"
CORPUS_TRAIN = "your corpus's <mol> spans"


@dataclass(frozen=True, kw_only=True)
class TrainingSet:
    """The molecules Novelty is measured against and the file they came from (``sha256`` of
    that file), so a novelty is never read against the wrong reference.

    ``smiles`` are compared with the samples' canonical SMILES: MOSES train as molsets writes
    it (already canonical, as molsets compares it), a user's file re-canonicalised the way the
    samples are (`_moses_features.reread`). ``invalid`` lists the lines that are not molecules.
    """

    name: str  # MOSES_TRAIN or USER_TRAIN
    path: str
    sha256: str
    smiles: frozenset[str]
    lines: int
    invalid: tuple[InvalidSample, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": self.path,
            "sha256": self.sha256,
            "molecules": len(self.smiles),  # distinct canonical SMILES
            "lines": self.lines,
            "invalid": {
                "count": len(self.invalid),
                "examples": [
                    {"where": s.where, "text": s.text, "reason": s.reason}
                    for s in self.invalid[:MAX_INVALID_LISTED]
                ],
            },
        }


@lru_cache(maxsize=1)
def moses_training_set() -> TrainingSet:
    """MOSES train (molsets' ``train.csv.gz``), the default reference of Novelty."""
    from kiban.io import file_sha256

    path = package_file("moses", "dataset/data/train.csv.gz")
    lines = moses_smiles("train")
    return TrainingSet(
        name=MOSES_TRAIN,
        path=str(path),
        sha256=file_sha256(path),
        smiles=frozenset(lines),
        lines=len(lines),
    )


def read_training_set(
    path: str | Path, *, smiles_column: str | None = None, n_jobs: int = 1
) -> TrainingSet:
    """The user's training molecules: a ``.csv`` with a header (the column ``smiles_column``,
    else the one named ``smiles`` in any case), or any other file with one SMILES per line read
    like the samples (`read_samples`; a ``.smi`` name after the SMILES is allowed). Blank lines
    are skipped; lines that are not molecules are listed as ``file:line`` with the reason.
    ``n_jobs`` worker processes canonicalise the molecules."""
    from kiban.errors import InputError
    from kiban.io import file_sha256

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"training set {path} does not exist or is not a file")
    if path.suffix.lower() == ".csv":
        numbered = _csv_column(path, smiles_column)
    else:
        if smiles_column is not None:
            raise InputError(
                f"--train-column {smiles_column!r} names a CSV column, but the training set "
                f"{path} is not a .csv file (one SMILES per line is read)"
            )
        numbered = list(enumerate(read_samples(path), start=1))
    numbered = [(f"{path}:{number}", text) for number, text in numbered if text]
    return _training_set(USER_TRAIN, path, file_sha256(path), numbered, n_jobs)


def read_training_corpus(corpus_dir: str | Path, *, n_jobs: int = 1) -> TrainingSet:
    """The molecules of the ``<mol>`` spans of a kiban corpus's documents (what a model built on
    it was trained on). ``sha256`` is that of the corpus's documents table; ``lines`` counts
    spans; a span that is not a molecule is listed as ``CORPUS document ID``."""
    from kiban.corpus.store import Corpus, documents_sha256
    from kiban.tasks.molecules.evaluation.report import _MOL_SPAN

    corpus = Corpus(corpus_dir)
    table = corpus.documents_table(["id", "text", "n_mol"])
    spans = [
        (f"{corpus_dir} document {doc_id}", span)
        for doc_id, text, n_mol in zip(
            table.column("id").to_pylist(),
            table.column("text").to_pylist(),
            table.column("n_mol").to_pylist(),
        )
        if n_mol
        for span in _MOL_SPAN.findall(text)
    ]
    return _training_set(CORPUS_TRAIN, Path(corpus_dir), documents_sha256(corpus), spans, n_jobs)


def _training_set(
    name: str, path: Path, sha256: str, entries: list[tuple[str, str]], n_jobs: int
) -> TrainingSet:
    """A `TrainingSet` of (where, SMILES) entries canonicalised as the samples are."""
    from kiban.errors import InputError

    outcomes = _map(reread_canonical, [text for _, text in entries], n_jobs)
    smiles = {canonical for canonical, _ in outcomes if canonical is not None}
    invalid = [
        InvalidSample(where=where, text=text[:200], reason=reason)
        for (where, text), (canonical, reason) in zip(entries, outcomes)
        if canonical is None
    ]
    if not smiles:
        first = f"; {invalid[0].where}: {invalid[0].reason}" if invalid else ""
        raise InputError(
            f"training set {path} holds no valid molecule ({len(entries)} non-blank "
            f"{'lines' if name == USER_TRAIN else '<mol> spans'}){first}"
        )
    return TrainingSet(
        name=name,
        path=str(path),
        sha256=sha256,
        smiles=frozenset(smiles),
        lines=len(entries),
        invalid=tuple(invalid),
    )


def _csv_column(path: Path, column: str | None) -> list[tuple[int, str]]:
    """(line number, value) of the SMILES column of a CSV file with a header."""
    import csv

    from kiban.errors import InputError, did_you_mean

    with path.open(newline="", encoding="utf-8", errors="replace") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise InputError(f"training set {path} is empty (a CSV file needs a header)")
        names = [name.strip() for name in header]
        wanted = column if column is not None else "smiles"
        matches = [i for i, name in enumerate(names) if name == wanted]
        if not matches and column is None:
            matches = [i for i, name in enumerate(names) if name.lower() == "smiles"]
        if len(matches) != 1:
            how = "no" if not matches else f"{len(matches)}"
            flag = "--train-column" if column is not None else "a column named 'smiles'"
            raise InputError(
                f"training set {path}:1: {how} column {wanted!r} ({flag}) in the header; the "
                f"columns are {names}{did_you_mean(wanted, names)}"
                + ("" if column is not None else "; name the SMILES column with --train-column")
            )
        index = matches[0]
        # reader.line_num is the line the record ended on: right for records without newlines
        return [(reader.line_num, row[index].strip() if index < len(row) else "") for row in reader]


@dataclass(frozen=True, kw_only=True)
class MosesResult:
    """MOSES metrics of one set of samples.

    ``values`` maps every name in METRIC_NAMES to a float, or to None when the metric cannot be
    computed; ``reasons`` says why for each None. ``invalid`` lists every invalid sample with its
    place and reason; ``timings`` holds the seconds of each stage.
    """

    source: str
    n_samples: int
    n_valid: int
    values: Mapping[str, float | None]
    reasons: Mapping[str, str]
    invalid: tuple[InvalidSample, ...]
    training_set: Mapping[str, Any]  # `TrainingSet.as_dict` of Novelty's reference
    timings: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self):
        if tuple(self.values) != METRIC_NAMES:
            raise ValueError(
                f"MosesResult needs the metrics {METRIC_NAMES}, got {tuple(self.values)}"
            )
        missing = [
            name
            for name, value in self.values.items()
            if value is None and name not in self.reasons
        ]
        if missing:
            raise ValueError(f"metrics {missing} are None without a reason")
        object.__setattr__(self, "values", MappingProxyType(dict(self.values)))
        object.__setattr__(self, "reasons", MappingProxyType(dict(self.reasons)))
        object.__setattr__(self, "timings", MappingProxyType(dict(self.timings)))
        object.__setattr__(self, "training_set", MappingProxyType(dict(self.training_set)))

    def __getitem__(self, name: str) -> float | None:
        if name not in self.values:
            raise KeyError(f"unknown MOSES metric {name!r}; the metrics are {METRIC_NAMES}")
        return self.values[name]

    @property
    def n_invalid(self) -> int:
        return self.n_samples - self.n_valid

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form with a format name and version (invalid samples: the first 20)."""
        return {
            **MOSES_RESULT.stamp(),
            "source": self.source,
            "n_samples": self.n_samples,
            "n_valid": self.n_valid,
            "metrics": dict(self.values),
            "not_computed": dict(self.reasons),
            "invalid": {
                "count": self.n_invalid,
                "examples": [
                    {"where": s.where, "text": s.text, "reason": s.reason}
                    for s in self.invalid[:MAX_INVALID_LISTED]
                ],
            },
            "training_set": dict(self.training_set),
            "seconds": dict(self.timings),
        }


def read_samples(path: str | Path) -> list[str]:
    """One sample per line, surrounding whitespace stripped. Every line is a sample, blank ones
    included (they count as invalid); a final newline only ends the last line. Bytes that are not
    UTF-8 are kept as U+FFFD so the line is reported, not the whole file rejected."""
    return read_lines(path)


def evaluate_moses_file(
    path: str | Path,
    *,
    n_jobs: int = 1,
    device: str = "cpu",
    batch_size: int = 512,
    training: TrainingSet | None = None,
) -> MosesResult:
    """`evaluate_moses` on a samples file (see `read_samples`); invalid samples are reported as
    ``file:line``."""
    return evaluate_moses(
        read_samples(path),
        n_jobs=n_jobs,
        device=device,
        batch_size=batch_size,
        source=str(path),
        training=training,
    )


def moses_metrics(
    smiles: Sequence[str],
    *,
    n_jobs: int = 1,
    device: str = "cpu",
) -> dict[str, float | None]:
    """In-process form for a generator's loop: SMILES in, {metric name: value or None} out."""
    return dict(evaluate_moses(smiles, n_jobs=n_jobs, device=device).values)


def evaluate_moses(
    smiles: Sequence[str],
    *,
    n_jobs: int = 1,
    device: str = "cpu",
    batch_size: int = 512,
    source: str = "samples",
    training: TrainingSet | None = None,
) -> MosesResult:
    """All MOSES metrics of ``smiles`` against the MOSES test and scaffold-test sets; Novelty
    against ``training`` (`read_training_set`), MOSES train (`moses_training_set`) when None.

    ``n_jobs`` worker processes compute the per-molecule RDKit work; ``device`` ("cpu", "cuda",
    "cuda:1", …) runs ChemNet and, off the CPU, the fingerprint similarities.
    """
    if isinstance(smiles, str):
        raise TypeError(
            "The 'smiles' parameter of evaluate_moses must be a sequence of SMILES "
            "strings. Got a single str instead."
        )
    if n_jobs < 1:
        raise ValueError(f"The 'n_jobs' parameter of evaluate_moses must be >= 1. Got {n_jobs}.")
    timings: dict[str, float] = {}
    started_all = started = time.perf_counter()
    described = _describe_all(list(smiles), n_jobs)
    timings["molecules"] = time.perf_counter() - started

    def where(i: int) -> str:
        return f"sample {i + 1}" if source == "samples" else f"{source}:{i + 1}"

    invalid = tuple(
        InvalidSample(where=where(i), text=text[:200], reason=outcome)
        for i, (text, outcome) in enumerate(zip(smiles, described))
        if isinstance(outcome, str)
    )
    molecules = [outcome for outcome in described if isinstance(outcome, MoleculeFeatures)]
    if training is None:
        training = moses_training_set()
    values: dict[str, float | None] = dict.fromkeys(METRIC_NAMES)
    reasons: dict[str, str] = {}

    def result() -> MosesResult:
        timings["total"] = time.perf_counter() - started_all
        return MosesResult(
            source=source,
            n_samples=len(smiles),
            n_valid=len(molecules),
            values=values,
            reasons=reasons,
            invalid=invalid,
            timings=timings,
            training_set=training.as_dict(),
        )

    if not smiles:
        reasons.update(dict.fromkeys(METRIC_NAMES, "there are no samples (the input is empty)"))
        return result()
    values["valid"] = len(molecules) / len(smiles)
    if not molecules:
        reasons.update(
            {
                name: f"none of the {len(smiles):,} samples is a valid molecule"
                for name in METRIC_NAMES
                if name != "valid"
            }
        )
        return result()

    canonical = [m.canonical for m in molecules]
    for k in UNIQUE_AT:
        values[f"unique@{k}"], reason = fraction_unique(canonical, k)
        if reason:
            reasons[f"unique@{k}"] = reason

    bits = np.unpackbits(
        np.frombuffer(b"".join(m.fingerprint for m in molecules), dtype=np.uint8).reshape(
            len(molecules), -1
        ),
        axis=1,
    )
    _fcd_and_similarities(molecules, canonical, bits, device, batch_size, values, reasons, timings)

    started = time.perf_counter()
    from kiban.tasks.molecules.evaluation._tanimoto import mean_similarity

    row_mean, row_mean_square = mean_similarity(bits, device=device)
    values["IntDiv"] = float(1 - row_mean.mean())
    values["IntDiv2"] = float(1 - np.sqrt(row_mean_square).mean())
    timings["internal_diversity"] = time.perf_counter() - started

    values["Filters"] = float(np.mean([m.passes_filters for m in molecules]))
    test = reference_statistics("test")
    for name, attribute in zip(PROPERTIES, ("logp", "sa", "qed", "weight")):
        values[name] = wasserstein_1d(
            np.asarray(test[name]["values"], dtype=np.float64),
            np.array([getattr(m, attribute) for m in molecules]),
        )

    started = time.perf_counter()
    unique = set(canonical)
    values["Novelty"] = len(unique - training.smiles) / len(unique)
    timings["novelty"] = time.perf_counter() - started
    return result()


def _fcd_and_similarities(
    molecules, canonical, bits, device, batch_size, values, reasons, timings
) -> None:
    from kiban.tasks.molecules.evaluation import _chemnet
    from kiban.tasks.molecules.evaluation._tanimoto import (
        nearest_similarity,
        nearest_similarity_packed,
        pack_fingerprints,
    )

    started = time.perf_counter()
    gaussian = None
    if len(canonical) < 2:
        reason = f"needs at least 2 valid molecules for a covariance, got {len(canonical)}"
        reasons.update({f"FCD/{suffix}": reason for suffix, _ in REFERENCE_SETS})
    else:
        gaussian = _chemnet.gaussian(
            _chemnet.activations(canonical, device=device, batch_size=batch_size)
        )
    timings["chemnet"] = time.perf_counter() - started

    fragments = Counter(fragment for m in molecules for fragment in m.fragments)
    scaffolds = Counter(m.scaffold for m in molecules if m.scaffold is not None)
    for suffix, split in REFERENCE_SETS:
        statistics = reference_statistics(split)
        if gaussian is not None:
            values[f"FCD/{suffix}"] = _chemnet.frechet_distance(
                np.asarray(statistics["FCD"]["mu"]),
                np.asarray(statistics["FCD"]["sigma"]),
                *gaussian,
            )
        started = time.perf_counter()
        if device == "cpu":
            nearest = nearest_similarity_packed(
                *pack_fingerprints(bits), *_packed_reference_fingerprints(split)
            )
        else:
            nearest = nearest_similarity(bits, statistics["SNN"]["fps"], device=device)
        values[f"SNN/{suffix}"] = float(nearest.mean())
        timings[f"snn_{split}"] = time.perf_counter() - started
        values[f"Frag/{suffix}"] = cosine_similarity(statistics["Frag"]["frag"], fragments)
        if not fragments:
            reasons[f"Frag/{suffix}"] = "no sample has a BRICS fragment"
        values[f"Scaf/{suffix}"] = cosine_similarity(statistics["Scaf"]["scaf"], scaffolds)
        if not scaffolds:
            reasons[f"Scaf/{suffix}"] = (
                "no sample has a Murcko scaffold with two or more rings (molsets' minimum)"
            )


def fraction_unique(canonical: Sequence[str], k: int) -> tuple[float | None, str | None]:
    """unique@k: distinct molecules among the first ``k`` valid ones, over ``k``; (None, reason)
    with fewer than ``k`` (molsets warns and divides by the smaller count instead)."""
    if len(canonical) < k:
        return None, f"needs at least {k:,} valid molecules, got {len(canonical):,}"
    return len(set(canonical[:k])) / k, None


def cosine_similarity(reference: Mapping[str, int], generated: Mapping[str, int]) -> float | None:
    """Cosine of two count vectors given as {key: count} (absent keys count 0); None if either
    is empty."""
    if not reference or not generated:
        return None
    dot = sum(float(count) * reference.get(key, 0) for key, count in generated.items())
    norm_reference = math.sqrt(sum(float(c) * c for c in reference.values()))
    norm_generated = math.sqrt(sum(float(c) * c for c in generated.values()))
    return dot / (norm_reference * norm_generated)


def wasserstein_1d(reference: np.ndarray, generated: np.ndarray) -> float:
    """Earth mover's distance of two 1-D empirical distributions: ∫ |F_ref(x) - F_gen(x)| dx."""
    reference, generated = np.sort(reference), np.sort(generated)
    points = np.sort(np.concatenate([reference, generated]))
    widths = np.diff(points)
    cdf_reference = np.searchsorted(reference, points[:-1], side="right") / len(reference)
    cdf_generated = np.searchsorted(generated, points[:-1], side="right") / len(generated)
    return float(np.sum(np.abs(cdf_reference - cdf_generated) * widths))


@lru_cache(maxsize=2)
def reference_statistics(split: str) -> dict[str, dict[str, Any]]:
    """molsets' precomputed statistics of the ``test`` or ``test_scaffolds`` split."""
    if split not in ("test", "test_scaffolds"):
        raise ValueError(f"MOSES statistics exist for 'test' and 'test_scaffolds', got {split!r}")
    path = package_file("moses", f"dataset/data/{split}_stats.npz")
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: install molsets==0.3.1 (--no-deps)")
    # the file is a pickled dict (Counters, arrays) written by molsets, read from its package
    with np.load(path, allow_pickle=True) as archive:
        statistics = archive["stats"].item()
    expected = {"FCD", "SNN", "Frag", "Scaf", *PROPERTIES}
    if not expected <= set(statistics):
        raise ValueError(f"{path} lacks the statistics {sorted(expected - set(statistics))}")
    return statistics


@lru_cache(maxsize=2)
def _packed_reference_fingerprints(split: str) -> tuple[np.ndarray, np.ndarray]:
    from kiban.tasks.molecules.evaluation._tanimoto import pack_fingerprints

    return pack_fingerprints(reference_statistics(split)["SNN"]["fps"])


def training_smiles() -> frozenset[str]:
    """The MOSES training SMILES as written in molsets' file (not re-canonicalised, as molsets
    compares them)."""
    return moses_training_set().smiles


def _describe_all(smiles: list[str], n_jobs: int) -> list[MoleculeFeatures | str]:
    return _map(describe, smiles, n_jobs)


def _map(function, smiles: list[str], n_jobs: int) -> list:
    """``[function(s) for s in smiles]``, in ``n_jobs`` worker processes when that pays."""
    if n_jobs == 1 or len(smiles) < 2 * n_jobs:
        return [function(text) for text in smiles]
    # spawned, not forked: RDKit and torch hold threads (see docs/architecture.md)
    context = multiprocessing.get_context("spawn")
    with context.Pool(n_jobs) as pool:
        return pool.map(function, smiles, chunksize=max(1, len(smiles) // (n_jobs * 8)))
