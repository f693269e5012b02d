"""Where each parameter lives in the botorch proposer's input vector: ``[unit cube |
fingerprint]``; encoding proposals into it, decoding points back, rounding the relaxed discrete
columns."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from kiban.lab.proposers.base import Observation, canonical_smiles, clean
from kiban.lab.proposers.molecules import fingerprints
from kiban.lab.space import Categorical, Composition, Continuous, Integer, Space

DTYPE = torch.float64
MAX_DISCRETE_VALUES = 20  # BoTorch: integers with more values are relaxed and rounded


class Layout:
    """Where each parameter lives in the model's input vector, and the way back."""

    def __init__(self, space: Space, fp_bits: int, fp_radius: int) -> None:
        # at most one molecule parameter: `BotorchProposer.check_space` refuses more
        self.space = space
        self.dim = space.dim
        self.mol = space.molecules[0] if space.molecules else None
        self.bits = int(fp_bits) if self.mol else 0
        self.radius = int(fp_radius)
        self.D = self.dim + self.bits
        self.fp_cols = list(range(self.dim, self.D))
        sl = space.slices()
        self.int_grids: dict[int, list[float]] = {}  # exact integer grids (few values)
        self.int_relaxed: dict[int, int] = {}  # col -> number of steps (many values)
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
        cube = (
            np.stack([self.space.to_unit(p) for p in params])
            if self.dim
            else np.zeros((len(params), 0))
        )
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
    return {
        canonical(p[m.name])
        for p in [o.params for o in observed] + list(pending)
        for m in space.molecules
        if m.name in p
    }
