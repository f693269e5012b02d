"""The botorch proposer's acquisition functions: qLogNEI (one objective), qLogNEHVI (2-4) or
qLogNParEGO (5+), the hypervolume reference point, and qSimpleRegret for exploitation."""

from __future__ import annotations

import math
from typing import Any

import torch

from kiban.lab.proposers.bo.layout import DTYPE
from kiban.lab.proposers.bo.surrogate import utility_thresholds
from kiban.lab.space import Space

MIN_NUM_OBJECTIVES_PAREGO = 5  # Ax: qLogNParEGO from five objectives


def make_acquisition(
    model: Any,
    space: Space,
    X: torch.Tensor,
    mc_samples: int,
    seed: int,
) -> Any:
    from botorch.sampling.normal import SobolQMCNormalSampler

    sampler = SobolQMCNormalSampler(sample_shape=torch.Size([mc_samples]), seed=seed)
    m = len(space.objectives)
    if m == 1:
        from botorch.acquisition.logei import qLogNoisyExpectedImprovement

        return qLogNoisyExpectedImprovement(
            model, X_baseline=X, sampler=sampler, prune_baseline=True
        )
    if m >= MIN_NUM_OBJECTIVES_PAREGO:
        from botorch.acquisition.multi_objective.parego import qLogNParEGO

        return qLogNParEGO(model, X_baseline=X, sampler=sampler, prune_baseline=True)
    from botorch.acquisition.multi_objective.logei import qLogNoisyExpectedHypervolumeImprovement

    return qLogNoisyExpectedHypervolumeImprovement(
        model,
        ref_point=reference_point(model, space, X),
        X_baseline=X,
        sampler=sampler,
        prune_baseline=True,
    )


def exploit_acquisition(model: Any, observed: int, after: int, mc_samples: int, seed: int) -> Any:
    """qSimpleRegret (the expected best of the batch under the posterior: pure exploitation)
    once ``observed >= after > 0``; None before. For the last experiments of a campaign of
    known length, where a better measured value is all that is left to gain (one objective:
    `BotorchProposer.check_space` refuses more)."""
    if after <= 0 or observed < after:
        return None
    from botorch.acquisition.monte_carlo import qSimpleRegret
    from botorch.sampling.normal import SobolQMCNormalSampler

    return qSimpleRegret(
        model, sampler=SobolQMCNormalSampler(sample_shape=torch.Size([mc_samples]), seed=seed)
    )


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
    return infer_reference_point(
        pareto_Y=pred[is_non_dominated(pred)], max_ref_point=caps, scale=0.1
    )
