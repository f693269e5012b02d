"""Train-time cross-validation (kiban/tasks/molecules/properties/cross_validation.py): the folds
and the scores, reproduced independently with scikit-learn and scipy on the same folds."""

from __future__ import annotations

import importlib.util
import statistics

import numpy as np
import pytest

if importlib.util.find_spec("sklearn") is None:
    pytest.skip("scikit-learn is needed", allow_module_level=True)
from rdkit import Chem  # noqa: E402
from rdkit.Chem import Crippen  # noqa: E402
from rdkit.Chem.Scaffolds import MurckoScaffold  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402
from sklearn.ensemble import RandomForestRegressor  # noqa: E402
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score  # noqa: E402
from sklearn.model_selection import GroupKFold, KFold  # noqa: E402

from kiban.chem import morgan_fingerprints  # noqa: E402
from kiban.tasks.molecules.properties.cross_validation import (  # noqa: E402
    cross_validate,
    cv_folds,
)
from kiban.tasks.molecules.properties.datasets import (  # noqa: E402
    PropertyDataError,
    PropertyDataset,
)
from kiban.tasks.molecules.properties.predictors import fold_metrics  # noqa: E402

RINGS = ["c1ccccc1", "C1CCCCC1", "c1ccncc1", "C1CCCC1", "c1ccsc1", "C1CCNCC1", "c1ccoc1"]
TAILS = ["C", "CC", "O", "N", "Cl", "F", "CO", "CN"]


def _dataset() -> PropertyDataset:
    """56 molecules on 7 scaffolds, target Crippen logP (deterministic, learnable)."""
    smiles = [Chem.CanonSmiles(ring + tail) for ring in RINGS for tail in TAILS]
    molecules = tuple(Chem.MolFromSmiles(s) for s in smiles)
    return PropertyDataset(
        name="toy",
        task="regression",
        question="What is its logp?",
        molecules=molecules,
        smiles=tuple(smiles),
        targets=np.array([Crippen.MolLogP(m) for m in molecules]),
        sources=tuple(f"toy.csv:{i + 2}" for i in range(len(smiles))),
    )


def _scaffold(mol) -> str:
    return MurckoScaffold.MurckoScaffoldSmiles(mol=mol, includeChirality=False)


@pytest.mark.parametrize("split", ["scaffold", "random"])
def test_cross_validate_matches_sklearn_on_the_same_folds(split):
    data = _dataset()
    result = cross_validate(data, method="rf", folds=4, split=split, seed=7, trees=8)
    features = morgan_fingerprints(data.molecules)
    if split == "scaffold":
        scaffolds = [_scaffold(m) for m in data.molecules]
        groups = [scaffolds.index(s) for s in scaffolds]  # first-seen numbering
        folds = list(GroupKFold(n_splits=4).split(features, groups=groups))
        for train, test in folds:  # no scaffold on both sides
            assert not {scaffolds[i] for i in train} & {scaffolds[i] for i in test}
    else:
        folds = list(KFold(n_splits=4, shuffle=True, random_state=7).split(features))
    expected = []
    for train, test in folds:
        forest = RandomForestRegressor(n_estimators=8, random_state=7, n_jobs=1)
        forest.fit(features[train], data.targets[train])
        predicted = forest.predict(features[test])
        truth = data.targets[test]
        expected.append(
            {
                "r2": r2_score(truth, predicted),
                "mae": mean_absolute_error(truth, predicted),
                "rmse": mean_squared_error(truth, predicted) ** 0.5,
                "spearman": spearmanr(truth, predicted).statistic,
            }
        )
    assert [(r["fold"], r["train"], r["test"]) for r in result["per_fold"]] == [
        (k + 1, len(train), len(test)) for k, (train, test) in enumerate(folds)
    ]
    for record, want in zip(result["per_fold"], expected):
        for name in ("r2", "mae", "rmse", "spearman"):
            assert record[name] == pytest.approx(want[name], rel=1e-9), name
    for name in ("r2", "mae", "rmse", "spearman"):
        values = [want[name] for want in expected]
        assert result["summary"][name] == {
            "mean": pytest.approx(statistics.fmean(values)),
            "std": pytest.approx(statistics.stdev(values)),
            "n": 4,
        }
    assert (result["split"], result["folds"], result["metrics"]) == (
        split,
        4,
        ["r2", "mae", "rmse", "spearman"],
    )


def test_scaffold_folds_ignore_the_seed_and_random_folds_follow_it():
    data = _dataset()
    scaffold = [test.tolist() for _, test in cv_folds(data, folds=3, seed=0)]
    assert scaffold == [test.tolist() for _, test in cv_folds(data, folds=3, seed=5)]
    first = [test.tolist() for _, test in cv_folds(data, folds=3, split="random", seed=0)]
    assert first != [test.tolist() for _, test in cv_folds(data, folds=3, split="random", seed=5)]
    assert sorted(i for fold in first for i in fold) == list(range(len(data)))


def test_cv_folds_refuse_data_too_small_for_the_folds():
    data = _dataset()
    with pytest.raises(
        PropertyDataError, match=r"toy: 7 scaffold\(s\) in 56 molecules, fewer than the 8"
    ):
        cv_folds(data, folds=8)
    small = data.subset(range(5))
    with pytest.raises(
        PropertyDataError,
        match=r"toy: 5 usable molecule\(s\) for 3-fold cross-validation; it needs at least 6 "
        r"\(2 a fold\): pass --cv-folds 2 or fewer",
    ):
        cv_folds(small, folds=3, split="random")
    with pytest.raises(ValueError, match="must be one of \\('scaffold', 'random'\\)"):
        cv_folds(data, folds=2, split="cluster")


def test_fold_metrics_values_and_undefined_cases():
    scores = fold_metrics("regression", np.array([1.0, 2.0, 3.0]), np.array([1.0, 3.0, 2.0]))
    assert scores == {
        "r2": pytest.approx(0.0),
        "mae": pytest.approx(2 / 3),
        "rmse": pytest.approx((2 / 3) ** 0.5),
        "spearman": pytest.approx(0.5),
    }
    constant = fold_metrics("regression", np.array([2.0, 2.0]), np.array([1.0, 3.0]))
    assert np.isnan(constant["r2"]) and np.isnan(constant["spearman"])
    assert constant["mae"] == 1.0
    assert fold_metrics("classification", np.array([0, 1, 1]), np.array([0.2, 0.9, 0.1])) == {
        "roc_auc": 0.5
    }


def test_one_scaffold_is_not_told_to_use_fewer_folds():
    from rdkit import Chem

    from kiban.tasks.molecules.properties.cross_validation import cv_folds
    from kiban.tasks.molecules.properties.datasets import PropertyDataError, PropertyDataset

    smiles = [f"{'C' * n}O" for n in range(1, 21)]  # acyclic: one (empty) scaffold
    dataset = PropertyDataset(
        name="chains", task="regression", question="What is its y?",
        molecules=tuple(Chem.MolFromSmiles(s) for s in smiles),
        smiles=tuple(smiles), targets=np.arange(20.0), sources=tuple(smiles),
    )  # fmt: skip
    with pytest.raises(
        PropertyDataError,
        match=r"chains: 1 scaffold\(s\) in 20 molecules, fewer than the 5 scaffold folds; "
        r"pass --cv-split random or --cv 0$",
    ):
        cv_folds(dataset, folds=5)
