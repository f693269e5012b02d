"""The botorch proposer's surrogate: outcomes prepared as Ax does (winsorised, optionally
warped), the GP (`SingleTaskGP` with BoTorch's defaults; a Tanimoto kernel on fingerprints) and
its marginal posterior."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.script in linear_operator
    import gpytorch  # noqa: F401

from kiban.lab.proposers.base import ProposerError
from kiban.lab.proposers.bo.layout import Layout
from kiban.lab.proposers.bo.options import WARPS
from kiban.lab.proposers.gpfit import fit_fast
from kiban.lab.space import Space


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
                ard_num_dims=layout.dim, batch_shape=batch, active_dims=list(range(layout.dim))
            )
            kernel = cube * kernel
        covar = ScaleKernel(kernel, batch_shape=batch)
    model = SingleTaskGP(X, Y, covar_module=covar, outcome_transform=Standardize(m=m))
    if not fit_fast(model):  # the same optimum, without gpytorch's overhead (gpfit.py)
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
