"""kiban search substructure / similar: equal to RDKit's brute force on RDKit's NCI molecules."""

from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest
from rdkit import Chem, DataStructs, RDConfig

from kiban.chem import morgan_fingerprint
from kiban.index.chemsearch import CHEM_DIRECTORY, ChemIndex, ChemSearchError

NCI = os.path.join(RDConfig.RDDataDir, "NCI", "first_5K.smi")
SMARTS = [
    "c1ccncc1",  # pyridine
    "[CX3](=O)[OX2H1]",  # carboxylic acid
    "[Cl,Br,I]",  # heavier halogens
    "[r5]",  # an atom in a five-membered ring (needs the SSSR)
    "[$([NX3;H2,H1]);!$(NC=O)]",  # recursive: primary or secondary amine, not an amide
    "c1ccc2ccccc2c1",  # naphthalene (fused rings)
    "[#7]~[#6]@[#6]",
    "*",
]
QUERIES = ["c1ccc2ccccc2c1", "CC(=O)Oc1ccccc1C(=O)O", "Nc1ccncc1"]


@pytest.fixture(scope="module")
def nci_corpus(tmp_path_factory):
    """A corpus of NCI's first 600 molecules (id column nsc), and those canonical SMILES."""
    from kiban.cli import main

    directory = tmp_path_factory.mktemp("nci")
    rows = [line.split("\t") for line in open(NCI).read().splitlines()[:600]]
    with open(directory / "nci.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["smiles", "nsc"])
        writer.writerows(rows)
    corpus = directory / "corpus"
    assert (
        main(
            [
                "corpus",
                "build",
                str(directory / "nci.csv"),
                "--id-column",
                "nsc",
                "--out",
                str(corpus),
            ]
        )  # fmt: skip
        == 0
    )
    index = ChemIndex.open(corpus)
    molecules = [index.smiles(i) for i in range(len(index))]
    return corpus, molecules


@pytest.mark.parametrize("smarts", SMARTS)
def test_substructure_equals_rdkit_brute_force(nci_corpus, smarts):
    corpus, molecules = nci_corpus
    query = Chem.MolFromSmarts(smarts)
    counts = [len(Chem.MolFromSmiles(s).GetSubstructMatches(query)) for s in molecules]
    result = ChemIndex.open(corpus).substructure(smarts, limit=1000)
    assert result.molecules == sum(c > 0 for c in counts)
    assert result.matches == sum(counts)
    assert [h["smiles"] for h in result.hits] == [s for s, c in zip(molecules, counts) if c]
    assert [h["matches"] for h in result.hits] == [c for c in counts if c]
    assert result.molecules <= result.screened <= result.total_molecules == len(molecules)


def test_the_screen_prunes(nci_corpus):
    result = ChemIndex.open(nci_corpus[0]).substructure("c1ccncc1")
    assert result.screened <= result.total_molecules / 2


@pytest.mark.parametrize("query", QUERIES)
@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.7])
def test_similarity_equals_bulk_tanimoto(nci_corpus, query, threshold):
    corpus, molecules = nci_corpus
    fps = [morgan_fingerprint(Chem.MolFromSmiles(s)) for s in molecules]
    expected = DataStructs.BulkTanimotoSimilarity(
        morgan_fingerprint(Chem.MolFromSmiles(query)), fps
    )
    index = ChemIndex.open(corpus)
    assert np.array_equal(index.tanimoto(query), np.array(expected))
    result = index.similar(query, threshold=threshold, top=25)
    order = sorted(
        (i for i, v in enumerate(expected) if v >= threshold), key=lambda i: (-expected[i], i)
    )
    assert result.above_threshold == len(order)
    assert [h["smiles"] for h in result.hits] == [molecules[i] for i in order[:25]]
    assert [h["similarity"] for h in result.hits] == [round(expected[i], 6) for i in order[:25]]


def test_cli_json_and_table(nci_corpus, kiban):
    corpus, molecules = nci_corpus
    code, out, err = kiban("search", "substructure", corpus, "c1ccncc1", "--json", "--limit", 2)
    assert code == 0, err
    payload = json.loads(out)
    query = Chem.MolFromSmarts("c1ccncc1")
    hits = [s for s in molecules if Chem.MolFromSmiles(s).HasSubstructMatch(query)]
    assert payload["molecules"] == len(hits)
    first = payload["hits"][0]
    assert first["smiles"] == hits[0]
    from kiban.corpus.store import Corpus

    document = Corpus(corpus).find_document_row(where=first["where"])
    assert f"<mol>{hits[0]}</mol>" in document["text"] and document["id"] == first["doc"]
    assert json.loads(document["meta"])["source_id"] == first["source_id"]
    code, out, err = kiban("search", "similar", corpus, molecules[10], "--top", 3)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[1].split()[:2] == ["similarity", "docs"]
    assert lines[2].split()[0] == "1.000" and lines[2].split()[-1] == molecules[10]
    assert lines[-1].startswith("  … ")


def test_bad_queries_are_input_errors(nci_corpus, kiban):
    corpus, _ = nci_corpus
    code, out, err = kiban("search", "substructure", corpus, "c1ccn(cc1")
    assert code == 2
    assert "invalid SMARTS 'c1ccn(cc1'" in err and "position 6" in err
    code, out, err = kiban("search", "similar", corpus, "C1CC")
    assert code == 2 and "'C1CC' is not a molecule" in err and "unclosed ring" in err
    code, out, err = kiban("search", "similar", corpus, "CCO", "--threshold", 1.5)
    assert code == 2 and "--threshold must be in [0, 1], got 1.5" in err


def test_a_stale_index_is_rebuilt(nci_corpus, tmp_path):
    import shutil

    corpus = tmp_path / "corpus"
    shutil.copytree(nci_corpus[0], corpus)
    meta_path = corpus / CHEM_DIRECTORY / "chem.json"
    meta = json.loads(meta_path.read_text())
    meta["documents_sha256"] = "0" * 64
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ChemSearchError, match="changed since its chemistry index was built"):
        ChemIndex.open(corpus, build=False)
    notes = []
    index = ChemIndex.open(corpus, notify=notes.append)
    assert len(notes) == 1 and "changed since" in notes[0]
    assert index.meta["documents_sha256"] != "0" * 64
    assert len(index) == len(nci_corpus[1])


def test_threads_give_the_same_hits(nci_corpus):
    index = ChemIndex.open(nci_corpus[0])
    one = index.substructure("[#7]~[#6]@[#6]", limit=1000)
    two = index.substructure("[#7]~[#6]@[#6]", limit=1000, workers=2)
    assert (one.molecules, one.matches, one.hits) == (two.molecules, two.matches, two.hits)


def test_tanimoto_kernel_on_hand_made_words():
    from kiban.index.chemsearch import _tanimoto_kernel

    rows = np.zeros((3, 2), dtype=np.uint64)
    rows[1] = [0b1011, 1 << 63]  # 4 bits
    rows[2] = [0b0001, 0]  # 1 bit
    query = np.array([0b0011, 1 << 63], dtype=np.uint64)  # 3 bits
    out = np.empty(3)
    _tanimoto_kernel(rows, np.array([0, 4, 1]), query, 3, out)
    # empty vs query: 0 / 3; 3 common of 4 + 3 - 3; 1 common of 1 + 3 - 1
    assert out.tolist() == [0.0, 3 / 4, 1 / 3]
    empty = np.empty(1)
    _tanimoto_kernel(rows[:1], np.array([0]), np.zeros(2, dtype=np.uint64), 0, empty)
    assert empty.tolist() == [0.0]  # two empty fingerprints: 0, as RDKit


def test_index_build_chem(nci_corpus, kiban, tmp_path):
    import shutil

    corpus = tmp_path / "corpus"
    shutil.copytree(nci_corpus[0], corpus)
    shutil.rmtree(corpus / CHEM_DIRECTORY)
    code, out, err = kiban("index", "build", corpus, "--chem", "--json")
    assert code == 0, err
    chem = json.loads(out)["chem"]
    assert (chem["molecules"], chem["unreadable"]) == (len(nci_corpus[1]), 0)
    assert ChemIndex.open(corpus, build=False).meta["documents_sha256"] == chem["documents_sha256"]
