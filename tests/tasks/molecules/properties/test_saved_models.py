"""Saved property models (kiban/tasks/molecules/properties/saved_models.py): columns found as
``corpus build`` finds them, mean and tree spread from a saved forest, the output table."""

from __future__ import annotations

import csv
import importlib.util

import numpy as np
import pytest

if importlib.util.find_spec("sklearn") is None:
    pytest.skip("scikit-learn is needed", allow_module_level=True)
from rdkit import Chem  # noqa: E402

from kiban.tasks.molecules.properties.datasets import PropertyDataError  # noqa: E402
from kiban.tasks.molecules.properties.saved_models import (  # noqa: E402
    FileColumns,
    PropertyModel,
    TrainOptions,
    detect_columns,
    predict_file,
    resolve_spec,
    train_property_model,
)

SMILES = ["CCO", "CCN", "CCC", "c1ccccc1", "c1ccccc1O", "C1CCCCC1", "CCCl", "c1ccncc1"]


def _write(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def test_detect_columns_as_corpus_build(tmp_path):
    assay = _write(
        tmp_path / "assay.csv",
        ["compound_id,Name,SMILES,pIC50,split"]
        + [f"C-{i},mol {i},{s},{5 + i / 10},train" for i, s in enumerate(SMILES)],
    )
    assert detect_columns(assay) == FileColumns(
        smiles="SMILES", target="pIC50", ids=("compound_id", "Name", "split"), numeric=("pIC50",)
    )
    # an ID column of numbers is named by --id-column, so it is no candidate target
    numbered = _write(
        tmp_path / "numbered.tsv",
        ["cid\tcanonical_smiles\tlogS"] + [f"{i}\t{s}\t{-i}" for i, s in enumerate(SMILES)],
    )
    assert detect_columns(numbered, id_column="cid") == FileColumns(
        smiles="canonical_smiles", target="logS", ids=("cid",), numeric=("logS",)
    )
    assert detect_columns(numbered).numeric == ("cid", "logS")
    # a target with a censored value is still the target (its bad row is reported later)
    censored = _write(
        tmp_path / "censored.csv",
        ["compound_id,smiles,pIC50", "A,CCO,5.2", "B,CCN,<4", "C,CCC,6.1"],
    )
    assert detect_columns(censored).target == "pIC50"
    spec = resolve_spec(str(assay))
    assert (spec.smiles_column, spec.target_column, spec.id_columns) == (
        "SMILES",
        "pIC50",
        ("compound_id", "Name", "split"),
    )
    with pytest.raises(PropertyDataError, match=r"--smiles-column 'smile' is not a column"):
        resolve_spec(str(assay), smiles_column="smile")


def test_saved_forest_gives_mean_and_tree_spread(tmp_path):
    data = _write(
        tmp_path / "d.csv",
        ["id,smiles,y"] + [f"m{i},{s},{i * 0.5}" for i, s in enumerate(SMILES)],
    )
    options = TrainOptions(data=str(data), trees=7, seed=2, cv_folds=2, cv_split="random")
    manifest = train_property_model(options, tmp_path / "model")
    assert manifest["id_columns"] == ["id"] and manifest["target_column"] == "y"
    model = PropertyModel(tmp_path / "model")
    assert (model.target_column, model.has_std) == ("y", True)
    assert model.cross_validation == manifest["cross_validation"]
    molecules = [Chem.MolFromSmiles(s) for s in ("CCCO", "c1ccccc1N")]
    values, failures = model.predict(molecules)  # the old two-value form still works
    mean, std, failures_too = model.predict(molecules, return_std=True)
    per_tree = model.forest.tree_predictions(molecules)
    assert per_tree.shape == (7, 2)
    assert failures == failures_too == {}
    np.testing.assert_allclose(mean, values)
    np.testing.assert_allclose(mean, per_tree.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(std, np.std(per_tree, axis=0), rtol=1e-12)
    assert (std > 0).all()

    # scoring the training file itself: the measured column stays, the prediction is renamed
    predictions = predict_file(tmp_path / "model", data)
    assert predictions.output_columns == ("y_predicted", "y_predicted_std", "error")
    rows = list(csv.reader(predictions.to_csv().splitlines()))
    assert rows[0] == ["id", "smiles", "y", "y_predicted", "y_predicted_std", "error"]
    assert [r[:3] for r in rows[1:3]] == [["m0", "CCO", "0.0"], ["m1", "CCN", "0.5"]]
