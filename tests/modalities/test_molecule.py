"""The molecule codec: RDKit canonical SMILES, RDKit's reasons for invalid SMILES, SELFIES."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rdkit import Chem

from kiban.modalities import CodecError, get_codec
from kiban.modalities.molecule import (
    SMILES_TOKEN_PATTERN,
    MoleculeCodec,
    from_selfies,
    to_selfies,
)

codec = MoleculeCodec()


def rdkit_canonical(smiles: str) -> str:
    return Chem.MolToSmiles(Chem.MolFromSmiles(smiles))


@pytest.mark.parametrize(
    ("smiles", "canonical"),
    [
        ("OCC", "CCO"),
        ("CCO", "CCO"),
        ("  OCC\n", "CCO"),  # surrounding whitespace is not part of the SMILES
        ("C1=CC=CC=C1", "c1ccccc1"),
        ("[Na+].[Cl-]", "[Cl-].[Na+]"),
        ("N[C@@H](C)C(=O)O", "C[C@H](N)C(=O)O"),  # stereo kept (isomeric SMILES)
        ("[C@@H](F)(Cl)Br", "F[C@H](Cl)Br"),
        ("C/C=C/C", "C/C=C/C"),
        ("OC(=O)c1ccccc1OC(C)=O", "CC(=O)Oc1ccccc1C(=O)O"),
        ("C%10CCCCC%10", "C1CCCCC1"),
        ("[13CH4]", "[13CH4]"),
    ],
)
def test_canonical_examples(smiles, canonical):
    assert codec.canonical(smiles) == canonical
    assert codec.canonical(canonical) == canonical


def test_registry_returns_the_molecule_codec():
    assert isinstance(get_codec("mol"), MoleculeCodec)
    assert get_codec("mol").canonical("OCC") == "CCO"


def test_parse_returns_an_rdkit_mol():
    mol = codec.parse("c1ccccc1O")
    assert isinstance(mol, Chem.Mol) and mol.GetNumAtoms() == 7
    assert codec.to_text(mol) == "Oc1ccccc1"
    assert codec.decode("OCC").GetNumAtoms() == 3
    codec.validate("CCO")  # does not raise


def test_to_text_rejects_other_objects():
    with pytest.raises(TypeError, match="expected rdkit.Chem.Mol, got str"):
        codec.to_text("CCO")


def test_moses_smiles_match_rdkit_and_are_fixed_points(moses_smiles):
    assert len(moses_smiles) == 500
    for smiles in moses_smiles:
        canonical = codec.canonical(smiles)
        assert canonical == rdkit_canonical(smiles)
        assert codec.canonical(canonical) == canonical


def test_smiles_regex_tokenizes_moses_losslessly(moses_smiles):
    pattern = re.compile(SMILES_TOKEN_PATTERN)
    for smiles in moses_smiles:
        assert "".join(pattern.findall(smiles)) == smiles


def test_smiles_regex_tokens():
    assert re.findall(SMILES_TOKEN_PATTERN, "[C@@H](Cl)Br%10c1ccccc1/C=C\\N#N.[Na+]") == [
        "[C@@H]",
        "(",
        "Cl",
        ")",
        "Br",
        "%10",
        "c",
        "1",
        "c",
        "c",
        "c",
        "c",
        "c",
        "1",
        "/",
        "C",
        "=",
        "C",
        "\\",
        "N",
        "#",
        "N",
        ".",
        "[Na+]",
    ]


@pytest.mark.parametrize(
    ("smiles", "fragments"),
    [
        ("C(C)(C)(C)(C)C", ["valence", "atom # 0 C, 5"]),
        ("FC(F)(F)(F)F", ["valence"]),
        ("C1CC", ["unclosed ring"]),
        ("C1CC2", ["unclosed ring"]),
        ("C)C", ["parentheses", "position 2"]),
        ("CC(", ["syntax error", "position 3"]),
        ("X", ["syntax error", "position 1"]),
        ("c1cccc1", ["kekulize"]),
        ("", ["empty SMILES"]),
        ("   \n", ["empty SMILES"]),
        ("C C", ["SMILES contains whitespace"]),
        ("C\tO", ["SMILES contains whitespace"]),
    ],
)
def test_invalid_smiles_name_the_reason(smiles, fragments):
    with pytest.raises(CodecError) as info:
        codec.canonical(smiles)
    error = info.value
    assert error.modality == "mol" and error.text == smiles
    assert str(error).startswith(f"invalid mol {smiles!r}: ")
    for fragment in fragments:
        assert fragment in error.reason
    with pytest.raises(CodecError):
        codec.validate(smiles)


def test_errors_do_not_leak_between_calls():
    with pytest.raises(CodecError, match="unclosed ring"):
        codec.parse("C1CC")
    with pytest.raises(CodecError) as info:
        codec.parse("C(C)(C)(C)(C)C")
    assert "unclosed ring" not in info.value.reason
    assert codec.canonical("CCO") == "CCO"


def test_selfies():
    assert to_selfies("OCC") == "[C][C][O]"
    assert from_selfies("[C][C][O]") == "CCO"
    assert from_selfies(to_selfies("c1ccccc1O")) == "Oc1ccccc1"
    with pytest.raises(CodecError, match="unclosed ring"):
        to_selfies("C1CC")


def test_selfies_round_trip_on_moses(moses_smiles):
    for smiles in moses_smiles[:100]:
        assert from_selfies(to_selfies(smiles)) == codec.canonical(smiles)


# --- properties -------------------------------------------------------------------------------
ATOMS = ["C", "C", "C", "N", "O", "S", "Cl", "F", "c1ccccc1", "[C@@H]", "[C@H]", "[NH3+]", "[O-]"]
BONDS = ["", "", "", "=", "#"]


@st.composite
def grammar_smiles(draw) -> str:
    """A chain of atoms with optional branches and one optional ring; often invalid (valence),
    invalid ones are filtered out against RDKit."""

    def chain(depth: int) -> str:
        parts = [draw(st.sampled_from(ATOMS))]
        for _ in range(draw(st.integers(0, 4))):
            if depth < 2 and draw(st.booleans()):
                parts.append(f"({draw(st.sampled_from(BONDS))}{chain(depth + 1)})")
            parts.append(draw(st.sampled_from(BONDS)) + draw(st.sampled_from(ATOMS)))
        return "".join(parts)

    smiles = chain(0)
    if draw(st.booleans()):
        smiles = f"C1{smiles}C1"
    return smiles


@given(grammar_smiles())
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
def test_canonical_is_rdkit_and_a_fixed_point_on_grammar_smiles(smiles):
    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        with pytest.raises(CodecError):
            codec.canonical(smiles)
        return
    canonical = codec.canonical(smiles)
    assert canonical == Chem.MolToSmiles(mol)
    assert codec.canonical(canonical) == canonical


@given(data=st.data())
@settings(max_examples=100, deadline=None)
def test_canonical_is_a_fixed_point_on_moses_mixtures(moses_smiles, data):
    parts = data.draw(st.lists(st.sampled_from(moses_smiles), min_size=1, max_size=3))
    smiles = ".".join(parts)
    canonical = codec.canonical(smiles)
    assert canonical == rdkit_canonical(smiles)
    assert codec.canonical(canonical) == canonical
    assert sorted(canonical.split(".")) == sorted(codec.canonical(p) for p in parts)
