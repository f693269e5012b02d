"""The botorch proposer pinned: the same inputs and seed give these proposals, before and after
`kiban/lab/proposers/bo.py` was split into layout, surrogate and acquisition-optimiser modules.

Values computed with the code before the split (commit of issue 15); compared to 1e-9 (relative)
so that another BLAS's last bits do not fail it, while any change of behaviour does."""

from __future__ import annotations

import pytest

from kiban.lab.proposers import Observation, ProposerError, initial_design
from kiban.lab.proposers.bo import BotorchProposer
from kiban.lab.space import Categorical, Continuous, Molecule, Objective, Space

from .test_proposers import constraint, observe


def _same(got: list[dict], expected: list[dict]) -> None:
    assert [list(p) for p in got] == [list(p) for p in expected]
    for g, e in zip(got, expected):
        for key, value in e.items():
            if isinstance(value, float):
                assert g[key] == pytest.approx(value, rel=1e-9, abs=1e-9), key
            else:
                assert g[key] == value, key


def test_a_constrained_batch_with_a_categorical_is_pinned():
    space = Space(
        (Continuous("x", 0.0, 1.0), Continuous("y", -2.0, 2.0), Categorical("cat", ("p", "q"))),
        (Objective("f"),),
        (constraint("x + y <= 1", {"x", "y"}),),
    )
    points = initial_design(space, 6, seed=1)
    observed = observe(
        space,
        points[:5],
        lambda p: -((p["x"] - 0.3) ** 2) - (p["y"] - 0.5) ** 2 + 0.5 * (p["cat"] == "q"),
    )
    proposer = BotorchProposer(seed=0, initial=4, constrained_budget=False)
    got = proposer.propose(space, observed, points[5:], 2, seed=7)
    _same(
        got,
        [
            {"x": 0.0, "y": -0.09652963176279061, "cat": "q"},
            {"x": 1.0, "y": -0.44435234238208454, "cat": "q"},
        ],
    )


def test_a_two_objective_batch_is_pinned():
    box = Space(
        (Continuous("x", 0.0, 1.0), Continuous("y", 0.0, 1.0)),
        (Objective("f"), Objective("g", "min")),
    )
    points = initial_design(box, 7, seed=2)
    observed = [
        Observation(p, {"f": -((p["x"] - 0.3) ** 2) - p["y"], "g": (p["x"] - 0.7) ** 2 + p["y"]})
        for p in points
    ]
    got = BotorchProposer(seed=0, initial=4).propose(box, observed, [], 2, seed=5)
    _same(got, [{"x": 0.3994895294227759, "y": 0.0}, {"x": 0.48154235652502075, "y": 0.0}])


def test_a_molecule_batch_is_pinned():
    mols = ("CCO", "CCN", "c1ccccc1", "CC(=O)O", "CCCC", "OCCO", "CN", "CCCl", "c1ccncc1", "CC=O")
    space = Space((Molecule("m", mols),), (Objective("f"),))
    observed = [Observation({"m": s}, {"f": float(len(s))}) for s in mols[:4]]
    got = BotorchProposer(seed=0, initial=4).propose(space, observed, [{"m": mols[4]}], 2, seed=3)
    assert got == [{"m": "c1ccncc1"}, {"m": "CC=O"}]


def test_a_molecule_batch_larger_than_the_candidates_left_is_refused_with_the_numbers():
    mols = ("CCO", "CCN", "c1ccccc1", "CC(=O)O", "CCCC", "OCCO")
    space = Space((Molecule("m", mols),), (Objective("f"),))
    observed = [Observation({"m": s}, {"f": float(len(s))}) for s in mols[:3]]
    with pytest.raises(
        ProposerError,
        match=r"^molecule parameter 'm': asked for 3 proposals, but only 2 of the 6 candidates "
        r"are neither observed nor pending \(ask for at most 2\)$",
    ):
        BotorchProposer(seed=0, initial=3).propose(space, observed, [{"m": mols[3]}], 3, seed=0)
    got = BotorchProposer(seed=0, initial=3).propose(space, observed, [{"m": mols[3]}], 2, seed=0)
    assert sorted(g["m"] for g in got) == ["CCCC", "OCCO"]
