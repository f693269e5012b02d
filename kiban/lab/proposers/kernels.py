"""A Tanimoto kernel on fingerprint bit vectors, for GPs over molecules."""

from __future__ import annotations

import torch
from gpytorch.kernels import Kernel


class TanimotoKernel(Kernel):
    """``T(x, y) = <x, y> / (|x|^2 + |y|^2 - <x, y>)``: the Jaccard similarity of bit vectors,
    a positive-definite kernel with no hyperparameters (wrap it in a ScaleKernel for the
    output scale). Two all-zero vectors count as identical (T = 1)."""

    has_lengthscale = False

    def forward(
        self,
        x1: torch.Tensor,
        x2: torch.Tensor,
        diag: bool = False,
        last_dim_is_batch: bool = False,
        **params,
    ) -> torch.Tensor:
        if last_dim_is_batch:
            x1 = x1.transpose(-1, -2).unsqueeze(-1)
            x2 = x2.transpose(-1, -2).unsqueeze(-1)
        if diag:
            dot = (x1 * x2).sum(-1)
            denom = x1.pow(2).sum(-1) + x2.pow(2).sum(-1) - dot
        else:
            dot = x1 @ x2.transpose(-1, -2)
            denom = x1.pow(2).sum(-1, keepdim=True) + x2.pow(2).sum(-1).unsqueeze(-2) - dot
        safe = denom.clamp_min(1e-12)
        return torch.where(denom > 1e-12, dot / safe, torch.ones_like(dot))
