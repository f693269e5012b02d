"""Summit's reaction emulators (Reizman Suzuki cases 1-4, Baumgartner aniline C-N coupling),
run without importing summit.

``import summit`` fails in this environment: summit 0.8.4 pins pymoo < 0.5, scikit-learn < 0.25,
torch < 2 and skorch, and its package ``__init__`` imports its strategies, whose
``summit/strategies/tsemo.py`` does ``from pymoo.model.problem import Problem``, which raises
``ModuleNotFoundError: No module named 'pymoo.model'`` on pymoo >= 0.5 (0.6.2 here). Its
emulator module would fail next: it imports ``skorch`` (not installed),
``sklearn.model_selection._search._check_param_grid`` and ``sklearn.utils.fixes.delayed`` (both
gone from current scikit-learn) and ``pkg_resources``.

The emulators themselves need none of that. Each is an ensemble of 5 plain MLPs (summit's
``ANNRegressor``: Linear(n_in, 512) -> ReLU -> Linear(512, n_out); the JSON files say
``"regressor_name": "ANNRegressor"``, not the Bayesian BNN) wrapped in scikit-learn
preprocessing whose fitted constants are in the model JSON:

* inputs: continuous variables standardised with the stored ``mean_``/``scale_`` (in domain
  order), then one-hot columns for each categorical variable (levels in domain order);
* outputs: the net's output times the stored ``scale_`` plus ``mean_``, clipped to the domain's
  bounds, then averaged over the 5 members (their standard deviation is reported as
  ``<output>_std``), exactly as ``ExperimentalEmulator._predict`` does.

The weights (``*_predictor_<i>.pt``, skorch ``save_params`` = a torch ``state_dict``) are read
with a small restricted unpickler, so torch is not needed either. At load the ensemble is checked
against summit's shipped experimental CSV (it reproduces the measurements with R^2 0.84-0.96);
an emulator that does not is refused. ``mode = "lookup"`` instead serves the experimental CSV as
a lookup table (exact matches only).

Units: Reizman ``yld`` (yield) and ``ton`` (turnover number) in percent and mol/mol; Baumgartner
``yld`` as a fraction (0-1).
"""

from __future__ import annotations

import collections
import functools
import io
import json
import pickle
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np

from kiban.errors import did_you_mean
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
from kiban.lab.instruments.lookup import LookupInstrument
from kiban.lab.space import Categorical, Continuous, Objective, Space

SUMMIT_DATASETS = (
    "reizman_suzuki_case_1",
    "reizman_suzuki_case_2",
    "reizman_suzuki_case_3",
    "reizman_suzuki_case_4",
    "baumgartner_aniline_cn_crosscoupling",
)
# Goals. yld: maximise (summit's domain: maximize=True). ton: maximise, as Olympus documents for
# the same Reizman data (docs/source/classes/datasets/suzuki_i.rst: "simultaneously maximize
# both the yield and catalyst turnover number") and as a turnover number means; summit's own
# ReizmanSuzukiEmulator.setup_domain says maximize=False next to a "TODO: not sure about bounds".
SUMMIT_GOALS = {"yld": "max", "ton": "max"}
Mode = Literal["emulator", "lookup"]
MODES = get_args(Mode)
MIN_DATA_R2 = 0.7
_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


def summit_dir() -> Path:
    """The installed summit package folder, found without importing summit."""
    import importlib.util

    spec = importlib.util.find_spec("summit")
    if spec is None or not spec.submodule_search_locations:
        raise InstrumentError(
            "the Summit emulators need summit's data files: pip install "
            "--no-deps summit==0.8.4 (summit itself is never imported)"
        )
    return Path(list(spec.submodule_search_locations)[0])


def _check_dataset(dataset: str) -> str:
    return check_dataset("Summit", dataset, SUMMIT_DATASETS)


def read_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """A torch ``state_dict`` file (zip format) as numpy arrays, without torch. Only tensors
    and ``OrderedDict`` may appear in it; anything else is refused."""
    path = Path(path)
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pkl = next((n for n in names if n.endswith("data.pkl")), None)
        if pkl is None:
            raise InstrumentError(f"{path}: not a torch zip checkpoint (no data.pkl)")
        root = pkl[: -len("data.pkl")]
        byteorder = "little"
        if f"{root}byteorder" in names:
            byteorder = archive.read(f"{root}byteorder").decode().strip()

        def rebuild(
            storage: np.ndarray,
            offset: int,
            size: tuple[int, ...],
            stride: tuple[int, ...],
            *_: Any,
        ) -> np.ndarray:
            if not size:
                return storage[offset].copy()
            item = storage.itemsize
            return np.lib.stride_tricks.as_strided(
                storage[offset:], shape=tuple(size), strides=tuple(s * item for s in stride)
            ).copy()

        class Unpickler(pickle.Unpickler):
            def find_class(self, module: str, name: str) -> Any:
                if (module, name) == ("collections", "OrderedDict"):
                    return collections.OrderedDict
                if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
                    return rebuild
                if module == "torch" and name in _STORAGE_DTYPES:
                    return _STORAGE_DTYPES[name]
                raise InstrumentError(
                    f"{path}: unexpected object {module}.{name} in a weights file"
                )

            def persistent_load(self, pid: Any) -> np.ndarray:
                kind, dtype, key, _location, numel = pid
                if kind != "storage":
                    raise InstrumentError(f"{path}: unexpected persistent id {pid!r}")
                data = np.frombuffer(archive.read(f"{root}data/{key}"), dtype=dtype, count=numel)
                return data.byteswap() if byteorder != "little" else data

        state = Unpickler(io.BytesIO(archive.read(pkl))).load()
    return {str(k): np.asarray(v) for k, v in state.items()}


@dataclass
class SummitEmulator:
    dataset: str
    continuous: dict[str, tuple[float, float]]  # name -> bounds, in domain order
    categorical: dict[str, tuple[str, ...]]  # name -> levels, in domain order
    outputs: dict[str, tuple[float, float]]  # name -> bounds (predictions are clipped)
    members: list[dict[str, np.ndarray]]
    data_r2: dict[str, float]

    @property
    def inputs(self) -> list[str]:
        return [*self.continuous, *self.categorical]

    def features(self, rows: list[dict[str, Any]], member: dict[str, np.ndarray]) -> np.ndarray:
        x = np.array([[float(r[n]) for n in self.continuous] for r in rows], dtype=float)
        parts = [(x - member["in_mean"]) / member["in_scale"]]
        for name, levels in self.categorical.items():
            chosen = np.array([str(r[name]) for r in rows], dtype=object)
            parts.append((chosen[:, None] == np.array(levels, dtype=object)[None, :]).astype(float))
        return np.hstack(parts)

    def predict(self, rows: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
        """Ensemble mean and standard deviation, shape (len(rows), len(outputs))."""
        low = np.array([b[0] for b in self.outputs.values()])
        high = np.array([b[1] for b in self.outputs.values()])
        preds = []
        for m in self.members:
            h = np.maximum(self.features(rows, m) @ m["w1"].T + m["b1"], 0.0)
            y = (h @ m["w2"].T + m["b2"]) * m["out_scale"] + m["out_mean"]
            preds.append(np.clip(y, low, high))
        stack = np.stack(preds)
        return stack.mean(axis=0), stack.std(axis=0)


def summit_experiments(dataset: str) -> Any:
    """Summit's shipped experimental data for ``dataset`` (the emulator's training data)."""
    import pandas as pd

    path = summit_dir() / "benchmarks" / "data" / f"{_check_dataset(dataset)}.csv"
    if not path.is_file():
        raise InstrumentError(f"summit data file {str(path)!r} not found")
    return pd.read_csv(path, skiprows=[1], index_col=0, encoding="utf-8-sig")


@functools.cache
def load_summit_emulator(dataset: str) -> SummitEmulator:
    folder = summit_dir() / "benchmarks" / "models" / _check_dataset(dataset)
    spec_path = folder / f"{dataset}.json"
    if not spec_path.is_file():
        raise InstrumentError(f"summit model file {str(spec_path)!r} not found")
    spec = json.loads(spec_path.read_text())
    params = spec["experiment_params"]
    if params.get("regressor_name") != "ANNRegressor" or params.get("descriptors_features"):
        raise InstrumentError(
            f"{spec_path}: regressor {params.get('regressor_name')!r} with "
            f"descriptors {params.get('descriptors_features')}: only the "
            "one-hot ANNRegressor emulators are supported"
        )
    continuous: dict[str, tuple[float, float]] = {}
    categorical: dict[str, tuple[str, ...]] = {}
    outputs: dict[str, tuple[float, float]] = {}
    for v in spec["domain"]:
        if v["is_objective"]:
            outputs[v["name"]] = (float(v["bounds"][0]), float(v["bounds"][1]))
        elif v["type"] == "ContinuousVariable":
            continuous[v["name"]] = (float(v["bounds"][0]), float(v["bounds"][1]))
        elif v["type"] == "CategoricalVariable":
            categorical[v["name"]] = tuple(str(level) for level in v["levels"])
        else:
            raise InstrumentError(f"{spec_path}: unsupported variable type {v['type']!r}")
    names = params["output_variable_names"]
    outputs = {n: outputs[n] for n in names}
    members = []
    for i, p in enumerate(params["predictors"]):
        weights = read_state_dict(folder / f"{dataset}_predictor_{i}.pt")
        num, out = p["input_preprocessor"]["num"], p["output_preprocessor"]
        members.append(
            {
                "in_mean": np.asarray(num["mean_"], float),
                "in_scale": np.asarray(num["scale_"], float),
                "out_mean": np.asarray(out["mean_"], float),
                "out_scale": np.asarray(out["scale_"], float),
                "w1": weights["input_layer.weight"].astype(float),
                "b1": weights["input_layer.bias"].astype(float),
                "w2": weights["output_layer.weight"].astype(float),
                "b2": weights["output_layer.bias"].astype(float),
            }
        )
    n_in = len(continuous) + sum(len(v) for v in categorical.values())
    if members[0]["w1"].shape[1] != n_in or members[0]["w2"].shape[0] != len(outputs):
        raise InstrumentError(
            f"{spec_path}: weights take {members[0]['w1'].shape[1]} inputs "
            f"and give {members[0]['w2'].shape[0]} outputs; the domain has "
            f"{n_in} and {len(outputs)}"
        )
    emulator = SummitEmulator(dataset, continuous, categorical, outputs, members, {})
    data = summit_experiments(dataset)
    mean, _ = emulator.predict(data.to_dict("records"))
    for j, name in enumerate(outputs):
        y = data[name].to_numpy(float)
        emulator.data_r2[name] = float(
            1 - ((mean[:, j] - y) ** 2).sum() / ((y - y.mean()) ** 2).sum()
        )
    bad = {k: round(v, 3) for k, v in emulator.data_r2.items() if not v >= MIN_DATA_R2}
    if bad:
        raise InstrumentError(
            f"summit {dataset}: the rebuilt emulator reproduces the "
            f"experimental data with R^2 {bad} (< {MIN_DATA_R2}); refusing it"
        )
    return emulator


def summit_space(dataset: str) -> tuple[list[Continuous | Categorical], list[Objective]]:
    """The emulator's domain: parameters (in domain order) and objectives."""
    em = load_summit_emulator(dataset)
    params: list[Continuous | Categorical] = []
    spec = json.loads(
        (summit_dir() / "benchmarks" / "models" / dataset / f"{dataset}.json").read_text()
    )
    for v in spec["domain"]:
        if v["is_objective"]:
            continue
        if v["name"] in em.continuous:
            params.append(Continuous(v["name"], *em.continuous[v["name"]]))
        else:
            params.append(Categorical(v["name"], em.categorical[v["name"]]))
    return params, [Objective(n, SUMMIT_GOALS.get(n, "max")) for n in em.outputs]


@dataclass(frozen=True, kw_only=True)
class SummitOptions(InstrumentOptions):
    """``dataset``: one of `SUMMIT_DATASETS`; ``mode``: the emulator, or its experimental data
    as a lookup table."""

    example = {"dataset": "reizman_suzuki_case_1"}
    dataset: str
    mode: Mode = "emulator"

    def __post_init__(self) -> None:
        _check_dataset(self.dataset)


class SummitInstrument(Instrument):
    """A Summit emulator evaluated in-process (vectorised over the batch), or with
    ``mode="lookup"`` its experimental data as a lookup table."""

    kind = "summit"
    Options = SummitOptions

    @classmethod
    def from_options(cls, options: SummitOptions, space: Space) -> SummitInstrument:
        params, _ = summit_space(options.dataset)
        same_keys(f"[instrument] summit {options.dataset!r}", [p.name for p in params], space)
        return cls(options.dataset, options.mode)

    def __init__(self, dataset: str, mode: str = "emulator") -> None:
        options = SummitOptions.from_config(
            {"dataset": dataset, "mode": mode}, where="[instrument] (kind 'summit')"
        )
        self.dataset = options.dataset
        self.mode = options.mode
        self.emulator = load_summit_emulator(self.dataset)
        self.table: LookupInstrument | None = None
        if mode == "lookup":
            self.table = LookupInstrument(
                summit_experiments(self.dataset),
                self.emulator.inputs,
                list(self.emulator.outputs),
                name=f"summit {self.dataset} experiments",
            )

    def measures(self) -> tuple[str, ...]:
        outs = tuple(self.emulator.outputs)
        return outs if self.mode == "lookup" else (*outs, *(f"{o}_std" for o in outs))

    def _problem(self, params: dict[str, Any]) -> str | None:
        em = self.emulator
        problem = check_box(params, em.continuous, f"summit {self.dataset}")
        if problem:
            return problem
        for name, levels in em.categorical.items():
            if name not in params:
                return f"summit {self.dataset}: params lack {name!r} (got keys {sorted(params)})"
            if str(params[name]) not in levels:
                return (
                    f"summit {self.dataset}: {name} = {params[name]!r} is not one of "
                    f"{list(levels)}{did_you_mean(params[name], levels)}"
                )
        return None

    def run_batch(
        self, jobs: list[tuple[int, dict]], timeout_s: float | None = None
    ) -> Iterator[Outcome]:
        meta = {"instrument": self.kind, "dataset": self.dataset, "mode": self.mode}
        if self.table is not None:
            for o in self.table.run_batch(jobs, timeout_s):
                o.meta = {**o.meta, **meta}
                yield o
            return
        start = time.perf_counter()
        failed, good = screen_jobs(jobs, self._problem, meta)
        yield from failed
        if not good:
            return
        mean, std = self.emulator.predict([p for _, p in good])
        each = (time.perf_counter() - start) / len(good)
        names = list(self.emulator.outputs)
        for k, (job_id, _) in enumerate(good):
            values = {n: float(mean[k, j]) for j, n in enumerate(names)}
            values.update({f"{n}_std": float(std[k, j]) for j, n in enumerate(names)})
            yield Outcome(int(job_id), values, None, each, meta)

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "dataset": self.dataset,
            "mode": self.mode,
            "package": f"summit {package_version('summit')} (data files only)",
            "model": "ensemble of 5 ANNRegressor MLPs, rebuilt in numpy",
            "data_r2": {k: round(v, 4) for k, v in self.emulator.data_r2.items()},
            "goals": {n: SUMMIT_GOALS.get(n, "max") for n in self.emulator.outputs},
        }
