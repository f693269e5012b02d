"""Scoring components equal RDKit's own computations; transforms, aggregation, config errors."""

from __future__ import annotations

import math

import pytest
from rdkit import Chem, DataStructs
from rdkit.Chem import QED, Crippen, Descriptors, Lipinski, rdFingerprintGenerator
from rdkit.Chem.FilterCatalog import FilterCatalog, FilterCatalogParams

from kiban.errors import InputError
from kiban.tasks.molecules.design.campaign import parse_config
from kiban.tasks.molecules.design.scoring import (
    COMPONENTS,
    ComponentConfig,
    ScoringConfig,
    ScoringFunction,
    Transform,
    aggregate,
    double_sigmoid,
    reverse_sigmoid,
    sigmoid,
)

from ._molecules import ASPIRIN

CELECOXIB = "Cc1ccc(-c2cc(C(F)(F)F)nn2-c2ccc(S(N)(=O)=O)cc2)cc1"
# a PAINS hit (ene_rhod, a rhodanine) and a molecule with a Brenk alert (a Michael acceptor)
RHODANINE = "S=C1SC(=Cc2ccccc2)C(=O)N1"
MOLECULES = [ASPIRIN, CELECOXIB, RHODANINE, "CCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCC(=O)O"]


def _raw(kind: str, molecule: str, **params) -> float:
    scoring = ScoringFunction(
        ScoringConfig(components=(ComponentConfig(type=kind, params=params),))
    )
    return scoring.score_components(Chem.MolFromSmiles(molecule))[kind].raw


@pytest.mark.parametrize("smiles", MOLECULES)
def test_components_equal_rdkit(smiles):
    mol = Chem.MolFromSmiles(smiles)
    assert _raw("qed", smiles) == QED.qed(mol)
    import sys

    from rdkit.Chem import RDConfig

    sys.path.append(f"{RDConfig.RDContribDir}/SA_Score")
    import sascorer

    assert _raw("sa", smiles) == sascorer.calculateScore(mol)
    generator = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)
    expected = DataStructs.TanimotoSimilarity(
        generator.GetFingerprint(Chem.MolFromSmiles(CELECOXIB)), generator.GetFingerprint(mol)
    )
    assert _raw("similarity", smiles, smiles=CELECOXIB) == expected
    params = FilterCatalogParams()
    params.AddCatalog(FilterCatalogParams.FilterCatalogs.PAINS)
    params.AddCatalog(FilterCatalogParams.FilterCatalogs.BRENK)
    assert _raw("alerts", smiles) == len(FilterCatalog(params).GetMatches(mol))
    violations = (
        (Descriptors.MolWt(mol) > 500)
        + (Crippen.MolLogP(mol) > 5)
        + (Lipinski.NumHDonors(mol) > 5)
        + (Lipinski.NumHAcceptors(mol) > 10)
    )
    assert _raw("lipinski", smiles) == violations
    carboxylic = Chem.MolFromSmarts("C(=O)[OH]")
    assert _raw("custom_alerts", smiles, smarts=["C(=O)[OH]", "[F]"]) == (
        mol.HasSubstructMatch(carboxylic) + mol.HasSubstructMatch(Chem.MolFromSmarts("[F]"))
    )


def test_alert_values_on_known_molecules():
    assert _raw("alerts", RHODANINE, catalogs=["PAINS"]) == 1
    assert _raw("alerts", ASPIRIN, catalogs=["PAINS"]) == 0
    assert _raw("lipinski", MOLECULES[3]) == 2  # C38 acid: MW 565 > 500 and logP > 5


def test_property_component_reads_a_saved_model(tmp_path):
    from kiban.tasks.molecules.properties.saved_models import (
        PropertyModel,
        TrainOptions,
        train_property_model,
    )

    data = tmp_path / "data.csv"
    rows = ["smiles,y"] + [f"{'C' * n}O,{n}" for n in range(1, 21)]
    data.write_text("\n".join(rows) + "\n")
    options = TrainOptions(
        data=str(data), target_column="y", task="regression", method="rf", trees=20, cv_folds=0
    )
    train_property_model(options, tmp_path / "m")
    mol = Chem.MolFromSmiles("CCCCO")
    expected = float(PropertyModel(tmp_path / "m").predict([mol])[0][0])
    assert _raw("property", "CCCCO", path=str(tmp_path / "m")) == expected
    # a regression model's values are not scores: the config must say how to map them
    component = f'type = "property"\npath = "{tmp_path / "m"}"'
    with pytest.raises(InputError, match="give a transform"):
        parse_config(_config(component), source="c.toml")
    with_transform = component + '\ntransform = {type = "sigmoid", low = 2, high = 10}'
    parsed = parse_config(_config(with_transform), source="c.toml")
    assert parsed.scoring.components[0].transform.type == "sigmoid"


def test_registry_conformance():
    """Every kind builds from its required params alone and maps raw values into [0, 1]."""
    examples = {"similarity": {"smiles": "CCO"}, "custom_alerts": {"smarts": ["[OH]"]}}
    for name, kind in COMPONENTS.items():
        assert kind.name == name and kind.description
        assert set(kind.required) <= set(kind.params)
        if name == "property":
            continue  # needs a model directory: tested above
        function = kind.build(examples.get(name, {}), f"component {name}")
        raw = function(Chem.MolFromSmiles(ASPIRIN))
        assert isinstance(raw, float)
        assert 0.0 <= kind.default(raw) <= 1.0


def test_transforms_match_reinvent4_formulas():
    # REINVENT 4: 1 / (1 + 10 ** (10 k (x - (low + high) / 2) / (low - high)))
    assert sigmoid(3.0, low=2.0, high=4.0, k=0.5) == 0.5
    assert sigmoid(4.0, low=2.0, high=4.0, k=0.5) == pytest.approx(1 / (1 + 10**-2.5))
    assert reverse_sigmoid(4.0, low=2.0, high=4.0, k=0.5) == pytest.approx(1 / (1 + 10**2.5))
    assert reverse_sigmoid(1e6, low=2.0, high=4.0, k=0.5) == 0.0  # no overflow
    low, high, div, si, se = 2.0, 6.0, 100.0, 150.0, 150.0
    for x in (0.0, 2.0, 4.0, 6.0, 8.0):  # REINVENT 4's A / B - C
        a = 10 ** (se * (x / div))
        b = 10 ** (se * (x / div)) + 10 ** (se * (low / div))
        c = 10 ** (si * (x / div)) / (10 ** (si * (x / div)) + 10 ** (si * (high / div)))
        assert double_sigmoid(x, low=low, high=high) == pytest.approx(a / b - c)
    assert Transform(type="none")(1.7) == 1.0


def test_aggregation():
    assert aggregate([0.25, 1.0], [1.0, 1.0], "geometric") == pytest.approx(0.5)
    assert aggregate([0.5, 0.8], [2.0, 1.0], "geometric") == pytest.approx(
        math.exp((2 * math.log(0.5) + math.log(0.8)) / 3)
    )
    assert aggregate([0.0, 1.0], [1.0, 1.0], "geometric") == 0.0
    assert aggregate([0.0, 1.0], [1.0, 3.0], "arithmetic") == 0.75
    assert aggregate([0.0, 0.5], [0.0, 1.0], "geometric") == 0.5  # weight 0: ignored


def _config(component: str = 'type = "qed"', extra: str = "", run: str = "") -> dict:
    import tomllib

    return tomllib.loads(
        f'[run]\nalgorithm = "graph_ga"\nbudget = 10\nstart = "x.smi"\n{run}\n'
        f"[scoring]\n{extra}\n[[scoring.component]]\n{component}\n"
    )


@pytest.mark.parametrize(
    ("component", "extra", "run", "message"),
    [
        ('type = "qde"', "", "", "type = 'qde' (did you mean 'qed'?)"),
        (
            'type = "qed"\nwieght = 2',
            "",
            "",
            "unknown key c.toml: scoring.component[0].wieght (did you mean 'weight'?)",
        ),
        ('type = "qed"', 'aggregation = "geometrc"', "", "(did you mean 'geometric'?)"),
        ('type = "qed"', "", "sed = 1", "unknown key c.toml: run.sed (did you mean 'seed'?)"),
        ('type = "similarity"', "", "", "needs smiles"),
        ('type = "similarity"\nsmiles = "C1CC"', "", "", "scoring.component[0].smiles = 'C1CC'"),
        ('type = "custom_alerts"\nsmarts = ["[C"]', "", "", "smarts[0] = '[C' is not a valid"),
        ('type = "alerts"\ncatalogs = ["PAIN"]', "", "", "(did you mean 'PAINS'?)"),
        (
            'type = "sa"\ntransform = {type = "sigmoid", low = 5, high = 2}',
            "",
            "",
            "needs low < high",
        ),
        (
            'type = "sa"\ntransform = {type = "sigmod", low = 2, high = 5}',
            "",
            "",
            "(did you mean 'sigmoid'?)",
        ),
        ('type = "qed"\nweight = -1', "", "", "weight must be a number >= 0"),
    ],
)
def test_config_errors(component, extra, run, message):
    with pytest.raises(InputError) as error:
        parse_config(_config(component, extra, run), source="c.toml")
    assert message in str(error.value)


def test_graph_ga_config_needs_one_start():
    import tomllib

    data = tomllib.loads(
        '[run]\nalgorithm = "graph_ga"\nbudget = 10\n[[scoring.component]]\ntype = "qed"'
    )
    with pytest.raises(InputError, match="exactly one of run.start"):
        parse_config(data, source="c.toml")
    data["run"]["algorithm"] = "reinvnet"
    with pytest.raises(InputError, match="did you mean 'reinvent'"):
        parse_config(data, source="c.toml")
