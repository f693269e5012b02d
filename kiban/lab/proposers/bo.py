"""Bayesian optimisation with BoTorch, set up the way Ax 1.3.1's default generation strategy
("Sobol+MBM:fast") sets it up, on kiban's search spaces.

Matched from the installed Ax (``ax/api/utils/generation_strategy_dispatch.py``,
``ax/adapter/registry.py``, ``ax/generators/torch/botorch_modular/``):

* a design first (``initial`` points: the centre of the space, then scrambled Sobol), then
  the model;
* surrogate `SingleTaskGP` with BoTorch's default priors (RBF kernel with the dimension-scaled
  log-normal length-scale prior, log-normal noise prior), inputs in the unit cube (Ax's
  Normalize over the bounds, here the identity), a `Standardize` outcome transform, fitted by
  `fit_gpytorch_mll` (one output: the same maximum, found by `gpfit.fit_fast` without
  gpytorch's overhead); outcomes first winsorised as Ax's automatic `Winsorize` does (Tukey
  fences on the bad side: ``q1 - 1.5 IQR``; with an objective threshold
  ``min(q1, t) - 1.5 (q3 - min(q1, t))``);
* acquisition `qLogNoisyExpectedImprovement` (one objective) or
  `qLogNoisyExpectedHypervolumeImprovement` (2-4 objectives; `qLogNParEGO` from 5), with
  ``prune_baseline=True``; the hypervolume reference point is the objectives' thresholds
  (as utilities) when all are given, else inferred as Ax does (`infer_reference_point` on the
  Pareto front of the model's predictions at the observed points, scale 0.1, thresholds given
  as the caps);
* ``q = n`` by sequential greedy conditioning on the points already chosen (BoTorch's
  ``sequential=True``, what Ax uses), pending experiments as ``X_pending``;
* categoricals one-hot; discrete parameters: all combinations enumerated when there are few
  (``optimize_acqf_mixed``, up to ``max_enumerate``) or when the space is fully discrete
  (evaluated exhaustively up to 10 000 points, as Ax's ``optimize_acqf_discrete``), else
  ``optimize_acqf_mixed_alternating`` for integers (more than 20 values relaxed and rounded)
  with categoricals relaxed and rounded to the arg-max (Ax's `OneHot` transform, strict
  rounding).

Differences from Ax, on purpose: ``num_restarts``/``raw_samples``/``mc_samples`` default lower
than Ax's 20/1024/512 in box spaces so that a batch of 8 takes about a second on two CPU cores
(options); under linear constraints Ax's budget is kept (`CONSTRAINED_BUDGET`: SLSQP on a
polytope gains from it, measured on the Olympus photo_* blends); no
`qLogProbabilityOfFeasibility` switch. Optional, not Ax: ``warp = "power"`` (Box-Cox /
Yeo-Johnson outcomes, as HEBO).

Molecules: a GP on Morgan fingerprints with a Tanimoto kernel (times the default RBF kernel on
the cube part when there are other parameters); the acquisition is evaluated over a pool of
candidate molecules (the parameter's candidates and/or samples from its model), observed and
pending molecules excluded in molecule-only spaces.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import random
import warnings
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np
import torch

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)   # torch.jit.script in linear_operator
    import gpytorch  # noqa: F401

from kiban.lab.options import require
from kiban.lab.proposers.base import (Observation, Proposer, ProposerError, ProposerOptions,
                                      canonical_smiles, check_n, clean, params_key)
from kiban.lab.proposers.design import (batch_from_stream, cube_stream, design_stream,
                                        shared_keys, seen_keys, torch_constraints)
from kiban.lab.proposers.gpfit import fit_fast
from kiban.lab.proposers.molecules import (Sampler, canonical_candidates, fingerprints,
                                           model_dir, model_sampler, sample_pool,
                                           unique_canonical)
from kiban.lab.space import Categorical, Composition, Continuous, Integer, Space

DTYPE = torch.float64
MAX_DISCRETE_VALUES = 20       # BoTorch: integers with more values are relaxed and rounded
MAX_CHOICES_ENUMERATE = 10_000  # BoTorch/Ax: fully discrete spaces evaluated exhaustively
MIN_NUM_OBJECTIVES_PAREGO = 5  # Ax: qLogNParEGO from five objectives
Warp = Literal["none", "power"]    # outcome transforms before the GP (`warp_outcomes`)
WARPS = get_args(Warp)
MIN_OBSERVED = 2               # fewer observations: keep drawing the Sobol design


# --------------------------------------------------------------------------------------------
# the feature layout: [unit cube | fingerprint]


class Layout:
    """Where each parameter lives in the model's input vector, and the way back."""

    def __init__(self, space: Space, fp_bits: int, fp_radius: int) -> None:
        if len(space.molecules) > 1:
            raise ProposerError("the botorch and generative proposers handle one molecule "
                                f"parameter, got {[m.name for m in space.molecules]}; use "
                                "proposer = 'random' or 'sobol'")
        self.space = space
        self.dim = space.dim
        self.mol = space.molecules[0] if space.molecules else None
        self.bits = int(fp_bits) if self.mol else 0
        self.radius = int(fp_radius)
        self.D = self.dim + self.bits
        self.fp_cols = list(range(self.dim, self.D))
        sl = space.slices()
        self.int_grids: dict[int, list[float]] = {}   # exact integer grids (few values)
        self.int_relaxed: dict[int, int] = {}         # col -> number of steps (many values)
        self.cat_blocks: list[list[int]] = []
        self.cont_cols: list[int] = []
        for p in space.cube_parameters:
            s = sl[p.name]
            if isinstance(p, Integer):
                steps = p.high - p.low
                if steps + 1 <= MAX_DISCRETE_VALUES:
                    self.int_grids[s.start] = [k / steps for k in range(steps + 1)]
                else:
                    self.int_relaxed[s.start] = steps
            elif isinstance(p, Categorical):
                self.cat_blocks.append(list(range(s.start, s.stop)))
            elif isinstance(p, (Continuous, Composition)):
                self.cont_cols.extend(range(s.start, s.stop))
        self._fp: dict[str, np.ndarray] = {}

    # -- encoding
    def fingerprints(self, smiles: list[str]) -> np.ndarray:
        missing = [s for s in dict.fromkeys(smiles) if s not in self._fp]
        if missing:
            for s, row in zip(missing, fingerprints(missing, self.bits, self.radius)):
                self._fp[s] = row
        return np.stack([self._fp[s] for s in smiles]) if smiles else np.zeros((0, self.bits))

    def encode(self, params: list[dict]) -> torch.Tensor:
        if not params:
            return torch.zeros(0, self.D, dtype=DTYPE)
        cube = np.stack([self.space.to_unit(p) for p in params]) if self.dim else \
            np.zeros((len(params), 0))
        if self.mol is not None:
            smiles = [canonical(p[self.mol.name]) for p in params]
            cube = np.concatenate([cube, self.fingerprints(smiles)], axis=1)
        return torch.as_tensor(cube, dtype=DTYPE)

    def decode(self, x: torch.Tensor, smiles: str | None = None) -> dict[str, Any]:
        u = x.detach().reshape(-1)[: self.dim].numpy()
        mols = {self.mol.name: smiles} if self.mol is not None else None
        return clean(self.space, self.space.from_unit(np.clip(u, 0.0, 1.0), mols))

    def fixed_of(self, x: torch.Tensor) -> dict[int, float]:
        """The cube columns of ``x`` that `same_in_batch` freezes for the rest of the batch."""
        sl = self.space.slices()
        out: dict[int, float] = {}
        for name in self.space.same_in_batch:
            if name in sl:
                for c in range(sl[name].start, sl[name].stop):
                    out[c] = float(x.reshape(-1)[c])
        return out

    # -- rounding (the relaxed discrete columns)
    def round(self, X: torch.Tensor) -> torch.Tensor:
        X = X.clone()
        for block in self.cat_blocks:
            hot = X[..., block].argmax(dim=-1, keepdim=True)
            X[..., block] = torch.zeros_like(X[..., block]).scatter_(-1, hot, 1.0)
        for c, steps in self.int_relaxed.items():
            X[..., c] = torch.round(X[..., c].clamp(0, 1) * steps) / steps
        for c, grid in self.int_grids.items():
            steps = len(grid) - 1
            X[..., c] = torch.round(X[..., c].clamp(0, 1) * steps) / steps
        return X


def canonical(smiles: str) -> str:
    return canonical_smiles(str(smiles))


def used_molecules(space: Space, observed: list[Observation], pending: list[dict]) -> set[str]:
    """Canonical SMILES of the molecules measured or pending."""
    return {canonical(p[m.name]) for p in [o.params for o in observed] + list(pending)
            for m in space.molecules if m.name in p}


# --------------------------------------------------------------------------------------------
# data, model, acquisition


def winsorize(Y: np.ndarray, thresholds: list[float | None]) -> np.ndarray:
    """Ax's automatic winsorisation of utilities (to maximise): clip the bad (low) tail at the
    Tukey fence, or, given an objective threshold t, at ``min(q1, t) - 1.5 (q3 - min(q1, t))``."""
    Y = Y.copy()
    if len(Y) < 4:
        return Y
    for j in range(Y.shape[1]):
        q1 = np.percentile(Y[:, j], 25, method="lower")
        q3 = np.percentile(Y[:, j], 75, method="higher")
        t = thresholds[j]
        low = q1 - 1.5 * (q3 - q1) if t is None else min(q1, t) - 1.5 * (q3 - min(q1, t))
        Y[:, j] = np.maximum(Y[:, j], low)
    return Y


def warp_outcomes(Y: np.ndarray, kind: str) -> np.ndarray:
    """A monotone (order-keeping) transform of one objective's utilities before the GP, for
    skewed outcomes (yields piled up near zero, a few high values): ``"power"`` divides by the
    standard deviation, then applies the Box-Cox transform when every value is positive, else
    Yeo-Johnson, with the maximum-likelihood exponent (HEBO's output warping); ``"none"``."""
    if kind not in WARPS:
        raise ProposerError(f"option warp must be one of {WARPS}, got {kind!r}")
    if kind == "none" or len(Y) < 4 or Y.shape[1] != 1 or np.ptp(Y) == 0:
        return Y
    from scipy.stats import boxcox, yeojohnson

    z = Y[:, 0] / Y[:, 0].std()
    return (boxcox(z)[0] if z.min() > 0 else yeojohnson(z)[0]).reshape(-1, 1)


def utility_thresholds(space: Space) -> list[float | None]:
    return [None if o.threshold is None else o.utility(o.threshold) for o in space.objectives]


def fit_model(layout: Layout, X: torch.Tensor, Y: torch.Tensor) -> Any:
    """SingleTaskGP (BoTorch defaults) on the cube; Tanimoto on the fingerprint block."""
    from botorch.fit import fit_gpytorch_mll
    from botorch.models import SingleTaskGP
    from botorch.models.transforms.outcome import Standardize
    from gpytorch.mlls import ExactMarginalLogLikelihood

    m = Y.shape[-1]
    covar = None
    if layout.mol is not None:
        from botorch.models.utils.gpytorch_modules import get_covar_module_with_dim_scaled_prior
        from gpytorch.kernels import ScaleKernel

        from kiban.lab.proposers.kernels import TanimotoKernel

        batch = torch.Size([m]) if m > 1 else torch.Size([])
        kernel = TanimotoKernel(active_dims=torch.tensor(layout.fp_cols), batch_shape=batch)
        if layout.dim:
            cube = get_covar_module_with_dim_scaled_prior(
                ard_num_dims=layout.dim, batch_shape=batch, active_dims=list(range(layout.dim)))
            kernel = cube * kernel
        covar = ScaleKernel(kernel, batch_shape=batch)
    model = SingleTaskGP(X, Y, covar_module=covar, outcome_transform=Standardize(m=m))
    if not fit_fast(model):   # the same optimum, without gpytorch's overhead (gpfit.py)
        fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model))
    model.eval()
    return model


def marginal_posterior(model: Any, X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior mean and variance of each row of ``X`` (single-output exact GP, in the
    model's standardised units) from one cross-kernel block: what ``model.posterior`` gives
    for ``X.unsqueeze(1)`` without a joint train+test kernel per row."""
    Xt = model.train_inputs[0]
    yt = model.train_targets
    with torch.no_grad():
        K = model.covar_module(Xt).to_dense()
        K = K + model.likelihood.noise.reshape(-1)[0] * torch.eye(len(Xt), dtype=K.dtype)
        Ks = model.covar_module(X, Xt).to_dense()
        kxx = model.covar_module(X, diag=True)
        mu0 = model.mean_module(Xt[:1]).reshape(-1)[0]
        L = torch.linalg.cholesky(K)
        alpha = torch.cholesky_solve((yt - mu0).unsqueeze(-1), L)
        mean = mu0 + (Ks @ alpha).squeeze(-1)
        v = torch.linalg.solve_triangular(L, Ks.T, upper=False)
        var = kxx - (v * v).sum(0)
    return mean, var


def make_acquisition(model: Any, space: Space, X: torch.Tensor, mc_samples: int, seed: int,
                     ) -> Any:
    from botorch.sampling.normal import SobolQMCNormalSampler

    sampler = SobolQMCNormalSampler(sample_shape=torch.Size([mc_samples]), seed=seed)
    m = len(space.objectives)
    if m == 1:
        from botorch.acquisition.logei import qLogNoisyExpectedImprovement

        return qLogNoisyExpectedImprovement(model, X_baseline=X, sampler=sampler,
                                            prune_baseline=True)
    if m >= MIN_NUM_OBJECTIVES_PAREGO:
        from botorch.acquisition.multi_objective.parego import qLogNParEGO

        return qLogNParEGO(model, X_baseline=X, sampler=sampler, prune_baseline=True)
    from botorch.acquisition.multi_objective.logei import (
        qLogNoisyExpectedHypervolumeImprovement)

    return qLogNoisyExpectedHypervolumeImprovement(
        model, ref_point=reference_point(model, space, X), X_baseline=X, sampler=sampler,
        prune_baseline=True)


def exploit_acquisition(model: Any, observed: int, after: int, mc_samples: int,
                        seed: int) -> Any:
    """qSimpleRegret (the expected best of the batch under the posterior: pure exploitation)
    once ``observed >= after > 0``; None before. For the last experiments of a campaign of
    known length, where a better measured value is all that is left to gain (one objective:
    `BotorchProposer.check_space` refuses more)."""
    if after <= 0 or observed < after:
        return None
    from botorch.acquisition.monte_carlo import qSimpleRegret
    from botorch.sampling.normal import SobolQMCNormalSampler

    return qSimpleRegret(model, sampler=SobolQMCNormalSampler(
        sample_shape=torch.Size([mc_samples]), seed=seed))


def reference_point(model: Any, space: Space, X: torch.Tensor) -> torch.Tensor:
    """The objectives' thresholds as utilities; missing ones inferred as Ax does."""
    from botorch.utils.multi_objective.hypervolume import infer_reference_point
    from botorch.utils.multi_objective.pareto import is_non_dominated

    given = utility_thresholds(space)
    caps = torch.tensor([math.nan if t is None else t for t in given], dtype=DTYPE)
    if not caps.isnan().any():
        return caps
    with torch.no_grad():
        pred = model.posterior(X).mean
    return infer_reference_point(pareto_Y=pred[is_non_dominated(pred)], max_ref_point=caps,
                                 scale=0.1)


# --------------------------------------------------------------------------------------------
# the proposer


@dataclass(frozen=True, kw_only=True)
class ModelOptions(ProposerOptions):
    """The options of the model-based proposers (botorch, generative)."""

    num_restarts: int = 2         # Ax: 20
    raw_samples: int = 96         # Ax: 1024
    mc_samples: int = 64          # BoTorch default: 512
    maxiter: int = 15             # L-BFGS-B iterations per restart (BoTorch: 200)
    max_enumerate: int = 20       # discrete combinations enumerated with optimize_acqf_mixed
    fp_bits: int = 2048           # Morgan fingerprint length (molecules)
    fp_radius: int = 2
    samples: int = 64             # molecules sampled from a Molecule param's model per round
    temperature: float = 1.0
    max_new_tokens: int = 128
    cube_samples: int = 16        # conditions tried per molecule (molecule + other params)
    threads: int = 1              # torch and BLAS threads while proposing (0: leave them)
    screen: int = 128             # molecules: qLogNEI only on the best by mean + 2 sd (0: all)
    warp: Warp = "none"           # one objective: "power" (Box-Cox / Yeo-Johnson) outcomes
    exploit_after: int = 0        # one objective: from this many observations on, propose
                                  # the best by the posterior (qSimpleRegret); 0: never
    constrained_budget: bool = True   # linear constraints: CONSTRAINED_BUDGET for the four
                                      # optimiser options not set explicitly

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, int) and not isinstance(value, bool):
                require(value >= 0, f"option {f.name!r} must be an integer >= 0, got {value!r}")
        require(self.temperature > 0, f"option 'temperature' must be a number > 0, got "
                                      f"{self.temperature!r}")


@dataclass(frozen=True, kw_only=True)
class BotorchOptions(ModelOptions):
    max_candidates: int = 2000        # molecules scored per step (random subset beyond)
    new_molecules_only: bool = False  # mixed spaces: never reuse an observed molecule


class BotorchProposer(Proposer):
    """Sobol design, then BoTorch (Ax's defaults; see the module docstring)."""

    kind = "botorch"
    Options = BotorchOptions
    #: Ax's acquisition-optimiser budget, used under linear constraints (compositions,
    #: ``constraints``): SLSQP on a polytope needs it more than L-BFGS-B in a box (measured on
    #: the Olympus photo_* blends, docs/lab.md)
    CONSTRAINED_BUDGET: dict[str, int] = {"num_restarts": 20, "raw_samples": 1024,
                                          "maxiter": 200, "mc_samples": 512}

    def __init__(self, *, seed: int = 0, initial: int = 0, center: bool = False,
                 sampler: Sampler | None = None, **options: Any) -> None:
        super().__init__(seed=seed, initial=initial, center=center, **options)
        self._sampler = sampler

    def options_for(self, space: Space) -> ModelOptions:
        """The options one call runs with: under linear constraints, `CONSTRAINED_BUDGET`
        for those of its keys not set explicitly (unless ``constrained_budget`` is off)."""
        o = self.options
        ineq, eq = torch_constraints(space)
        if not o.constrained_budget or not (ineq or eq):
            return o
        return dataclasses.replace(o, **{k: v for k, v in self.CONSTRAINED_BUDGET.items()
                                         if k not in self.given})

    # -- the molecule pools
    def sampler(self, space: Space) -> Sampler:
        """Where new molecules come from (an injected sampler, else the param's model)."""
        if self._sampler is not None:
            return self._sampler
        o = self.options
        return model_sampler(space.molecules[0], temperature=float(o.temperature),
                             max_new_tokens=int(o.max_new_tokens))

    def molecule_pool(self, space: Space, seed: int) -> list[str]:
        """Candidates, plus molecules sampled from the model when the parameter has one."""
        mol = space.molecules[0]
        pool = canonical_candidates(mol) if mol.candidates else []
        if mol.model or (self._sampler is not None and not mol.candidates):
            pool = unique_canonical(pool + self.sampler(space)(int(self.options.samples),
                                                               seed))
        return pool

    def design_pools(self, space: Space, seed: int, used: set[str], needed: int,
                     ) -> dict[str, list[str]] | None:
        """Pools the initial design walks through: the design's own (None), except for a
        model-only molecule, sampled here (the campaign's seed: a resumed design continues)."""
        mol = space.molecules[0] if space.molecules else None
        if mol is None or mol.candidates:
            return None
        return {mol.name: sample_pool(self.sampler(space), needed, self.seed)}

    def check_space(self, space: Space) -> None:
        """Refuse what this proposer cannot do before the first round (several molecule
        parameters, a molecule model directory that does not exist)."""
        Layout(space, 1, 1)
        if int(self.options.exploit_after) > 0 and len(space.objectives) != 1:
            raise ProposerError("option 'exploit_after' works with one objective (this "
                                f"campaign has {len(space.objectives)})")
        mol = space.molecules[0] if space.molecules else None
        if mol is not None and mol.model and self._sampler is None:
            model_dir(mol)

    # -- proposing
    def propose(self, space: Space, observed: list[Observation], pending: list[dict],
                n: int, seed: int) -> list[dict]:
        check_n(n)
        self.check_space(space)
        threads = torch.get_num_threads()
        limit = int(self.options.threads)
        if limit <= 0:
            return self._propose(space, observed, pending, n, seed)
        from threadpoolctl import threadpool_limits

        # small GP problems (and a tiny sampling model): thread start-up and contention with
        # other processes cost more than the threads give -- in torch, and in the BLAS under
        # scipy's L-BFGS-B, whose idle OpenBLAS threads spin (measured: 5 ms per iteration of
        # an 8-variable fit on a loaded 2-core machine, 0.05 ms with one thread)
        torch.set_num_threads(limit)
        try:
            with threadpool_limits(limits=limit):
                return self._propose(space, observed, pending, n, seed)
        finally:
            torch.set_num_threads(threads)

    def _propose(self, space: Space, observed: list[Observation], pending: list[dict],
                 n: int, seed: int) -> list[dict]:
        seen = seen_keys(space, observed, pending)
        drawn = len(observed) + len(pending)
        n_design = n if len(observed) < MIN_OBSERVED else min(n, max(0, self.initial - drawn))
        out: list[dict] = []
        if n_design:
            stream = design_stream(space, self.seed, "sobol", needed=drawn + n_design,
                                   pools=self.design_pools(
                                       space, seed, used_molecules(space, observed, pending),
                                       drawn + n_design),
                                   center=self.center)
            for _ in range(drawn):
                next(stream)
            out = batch_from_stream(space, stream, n_design, seen,
                                    limit=10 * (n + len(seen)) + 10_000)
        if len(out) < n:
            out += self._model_batch(space, observed, pending + out, n - len(out), seed, seen,
                                     first=out[0] if out else None)
        return out

    def _model_batch(self, space: Space, observed: list[Observation], pending: list[dict],
                     n: int, seed: int, seen: set, first: dict | None) -> list[dict]:
        from botorch.exceptions.warnings import (BadInitialCandidatesWarning, InputDataWarning,
                                                 OptimizationWarning)
        from linear_operator.utils.warnings import NumericalWarning

        seed = int(seed) % (2 ** 31)
        py_state, np_state = random.getstate(), np.random.get_state()
        try:
            with torch.random.fork_rng(), warnings.catch_warnings():
                for w in (BadInitialCandidatesWarning, InputDataWarning, OptimizationWarning,
                          NumericalWarning):
                    warnings.simplefilter("ignore", w)
                warnings.filterwarnings("ignore", message=".*not contained to the unit cube.*")
                warnings.filterwarnings("ignore", message=".*Optimization failed.*")
                torch.manual_seed(seed)
                random.seed(seed)
                np.random.seed(seed)
                return _Batch(self, space, observed, pending, seed, seen, first).run(n)
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


class _Repeat(Exception):
    """The exploitation acquisition's best is observed or pending (or infeasible as rounded)."""


class _Batch:
    """One call's model, acquisition and greedy selection of ``n`` points."""

    def __init__(self, proposer: BotorchProposer, space: Space, observed: list[Observation],
                 pending: list[dict], seed: int, seen: set, first: dict | None) -> None:
        o = proposer.options_for(space)
        self.o, self.space, self.seed, self.seen = o, space, seed, seen
        self.layout = L = Layout(space, int(o.fp_bits), int(o.fp_radius))
        self.rng = np.random.default_rng(seed)
        # molecule pool (excluding what was measured or is pending, where a repeat is a repeat)
        self.pool: list[str] = []
        if L.mol is not None:
            pool = proposer.molecule_pool(space, seed)
            if L.dim == 0 or o.new_molecules_only:
                used = used_molecules(space, observed, pending)
                pool = [s for s in pool if s not in used]
            if not pool:
                raise ProposerError(f"molecule parameter {L.mol.name!r}: no new molecules to "
                                    "propose (all candidates observed or pending)")
            self.pool = pool
        # data
        self.X = L.encode([ob.params for ob in observed])
        Y = np.stack([space.utilities(ob.values) for ob in observed])
        Y = warp_outcomes(winsorize(Y, utility_thresholds(space)), str(o.warp))
        self.Y = torch.as_tensor(Y, dtype=DTYPE)
        self.X_pending = L.encode(pending)
        self.model = fit_model(L, self.X, self.Y)
        self.acqf = make_acquisition(self.model, space, self.X, int(o.mc_samples), seed)
        self.exploit = exploit_acquisition(self.model, len(observed), int(o.exploit_after),
                                           int(o.mc_samples), seed)
        self._exploiting = False
        self.ineq, self.eq = torch_constraints(space)
        self.bounds = torch.stack([torch.zeros(L.D, dtype=DTYPE), torch.ones(L.D, dtype=DTYPE)])
        # same_in_batch carried over from a design point that opened the batch
        self.fixed: dict[int, float] = {}
        self.fixed_mol: str | None = None
        self._raw: torch.Tensor | None = None
        if first is not None:
            self._freeze(L.encode([first])[0], first)

    # -- the greedy loop
    def run(self, n: int) -> list[dict]:
        chosen: list[torch.Tensor] = []
        out: list[dict] = []
        for _ in range(n):
            pend = torch.cat([self.X_pending, *[c.unsqueeze(0) for c in chosen]])
            for acqf in (self.acqf, self.exploit):
                if acqf is not None:
                    acqf.set_X_pending(pend if len(pend) else None)
            x, params = self.step()
            self.seen.add(params_key(self.space, params))
            chosen.append(x)
            out.append(params)
            if len(out) == 1 and not self.fixed and self.fixed_mol is None:
                self._freeze(x, params)
        return out

    def _freeze(self, x: torch.Tensor, params: dict) -> None:
        if not self.space.same_in_batch:
            return
        self.fixed = self.layout.fixed_of(x)
        mol = self.layout.mol
        if mol is not None and mol.name in self.space.same_in_batch:
            self.fixed_mol = canonical(params[mol.name])

    def step(self) -> tuple[torch.Tensor, dict]:
        """One point: the exploitation acquisition's when it is on and finds a new feasible
        point, else qLogNEI's (a repeat of what was measured teaches nothing)."""
        if self.exploit is not None:
            explore, self.acqf, self._exploiting = self.acqf, self.exploit, True
            try:
                return self._step()
            except _Repeat:
                pass
            finally:
                self.acqf, self._exploiting = explore, False
        return self._step()

    def _step(self) -> tuple[torch.Tensor, dict]:
        L = self.layout
        if L.mol is None:
            x = self.cube_step({})
            return self.accept(x, None)
        if L.dim == 0:
            return self.molecule_step()
        return self.mixed_step()

    def value(self, X: torch.Tensor) -> torch.Tensor:
        """Acquisition values of single points (``N x D``), in chunks."""
        with torch.no_grad():
            return torch.cat([self.acqf(X[i:i + 512].unsqueeze(1))
                              for i in range(0, len(X), 512)]) if len(X) else torch.zeros(0)

    def accept(self, x: torch.Tensor, smiles: str | None) -> tuple[torch.Tensor, dict]:
        """Decode ``x``; a point that breaks a constraint after rounding is repaired, a repeat
        replaced by the best of a few random feasible new points."""
        params = self.layout.decode(x, smiles)
        if self.space.check_params(params) or params_key(self.space, params) in self.seen:
            if self._exploiting:
                raise _Repeat
            x, params = self.repair(x, smiles)
        return x.reshape(-1), params

    def repair(self, x: torch.Tensor, smiles: str | None) -> tuple[torch.Tensor, dict]:
        L = self.layout
        options: list[torch.Tensor] = []
        relaxed = list(L.int_relaxed)[:6]
        for ups in itertools.product((0, 1), repeat=len(relaxed)):   # floor/ceil roundings
            y = x.clone().reshape(-1)
            for c, up in zip(relaxed, ups):
                steps = L.int_relaxed[c]
                y[c] = (math.floor(float(y[c]) * steps + 1e-9) + up) / steps
            options.append(y.clamp(0, 1))
        shared = shared_keys(self.space)
        first = L.decode(x, smiles) if self.fixed or self.fixed_mol else None
        stream = cube_stream(self.space, self.seed + 1 + len(self.seen), "random")
        for params in itertools.islice(stream, 2000):
            if smiles is not None:
                params[L.mol.name] = smiles
            if first is not None:
                params = {**params, **{k: first[k] for k in shared}}
            params = {k: params[k] for k in self.space.keys}
            if not self.space.check_params(params) and \
                    params_key(self.space, params) not in self.seen:
                options.append(L.encode([params])[0])
            if len(options) >= 64:
                break
        X = torch.stack(options)
        best_x, best_params, best_v = None, None, -math.inf
        values = self.value(X)
        for y, v in zip(X, values):
            params = L.decode(y, smiles)
            if self.space.check_params(params) or params_key(self.space, params) in self.seen:
                continue
            if float(v) > best_v:
                best_x, best_params, best_v = y, params, float(v)
        if best_x is None:
            raise ProposerError("could not find a new feasible point to propose (is the space "
                                "exhausted by the observed and pending points?)")
        return best_x, best_params

    # -- continuous / mixed cube
    def _constraints(self, fixed: dict[int, float]) -> tuple[list | None, list | None]:
        """The constraints with the fixed columns substituted (fully fixed ones dropped)."""
        def reduce(cons: list, eq: bool) -> list:
            out = []
            for idx, coef, rhs in cons:
                keep = [i for i, c in enumerate(idx.tolist()) if c not in fixed]
                rhs = rhs - sum(float(coef[i]) * fixed[c] for i, c in enumerate(idx.tolist())
                                if c in fixed)
                if keep:
                    out.append((idx[keep], coef[keep], rhs))
            return out
        ineq, eq = reduce(self.ineq, False), reduce(self.eq, True)
        return ineq or None, eq or None

    def _opt_kwargs(self) -> dict[str, Any]:
        o = self.o
        return dict(num_restarts=int(o.num_restarts), raw_samples=int(o.raw_samples))

    def cube_step(self, fixed: dict[int, float], smiles: str | None = None) -> torch.Tensor:
        """One point maximising the acquisition over the cube (``fixed`` columns held)."""
        from botorch.optim.optimize_mixed import optimize_acqf_mixed_alternating

        L = self.layout
        fixed = {**self.fixed, **fixed}
        ineq, eq = self._constraints(fixed)
        grids = {c: g for c, g in L.int_grids.items() if c not in fixed}
        blocks = [b for b in L.cat_blocks if b[0] not in fixed]
        free_cont = [c for c in L.cont_cols + list(L.int_relaxed) if c not in fixed]
        combos = math.prod(len(g) for g in grids.values()) * math.prod(len(b) for b in blocks)
        options = {"maxiter": int(self.o.maxiter), "batch_limit": 20,
                   "init_batch_limit": 32}
        if not free_cont and combos <= MAX_CHOICES_ENUMERATE:
            return self._enumerate(fixed, grids, blocks, smiles)
        if combos > 1 and combos <= int(self.o.max_enumerate):
            # optimize_acqf_mixed, written out so that each combination gets its own
            # constraints and (when constrained) cheap feasible starting points
            best_x, best_v = None, -math.inf
            for f in self._combos(grids, blocks, fixed):
                if not self._lp_feasible(f):
                    continue
                c_ineq, c_eq = self._constraints(f)
                x = self._optimize(f, c_ineq, c_eq, options)
                v = float(self.value(x.reshape(1, -1))[0])
                if v > best_v:
                    best_x, best_v = x, v
            if best_x is None:
                raise ProposerError("no combination of the discrete parameters satisfies the "
                                    "linear constraints")
            return best_x
        if grids:
            x, _ = optimize_acqf_mixed_alternating(
                self.acqf, self.bounds, discrete_dims=grids, q=1, fixed_features=fixed or None,
                inequality_constraints=ineq, equality_constraints=eq,
                post_processing_func=L.round,
                options={"batch_limit": 20, "init_batch_limit": 32}, **self._opt_kwargs())
            return x
        return self._optimize(fixed, ineq, eq, options)

    def _optimize(self, fixed: dict[int, float], ineq: list | None, eq: list | None,
                  options: dict[str, Any]) -> torch.Tensor:
        """``optimize_acqf`` over the cube with ``fixed`` columns held. Under linear
        constraints BoTorch runs SLSQP, and by default on all restarts at once as one problem
        (the sum of their acquisition values): a step that helps a poor restart a lot may then
        move the best one to a worse point, and SLSQP's line search is not monotone anyway.
        So each restart is optimised on its own, and the best starting point is kept when no
        restart ends above it (measured on photo_*: before, 4-6 % of the steps ended below
        their best start, by ~2 in log-acquisition)."""
        from botorch.optim import optimize_acqf

        start = self._initial_conditions(fixed, ineq, eq)
        if start is not None:
            options = {**options, "max_optimization_problem_aggregation_size": 1}
        x, _ = optimize_acqf(self.acqf, self.bounds, q=1, fixed_features=fixed or None,
                             inequality_constraints=ineq, equality_constraints=eq,
                             batch_initial_conditions=start,
                             post_processing_func=self.layout.round, options=options,
                             **self._opt_kwargs())
        if start is not None:
            start = self.layout.round(start.reshape(len(start), -1))
            v0 = self.value(start)
            if float(v0.max()) > float(self.value(x.reshape(1, -1))[0]):
                x = start[int(v0.argmax())].unsqueeze(0)
        return x

    def _initial_conditions(self, fixed: dict[int, float], ineq: list | None,
                            eq: list | None) -> torch.Tensor | None:
        """Starting points under linear constraints: BoTorch would draw them by hit-and-run
        (seconds per call); the design's feasible Sobol points, scored, are as good here."""
        if not ineq and not eq:
            return None
        from botorch.optim.initializers import initialize_q_batch

        L = self.layout
        if self._raw is None:
            rows = itertools.islice(cube_stream(self.space, self.seed, "sobol"),
                                    int(self.o.raw_samples))
            self._raw = torch.as_tensor(np.stack([self.space.to_unit(p) for p in rows]),
                                        dtype=DTYPE)
        R = torch.zeros(len(self._raw), L.D, dtype=DTYPE)
        R[:, : L.dim] = self._raw
        for c, v in fixed.items():
            R[:, c] = v
        X, _ = initialize_q_batch(R.unsqueeze(1), self.value(R),
                                  min(int(self.o.num_restarts), len(R)))
        return X

    def _combos(self, grids: dict[int, list[float]], blocks: list[list[int]],
                fixed: dict[int, float]) -> list[dict[int, float]]:
        axes: list[list[dict[int, float]]] = [[{c: v} for v in g] for c, g in grids.items()]
        for b in blocks:
            axes.append([{c: float(c == hot) for c in b} for hot in b])
        out = []
        for parts in itertools.product(*axes):
            f = dict(fixed)
            for part in parts:
                f.update(part)
            out.append(f)
        return out

    def _lp_feasible(self, fixed: dict[int, float]) -> bool:
        """Whether the linear constraints leave room once ``fixed`` columns are set."""
        ineq, eq = self._constraints(fixed)
        if not ineq and not eq:
            return True
        from scipy.optimize import linprog

        free = [c for c in range(self.layout.dim) if c not in fixed]
        pos = {c: i for i, c in enumerate(free)}

        def rows(cons: list | None) -> tuple[np.ndarray | None, np.ndarray | None]:
            if not cons:
                return None, None
            A = np.zeros((len(cons), len(free)))
            b = np.zeros(len(cons))
            for r, (idx, coef, rhs) in enumerate(cons):
                for c, a in zip(idx.tolist(), coef.tolist()):
                    A[r, pos[c]] = a
                b[r] = rhs
            return A, b
        A_ub, b_ub = rows(ineq)
        A_eq, b_eq = rows(eq)
        if not free:
            return True
        res = linprog(np.zeros(len(free)), A_ub=None if A_ub is None else -A_ub,
                      b_ub=None if b_ub is None else -b_ub, A_eq=A_eq, b_eq=b_eq,
                      bounds=[(0, 1)] * len(free), method="highs")
        return bool(res.status == 0)

    def _enumerate(self, fixed: dict[int, float], grids: dict[int, list[float]],
                   blocks: list[list[int]], smiles: str | None) -> torch.Tensor:
        """Fully discrete: score every feasible new combination (Ax's optimize_acqf_discrete)."""
        L = self.layout
        rows, base = [], torch.zeros(L.D, dtype=DTYPE)
        for c, v in fixed.items():
            base[c] = v
        for f in self._combos(grids, blocks, {}):
            x = base.clone()
            for c, v in f.items():
                x[c] = v
            params = L.decode(x, smiles)
            if not self.space.check_params(params) and \
                    params_key(self.space, params) not in self.seen:
                rows.append(x)
        if not rows:
            raise ProposerError("every feasible combination of the discrete parameters is "
                                "already observed or pending")
        X = torch.stack(rows)
        return X[int(self.value(X).argmax())].unsqueeze(0)

    # -- molecules
    def molecule_step(self) -> tuple[torch.Tensor, dict]:
        L = self.layout
        if self.fixed_mol is not None:
            smiles = self.fixed_mol
        else:
            pool = [s for s in self.pool if params_key(self.space, {L.mol.name: s})
                    not in self.seen]
            if not pool:
                raise ProposerError(f"molecule parameter {L.mol.name!r}: candidates exhausted "
                                    "(all observed or pending)")
            pool = self._subsample(pool)
            X = L.encode([{L.mol.name: s} for s in pool])
            keep = self._screen(X)
            smiles = pool[int(keep[int(self.value(X[keep]).argmax())])]
        x = L.encode([{L.mol.name: smiles}])[0]
        return x, clean(self.space, {L.mol.name: smiles})

    def _screen(self, X: torch.Tensor) -> torch.Tensor:
        """Indices of the candidates worth the (costly) qLogNEI: all of them for small pools
        or several objectives; else the ``screen`` best by an optimistic bound (mean + 2 sd)
        from the marginal posterior, computed in one pass (one N × n kernel block, no joint
        posterior per candidate)."""
        k = int(self.o.screen)
        if k <= 0 or len(X) <= k or self.Y.shape[-1] != 1:
            return torch.arange(len(X))
        mean, var = marginal_posterior(self.model, X)
        return torch.topk(mean + 2.0 * var.clamp_min(0).sqrt(), k).indices

    def _subsample(self, pool: list[str]) -> list[str]:
        k = int(self.o.max_candidates)
        if len(pool) <= k:
            return pool
        return [pool[i] for i in sorted(self.rng.choice(len(pool), k, replace=False))]

    def mixed_step(self) -> tuple[torch.Tensor, dict]:
        """Molecule and conditions: score (molecule, condition) pairs over the pool and a few
        Sobol conditions plus the best observed ones, then optimise the conditions of the best
        pair with its fingerprint held."""
        L = self.layout
        pool = [self.fixed_mol] if self.fixed_mol is not None else self._subsample(self.pool)
        conds = self._conditions()
        fps = torch.as_tensor(L.fingerprints(pool), dtype=DTYPE)
        best_v, best = -math.inf, None
        for i in range(0, len(pool), max(1, 4096 // len(conds))):
            block = fps[i:i + max(1, 4096 // len(conds))]
            X = torch.cat([conds.repeat(len(block), 1),
                           block.repeat_interleave(len(conds), dim=0)], dim=1)
            v = self.value(X)
            j = int(v.argmax())
            if float(v[j]) > best_v:
                best_v, best = float(v[j]), (i + j // len(conds), X[j])
        smiles = pool[best[0]]
        fp_fixed = {c: float(v) for c, v in zip(L.fp_cols, fps[best[0]].tolist())}
        try:
            x = self.cube_step(fp_fixed, smiles)
            if float(self.value(x.reshape(1, -1))[0]) < best_v:
                x = best[1].unsqueeze(0)
        except ProposerError:
            x = best[1].unsqueeze(0)
        return self.accept(x, smiles)

    def _conditions(self) -> torch.Tensor:
        """Cube points to pair with molecules: Sobol (same_in_batch columns held) and the
        observed conditions of the best observations."""
        L = self.layout
        k = int(self.o.cube_samples)
        rows = []
        for params in itertools.islice(cube_stream(self.space, self.seed, "sobol"), 20 * k):
            u = self.space.to_unit({**params, **{m.name: "" for m in self.space.molecules}})
            for c, v in self.fixed.items():
                u[c] = v
            rows.append(torch.as_tensor(u, dtype=DTYPE))
            if len(rows) >= k:
                break
        score = self.Y.sum(-1)
        for i in torch.argsort(score, descending=True)[: max(1, k // 2)].tolist():
            u = self.X[i, : L.dim].clone()
            for c, v in self.fixed.items():
                u[c] = v
            rows.append(u)
        return torch.stack(rows)
