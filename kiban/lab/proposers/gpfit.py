"""Fitting BoTorch's default single-output GP without gpytorch's per-call overhead.

`fit_model` spends a proposal's fixed cost in ``fit_gpytorch_mll``: at 100 observations each
of its ~100 L-BFGS-B evaluations of the marginal likelihood costs ~2.5 ms, nearly all of it
linear-operator, prior and autograd bookkeeping around a 100 x 100 Cholesky (0.38 s of CPU for
the fit on hplc; 0.11 s here, measured on the idle 2-core machine). `fit_fast`
maximises *the same objective* — gpytorch's `ExactMarginalLogLikelihood` of BoTorch's default
`SingleTaskGP` (constant mean, RBF kernel with ARD length-scales and the dimension-scaled
log-normal prior, Gaussian noise with its log-normal prior, both constrained from below without
a transform, targets already standardised by `Standardize`), divided by the number of points —
in NumPy with its gradient in closed form, with the same L-BFGS-B (scipy's defaults, the same
bounds, the same starting point: the priors' modes) and copies the optimum into the model.

It reads the priors, bounds and starting values from the model it is given, so a BoTorch
release that changes them changes both fits alike; a model of any other shape (several
outputs, another kernel, transformed constraints), or an optimisation that does not converge,
is left to ``fit_gpytorch_mll``. `tests/lab/test_proposers.py` checks that both fits reach the
same hyper-parameters and posterior, and the gradient against finite differences.
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
    if (
        type(covar) is not RBFKernel
        or type(mean) is not ConstantMean
        or type(likelihood) is not GaussianLikelihood
        or covar.active_dims is not None
        or getattr(model, "input_transform", None) is not None
        or model.train_targets.dim() != 1
        or len(model.train_inputs) != 1
    ):
        return None
    noise_module = likelihood.noise_covar
    priors = {name: prior for name, _, prior, _, _ in model.named_priors()}
    ls_prior = _lognormal(priors.get("covar_module.lengthscale_prior"))
    noise_prior = _lognormal(priors.get("likelihood.noise_covar.noise_prior"))
    ls_low = _plain_lower_bound(covar, "lengthscale")
    noise_low = _plain_lower_bound(noise_module, "noise")
    if None in (ls_prior, noise_prior, ls_low, noise_low) or len(priors) != 2:
        return None
    return {
        "ls_prior": ls_prior,
        "noise_prior": noise_prior,
        "ls_low": ls_low,
        "noise_low": noise_low,
    }


def _cholesky(A: np.ndarray) -> np.ndarray:
    """Cholesky with gpytorch's jitter schedule (1e-8, 1e-7, 1e-6 for float64)."""
    eye = np.eye(len(A))
    for jitter in (0.0, 1e-8, 1e-7, 1e-6):
        try:
            return np.linalg.cholesky(A + jitter * eye if jitter else A)
        except np.linalg.LinAlgError:
            continue
    raise np.linalg.LinAlgError("the kernel matrix is not positive definite")


def _objective(X: np.ndarray, y: np.ndarray, spec: dict[str, Any]):
    """The loss (minus the marginal log likelihood plus log priors, over n) of the parameter
    vector [noise, constant, lengthscale_1..d] and its gradient, in closed form:
    d log p(y) / d theta = 0.5 tr((a a^T - K^-1) dK/dtheta) with a = K^-1 (y - c),
    dK_ij / d l_k = K_ij (x_ik - x_jk)^2 / l_k^3, dK / d noise = I, d log p / dc = sum(a)."""
    from scipy.linalg import cho_solve

    n, d = X.shape
    diff2 = (X[:, None, :] - X[None, :, :]) ** 2  # (n, n, d), fixed during the fit
    (ls_loc, ls_scale), (nz_loc, nz_scale) = spec["ls_prior"], spec["noise_prior"]
    half_log_2pi = 0.5 * math.log(2 * math.pi)
    eye = np.eye(n)

    def log_prior(v: np.ndarray, loc: float, scale: float) -> tuple[np.ndarray, np.ndarray]:
        logv = np.log(v)
        z = (logv - loc) / scale
        return -logv - math.log(scale) - half_log_2pi - 0.5 * z * z, (-1 - z / scale) / v

    def loss_and_grad(theta: np.ndarray) -> tuple[float, np.ndarray]:
        noise, constant, ls = theta[0], theta[1], theta[2:]
        K = np.exp(-0.5 * diff2 @ (1.0 / ls**2))
        L = _cholesky(K + noise * eye)
        r = y - constant
        alpha = cho_solve((L, True), r)
        log_lik = -0.5 * r @ alpha - np.log(np.diag(L)).sum() - n * half_log_2pi
        W = np.outer(alpha, alpha) - cho_solve((L, True), eye)
        lp_ls, dlp_ls = log_prior(ls, ls_loc, ls_scale)
        lp_nz, dlp_nz = log_prior(np.array([noise]), nz_loc, nz_scale)
        grad = np.empty_like(theta)
        grad[0] = 0.5 * np.trace(W) + dlp_nz[0]
        grad[1] = alpha.sum()
        grad[2:] = 0.5 * np.einsum("ij,ijk->k", W * K, diff2) / ls**3 + dlp_ls
        loss = -(log_lik + lp_ls.sum() + lp_nz[0]) / n
        return float(loss), -grad / n

    return loss_and_grad


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
    d = X.shape[1]
    covar, noise_module = model.covar_module, model.likelihood.noise_covar
    x0 = np.concatenate(
        [
            noise_module.raw_noise.detach().reshape(-1).numpy(),
            model.mean_module.raw_constant.detach().reshape(-1).numpy(),
            covar.raw_lengthscale.detach().reshape(-1).numpy(),
        ]
    )
    if len(x0) != 2 + d:
        return False
    loss_and_grad = _objective(X.double().numpy(), y.double().numpy(), spec)
    bounds = [(spec["noise_low"], None), (None, None)] + [(spec["ls_low"], None)] * d
    try:
        result = minimize(loss_and_grad, x0, jac=True, method="L-BFGS-B", bounds=bounds)
    except (np.linalg.LinAlgError, ValueError, FloatingPointError):
        return False
    if not result.success or not np.isfinite(result.fun):
        return False
    v = torch.as_tensor(result.x, dtype=X.dtype)
    with torch.no_grad():
        noise_module.raw_noise.copy_(v[:1].reshape(noise_module.raw_noise.shape))
        model.mean_module.raw_constant.copy_(v[1].reshape(model.mean_module.raw_constant.shape))
        covar.raw_lengthscale.copy_(v[2:].reshape(covar.raw_lengthscale.shape))
    return True
