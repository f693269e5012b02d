"""k-fold cross-validation of a property model at train time, as chemprop reports it.

Folds. ``scaffold`` (the default): scikit-learn's ``GroupKFold`` with the Bemis–Murcko scaffold
(`kiban.chem.murcko_scaffold`, as `scaffold_split`) as the group, so no scaffold is in both the
training and the test part of a fold: the score of a model on new chemical series. It has no
seed (``GroupKFold`` balances fold sizes deterministically). ``random``: ``KFold(shuffle=True,
random_state=seed)``, the optimistic score on molecules like the training ones.

Scores. Per fold: R² and MAE (scikit-learn), RMSE and Spearman ρ (scipy) for regression, ROC-AUC
for classification (`fold_metrics`; NaN where undefined); the summary is the mean ± sample
standard deviation over the folds where a score is defined.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from kiban.tasks.molecules.properties.datasets import PropertyDataError, PropertyDataset
from kiban.tasks.molecules.properties.predictors import (
    CV_METRICS,
    FingerprintForest,
    LMSettings,
    PropertyLM,
    finetune_property_model,
    fold_metrics,
    summarize,
)
from kiban.tasks.molecules.properties.scaffold_split import murcko_scaffold

CV_SPLITS = ("scaffold", "random")
SPLITTERS = {
    "scaffold": "sklearn GroupKFold, groups = Bemis-Murcko scaffolds",
    "random": "sklearn KFold(shuffle=True, random_state=seed)",
}
MIN_PER_FOLD = 2  # a fold's R² and Spearman need two molecules


def cv_folds(
    dataset: PropertyDataset, *, folds: int, split: str = "scaffold", seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(training positions, test positions) of each fold (see the module docstring). Raises
    `PropertyDataError` when the data is too small for ``folds`` folds."""
    from sklearn.model_selection import GroupKFold, KFold

    if split not in CV_SPLITS:
        raise ValueError(
            f"The 'split' parameter of cv_folds must be one of {CV_SPLITS}. Got {split!r} instead."
        )
    n = len(dataset)
    if n < MIN_PER_FOLD * folds:
        raise PropertyDataError(
            f"{dataset.name}: {n} usable molecule(s) for {folds}-fold cross-validation; it needs "
            f"at least {MIN_PER_FOLD * folds} ({MIN_PER_FOLD} a fold): pass --cv-folds "
            f"{max(2, n // MIN_PER_FOLD)} or fewer, or --cv 0 to skip it"
        )
    placeholder = np.zeros((n, 1))
    if split == "random":
        return list(KFold(n_splits=folds, shuffle=True, random_state=seed).split(placeholder))
    scaffolds = [murcko_scaffold(mol) for mol in dataset.molecules]
    labels = {scaffold: i for i, scaffold in enumerate(dict.fromkeys(scaffolds))}
    if len(labels) < folds:
        fewer = f", --cv-folds {len(labels)} or fewer," if len(labels) >= 2 else ""
        raise PropertyDataError(
            f"{dataset.name}: {len(labels)} scaffold(s) in {n} molecules, fewer than the "
            f"{folds} scaffold folds; pass --cv-split random{fewer} or --cv 0"
        )
    groups = [labels[scaffold] for scaffold in scaffolds]
    return list(GroupKFold(n_splits=folds).split(placeholder, groups=groups))


def _nan_to_none(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else value


def cross_validate(
    dataset: PropertyDataset,
    *,
    method: str,
    folds: int = 5,
    split: str = "scaffold",
    seed: int = 0,
    trees: int = 500,
    n_jobs: int = 1,
    lm_base: str | os.PathLike | None = None,
    lm_settings: LMSettings | None = None,
    work: str | os.PathLike | None = None,
    on_fold: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Train ``method`` (as ``kiban property train`` would: ``trees`` trees and ``seed``, or
    ``lm_base`` fine-tuned with ``lm_settings`` in ``work``) on each fold's training part and
    score it on its test part. ``on_fold(fold, folds)`` is called before each fold (1-based).
    Returns the folds' sizes and scores and their mean ± sd (undefined scores are None)."""
    if method == "lm" and (lm_base is None or work is None):
        raise ValueError("cross_validate with method 'lm' needs lm_base and work")
    start = time.perf_counter()
    per_fold = []
    for number, (train, test) in enumerate(
        cv_folds(dataset, folds=folds, split=split, seed=seed), start=1
    ):
        if on_fold is not None:
            on_fold(number, folds)
        record: dict[str, Any] = {"fold": number, "train": len(train), "test": len(test)}
        if method == "rf":
            forest = FingerprintForest(dataset.task, n_estimators=trees, seed=seed, n_jobs=n_jobs)
            forest.fit([dataset.molecules[i] for i in train], dataset.targets[train])
            predictions = forest.predict([dataset.molecules[i] for i in test])
        else:
            run_dir = Path(work) / f"cv-fold{number}"
            finetune_property_model(
                lm_base, dataset, train, run_dir, settings=lm_settings or LMSettings()
            )
            fallback = float(dataset.targets[train].mean())
            predictions, unparsed = PropertyLM(run_dir / "model").predict(
                dataset, test, fallback=fallback
            )
            record["unparsed"] = unparsed  # predicted as the training mean
            shutil.rmtree(run_dir, ignore_errors=True)
        scores = fold_metrics(dataset.task, dataset.targets[test], predictions)
        record.update({name: _nan_to_none(value) for name, value in scores.items()})
        per_fold.append(record)
    metrics = CV_METRICS[dataset.task]
    return {
        "split": split,
        "splitter": SPLITTERS[split],
        "folds": folds,
        "seed": seed,
        "method": method,
        "metrics": list(metrics),
        "per_fold": per_fold,
        "summary": {
            name: summarize([r[name] if r[name] is not None else math.nan for r in per_fold])
            for name in metrics
        },
        "seconds": round(time.perf_counter() - start, 3),
    }
