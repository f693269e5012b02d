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
    assert len(written) == len(set(written))
    assert all(Chem.MolFromSmiles(s).GetNumHeavyAtoms() >= 5 for s in written)
