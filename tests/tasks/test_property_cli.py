"""``kiban property train / predict / evaluate`` (kiban/tasks/property_cli.py) and the library
behind it (kiban/tasks/molecules/properties/saved_models.py), on small files the tests write."""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import json
import statistics
import subprocess
import sys

import numpy as np
import pytest

if importlib.util.find_spec("sklearn") is None:
    pytest.skip("scikit-learn is needed", allow_module_level=True)
from rdkit import Chem  # noqa: E402
from rdkit.Chem import Crippen  # noqa: E402

from kiban.cli import main  # noqa: E402
from kiban.formats import FormatError  # noqa: E402
from kiban.io import _UMASK  # noqa: E402
from kiban.tasks.molecules.properties.predictors import (  # noqa: E402
    FingerprintForest,
    PropertyLM,
    rmse,
)
from kiban.tasks.molecules.properties.saved_models import (  # noqa: E402
    FORMAT,
    MANIFEST,
    PropertyModel,
    PropertyModelError,
)
from kiban.tasks.molecules.properties.scaffold_split import scaffold_split  # noqa: E402

RINGS = [
    "c1ccccc1",
    "C1CCCCC1",
    "c1ccncc1",
    "c1ccc2ccccc2c1",
    "C1CCCC1",
    "c1ccsc1",
    "C1CCNCC1",
    "c1ccoc1",
    "C1CCOC1",
    "c1cnccn1",
]
TAILS = ["", "C", "CC", "O", "N", "Cl", "F", "CO", "CN", "CCl", "CF", "OC"]


def _molecules() -> list[str]:
    """60 molecules over 10 ring scaffolds plus 5 acyclic ones (canonical SMILES)."""
    sizes = [12, 8, 7, 6, 5, 4, 3, 2, 2, 1]
    smiles = [f"{ring}{tail}" for ring, n in zip(RINGS, sizes) for tail in TAILS[:n]]
    smiles += [
        "CCO",
        "CCCN",
        "CC(=O)O",
        "CCCCCl",
        "OCCO",
        "CCCCO",
        "NCCN",
        "CCOC",
        "CCCl",
        "CC(C)O",
    ]
    return [Chem.MolToSmiles(Chem.MolFromSmiles(s)) for s in smiles]


def _logp(smiles: str) -> float:
    return round(Crippen.MolLogP(Chem.MolFromSmiles(smiles)), 3)


def _write(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def _regression_file(path, extra=()):
    return _write(
        path,
        ["name,smiles,logp"]
        + [f"m{i},{s},{_logp(s)}" for i, s in enumerate(_molecules())]
        + list(extra),
    )


def _classification_file(path):
    return _write(
        path, ["SMILES\tactive"] + [f"{s}\t{int('N' in s or 'n' in s)}" for s in _molecules()]
    )


def _run(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_help_does_not_import_heavy_libraries():
    code = (
        "import sys, kiban.cli; kiban.cli.build_parser(); "
        "print(sorted(m for m in ('torch', 'rdkit', 'sklearn', 'transformers') "
        "if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


# --- random forest: train, predict ------------------------------------------------------------
def test_train_rf_saves_a_manifest_and_predict_matches_the_forest(tmp_path, capsys):
    data = _regression_file(tmp_path / "logp.csv", extra=["bad,C1CC,1.0"])
    model = tmp_path / "model"
    code, out, err = _run(
        capsys,
        "property",
        "train",
        str(data),
        "--out",
        str(model),
        "--trees",
        "20",
        "--seed",
        "3",
        "--target-column",
        "logp",
        "--json",
    )
    assert code == 0
    manifest = json.loads(out)
    assert json.loads((model / MANIFEST).read_text()) == manifest
    assert (manifest["format"], manifest["version"], manifest["method"], manifest["task"]) == (
        FORMAT,
        1,
        "rf",
        "regression",
    )
    assert (manifest["smiles_column"], manifest["target_column"]) == ("smiles", "logp")
    assert manifest["training_data"]["sha256"] == hashlib.sha256(data.read_bytes()).hexdigest()
    assert manifest["training_data"]["molecules"] == 60
    assert manifest["training_data"]["bad_rows"] == 1
    assert manifest["predictor"]["fingerprint"] == {
        "kind": "morgan",
        "radius": 2,
        "n_bits": 2048,
        "generator": "rdkit rdFingerprintGenerator",
    }
    assert f"skipped {data}:62: not a valid SMILES" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["logp.csv", "model"]  # no temp dirs
    assert model.stat().st_mode & 0o777 == 0o777 & ~_UMASK  # as mkdir would make it

    queries = _write(
        tmp_path / "query.csv", ["id,smiles", "a,CCCCN", "b,not-a-smiles", "c,", "d,c1ccccc1CCO"]
    )
    predictions = tmp_path / "out" / "predictions.csv"
    code, out, err = _run(
        capsys, "property", "predict", str(model), str(queries), "--out", str(predictions)
    )
    validation = manifest["cross_validation"]
    assert code == 0 and out.splitlines() == [
        f"model {model}: rf predicting 'logp' with 'logp_std' (spread of its trees); 5-fold "
        f"scaffold CV: R² {validation['summary']['r2']['mean']:.3f} ± "
        f"{validation['summary']['r2']['std']:.3f}, MAE "
        f"{validation['summary']['mae']['mean']:.3f} ± {validation['summary']['mae']['std']:.3f}"
        f", RMSE {validation['summary']['rmse']['mean']:.3f} ± "
        f"{validation['summary']['rmse']['std']:.3f}, Spearman "
        f"{validation['summary']['spearman']['mean']:.3f} ± "
        f"{validation['summary']['spearman']['std']:.3f}",
        f"4 rows, 2 without a prediction; wrote {predictions}",
    ]
    assert f"{queries}:3: no prediction: not a valid SMILES" in err
    assert f"{queries}:4: no prediction: no SMILES in this row" in err
    with predictions.open() as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
    assert reader.fieldnames == ["id", "smiles", "logp", "logp_std", "error"]
    assert [r["id"] for r in rows] == ["a", "b", "c", "d"]
    assert [r["smiles"] for r in rows] == ["CCCCN", "not-a-smiles", "", "c1ccccc1CCO"]
    assert rows[1]["logp"] == rows[2]["logp"] == rows[1]["logp_std"] == ""
    assert rows[1]["error"].startswith("not a valid SMILES") and rows[0]["error"] == ""
    smiles = _molecules()
    forest = FingerprintForest("regression", n_estimators=20, seed=3).fit(
        [Chem.MolFromSmiles(s) for s in smiles], [_logp(s) for s in smiles]
    )
    queried = [Chem.MolFromSmiles("CCCCN"), Chem.MolFromSmiles("c1ccccc1CCO")]
    expected = forest.predict(queried)
    per_tree = np.stack([tree.predict(forest._features(queried)) for tree in forest.forest_])
    assert [float(rows[0]["logp"]), float(rows[3]["logp"])] == pytest.approx(expected, rel=1e-5)
    assert [float(rows[0]["logp_std"]), float(rows[3]["logp_std"])] == pytest.approx(
        np.std(per_tree, axis=0), rel=1e-5
    )
    assert all(float(rows[i]["logp_std"]) > 0 for i in (0, 3))

    code, out, _ = _run(capsys, "property", "predict", str(model), str(queries), "--json")
    payload = json.loads(out)
    assert (payload["rows"], payload["predicted"], payload["failed"]) == (4, 2, 2)
    assert payload["columns"] == {"prediction": "logp", "std": "logp_std", "error": "error"}
    assert payload["failures"][0]["where"] == f"{queries}:3"
    assert payload["predictions"][0]["prediction"] == pytest.approx(expected[0])
    assert payload["predictions"][0]["std"] == pytest.approx(np.std(per_tree[:, 0]))
    assert payload["predictions"][0]["id"] == "a"
    assert payload["predictions"][1]["prediction"] is None
    assert payload["cross_validation"] == validation


def test_predict_reads_smi_files_and_writes_csv_to_stdout(tmp_path, capsys):
    model = tmp_path / "model"
    assert (
        main(
            [
                "property",
                "train",
                str(_classification_file(tmp_path / "act.tsv")),
                "--out",
                str(model),
                "--task",
                "classification",
                "--trees",
                "10",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert out.startswith("trained rf (classification, target 'active') on 60 molecules")
    smi = _write(tmp_path / "q.smi", ["CCN name-1", "", "c1ccccc1"])
    code, out, err = _run(capsys, "property", "predict", str(model), str(smi))
    lines = out.splitlines()
    assert code == 0 and lines[0] == "smiles,name,active,active_std,error" and len(lines) == 4
    assert lines[1].startswith("CCN,name-1,") and lines[3].startswith("c1ccccc1,,")
    assert lines[2] == ",,,,no SMILES in this row" and f"{smi}:2: no prediction: no SMILES" in err
    assert all(0 <= float(line.split(",")[2]) <= 1 for line in (lines[1], lines[3]))
    assert err.splitlines()[-1].startswith(
        f"model {model}: rf predicting 'active' with 'active_std' (spread of its trees); "
        "5-fold scaffold CV: ROC-AUC "
    )


# --- bad input ----------------------------------------------------------------------------------
def test_bad_input_is_a_clear_error_with_exit_2(tmp_path, capsys):
    regression = _regression_file(tmp_path / "r.csv")
    two_numbers = _write(
        tmp_path / "two.csv",
        ["compound_id,SMILES,pic50,mw", "A-1,CCO,5.1,46", "A-2,CCN,6.2,45", "A-3,CCC,4.0,44"],
    )
    out = str(tmp_path / "m")
    cases = [
        (
            ["train", str(regression), "--out", out, "--target", "logP"],
            f"{regression}: --target 'logP' is not a column (did you mean 'logp'?); the header "
            "has ['name', 'smiles', 'logp']",
        ),
        (
            ["train", str(regression), "--out", out, "--id-column", "Name"],
            f"{regression}: --id-column 'Name' is not a column (did you mean 'name'?)",
        ),
        (
            ["train", str(two_numbers), "--out", out],
            f"{two_numbers}: cannot tell the target column (the numeric columns are ['pic50', "
            "'mw']); pass --target, one of ['compound_id', 'pic50', 'mw'] (ID/text columns: "
            "['compound_id']; the header has ['compound_id', 'SMILES', 'pic50', 'mw'])",
        ),
        (
            ["train", str(two_numbers), "--out", out, "--target", "pic50", "--cv", "4"],
            f"{two_numbers.stem}: 3 usable molecule(s) for 4-fold cross-validation; it needs at "
            "least 8 (2 a fold): pass --cv-folds 2 or fewer, or --cv 0 to skip it",
        ),
        (
            ["train", str(regression), "--out", out, "--cv-folds", "1"],
            "cv_folds must be 0 (no cross-validation) or >= 2, got 1",
        ),
        (
            ["train", str(regression), "--out", out, "--cv-folds", "20"],
            "r: 11 scaffold(s) in 60 molecules, fewer than the 20 scaffold folds; pass "
            "--cv-split random, --cv-folds 11 or fewer, or --cv 0",
        ),
        (
            ["train", str(_write(tmp_path / "s.csv", ["mol,y", "CCO,1"])), "--out", out],
            "no SMILES column (none is named smiles or canonical_smiles); pass --smiles-column, "
            "one of ['mol', 'y']",
        ),
        (
            [
                "train",
                str(_write(tmp_path / "t.csv", ["smiles,y", "CCO,1", "CCN,high", "CC,"])),
                "--out",
                out,
            ],
            "2 row(s) with a bad target (regression targets must be numbers): "
            f"{tmp_path / 't.csv'}:3: target 'high' is not a number; {tmp_path / 't.csv'}:4",
        ),
        (
            [
                "train",
                str(_write(tmp_path / "c.csv", ["smiles,y", "CCO,1", "CCN,2"])),
                "--out",
                out,
                "--task",
                "classification",
            ],
            f"(a classification target must be 0 or 1): {tmp_path / 'c.csv'}:3: label '2'",
        ),
        (
            [
                "train",
                str(_write(tmp_path / "one.csv", ["smiles,y", "CCO,1", "CCN,1"])),
                "--out",
                out,
                "--task",
                "classification",
            ],
            "every target is 1",
        ),
        (
            ["train", "bbb", "--out", out],
            "'bbb' is neither a file nor a shipped dataset (did you "
            "mean 'bbbp'?); shipped: logs, lipophilicity, bbbp,",
        ),
        (
            ["train", "bbbp", "--out", out, "--task", "regression"],
            "dataset 'bbbp' is a classification set",
        ),
        (["train", str(tmp_path / "absent.csv"), "--out", out], "absent.csv: no such file"),
        (
            ["train", str(regression), "--out", out, "--target-column", "logp", "--method", "lm"],
            "method 'lm' needs --base MODEL_DIR",
        ),
        (
            ["train", str(regression), "--out", out, "--target-column", "logp", "--trees", "0"],
            "trees must be >= 1, got 0",
        ),
        (
            ["evaluate", str(_write(tmp_path / "few.csv", ["smiles,y", "CCO,1", "CCN,2"]))],
            "2 usable molecule(s); an 80/10/10 scaffold split needs at least 10",
        ),
        (
            [
                "evaluate",
                str(
                    _write(
                        tmp_path / "acyclic.csv",
                        ["smiles,y"] + [f"{'C' * n}O,{n}" for n in range(1, 13)],
                    )
                ),
            ],
            "the scaffold split of seed 0 has 0 training and 12 test molecules (1 scaffolds",
        ),
    ]
    for argv, message in cases:
        code, _, err = _run(capsys, "property", *argv)
        assert code == 2, argv
        assert err.startswith(f"kiban property {argv[0]}: error: "), err
        assert message in err, (message, err)
    assert not (tmp_path / "m").exists()


def test_model_directories_refuse_overwrite_and_unknown_formats(tmp_path, capsys):
    data = str(_regression_file(tmp_path / "r.csv"))
    model = tmp_path / "model"
    argv = [
        "property",
        "train",
        data,
        "--out",
        str(model),
        "--target-column",
        "logp",
        "--trees",
        "5",
    ]
    assert main(argv) == 0
    first = (model / MANIFEST).read_text()
    code, _, err = _run(capsys, *argv)
    assert code == 2 and "directory exists and is not empty (pass --overwrite" in err
    assert main(argv + ["--overwrite", "--seed", "1"]) == 0
    assert (model / MANIFEST).read_text() != first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "r.csv"]
    manifest = json.loads((model / MANIFEST).read_text())
    (model / MANIFEST).write_text(json.dumps({**manifest, "version": 2}))
    with pytest.raises(
        FormatError,
        match="'kiban.property-model' version 2 was written by a "
        "newer kiban; this one reads versions 1",
    ):
        PropertyModel(model)
    (model / MANIFEST).write_text("{not json")
    with pytest.raises(FormatError, match="not valid JSON .*expected a 'kiban.property-model'"):
        PropertyModel(model)
    (model / MANIFEST).write_text(json.dumps({**manifest, "method": "svm"}))
    with pytest.raises(
        PropertyModelError,
        match="method 'svm' / task 'regression'; expected "
        r"one of \('rf', 'lm'\)",
    ):
        PropertyModel(model)
    del manifest["question"]
    (model / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(PropertyModelError, match=r"manifest lacks \['question'\]"):
        PropertyModel(model)
    code, _, err = _run(capsys, "property", "predict", str(tmp_path), data)
    assert code == 2 and f"{tmp_path}: not a kiban property model (no manifest.json)" in err


# --- evaluate -----------------------------------------------------------------------------------
def test_evaluate_rf_scores_each_seed_on_its_scaffold_split(tmp_path, capsys):
    data = _regression_file(tmp_path / "r.csv")
    code, out, _ = _run(
        capsys,
        "property",
        "evaluate",
        str(data),
        "--target-column",
        "logp",
        "--trees",
        "10",
        "--seeds",
        "0",
        "4",
        "--json",
    )
    assert code == 0
    result = json.loads(out)
    smiles = _molecules()
    molecules = [Chem.MolFromSmiles(s) for s in smiles]
    targets = np.array([_logp(s) for s in smiles])
    assert [run["seed"] for run in result["runs"]] == [0, 4]
    for run in result["runs"]:
        split = scaffold_split(molecules, seed=run["seed"])
        forest = FingerprintForest("regression", n_estimators=10, seed=run["seed"]).fit(
            [molecules[i] for i in split.train], targets[split.train]
        )
        assert run["rf"] == pytest.approx(
            rmse(targets[split.test], forest.predict([molecules[i] for i in split.test]))
        )
        assert run["split"]["test"] == len(split.test)
        assert run["train_mean_baseline"] == pytest.approx(
            rmse(targets[split.test], np.full(len(split.test), targets[split.train].mean()))
        )
    scores = [run["rf"] for run in result["runs"]]
    assert result["summary"]["rf"] == {
        "mean": pytest.approx(statistics.fmean(scores)),
        "std": pytest.approx(statistics.stdev(scores)),
        "n": 2,
    }
    assert result["metric"] == "rmse" and result["methods"] == ["rf"]

    code, out, _ = _run(
        capsys,
        "property",
        "evaluate",
        str(data),
        "--target-column",
        "logp",
        "--trees",
        "10",
        "--seeds",
        "0",
        "4",
    )
    lines = out.splitlines()
    assert lines[0].startswith(f"{data}: regression, 60 molecules (0 rows skipped)")
    assert lines[2].split()[:4] == [
        "0",
        str(result["runs"][0]["split"]["train"]),
        str(result["runs"][0]["split"]["test"]),
        f"{scores[0]:.3f}",
    ]
    assert lines[4].split()[3:6] == [
        f"{statistics.fmean(scores):.3f}",
        "±",
        f"{statistics.stdev(scores):.3f}",
    ]


# --- language model -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    """A 1-layer kiban Llama (untrained) whose tokenizer knows the test molecules."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from kiban.tokenizer import train_tokenizer
    from kiban.train.config import ModelConfig
    from kiban.train.models import build_model, save_hf

    root = tmp_path_factory.mktemp("property-cli-lm")
    texts = [
        f"<mol>{s}</mol> What is its logp? <num>{_logp(s):.2f}</num> active? <num>1</num>"
        for s in _molecules()
    ]
    tokenizer = train_tokenizer(texts * 2, vocab_size=300, min_frequency=1)
    lm = build_model(
        ModelConfig(
            preset="llama-1m", hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64
        ),
        tokenizer,
        seq_len=64,
        seed=0,
    )
    save_hf(lm, None, tokenizer, root / "base")
    return root / "base"


LM_OPTIONS = ["--steps", "2", "--batch-size", "4", "--device", "cpu"]


def test_train_lm_classifier_and_predict_probabilities(tmp_path, capsys, tiny_base):
    data = _classification_file(tmp_path / "act.tsv")
    model = tmp_path / "lm"
    code, out, _ = _run(
        capsys,
        "property",
        "train",
        str(data),
        "--out",
        str(model),
        "--method",
        "lm",
        "--base",
        str(tiny_base),
        "--task",
        "classification",
        *LM_OPTIONS,
        "--cv",
        "0",
        "--json",
    )
    assert code == 0
    manifest = json.loads(out)
    assert manifest["cross_validation"] is None
    assert (manifest["method"], manifest["question"]) == ("lm", "What is its active?")
    assert manifest["predictor"]["steps"] == 2 and manifest["predictor"]["rejected_prompts"] == 0
    assert sorted(p.name for p in model.iterdir()) == [MANIFEST, "model"]
    queries = _write(tmp_path / "q.csv", ["SMILES", "CCN", "C1CC", "c1ccccc1O"])
    code, out, err = _run(capsys, "property", "predict", str(model), str(queries), "--json")
    payload = json.loads(out)
    assert code == 0 and payload["failed"] == 1 and f"{queries}:3: no prediction" in err
    assert payload["columns"] == {"prediction": "active", "std": None, "error": "error"}
    assert "std" not in payload["predictions"][0]
    values = [row["prediction"] for row in payload["predictions"]]
    expected = PropertyLM(model / "model").smiles_class_probabilities(
        ["CCN", "Oc1ccccc1"], "What is its active?"
    )
    assert values[1] is None
    assert [values[0], values[2]] == pytest.approx(expected.tolist(), rel=1e-5)
    assert all(0 < v < 1 for v in expected)


def test_train_lm_regression_predicts_every_row(tmp_path, capsys, tiny_base):
    data = _regression_file(tmp_path / "r.csv")
    model = tmp_path / "lm"
    code, out, err = _run(
        capsys,
        "property",
        "train",
        str(data),
        "--out",
        str(model),
        "--method",
        "lm",
        "--base",
        str(tiny_base),
        *LM_OPTIONS,
        "--cv",
        "2",
        "--cv-split",
        "random",
    )
    assert code == 0
    # progress on stderr: each fold announced, a bar per fine-tuning (2 folds + the final fit)
    assert "cross-validation fold 1/2" in err and "cross-validation fold 2/2" in err
    assert err.count("train:   0%|") == 3 and "loss=" in err
    assert "cross-validation: 2-fold random split (sklearn KFold(shuffle=True, " in out
    validation = PropertyModel(model).cross_validation
    assert [r["test"] for r in validation["per_fold"]] == [30, 30]
    assert sorted(p.name for p in model.iterdir()) == [MANIFEST, "model"]  # no fold runs left
    queries = _write(tmp_path / "q.smi", ["CCO", "c1ccccc1"])
    code, out, err = _run(capsys, "property", "predict", str(model), str(queries), "--json")
    payload = json.loads(out)
    assert code == 0 and payload["rows"] == 2 and payload["task"] == "regression"
    failed = {f["where"]: f["reason"] for f in payload["failures"]}
    decoded = PropertyLM(model / "model").smiles_values(
        ["CCO", "c1ccccc1"], "What is its logp?", fallback=np.nan
    )
    for line, (row, text) in enumerate(zip(payload["predictions"], decoded.texts), start=1):
        if row["prediction"] is None:  # an untrained model may write something else
            assert failed[f"{queries}:{line}"] == f"the model wrote {text!r}, not a number"
        else:
            assert row["prediction"] == float(text)


def test_evaluate_both_methods_with_a_tiny_lm(tmp_path, capsys, tiny_base):
    data = _regression_file(tmp_path / "r.csv")
    code, out, _ = _run(
        capsys,
        "property",
        "evaluate",
        str(data),
        "--target-column",
        "logp",
        "--method",
        "both",
        "--base",
        str(tiny_base),
        "--trees",
        "5",
        "--seeds",
        "1",
        "--work",
        str(tmp_path / "work"),
        *LM_OPTIONS,
        "--json",
    )
    assert code == 0
    result = json.loads(out)
    (run,) = result["runs"]
    assert result["methods"] == ["rf", "lm"] and run["seed"] == 1
    assert run["lm_rejected"] == 0 and run["lm"] > 0 and run["rf"] > 0
    assert result["summary"]["lm"]["n"] == 1 and result["summary"]["lm"]["std"] == 0.0
    assert (tmp_path / "work" / "ft-seed1" / "model" / "config.json").is_file()
