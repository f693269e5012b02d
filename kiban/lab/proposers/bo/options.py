"""The options of the model-based proposers (botorch, generative); no torch imported."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal, get_args

from kiban.lab.options import require
from kiban.lab.proposers.base import ProposerOptions

Warp = Literal["none", "power"]  # outcome transforms before the GP (`warp_outcomes`)
WARPS = get_args(Warp)


@dataclass(frozen=True, kw_only=True)
class ModelOptions(ProposerOptions):
    """The options of the model-based proposers (botorch, generative)."""

    num_restarts: int = 2  # Ax: 20
    raw_samples: int = 96  # Ax: 1024
    mc_samples: int = 64  # BoTorch default: 512
    maxiter: int = 15  # L-BFGS-B iterations per restart (BoTorch: 200)
    max_enumerate: int = 20  # discrete combinations enumerated with optimize_acqf_mixed
    fp_bits: int = 2048  # Morgan fingerprint length (molecules)
    fp_radius: int = 2
    samples: int = 64  # molecules sampled from a Molecule param's model per round
    temperature: float = 1.0
    max_new_tokens: int = 128
    cube_samples: int = 16  # conditions tried per molecule (molecule + other params)
    threads: int = 1  # torch and BLAS threads while proposing (0: leave them)
    screen: int = 128  # molecules: qLogNEI only on the best by mean + 2 sd (0: all)
    warp: Warp = "none"  # one objective: "power" (Box-Cox / Yeo-Johnson) outcomes
    exploit_after: int = 0  # one objective: from this many observations on, propose
    # the best by the posterior (qSimpleRegret); 0: never
    constrained_budget: bool = True  # linear constraints: CONSTRAINED_BUDGET for the four
    # optimiser options not set explicitly

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, int) and not isinstance(value, bool):
                require(value >= 0, f"option {f.name!r} must be an integer >= 0, got {value!r}")
        require(
            self.temperature > 0,
            f"option 'temperature' must be a number > 0, got {self.temperature!r}",
        )


@dataclass(frozen=True, kw_only=True)
class BotorchOptions(ModelOptions):
    max_candidates: int = 2000  # molecules scored per step (random subset beyond)
    new_molecules_only: bool = False  # mixed spaces: never reuse an observed molecule
