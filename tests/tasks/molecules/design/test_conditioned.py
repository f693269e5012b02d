"""Tests for kiban/tasks/molecules/design/conditioned.py."""

from __future__ import annotations

import numpy as np
import pytest
from rdkit import Chem
from rdkit.Chem import QED, Crippen, Descriptors

from kiban.tasks.molecules.design.conditioned import (
    PropertyRange,
    RangeSpec,
    Reference,
    compute_properties,
    conditioning_prompt,
    draw_targets,
    in_range,
    parse_prefix,
    score_samples,
)

from ._molecules import ASPIRIN


# --- conditioned generation ---------------------------------------------------------------------
def test_properties_and_range_checks_on_known_molecules():
    aspirin = compute_properties(Chem.MolFromSmiles(ASPIRIN))
    mol = Chem.MolFromSmiles(ASPIRIN)
    assert aspirin["qed"] == QED.qed(mol) and aspirin["mw"] == Descriptors.MolWt(mol)
    assert aspirin["logp"] == Crippen.MolLogP(mol)
    assert aspirin["tpsa"] == pytest.approx(63.6, abs=0.01)
    assert aspirin["mw"] == pytest.approx(180.159, abs=0.001)
    assert in_range(ASPIRIN, RangeSpec((PropertyRange("mw", 170, 190),))) is True
    assert (
        in_range(
            ASPIRIN, RangeSpec((PropertyRange("mw", 170, 190), PropertyRange("tpsa", high=60)))
        )
        is False
    )
    assert in_range(ASPIRIN, RangeSpec((PropertyRange("tpsa", low=63.7),))) is False
    assert (
        in_range(
            ASPIRIN, RangeSpec((PropertyRange("tpsa", 63.5, 63.7), PropertyRange("qed", high=0.56)))
        )
        is True
    )  # QED 0.550
    assert in_range("CCO", RangeSpec((PropertyRange("tpsa", 20.23, 20.23),))) is True  # inclusive
    assert in_range("C1CC", RangeSpec((PropertyRange("qed", low=0),))) is None
    assert in_range("", RangeSpec((PropertyRange("qed", low=0),))) is None  # was a TypeError
    assert (
        RangeSpec((PropertyRange("mw", 250, 300), PropertyRange("tpsa", high=60))).name
        == "MW in [250, 300] and TPSA <= 60"
    )
    with pytest.raises(ValueError, match="Got 'pka' instead"):
        PropertyRange("pka", 1, 2)


def test_prompt_round_trip_and_target_draws():
    targets = {"qed": 0.94123, "logp": -1.2345, "mw": 345.678, "tpsa": 60.0, "sa": 2.5}
    prompt = conditioning_prompt(targets)
    assert prompt == (
        "QED <num>0.9412</num>, logP <num>-1.234</num>, MW <num>345.7</num>, "
        "TPSA <num>60</num>, SA <num>2.5</num>: <mol>"
    )
    assert parse_prefix(prompt + "CCO</mol>") == {
        "qed": 0.9412,
        "logp": -1.234,
        "mw": 345.7,
        "tpsa": 60.0,
        "sa": 2.5,
    }
    assert parse_prefix("<mol>CCO</mol>") is None
    reference = Reference(
        ("CCO", "CCN", "CCC"),
        np.array(
            [[0.4, 0.0, 46.0, 20.2, 1.0], [0.9, 1.5, 45.0, 26.0, 1.5], [0.8, 1.8, 44.0, 0.0, 1.1]]
        ),
    )
    spec = RangeSpec((PropertyRange("qed", low=0.85),))
    drawn = draw_targets(spec, reference, 5, np.random.default_rng(0))
    assert all(
        d == dict(zip(["qed", "logp", "mw", "tpsa", "sa"], reference.values[1])) for d in drawn
    )
    uniform = draw_targets(
        RangeSpec((PropertyRange("logp", 1.0, 2.0),)),
        reference,
        50,
        np.random.default_rng(0),
        mode="uniform",
    )
    assert all(1.0 <= d["logp"] <= 2.0 for d in uniform)
    assert len({d["logp"] for d in uniform}) == 50
    counts = score_samples(
        ["CCO", None, "CCO", "CCCCCCCCCCCCCCCCCCCC"],
        RangeSpec((PropertyRange("mw", high=100),)),
        frozenset({"CCO"}),
    )
    assert counts == {
        "samples": 4,
        "valid": 3,
        "unique_valid": 2,
        "hits": 2,
        "unique_hits": 1,
        "novel_unique_hits": 0,
        "success_rate": 2 / 3,
        "hits_per_sample": 0.5,
    }
