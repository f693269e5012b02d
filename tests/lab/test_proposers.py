"""Proposers: designs, baselines, BoTorch (continuous, mixed, constrained, multi-objective),
the Tanimoto kernel, molecule pools and the generative proposer.

The generative proposer is tested both with an injected sampler (ranking, exclusions) and with
a tiny kiban model trained here for a few seconds (the model path end to end)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kiban.lab.proposers import Observation, ProposerError, initial_design, make_proposer
from kiban.lab.space import (
    Categorical,
    Composition,
    Continuous,
    Integer,
    LinearConstraint,
    Molecule,
    Objective,
    Space,
    parse_config,
)

# --------------------------------------------------------------------------------------------
# helpers


def constraint(text: str, space_names: set[str]) -> LinearConstraint:
    return LinearConstraint.parse(text, space_names)


def mixed_space(same: tuple[str, ...] = ("cat",)) -> Space:
    """Continuous, integer, categorical and a composition, with a linear constraint."""
    names = {"x", "y", "k", "A", "B", "C"}
    return Space(
        (
            Continuous("x", 0.0, 1.0),
            Continuous("y", -2.0, 2.0),
            Integer("k", 0, 3),
            Categorical("cat", ("p", "q")),
            Composition("mix", ("A", "B", "C")),
        ),
        (Objective("f"),),
        (constraint("x + y <= 1", names), constraint("A - B >= -0.5", names)),
        same,
    )


def mixed_value(p: dict) -> float:
    return (
        -((p["x"] - 0.3) ** 2)
        - (p["y"] - 0.5) ** 2
        + 0.5 * (p["cat"] == "q")
        + p["A"]
        - 0.1 * abs(p["k"] - 2)
    )


def observe(space: Space, points: list[dict], fn) -> list[Observation]:
    return [
        Observation(p, {o.name: v for o, v in zip(space.objectives, np.atleast_1d(fn(p)))})
        for p in points
    ]


def assert_valid(space: Space, points: list[dict]) -> None:
    for p in points:
        assert space.check_params(p) == [], (p, space.check_params(p))
        assert list(p) == space.keys


def config(raw_extra: dict, proposer: str = "botorch", options: dict | None = None):
    raw = {
        "campaign": {"name": "t", "proposer": proposer, "initial": 4, "seed": 3},
        "instrument": {"kind": "lookup"},
        "parameters": [{"name": "x", "type": "continuous", "low": 0, "high": 1}],
        "objectives": [{"name": "f"}],
        **raw_extra,
    }
    if options is not None:
        raw["proposer"] = options
    return parse_config(raw)


def botorch(**options):
    from kiban.lab.proposers.bo import BotorchProposer

    return BotorchProposer(seed=0, initial=4, **options)


# --------------------------------------------------------------------------------------------
# the package and make_proposer


def test_package_import_does_not_import_torch():
    code = "import sys, kiban.lab.proposers as p; p.make_proposer; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_making_a_model_proposer_to_check_a_campaign_imports_no_torch():
    """`lab init` makes the proposer to check its options: torch loads only to propose."""
    code = (
        "import sys\n"
        "from kiban.lab.space import parse_config\n"
        "from kiban.lab.proposers import make_proposer\n"
        "for kind in ('botorch', 'generative'):\n"
        "    raw = {'campaign': {'proposer': kind}, 'instrument': {'kind': 'lookup'},\n"
        "           'parameters': [{'name': 'm', 'type': 'molecule', 'candidates': ['CO']}],\n"
        "           'objectives': [{'name': 'f'}], 'proposer': {'samples': 8}}\n"
        "    print(make_proposer(parse_config(raw), sampler=lambda n, s: []).name)\n"
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["botorch", "generative", "False"]


def test_make_proposer_builds_each_kind_with_its_options():
    p = make_proposer(config({}, "botorch", {"num_restarts": 2, "raw_samples": 32}))
    assert p.name == "botorch" and p.options.num_restarts == 2
    assert (p.seed, p.initial) == (3, 4)
    assert make_proposer(config({}, "sobol")).name == "sobol"
    assert make_proposer(config({}, "random")).name == "random"


def test_unknown_option_names_it_and_the_closest_valid_one():
    with pytest.raises(ValueError, match=r"'num_restart'.*'num_restarts'"):
        make_proposer(config({}, "botorch", {"num_restart": 3}))
    with pytest.raises(ValueError, match=r"'sample'.*'samples'"):
        make_proposer(config({}, "generative", {"sample": 3}))
    with pytest.raises(ValueError, match="takes no options"):
        make_proposer(config({}, "sobol", {"seed": 3}))
    with pytest.raises(ValueError, match="raw_samples"):
        make_proposer(config({}, "botorch", {"raw_samples": "many"}))


def test_generative_with_a_missing_model_directory_names_the_path(tmp_path):
    missing = tmp_path / "no-such-model"
    raw = {"parameters": [{"name": "mol", "type": "molecule", "model": str(missing)}]}
    with pytest.raises(ProposerError, match=str(missing)):
        make_proposer(config(raw, "generative"))


# --------------------------------------------------------------------------------------------
# initial design


def test_initial_design_is_valid_deterministic_and_continues_with_skip():
    space = mixed_space(same=())
    first = initial_design(space, 8, seed=5)
    assert_valid(space, first)
    assert first == initial_design(space, 8, seed=5)
    assert initial_design(space, 3, seed=5, skip=5) == first[5:]
    assert initial_design(space, 8, seed=6) != first
    # the design covers the discrete values
    more = initial_design(space, 32, seed=5)
    assert {p["k"] for p in more} == {0, 1, 2, 3} and {p["cat"] for p in more} == {"p", "q"}


def test_initial_design_batch_shares_same_in_batch_values():
    space = mixed_space(same=("cat", "k"))
    points = initial_design(space, 6, seed=3, skip=2)
    assert_valid(space, points)
    assert len({(p["cat"], p["k"]) for p in points}) == 1
    assert len({p["x"] for p in points}) == 6


def test_initial_design_under_tight_constraints_uses_the_polytope_and_still_continues():
    names = {"x", "y"}
    space = Space(
        (Continuous("x", 0, 1), Continuous("y", 0, 1)),
        (Objective("f"),),
        (constraint("x + y <= 0.05", names),),
    )
    points = initial_design(space, 6, seed=1)
    assert_valid(space, points)
    assert initial_design(space, 2, seed=1, skip=4) == points[4:]
    assert len({(p["x"], p["y"]) for p in points}) == 6


def test_initial_design_composition_sums_to_total_and_spreads():
    space = Space((Composition("m", ("a", "b", "c"), total=2.0),), (Objective("f"),))
    points = initial_design(space, 64, seed=0)
    assert_valid(space, points)
    mean = np.mean([[p["a"], p["b"], p["c"]] for p in points], axis=0)
    assert np.allclose(mean, 2.0 / 3.0, atol=0.1)  # uniform on the simplex


def test_initial_design_walks_through_candidate_molecules():
    cands = ("CCO", "c1ccccc1", "CC(=O)O", "CCN", "CCCC")
    space = Space((Molecule("m", cands),), (Objective("f"),))
    points = initial_design(space, 5, seed=0)
    assert sorted(p["m"] for p in points) == sorted(["CCO", "c1ccccc1", "CC(=O)O", "CCN", "CCCC"])
    assert initial_design(space, 2, seed=0, skip=3) == points[3:]


# --------------------------------------------------------------------------------------------
# baselines


def test_sobol_proposer_continues_the_design_past_observed_and_pending():
    from kiban.lab.proposers.design import SobolProposer

    space = mixed_space(same=())
    design = initial_design(space, 7, seed=2)
    observed = observe(space, design[:3], mixed_value)
    out = SobolProposer(seed=2).propose(space, observed, design[3:5], 2, seed=99)
    assert out == design[5:7]


def test_random_proposer_is_seeded_valid_and_skips_pending_in_a_small_space():
    from kiban.lab.proposers.design import RandomProposer

    space = Space((Integer("k", 0, 1), Categorical("c", ("a", "b", "c"))), (Objective("f"),))
    prop = RandomProposer()
    a = prop.propose(space, [], [], 4, seed=1)
    assert a == prop.propose(space, [], [], 4, seed=1)
    assert_valid(space, a)
    assert len({(p["k"], p["c"]) for p in a}) == 4
    rest = prop.propose(space, observe(space, a[:2], lambda p: 0.0), a[2:], 2, seed=2)
    every = {(k, c) for k in (0, 1) for c in "abc"}
    assert {(p["k"], p["c"]) for p in rest} == every - {(p["k"], p["c"]) for p in a}
    with pytest.raises(ProposerError, match="new points"):
        prop.propose(space, observe(space, a + rest, lambda p: 0.0), [], 1, seed=3)


@pytest.mark.parametrize("kind", ["random", "sobol"])
def test_baselines_respect_same_in_batch(kind):
    from kiban.lab.proposers.design import RandomProposer, SobolProposer

    space = mixed_space(same=("cat", "mix"))
    prop = RandomProposer() if kind == "random" else SobolProposer()
    out = prop.propose(space, [], [], 5, seed=4)
    assert_valid(space, out)
    assert len({(p["cat"], p["A"], p["B"], p["C"]) for p in out}) == 1
    assert len({p["x"] for p in out}) == 5


# --------------------------------------------------------------------------------------------
# botorch


def test_botorch_starts_with_the_sobol_design():
    space = mixed_space(same=())
    out = botorch().propose(space, [], [], 3, seed=0)
    assert out == initial_design(space, 3, seed=0)


def test_botorch_mixed_constrained_batch_is_valid_new_shared_and_deterministic():
    names = {"x", "y", "A", "B", "C"}
    space = Space(
        (
            Continuous("x", 0, 1),
            Continuous("y", -2, 2),
            Categorical("cat", ("p", "q")),
            Composition("mix", ("A", "B", "C")),
        ),
        (Objective("f"),),
        (constraint("x + y <= 1", names),),
        ("cat",),
    )
    fn = lambda p: -((p["x"] - 0.3) ** 2) - (p["y"] - 0.5) ** 2 + 0.5 * (p["cat"] == "q") + p["A"]
    design = initial_design(space, 10, seed=0)
    observed, pending = observe(space, design[:8], fn), design[8:]
    prop = botorch(num_restarts=2, raw_samples=32)
    out = prop.propose(space, observed, pending, 3, seed=7)
    assert_valid(space, out)
    assert len({p["cat"] for p in out}) == 1
    assert not any(p in pending or p in design[:8] for p in out)
    assert all(abs(p["A"] + p["B"] + p["C"] - 1.0) < 1e-6 for p in out)
    assert out == prop.propose(space, observed, pending, 3, seed=7)


def test_constrained_acquisition_optimum_is_never_below_its_best_start(monkeypatch):
    """Under linear constraints BoTorch's SLSQP ran all restarts as one summed problem and may
    end below where it started (seen on the Olympus photo_* blends: 4-6 % of the steps, ~2 lower
    in log-acquisition). Each restart must be its own problem, and the best starting point
    wins over an optimiser result that is worse. Here the optimiser is made to return a poor
    feasible point (a vertex with the lowest acquisition): the proposal must not be it."""
    import botorch.optim as botorch_optim
    import torch

    space = Space((Composition("mix", ("A", "B", "C", "D")),), (Objective("f", goal="min"),))
    fn = lambda p: (p["A"] - 0.05) ** 2 + (p["B"] - 0.9) ** 2 + p["C"] ** 2 + p["D"] ** 2
    observed = observe(space, initial_design(space, 8, seed=1, center=True), fn)
    real = botorch_optim.optimize_acqf
    seen: dict = {}

    def sabotaged(acq_function, bounds, q, **kwargs):
        x, v = real(acq_function, bounds, q, **kwargs)
        vertices = torch.eye(4, dtype=x.dtype)
        with torch.no_grad():
            values = acq_function(vertices.unsqueeze(1))
        seen.update(
            acqf=acq_function,
            options=kwargs["options"],
            start=kwargs["batch_initial_conditions"],
            bad=vertices[int(values.argmin())],
        )
        return seen["bad"].unsqueeze(0), values.min()

    monkeypatch.setattr(botorch_optim, "optimize_acqf", sabotaged)
    (p,) = botorch(num_restarts=3, raw_samples=32).propose(space, observed, [], 1, seed=0)
    assert_valid(space, [p])
    assert seen["options"].get("max_optimization_problem_aggregation_size") == 1
    x = torch.as_tensor(space.to_unit(p), dtype=torch.float64)
    assert not torch.allclose(x, seen["bad"])
    with torch.no_grad():
        got = float(seen["acqf"](x.reshape(1, 1, -1)))
        best_start = float(seen["acqf"](seen["start"]).max())
    assert got >= best_start - 1e-9


def test_botorch_fully_discrete_space_proposes_exactly_what_is_left():
    space = Space((Integer("k", 0, 3), Categorical("c", ("a", "b", "c"))), (Objective("f"),))
    every = [{"k": k, "c": c} for k in range(4) for c in "abc"]
    observed = observe(space, every[:7], lambda p: p["k"] + (p["c"] == "b"))
    out = botorch().propose(space, observed, every[7:10], 2, seed=0)
    assert sorted(map(str, out)) == sorted(map(str, every[10:]))
    with pytest.raises(ProposerError, match="observed or pending"):
        botorch().propose(space, observed, every[7:], 1, seed=0)


def test_botorch_many_integers_use_the_alternating_optimizer():
    names = {"x", "k", "j"}
    space = Space(
        (
            Continuous("x", 0, 1),
            Integer("k", 0, 40),
            Integer("j", 0, 9),
            Categorical("c", ("a", "b", "c")),
        ),
        (Objective("f", goal="min"),),
        (constraint("k + 2*j <= 30", names),),
    )
    fn = lambda p: (p["x"] - 0.5) ** 2 + (p["k"] - 10) ** 2 / 100 + (p["j"] - 3) ** 2 / 10
    observed = observe(space, initial_design(space, 8, seed=1), fn)
    out = botorch(num_restarts=2, raw_samples=32).propose(space, observed, [], 2, seed=0)
    assert_valid(space, out)
    assert all(isinstance(p["k"], int) and isinstance(p["j"], int) for p in out)


def test_botorch_min_and_target_goals_move_towards_the_optimum():
    for goal, target, fn, best in [
        ("min", None, lambda p: (p["x"] - 0.7) ** 2, 0.7),
        ("target", 0.3, lambda p: p["x"], 0.3),
    ]:
        space = Space((Continuous("x", 0, 1),), (Objective("f", goal=goal, target=target),))
        observed = observe(space, initial_design(space, 8, seed=0), fn)
        (p,) = botorch().propose(space, observed, [], 1, seed=0)
        assert abs(p["x"] - best) < 0.08, (goal, p)


def test_linear_constraints_get_axs_optimiser_budget_unless_set():
    from kiban.lab.proposers.bo import BotorchProposer

    box = Space((Continuous("x", 0, 1), Continuous("y", 0, 1)), (Objective("f"),))
    blend = Space((Composition("m", ("a", "b", "c")),), (Objective("f"),))
    ineq = Space(box.parameters, box.objectives, (constraint("x + y <= 1", {"x", "y"}),))
    default = botorch()
    assert default.options_for(box) == default.options
    for space in (blend, ineq):
        o = default.options_for(space)
        assert {
            k: getattr(o, k) for k in BotorchProposer.CONSTRAINED_BUDGET
        } == BotorchProposer.CONSTRAINED_BUDGET
    o = botorch(num_restarts=3, maxiter=40).options_for(blend)  # explicit options win
    assert (o.num_restarts, o.maxiter, o.raw_samples, o.mc_samples) == (3, 40, 1024, 512)
    off = botorch(constrained_budget=False)
    assert off.options_for(blend) == off.options


def test_exploit_after_turns_to_the_posterior_best_from_that_many_observations():
    """Observed only on [0, 0.3] around a peak at 0.2: with ``exploit_after`` reached the
    proposal is the model's best guess (near 0.2), a batch adds new points; one
    observation short of it, the proposal is qLogNEI's, exactly the default's."""
    space = Space((Continuous("x", 0, 1),), (Objective("f"),))
    fn = lambda p: -((p["x"] - 0.2) ** 2)
    observed = observe(space, [{"x": x} for x in (0.0, 0.1, 0.15, 0.3)], fn)
    (p,) = botorch(exploit_after=4).propose(space, observed, [], 1, seed=0)
    assert abs(p["x"] - 0.2) < 0.03, p
    before = botorch(exploit_after=5).propose(space, observed, [], 1, seed=0)
    assert before == botorch().propose(space, observed, [], 1, seed=0)
    assert abs(before[0]["x"] - 0.2) > 0.03, before  # qLogNEI explores here: a real contrast
    batch = botorch(exploit_after=4).propose(space, observed, [], 3, seed=0)
    assert_valid(space, batch)
    assert len({round(q["x"], 6) for q in batch}) == 3
    # the batch's expected best: the posterior's best first, then points that may beat it
    assert abs(batch[0]["x"] - p["x"]) < 1e-6, batch


def test_exploit_after_falls_back_to_qlognei_when_its_best_was_measured():
    """f = x: the posterior's best is the bound x = 1, already measured; repeating it teaches
    nothing, so the step is qLogNEI's (the default's proposal, not a random repair)."""
    space = Space((Continuous("x", 0, 1),), (Objective("f"),))
    observed = observe(space, [{"x": x} for x in (0.0, 0.3, 0.6, 0.8, 1.0)], lambda p: p["x"])
    out = botorch(exploit_after=1).propose(space, observed, [], 1, seed=0)
    assert out == botorch().propose(space, observed, [], 1, seed=0)
    assert out[0]["x"] != 1.0


def test_a_prediction_names_the_acquisition_that_chose_the_point():
    """With ``exploit_after`` reached the point is qSimpleRegret's: its prediction names it and
    gives its value (for one point, the posterior mean as an MC estimate), not qLogNEI's for a
    point qLogNEI did not choose; where the exploitation's best was measured, qLogNEI chose."""
    space = Space((Continuous("x", 0, 1),), (Objective("f"),))
    fn = lambda p: -((p["x"] - 0.2) ** 2)
    observed = observe(space, [{"x": x} for x in (0.0, 0.1, 0.15, 0.3)], fn)
    proposer = botorch(exploit_after=4)
    proposer.propose(space, observed, [], 2, seed=0)
    (first, second) = proposer.last_predictions
    assert [first["acquisition"], second["acquisition"]] == ["qSimpleRegret"] * 2
    assert first["acquisition_value"] == pytest.approx(first["objectives"]["f"]["mean"], abs=1e-3)
    assert second["acquisition_value"] >= first["acquisition_value"]  # the batch's best so far
    fallback = botorch(exploit_after=1)
    observed = observe(space, [{"x": x} for x in (0.0, 0.3, 0.6, 0.8, 1.0)], lambda p: p["x"])
    fallback.propose(space, observed, [], 1, seed=0)
    assert fallback.last_predictions[0]["acquisition"] == "qLogNoisyExpectedImprovement"


def test_exploit_after_refuses_several_objectives():
    space = Space((Continuous("x", 0, 1),), (Objective("f"), Objective("g")))
    observed = observe(space, initial_design(space, 4, seed=0), lambda p: (p["x"], -p["x"]))
    with pytest.raises(ProposerError, match="'exploit_after' works with one objective"):
        botorch(exploit_after=2).propose(space, observed, [], 1, seed=0)


@pytest.mark.slow
def test_botorch_beats_random_on_a_quadratic():
    """Deterministic (seeded) runs on a 3-d quadratic at 17 evaluations: BoTorch's regret is a
    small fraction of random search's (observed: ~0.0007 vs ~0.05 mean)."""
    from kiban.lab.proposers.design import RandomProposer

    space = Space(
        (Continuous("a", 0, 1), Continuous("b", 0, 1), Continuous("c", -1, 1)),
        (Objective("y", goal="min"),),
    )
    centre = np.array([0.3, 0.7, 0.4])
    fn = lambda p: float(((np.array([p["a"], p["b"], p["c"]]) - centre) ** 2).sum())

    def run(prop, seed: int) -> float:
        observed: list[Observation] = []
        for r in range(5):
            for p in prop.propose(space, observed, [], 5 if r == 0 else 3, seed * 100 + r):
                observed.append(Observation(p, {"y": fn(p)}))
        assert len(observed) == 17
        return min(o.values["y"] for o in observed)

    from kiban.lab.proposers.bo import BotorchProposer

    bo = [run(BotorchProposer(seed=s, initial=5), s) for s in range(3)]
    rnd = [run(RandomProposer(seed=s), s) for s in range(3)]
    assert np.mean(bo) < 0.1 * np.mean(rnd), (bo, rnd)
    assert sum(b < r for b, r in zip(bo, rnd)) >= 2, (bo, rnd)


def test_botorch_multi_objective_returns_valid_new_points():
    from kiban.lab.proposers.bo import reference_point

    space = Space(
        (Continuous("x", 0, 1), Continuous("y", 0, 1)),
        (Objective("f1", goal="max", threshold=0.0), Objective("f2", goal="min")),
    )
    fn = lambda p: (p["x"] * (1 - p["y"]), (p["x"] - 0.2) ** 2 + p["y"] ** 2)
    observed = observe(space, initial_design(space, 8, seed=0), fn)
    out = botorch(num_restarts=2, raw_samples=32).propose(space, observed, [], 2, seed=0)
    assert_valid(space, out)
    assert len({(p["x"], p["y"]) for p in out}) == 2
    # all thresholds given: they are the reference point (as utilities)
    import torch

    both = Space(
        space.parameters,
        (Objective("f1", threshold=0.1), Objective("f2", goal="min", threshold=0.5)),
    )
    ref = reference_point(None, both, torch.zeros(1, 2))
    assert ref.tolist() == [0.1, -0.5]


def test_winsorize_matches_ax_tukey_fences():
    from kiban.lab.proposers.bo import winsorize

    Y = np.array([[1.0], [2.0], [3.0], [4.0], [-100.0], [100.0]])
    out = winsorize(Y, [None])
    q1, q3 = np.percentile(Y, 25, method="lower"), np.percentile(Y, 75, method="higher")
    assert out[4, 0] == q1 - 1.5 * (q3 - q1) and out[5, 0] == 100.0  # bad side only
    with_t = winsorize(Y, [-5.0])
    low = min(q1, -5.0) - 1.5 * (q3 - min(q1, -5.0))
    assert with_t[4, 0] == low


# --------------------------------------------------------------------------------------------
# the Tanimoto kernel


def test_tanimoto_kernel_matches_numpy_and_is_psd():
    import torch

    from kiban.lab.proposers.kernels import TanimotoKernel

    rng = np.random.default_rng(0)
    A = (rng.random((40, 64)) < 0.3).astype(float)
    B = (rng.random((7, 64)) < 0.3).astype(float)
    A[0] = 0.0  # an all-zero fingerprint
    k = TanimotoKernel()
    K = k(torch.tensor(A), torch.tensor(B)).to_dense().numpy()
    expected = np.array([[a @ b / (a @ a + b @ b - a @ b) for b in B] for a in A])
    assert np.allclose(K, expected)
    KA = k(torch.tensor(A)).to_dense().numpy()
    assert np.allclose(KA, KA.T) and np.allclose(np.diag(KA), 1.0)
    assert np.linalg.eigvalsh(KA).min() > -1e-10
    diag = k(torch.tensor(A), torch.tensor(A), diag=True).numpy()
    assert np.allclose(diag, 1.0)


# --------------------------------------------------------------------------------------------
# molecules


CANDIDATES = (
    "CCO",
    "OCC",
    "CCCO",
    "CCCCO",
    "CCCCCO",
    "c1ccccc1",
    "Cc1ccccc1",
    "CCc1ccccc1",
    "CC(=O)O",
    "CCN",
    "CCCN",
    "CCCCN",
    "O=C=O",
    "C1CCCCC1",
    "CCOC",
)


def carbons(smiles: str) -> float:
    from rdkit import Chem

    return float(sum(a.GetSymbol() == "C" for a in Chem.MolFromSmiles(smiles).GetAtoms()))


def test_molecule_proposer_picks_new_candidates_only():
    from kiban.lab.proposers.base import canonical_smiles

    space = Space((Molecule("m", CANDIDATES),), (Objective("f"),))
    observed = observe(
        space, [{"m": s} for s in ("OCC", "CCCCO", "c1ccccc1", "CCN")], lambda p: carbons(p["m"])
    )
    pending = [{"m": "CCCO"}]
    prop = botorch()
    out = prop.propose(space, observed, pending, 4, seed=0)
    assert_valid(space, out)
    canon = {canonical_smiles(s) for s in CANDIDATES}
    used = {canonical_smiles(s) for s in ("CCO", "CCCCO", "c1ccccc1", "CCN", "CCCO")}
    picked = [p["m"] for p in out]
    assert set(picked) <= canon - used and len(set(picked)) == 4
    assert out == prop.propose(space, observed, pending, 4, seed=0)
    # exhausted: everything observed
    everything = observe(space, [{"m": s} for s in canon], lambda p: carbons(p["m"]))
    with pytest.raises(ProposerError, match="no new molecules"):
        prop.propose(space, everything, [], 1, seed=0)


def test_molecule_and_conditions_proposals_are_valid():
    space = Space((Molecule("m", CANDIDATES), Continuous("t", 0, 1)), (Objective("f"),))
    fn = lambda p: carbons(p["m"]) - 4 * (p["t"] - 0.6) ** 2
    observed = observe(space, initial_design(space, 6, seed=0), fn)
    out = botorch(num_restarts=2, raw_samples=32).propose(space, observed, [], 2, seed=0)
    assert_valid(space, out)
    from kiban.lab.proposers.base import canonical_smiles

    assert all(p["m"] in {canonical_smiles(c) for c in CANDIDATES} for p in out)


# --------------------------------------------------------------------------------------------
# generative


POOL = ["CCc1ccccc1", "CCCO", "CCCN", "not-a-smiles", "OCCO", "CCO", "CC(C)CO"]


def stub_sampler(n: int, seed: int) -> list[str]:
    """Deterministic per seed, like a model; includes an invalid and a repeated molecule."""
    rng = np.random.default_rng(seed)
    return [POOL[i] for i in rng.permutation(len(POOL))][:n]


def generative(**options):
    from kiban.lab.proposers.generative import GenerativeProposer

    return GenerativeProposer(seed=0, initial=2, sampler=stub_sampler, **options)


def test_generative_before_data_picks_valid_samples_at_random():
    space = Space((Molecule("m", model="unused"),), (Objective("f"),))
    out = generative(samples=7).propose(space, [], [], 3, seed=1)
    assert_valid(space, out)
    assert {p["m"] for p in out} <= {"CCc1ccccc1", "CCCO", "CCCN", "OCCO", "CCO", "CC(C)CO"}
    assert len({p["m"] for p in out}) == 3


def test_generative_ranks_unseen_samples_by_acquisition():
    """Benzenes scored high: ethylbenzene (most like toluene) is the pick, unless pending."""
    space = Space((Molecule("m", model="unused"),), (Objective("f"),))
    scores = {
        "c1ccccc1": 10.0,
        "Cc1ccccc1": 9.0,
        "CCO": 0.0,
        "CCN": 0.0,
        "CCCC": 0.0,
        "CC(=O)O": 0.0,
        "O": 0.0,
    }
    observed = observe(space, [{"m": s} for s in scores], lambda p: scores[p["m"]])
    prop = generative(samples=7)
    (best,) = prop.propose(space, observed, [], 1, seed=0)
    assert best["m"] == "CCc1ccccc1"
    out = prop.propose(space, observed, [{"m": "c1ccc(CC)cc1"}], 3, seed=0)
    names = [p["m"] for p in out]
    assert "CCc1ccccc1" not in names and "CCO" not in names and len(set(names)) == 3


TAGGED = [
    "CCO",
    "CCCO",
    "CCCCO",
    "CC(C)O",
    "CCN",
    "CCCN",
    "CC(=O)O",
    "CCOC",
    "OCCO",
    "CCCC",
    "CC(C)C",
    "CCC(=O)O",
    "c1ccccc1",
    "Cc1ccccc1",
    "CCN(CC)CC",
    "OC1CCCCC1",
]


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A one-layer Llama trained for 60 steps on ``<mol>SMILES</mol>`` texts (~3 s): it writes
    valid, often new, small molecules."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    from kiban.tokenizer import train_tokenizer

    texts = [f"<mol>{s}</mol>" for s in TAGGED * 5]
    tok = train_tokenizer(texts, vocab_size=300)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny model: threads only contend
    cfg = LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        vocab_size=tok.vocab_size,
        max_position_embeddings=128,
        bos_token_id=None,
        eos_token_id=tok.eos_id,
        pad_token_id=tok.pad_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa")
    stream = torch.tensor([i for t in texts for i in [*tok.encode(t), tok.eos_id]])
    gen = torch.Generator().manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(60):
        starts = torch.randint(0, len(stream) - 33, (16,), generator=gen)
        batch = torch.stack([stream[s : s + 33] for s in starts.tolist()])
        logits = model(input_ids=batch[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1)
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.set_num_threads(threads)
    directory = tmp_path_factory.mktemp("tiny-mol-model")
    model.eval().save_pretrained(directory)
    tok.save(directory)
    return directory


def test_generative_with_a_tiny_kiban_model(tiny_model_dir):
    from kiban.lab.proposers.base import canonical_smiles

    raw = {
        "campaign": {"name": "g", "proposer": "generative", "initial": 2, "seed": 0},
        "instrument": {"kind": "lookup"},
        "parameters": [{"name": "m", "type": "molecule", "model": str(tiny_model_dir)}],
        "objectives": [{"name": "f"}],
        "proposer": {"samples": 32},
    }
    cfg = parse_config(raw)
    prop = make_proposer(cfg)
    first = prop.propose(cfg.space, [], [], 2, seed=0)
    assert_valid(cfg.space, first)
    observed = observe(cfg.space, first, lambda p: carbons(p["m"]))
    nxt = prop.propose(cfg.space, observed, [], 2, seed=1)
    assert_valid(cfg.space, nxt)
    seen = {canonical_smiles(p["m"]) for p in first}
    assert not seen & {canonical_smiles(p["m"]) for p in nxt}
    assert nxt == prop.propose(cfg.space, observed, [], 2, seed=1)


def test_marginal_posterior_matches_botorch_for_a_tanimoto_gp():
    """The one-pass screen computes what `model.posterior` gives per candidate."""
    import torch

    from kiban.lab.proposers.bo import Layout, fit_model, marginal_posterior
    from kiban.lab.space import parse_config

    smiles = [
        "CCO",
        "CCN",
        "c1ccccc1",
        "CC(=O)O",
        "CCCC",
        "CCOC",
        "c1ccncc1",
        "OCCO",
        "CC(C)O",
        "CCCl",
        "NCCN",
        "c1ccoc1",
    ]
    space = parse_config(
        {
            "parameters": [{"name": "m", "type": "molecule", "candidates": smiles}],
            "objectives": [{"name": "y"}],
            "instrument": {"kind": "function", "target": "a:b"},
        }
    ).space
    layout = Layout(space, 256, 2)
    X = layout.encode([{"m": s} for s in smiles])
    y = torch.tensor([[float(len(s))] for s in smiles[:8]], dtype=X.dtype)
    model = fit_model(layout, X[:8], y)
    mean, var = marginal_posterior(model, X)
    with torch.no_grad():
        post = model.posterior(X.unsqueeze(1))
    ref_mean = model.outcome_transform.untransform(mean.unsqueeze(-1))[0].squeeze(-1)
    assert torch.allclose(ref_mean, post.mean.reshape(-1), rtol=1e-5, atol=1e-6)
    scale = model.outcome_transform.stdvs.reshape(-1)[0] ** 2  # latent variance, no noise
    assert torch.allclose(var * scale, post.variance.reshape(-1), rtol=1e-4, atol=1e-8)


# --------------------------------------------------------------------------------------------
# the centre point (Ax's default first trial) and the outcome warp


def test_the_design_opens_with_the_centre_of_the_space():
    from kiban.lab.proposers.design import center_of

    space = Space(
        (
            Continuous("x", 0.0, 4.0),
            Continuous("r", 1.0, 100.0, log=True),
            Integer("k", 0, 4),
            Categorical("cat", ("p", "q", "s")),
            Composition("mix", ("A", "B", "C", "D"), total=2.0),
        ),
        (Objective("f"),),
    )
    middle = center_of(space)
    assert middle["x"] == pytest.approx(2.0) and middle["r"] == pytest.approx(10.0)
    assert middle["k"] == 2 and middle["cat"] == "q"
    assert [middle[c] for c in "ABCD"] == pytest.approx([0.5] * 4)
    with_centre = initial_design(space, 4, seed=1, center=True)
    assert with_centre[0] == {k: middle[k] for k in space.keys}
    # the rest is the Sobol design; a resumed design (skip) continues the same sequence
    assert with_centre[1:] == initial_design(space, 3, seed=1)
    assert initial_design(space, 2, seed=1, skip=2, center=True) == with_centre[2:]


def test_a_centre_that_breaks_a_constraint_is_left_out():
    names = {"x", "y"}
    space = Space(
        (Continuous("x", 0.0, 1.0), Continuous("y", 0.0, 1.0)),
        (Objective("f"),),
        (constraint("x + y <= 0.8", names),),
    )
    out = initial_design(space, 3, seed=0, center=True)
    assert out == initial_design(space, 3, seed=0)
    assert_valid(space, out)


def test_campaign_center_setting():
    on = config({})
    assert on.center is True
    off = parse_config({**_raw(), "campaign": {"name": "t", "center": False}})
    assert off.center is False and off.fingerprint() != on.fingerprint()
    with pytest.raises(ValueError, match="center must be true or false"):
        parse_config({**_raw(), "campaign": {"name": "t", "center": "yes"}})
    first = make_proposer(on).propose(on.space, [], [], 2, seed=0)
    assert first[0] == {"x": 0.5}
    assert make_proposer(off).propose(off.space, [], [], 2, seed=0) == initial_design(
        off.space, 2, seed=off.seed
    )


def _raw() -> dict:
    return {
        "instrument": {"kind": "lookup"},
        "parameters": [{"name": "x", "type": "continuous", "low": 0, "high": 1}],
        "objectives": [{"name": "f"}],
    }


def test_power_warp_keeps_the_order_and_removes_skew():
    from kiban.lab.proposers.bo import warp_outcomes

    skew = lambda v: float(((v - v.mean()) ** 3).mean() / v.std() ** 3)
    Y = np.exp(np.random.default_rng(0).normal(size=(200, 1)) * 2)  # yields: a long right tail
    for values in (Y, -Y, Y - 3.0):  # Box-Cox (positive), Yeo-Johnson (negative, mixed)
        W = warp_outcomes(values, "power")
        assert (np.argsort(W[:, 0], kind="stable") == np.argsort(values[:, 0], kind="stable")).all()
        assert abs(skew(W[:, 0])) < 0.5 * abs(skew(values[:, 0]))
    assert abs(skew(warp_outcomes(Y, "power")[:, 0])) < 0.1
    assert warp_outcomes(Y, "none") is Y
    flat = np.ones((10, 1))
    assert warp_outcomes(flat, "power") is flat
    with pytest.raises(ProposerError, match="warp"):
        warp_outcomes(Y, "log")
    space = Space((Continuous("x", 0.0, 1.0),), (Objective("f"),))
    points = initial_design(space, 6, seed=0)
    observed = observe(space, points, lambda p: np.exp(5 * p["x"]))
    out = make_proposer(config({}, options={"warp": "power"})).propose(
        space, observed, [], 2, seed=0
    )
    assert_valid(space, out)


@pytest.mark.parametrize("n, d", [(8, 1), (40, 3), (100, 6)])
def test_fast_gp_fit_reaches_botorch_s_optimum(n, d):
    """`fit_fast` maximises the same marginal likelihood as ``fit_gpytorch_mll``."""
    import torch
    from botorch.fit import fit_gpytorch_mll
    from botorch.models import SingleTaskGP
    from botorch.models.transforms.outcome import Standardize
    from gpytorch.mlls import ExactMarginalLogLikelihood

    from kiban.lab.proposers.gpfit import fit_fast

    g = torch.Generator().manual_seed(n)
    X = torch.rand(n, d, generator=g, dtype=torch.float64)
    Y = torch.sin(6 * X).sum(-1, keepdim=True) + 0.1 * torch.randn(
        n, 1, generator=g, dtype=torch.float64
    )

    def mll_value(model):
        model.train()
        mll = ExactMarginalLogLikelihood(model.likelihood, model)
        with torch.no_grad():
            return float(mll(model(*model.train_inputs), model.train_targets))

    reference = SingleTaskGP(X, Y, outcome_transform=Standardize(m=1))
    fit_gpytorch_mll(ExactMarginalLogLikelihood(reference.likelihood, reference))
    fast = SingleTaskGP(X, Y, outcome_transform=Standardize(m=1))
    assert fit_fast(fast)
    assert mll_value(fast) == pytest.approx(mll_value(reference), abs=1e-5)
    for a, b in [
        (fast.covar_module.lengthscale, reference.covar_module.lengthscale),
        (fast.likelihood.noise, reference.likelihood.noise),
    ]:
        assert torch.allclose(a, b, rtol=2e-2, atol=1e-4), (a, b)
    fast.eval(), reference.eval()
    Xt = torch.rand(16, d, generator=g, dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(
            fast.posterior(Xt).mean, reference.posterior(Xt).mean, rtol=1e-3, atol=1e-3
        )


def test_fast_gp_fit_declines_other_models():
    import torch
    from botorch.models import SingleTaskGP
    from gpytorch.kernels import MaternKernel, ScaleKernel

    from kiban.lab.proposers.gpfit import fit_fast

    X = torch.rand(10, 2, dtype=torch.float64)
    Y = torch.rand(10, 2, dtype=torch.float64)
    assert not fit_fast(SingleTaskGP(X, Y))  # two outputs
    assert not fit_fast(SingleTaskGP(X, Y[:, :1], covar_module=ScaleKernel(MaternKernel())))


def test_proposing_limits_torch_and_blas_threads_and_restores_them(monkeypatch):
    import torch
    from threadpoolctl import threadpool_info

    from kiban.lab.proposers.bo import BotorchProposer

    seen = {}

    def spy(self, *args):
        seen["torch"] = torch.get_num_threads()
        seen["blas"] = {pool["num_threads"] for pool in threadpool_info()}
        return []

    monkeypatch.setattr(BotorchProposer, "_propose", spy)
    before = torch.get_num_threads()
    space = Space((Continuous("x", 0.0, 1.0),), (Objective("f"),))
    BotorchProposer().propose(space, [], [], 1, seed=0)
    assert seen == {"torch": 1, "blas": {1}}
    assert torch.get_num_threads() == before


def test_fast_gp_fit_gradient_matches_finite_differences():
    from scipy.optimize import check_grad

    from kiban.lab.proposers.gpfit import _objective

    rng = np.random.default_rng(0)
    X, y = rng.random((20, 3)), rng.normal(size=20)
    spec = {"ls_prior": (1.9, 1.7), "noise_prior": (-4.0, 1.0)}
    loss_and_grad = _objective(X, y, spec)
    theta = np.array([0.05, 0.1, 0.3, 0.7, 1.5])
    error = check_grad(lambda t: loss_and_grad(t)[0], lambda t: loss_and_grad(t)[1], theta)
    assert error < 1e-5 * np.linalg.norm(loss_and_grad(theta)[1]) + 1e-8
