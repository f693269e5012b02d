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

Modules: `options` (the options, no torch), `proposer` (the design, then the model; imports
torch only to propose), `layout` (the input vector), `surrogate` (outcome transforms, the GP),
`acquisition` (acquisition functions), `optimiser` (one call's greedy batch).
"""

import importlib
from typing import Any

# name -> the module that defines it. Loaded on first use (PEP 562): the proposer and its
# options import no torch, so `make_proposer` can check a campaign without it; the model
# modules (torch, BoTorch, gpytorch) load when a name of theirs is asked for.
_EXPORTS = {
    "BotorchProposer": "proposer",
    "MIN_OBSERVED": "proposer",
    "BotorchOptions": "options",
    "ModelOptions": "options",
    "WARPS": "options",
    "Warp": "options",
    "DTYPE": "layout",
    "MAX_DISCRETE_VALUES": "layout",
    "Layout": "layout",
    "canonical": "layout",
    "used_molecules": "layout",
    "fit_model": "surrogate",
    "marginal_posterior": "surrogate",
    "utility_thresholds": "surrogate",
    "warp_outcomes": "surrogate",
    "winsorize": "surrogate",
    "MIN_NUM_OBJECTIVES_PAREGO": "acquisition",
    "exploit_acquisition": "acquisition",
    "make_acquisition": "acquisition",
    "reference_point": "acquisition",
    "BatchOptimiser": "optimiser",
    "MAX_CHOICES_ENUMERATE": "optimiser",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
