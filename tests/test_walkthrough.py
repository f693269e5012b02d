"""The chemist's walkthrough of issue 16, end to end through the ``kiban`` command line, on a
300-row assay CSV the test writes: corpus → search → train → generate → report → property →
lab with history → design. Each step asserts the numbers (against RDKit computed here), not
just exit codes."""

from __future__ import annotations

import csv
import json

import pytest

from kiban.data import moses_smiles

pytestmark = pytest.mark.slow

ROWS = 300


def _pic50(mol) -> float:
    """A smooth made-up activity (logP up, TPSA down, aromatic rings up), two decimals."""
    from rdkit.Chem import Crippen, rdMolDescriptors

    value = (
        5.0
        + 0.6 * Crippen.MolLogP(mol)
        - 0.01 * rdMolDescriptors.CalcTPSA(mol)
        + 0.3 * rdMolDescriptors.CalcNumAromaticRings(mol)
    )
    return round(value, 2)


@pytest.fixture(scope="module")
def assay(tmp_path_factory):
    """assay.csv: compound_id, smiles, pIC50, series (text); the molecules are MOSES test's
    first 300 distinct canonical ones."""
    from rdkit import Chem

    try:
        smiles = moses_smiles("test", 400)
    except FileNotFoundError:
        pytest.skip("the MOSES test set (molsets) is not installed")
    rows, seen = [], set()
    for text in smiles:
        mol = Chem.MolFromSmiles(text)
        canonical = Chem.MolToSmiles(mol)
        if canonical in seen:
            continue
        seen.add(canonical)
        rows.append(
            {
                "compound_id": f"KB-{len(rows) + 1:04d}",
                "smiles": canonical,
                "pIC50": _pic50(mol),
                "series": "A" if mol.GetRingInfo().NumRings() > 2 else "B",
            }
        )
        if len(rows) == ROWS:
            break
    directory = tmp_path_factory.mktemp("walkthrough")
    path = directory / "assay.csv"
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return directory, path, rows


TRAIN = """
out = "{out}"

[model]
preset = "llama-1m"
num_layers = 2

[data]
corpus = "{corpus}"
seq_len = 96
validation_fraction = 0.02
seed = 0

[optim]
lr = 4e-3
warmup_steps = 5

[train]
max_steps = 40
batch_size = 16
micro_batch_size = 16
eval_every = 40
eval_batches = 1
checkpoint_every = 40
log_every = 10
"""


def test_walkthrough(assay, kiban):
    from rdkit import Chem

    directory, path, rows = assay
    corpus = directory / "corpus"
    template = "<mol>{smiles}</mol> (series {series}) has pIC50 <num>{pIC50}</num>."

    # corpus: one document per row, the compound id as its source id
    code, out, err = kiban(
        "corpus", "build", path, "--template", template, "--id-column", "compound_id",
        "--out", corpus, "--json",
    )  # fmt: skip
    assert code == 0, err
    summary = json.loads(out)
    assert summary["documents"] == ROWS
    code, out, err = kiban("corpus", "show", corpus, "--id", "KB-0007")
    assert code == 0, err
    assert rows[6]["smiles"] in out and f"{rows[6]['pIC50']}" in out
    assert kiban("index", "build", corpus)[0] == 0

    # chemistry-aware search, against RDKit on the rows
    pyridine = Chem.MolFromSmarts("c1ccncc1")
    expected = [len(Chem.MolFromSmiles(r["smiles"]).GetSubstructMatches(pyridine)) for r in rows]
    code, out, err = kiban("search", "substructure", corpus, "c1ccncc1", "--json")
    assert code == 0, err
    found = json.loads(out)
    assert (found["molecules"], found["matches"]) == (
        sum(c > 0 for c in expected),
        sum(expected),
    )
    assert found["molecules"] > 0
    code, out, err = kiban("search", "similar", corpus, rows[41]["smiles"], "--top", 3, "--json")
    assert code == 0, err
    best = json.loads(out)["hits"][0]
    assert (best["smiles"], best["similarity"], best["source_id"]) == (
        rows[41]["smiles"], 1.0, "KB-0042",
    )  # fmt: skip
    # a word at the start of a query: counted with and without its leading space
    code, out, err = kiban("search", "count", corpus, "pIC50", "--json")
    counted = json.loads(out)["results"][0]
    assert counted["count"] == ROWS and len(counted["variants"]) == 2

    # train a tiny model on it, then sample to a file
    config = directory / "train.toml"
    config.write_text(TRAIN.format(out=directory / "run", corpus=corpus))
    code, out, err = kiban("train", config)
    assert code == 0, err
    model = directory / "run" / "model"
    samples = directory / "samples.smi"
    code, out, err = kiban(
        "generate", model, "--prompt", "<mol>", "--n", 64, "--seed", 0, "--temperature", 1,
        "--max-new-tokens", 80, "--out", samples, "--unique", "--min-heavy-atoms", 5,
    )  # fmt: skip
    assert code == 0, err
    written = samples.read_text().split()
    assert written and len(written) == len(set(written))
    assert all(Chem.MolFromSmiles(s).GetNumHeavyAtoms() >= 5 for s in written)

    # the report: labelled from the data, and the model knows its corpus
    code, out, err = kiban(
        "report", "molecules", model, "--corpus", corpus, "--n", 40, "--seed", 0,
        "--out", directory / "report.html", "--json",
    )  # fmt: skip
    assert code == 0, err
    values = json.loads(out)
    assert values["training_corpus"]["status"] == "match"
    assert values["property_reference_molecules"] == ROWS
    html = (directory / "report.html").read_text()
    assert "3,000" not in html and "kiban demo" not in html and "300 training" in html


LAB = """
[campaign]
name = "assay"
proposer = "botorch"
batch_size = 3
initial = 3
seed = 0

[[parameters]]
name = "smiles"
type = "molecule"
candidates = "{table}"
id_column = "compound_id"

[[objectives]]
name = "pIC50"
goal = "max"
low = 0
high = 14

[instrument]
kind = "csv"
path = "{todo}"
"""


DESIGN = """
[run]
algorithm = "graph_ga"
budget = 120
seed = 0
start = "{start}"

[graph_ga]
population_size = 20
offspring_size = 20

[[scoring.component]]
type = "property"
name = "pIC50"
path = "{model}"
transform = {{ type = "sigmoid", low = 5.0, high = 8.0, k = 0.5 }}
weight = 2

[[scoring.component]]
type = "qed"
weight = 1

[[scoring.component]]
type = "alerts"
weight = 1
"""


def _read_csv(path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_walkthrough_property_and_lab(assay, kiban):
    """property train → predict (ids through, named output, spread), then a lab campaign that
    starts from 30 past measurements (one censored) and proposes with predictions."""
    import numpy as np

    from kiban.tasks.molecules.properties import PropertyModel

    directory, path, rows = assay
    model = directory / "pic50-rf"
    code, out, err = kiban(
        "property", "train", path, "--target", "pIC50", "--id-column", "compound_id",
        "--trees", 50, "--cv-folds", 3, "--out", model, "--json",
    )  # fmt: skip
    assert code == 0, err
    trained = json.loads(out)
    scores = trained["cross_validation"]
    assert (scores["folds"], [f["test"] for f in scores["per_fold"]]) == (3, [100, 100, 100])
    r2 = [f["r2"] for f in scores["per_fold"]]
    assert scores["summary"]["r2"]["mean"] == pytest.approx(sum(r2) / 3)
    assert scores["summary"]["r2"]["mean"] > 0.2  # the made-up pIC50 is learnable

    fresh = directory / "new.csv"
    with fresh.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["compound_id", "smiles"])
        writer.writerows(
            [[r["compound_id"], r["smiles"]] for r in rows[250:]] + [["KB-BAD", "C1CC"]]
        )
    predictions = directory / "preds.csv"
    code, out, err = kiban("property", "predict", model, fresh, "--out", predictions)
    assert code == 0, err
    table = _read_csv(predictions)
    assert list(table[0])[:4] == ["compound_id", "smiles", "pIC50", "pIC50_std"]
    assert [r["compound_id"] for r in table] == [r["compound_id"] for r in rows[250:]] + ["KB-BAD"]
    assert table[-1]["pIC50"] == "" and table[-1]["error"]
    from rdkit import Chem

    values, spread, _ = PropertyModel(model).predict(
        [Chem.MolFromSmiles(r["smiles"]) for r in rows[250:]], return_std=True
    )
    assert np.allclose([float(r["pIC50"]) for r in table[:-1]], values)
    assert np.allclose([float(r["pIC50_std"]) for r in table[:-1]], spread)
    assert all(s > 0 for s in spread[:5])

    # the lab: history of 30 compounds, one measured below the assay's limit
    config = directory / "lab.toml"
    todo = directory / "todo.csv"
    config.write_text(LAB.format(table=path, todo=todo))
    db = directory / "assay.db"
    assert kiban("lab", "init", config, "--db", db)[0] == 0
    past = directory / "past.csv"
    with past.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["compound_id", "smiles", "pIC50"])
        for i, r in enumerate(rows[:30]):
            writer.writerow([r["compound_id"], r["smiles"], "<4" if i == 2 else r["pIC50"]])
    code, out, err = kiban("lab", "add", "--db", db, past, "--json")
    assert code == 0, err
    added = json.loads(out)
    assert (added["imported"], added["flagged"]) == (30, [])
    code, out, err = kiban("lab", "propose", "--db", db, "--out", todo, "--json")
    assert code == 0, err
    proposed = _read_csv(todo)
    assert len(proposed) == 3
    by_smiles = {r["smiles"]: r for r in rows}
    history = {r["smiles"] for r in rows[:30]}
    for row in proposed:
        assert row["smiles"] not in history
        assert row["compound_id"] == by_smiles[row["smiles"]]["compound_id"]
        assert float(row["pIC50_sd"]) > 0 and row["acquisition"] not in ("", "-")
    for row in proposed:  # the assay is run: fill in the true values
        row["pIC50"] = by_smiles[row["smiles"]]["pIC50"]
    with todo.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(proposed[0]))
        writer.writeheader()
        writer.writerows(proposed)
    code, out, err = kiban("lab", "record", "--db", db, todo)
    assert code == 0, err
    code, out, err = kiban("lab", "status", "--db", db, "--json")
    assert code == 0, err
    status = json.loads(out)
    measured = [float(r["pIC50"]) for i, r in enumerate(rows[:30]) if i != 2]
    measured += [float(r["pIC50"]) for r in proposed]
    assert status["completed"] == 33
    best = status["best"]
    assert best["values"]["pIC50"] == max(measured)
    assert best["ids"]["compound_id"] == by_smiles[best["params"]["smiles"]]["compound_id"]
    report = directory / "lab-report"
    code, out, err = kiban("lab", "report", "--db", db, "--out", report)
    assert code == 0, err
    html = (report / "report.html").read_text()
    assert "<svg" in html and "predicted" in html.lower()

    # design: a graph GA from the 30 measured compounds towards a high predicted pIC50
    start = directory / "start.smi"
    start.write_text("".join(r["smiles"] + "\n" for r in rows[:30]))
    design = directory / "design.toml"
    design.write_text(DESIGN.format(start=start, model=model))
    code, out, err = kiban("design", design, "--out", directory / "design", "--json")
    assert code == 0, err
    ranked = _read_csv(directory / "design" / "ranked.csv")
    summary = json.loads((directory / "design" / "summary.json").read_text())
    assert len(ranked) == summary["oracle_calls"] <= 120
    scores = [float(r["score"]) for r in ranked]
    assert scores == sorted(scores, reverse=True)
    assert scores[0] == pytest.approx(summary["top1"], abs=1e-6)
    best = ranked[0]
    mol = Chem.MolFromSmiles(best["smiles"])
    predicted = PropertyModel(model).predict([mol])[0][0]
    assert float(best["pIC50_raw"]) == pytest.approx(predicted)
    from rdkit.Chem import QED

    assert float(best["qed_raw"]) == pytest.approx(QED.qed(mol))
