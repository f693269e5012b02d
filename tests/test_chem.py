"""Tests for kiban/chem.py, against RDKit itself (and RDKit Contrib's SA scorer), exact values."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from rdkit import Chem, DataStructs, RDConfig
from rdkit.Chem import QED, Crippen, Descriptors, rdFingerprintGenerator, rdMolDescriptors
from rdkit.Chem.Scaffolds import MurckoScaffold

from kiban import chem
from kiban.modalities import CodecError

MOLECULES = [
    "CCO",
    "CC(=O)Oc1ccccc1C(=O)O",
    "Cc1ccc(-c2cc(C(F)(F)F)nn2-c2ccc(S(N)(=O)=O)cc2)cc1",
    "C[C@H](N)C(=O)O",
    "O[C@H]1CC[C@@H](c2ccccc2)CC1",
    "[2H]C([2H])([2H])c1ccccc1",
    "C/C=C/c1ccc2ccccc2c1",
    "c1ccc2c(c1)CCN2C1CC1",
    "[Na+].[Cl-]",
    "C1CC2CCC1C2",
    "C1CCC2(CC1)CCCC2",
    "C1CCCCCCCCC1",
    "[Si]1[Si][Si]1",
    "CCCCCCCC",
]


@pytest.fixture(scope="module")
def sascorer():
    sys.path.insert(0, os.path.join(RDConfig.RDContribDir, "SA_Score"))
    try:
        import sascorer
    finally:
        sys.path.pop(0)
    return sascorer


# --- SMILES -----------------------------------------------------------------------------------
def test_canonical_smiles_is_rdkits_isomeric_canonical_smiles():
    for smiles in MOLECULES:
        expected = Chem.MolToSmiles(Chem.MolFromSmiles(smiles))
        assert chem.canonical_smiles(smiles) == expected
        assert chem.canonical_smiles(Chem.MolFromSmiles(smiles)) == expected
        assert chem.canonical_or_none(smiles) == expected
    assert chem.canonical_smiles("OCC") == "CCO"
    assert chem.canonical_smiles("F/C=C/F") == "F/C=C/F"  # isomeric: stereo kept


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty SMILES"),
        ("C1CC", "unclosed ring for input: 'C1CC'"),
        ("C(C)(C)(C)(C)C", "Explicit valence for atom # 0 C, 5, is greater than permitted"),
        ("hello", "syntax error while parsing: hello; check for mistakes around position 1"),
    ],
)
def test_invalid_smiles_raise_one_error_with_rdkits_reason(text, reason):
    with pytest.raises(chem.SmilesError) as caught:
        chem.parse_smiles(text)
    assert caught.value.reason == reason
    assert isinstance(caught.value, CodecError) and isinstance(caught.value, ValueError)
    assert str(caught.value) == f"invalid mol {text!r}: {reason}"
    with pytest.raises(chem.SmilesError):
        chem.canonical_smiles(text)
    assert chem.mol_or_none(text) is None
    assert chem.canonical_or_none(text) is None


def test_bulk_forms_log_nothing(capfd):
    assert chem.canonical_or_none("C1CC") is None
    assert chem.mol_or_none("hello") is None
    assert capfd.readouterr().err == ""


def test_whitespace_is_rdkits_name_separator():
    # a .smi line "SMILES name": RDKit reads the molecule and keeps the name; the span codec is
    # the one that refuses whitespace (tests/modalities/test_molecule.py)
    assert chem.canonical_smiles("OCC ethanol") == "CCO"
    assert chem.parse_smiles("OCC\tethanol").GetProp("_Name") == "ethanol"


def test_parse_smiles_wants_a_str():
    with pytest.raises(TypeError, match="got bytes"):
        chem.parse_smiles(b"CCO")


# --- fingerprints -----------------------------------------------------------------------------
def test_morgan_fingerprint_is_rdkits_bit_vector():
    for radius, n_bits in ((2, 2048), (2, 1024), (3, 512)):
        generator = rdFingerprintGenerator.GetMorganGenerator(radius=radius, fpSize=n_bits)
        for smiles in MOLECULES:
            mol = Chem.MolFromSmiles(smiles)
            ours = chem.morgan_fingerprint(mol, radius=radius, n_bits=n_bits)
            assert ours.ToBitString() == generator.GetFingerprint(mol).ToBitString()
    mol = Chem.MolFromSmiles(MOLECULES[2])
    default = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)
    assert chem.morgan_fingerprint(mol).ToBitString() == default.GetFingerprint(mol).ToBitString()


def test_morgan_fingerprints_are_rdkits_numpy_bits():
    mols = [Chem.MolFromSmiles(s) for s in MOLECULES]
    generator = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=1024)
    expected = np.stack([generator.GetFingerprintAsNumPy(m) for m in mols])
    ours = chem.morgan_fingerprints(mols, n_bits=1024)
    assert ours.dtype == np.uint8 and ours.shape == (len(mols), 1024)
    assert np.array_equal(ours, expected)
    as_float = chem.morgan_fingerprints(mols[:3], dtype=np.float64)
    for mol, row in zip(mols[:3], as_float):
        reference = np.zeros(2048)
        DataStructs.ConvertToNumpyArray(chem.morgan_fingerprint(mol), reference)
        assert row.dtype == np.float64 and np.array_equal(row, reference)
    assert chem.morgan_fingerprints([]).shape == (0, 2048)


# --- scaffolds --------------------------------------------------------------------------------
def test_murcko_scaffold_is_rdkits():
    for smiles in MOLECULES:
        mol = Chem.MolFromSmiles(smiles)
        assert chem.murcko_scaffold(mol) == MurckoScaffold.MurckoScaffoldSmiles(mol=mol)
        assert chem.murcko_scaffold(mol, isomeric=True) == Chem.MolToSmiles(
            MurckoScaffold.GetScaffoldForMol(mol)
        )
    chiral = Chem.MolFromSmiles("c1ccc(cc1)[C@H]1CCC[C@@H](C1)c1ccccc1")
    assert chem.murcko_scaffold(chiral) == "c1ccc(C2CCCC(c3ccccc3)C2)cc1"
    assert chem.murcko_scaffold(chiral, isomeric=True) == "c1ccc([C@H]2CCC[C@H](c3ccccc3)C2)cc1"
    labelled = Chem.MolFromSmiles("[13cH]1ccc(C)cc1")
    assert (chem.murcko_scaffold(labelled), chem.murcko_scaffold(labelled, isomeric=True)) == (
        "c1ccccc1",
        "c1cc[13cH]cc1",
    )
    assert chem.murcko_scaffold(Chem.MolFromSmiles("CCCC")) == ""  # acyclic: the empty scaffold


def test_murcko_scaffold_min_rings_is_mosess_rule():
    assert chem.murcko_scaffold(Chem.MolFromSmiles("CCc1ccccc1"), min_rings=2) is None
    assert chem.murcko_scaffold(Chem.MolFromSmiles("CCCC"), min_rings=1) is None
    assert (
        chem.murcko_scaffold(Chem.MolFromSmiles("CCc1ccc(Cc2ccccc2)cc1O"), min_rings=2)
        == "c1ccc(Cc2ccccc2)cc1"
    )


# --- descriptors ------------------------------------------------------------------------------
def test_descriptor_table_is_rdkits(sascorer):
    assert list(chem.DESCRIPTORS) == ["qed", "logp", "mw", "tpsa", "sa"]
    for smiles in MOLECULES:
        mol = Chem.MolFromSmiles(smiles)
        assert chem.DESCRIPTORS["qed"](mol) == QED.qed(mol)
        assert chem.DESCRIPTORS["logp"](mol) == Crippen.MolLogP(mol)
        assert chem.DESCRIPTORS["mw"](mol) == Descriptors.MolWt(mol)
        assert chem.DESCRIPTORS["tpsa"](mol) == rdMolDescriptors.CalcTPSA(mol)
        assert chem.DESCRIPTORS["sa"](mol) == sascorer.calculateScore(mol)


def test_sa_score_equals_rdkit_contrib_bit_for_bit(sascorer):
    from kiban.data import moses_smiles

    smiles = moses_smiles("test", 300) + MOLECULES
    scores = [chem.sa_score(Chem.MolFromSmiles(s)) for s in smiles]
    assert scores == [sascorer.calculateScore(Chem.MolFromSmiles(s)) for s in smiles]
    # the smoothed 10-end
    assert chem.sa_score(Chem.MolFromSmiles("[Si]1[Si][Si]1")) == pytest.approx(
        8.11326089, abs=1e-8
    )


def test_sa_score_of_no_atoms_is_an_error():
    with pytest.raises(ValueError, match="without atoms"):
        chem.sa_score(Chem.Mol())


# --- layering ---------------------------------------------------------------------------------
@pytest.mark.parametrize("first", ["kiban.chem", "kiban.modalities.molecule", "kiban.modalities"])
def test_imports_in_any_order_without_a_cycle(first):
    code = (
        f"import {first}; import kiban.chem, kiban.modalities.molecule; "
        "from kiban.modalities import get_codec; print(get_codec('mol').canonical('OCC'))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert (result.returncode, result.stdout) == (0, "CCO\n"), result.stderr
