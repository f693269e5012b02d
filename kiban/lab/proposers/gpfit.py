"""Fitting BoTorch's default single-output GP without gpytorch's per-call overhead.

`fit_model` spends most of a proposal's fixed cost in ``fit_gpytorch_mll``: at 100
observations each of its ~100 L-BFGS-B evaluations of the marginal likelihood costs ~2.5 ms,
nearly all of it linear-operator and prior bookkeeping around a 100 x 100 Cholesky. `fit_fast`
maximises *the same objective* — gpytorch's `ExactMarginalLogLikelihood` of BoTorch's default
`SingleTaskGP` (constant mean, RBF kernel with ARD length-scales and the dimension-scaled
log-normal prior, Gaussian noise with its log-normal prior, both constrained from below without
a transform, targets already standardised by `Standardize`), divided by the number of points —
written as a dozen torch ops, with the same L-BFGS-B (scipy's defaults, the same bounds, the
same starting point: the priors' modes) and copies the optimum into the model.

It reads the priors, bounds and starting values from the model it is given, so a BoTorch
release that changes them changes both fits alike; a model of any other shape (several
outputs, another kernel, transformed constraints), or an optimisation that does not converge,
is left to ``fit_gpytorch_mll``. `tests/lab/test_proposers.py` checks that both fits reach the
same hyper-parameters.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch


def _lognormal(prior: Any) -> tuple[float, float] | None:
    from gpytorch.priors import LogNormalPrior

    if type(prior) is not LogNormalPrior:
        return None
    return float(prior.loc.reshape(-1)[0]), float(prior.scale.reshape(-1)[0])


def _plain_lower_bound(module: Any, name: str) -> float | None:
    """The lower bound of ``raw_<name>`` when the raw value *is* the value (no transform)."""
    from gpytorch.constraints import GreaterThan

    constraint = module._constraints.get(f"raw_{name}_constraint")
    if type(constraint) is not GreaterThan or constraint.enforced:
        return None
    return float(constraint.lower_bound.reshape(-1)[0])


def _layout(model: Any) -> dict[str, Any] | None:
    """What `fit_fast` needs from ``model``, or None when it is not the default shape."""
    from gpytorch.kernels import RBFKernel
    from gpytorch.likelihoods import GaussianLikelihood
    from gpytorch.means import ConstantMean

    covar, mean, likelihood = model.covar_module, model.mean_module, model.likelihood
    if (type(covar) is not RBFKernel or type(mean) is not ConstantMean
            or type(likelihood) is not GaussianLikelihood or covar.active_dims is not None
            or getattr(model, "input_transform", None) is not None
            or model.train_targets.dim() != 1 or len(model.train_inputs) != 1):
        return None
    noise_module = likelihood.noise_covar
    priors = {name: prior for name, _, prior, _, _ in model.named_priors()}
    ls_prior = _lognormal(priors.get("covar_module.lengthscale_prior"))
    noise_prior = _lognormal(priors.get("likelihood.noise_covar.noise_prior"))
    ls_low = _plain_lower_bound(covar, "lengthscale")
    noise_low = _plain_lower_bound(noise_module, "noise")
    if None in (ls_prior, noise_prior, ls_low, noise_low) or len(priors) != 2:
        return None
    return {"ls_prior": ls_prior, "noise_prior": noise_prior, "ls_low": ls_low,
            "noise_low": noise_low}


def _lognormal_logpdf(x: torch.Tensor, loc: float, scale: float) -> torch.Tensor:
    logx = torch.log(x)
    return (-logx - math.log(scale) - 0.5 * math.log(2 * math.pi)
            - 0.5 * ((logx - loc) / scale) ** 2)


def _cholesky(A: torch.Tensor) -> torch.Tensor:
    """Cholesky with gpytorch's jitter schedule (1e-8, 1e-7, 1e-6 for float64)."""
    L, info = torch.linalg.cholesky_ex(A)
    if not bool(info.any()):
        return L
    eye = torch.eye(A.shape[-1], dtype=A.dtype)
    for jitter in (1e-8, 1e-7, 1e-6):
        L, info = torch.linalg.cholesky_ex(A + jitter * eye)
        if not bool(info.any()):
            return L
    raise torch.linalg.LinAlgError("the kernel matrix is not positive definite")


def fit_fast(model: Any) -> bool:
    """Fit ``model`` (a default `SingleTaskGP` with one output) by maximising its exact
    marginal log likelihood; True when done, False when the model is not of that shape or the
    optimiser did not converge (the caller then uses ``fit_gpytorch_mll``)."""
    from scipy.optimize import minimize

    spec = _layout(model)
    if spec is None:
        return False
    X = model.train_inputs[0].detach()
    y = model.train_targets.detach()
    n, d = X.shape
    covar, noise_module = model.covar_module, model.likelihood.noise_covar
    x0 = np.concatenate([noise_module.raw_noise.detach().reshape(-1).numpy(),
                         model.mean_module.raw_constant.detach().reshape(-1).numpy(),
                         covar.raw_lengthscale.detach().reshape(-1).numpy()])
    if len(x0) != 2 + d:
        return False
    (ls_loc, ls_scale), (nz_loc, nz_scale) = spec["ls_prior"], spec["noise_prior"]
    diag = torch.arange(n)
    log_2pi = math.log(2 * math.pi)

    def loss_and_grad(v: np.ndarray) -> tuple[float, np.ndarray]:
        theta = torch.tensor(v, dtype=X.dtype, requires_grad=True)
        noise, constant, ls = theta[0], theta[1], theta[2:]
        Z = X / ls
        norms = (Z * Z).sum(-1)     # squared distances as gpytorch forms them
        sq = (norms.unsqueeze(1) + norms.unsqueeze(0) - 2 * Z @ Z.T).clamp_min(0)
        K = torch.exp(-0.5 * sq)
        K = K.index_put((diag, diag), K[diag, diag] + noise)
        L = _cholesky(K)
        r = (y - constant).unsqueeze(-1)
        alpha = torch.cholesky_solve(r, L)
        log_lik = (-0.5 * (r * alpha).sum() - torch.log(L.diagonal()).sum()
                   - 0.5 * n * log_2pi)
        log_prior = (_lognormal_logpdf(ls, ls_loc, ls_scale).sum()
                     + _lognormal_logpdf(noise, nz_loc, nz_scale))
        loss = -(log_lik + log_prior) / n
        loss.backward()
        return float(loss.detach()), theta.grad.numpy().copy()

    bounds = [(spec["noise_low"], None), (None, None)] + [(spec["ls_low"], None)] * d
    try:
        result = minimize(loss_and_grad, x0, jac=True, method="L-BFGS-B", bounds=bounds)
    except (torch.linalg.LinAlgError, RuntimeError, ValueError):
        return False
    if not result.success or not np.isfinite(result.fun):
        return False
    v = torch.as_tensor(result.x, dtype=X.dtype)
    with torch.no_grad():
        noise_module.raw_noise.copy_(v[:1].reshape(noise_module.raw_noise.shape))
        model.mean_module.raw_constant.copy_(v[1].reshape(model.mean_module.raw_constant.shape))
        covar.raw_lengthscale.copy_(v[2:].reshape(covar.raw_lengthscale.shape))
    return True
