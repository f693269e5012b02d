"""Proposers: what a campaign measures next.

``random`` and ``sobol`` are baselines; ``botorch`` (the default) is Bayesian optimisation set
up as Ax's default generation strategy; ``generative`` samples molecules from a kiban model
and ranks them with a Tanimoto-kernel GP. `initial_design` is the scrambled Sobol design every
campaign starts with.

This package does not import torch when imported: `make_proposer` imports the proposer's module.
"""

from __future__ import annotations

import difflib
import importlib
from typing import Any

from kiban.lab.proposers.base import Observation, Proposer, ProposerError, check_options
from kiban.lab.space import CampaignConfig, Space

#: proposer name -> (module, class)
PROPOSERS: dict[str, tuple[str, str]] = {
    "botorch": ("kiban.lab.proposers.bo", "BotorchProposer"),
    "random": ("kiban.lab.proposers.design", "RandomProposer"),
    "sobol": ("kiban.lab.proposers.design", "SobolProposer"),
    "generative": ("kiban.lab.proposers.generative", "GenerativeProposer"),
}


def proposer_class(name: str) -> type[Proposer]:
    if name not in PROPOSERS:
        close = difflib.get_close_matches(name, sorted(PROPOSERS), n=1, cutoff=0.0)
        raise ProposerError(f"unknown proposer {name!r}; did you mean {close[0]!r}? "
                            f"(valid: {sorted(PROPOSERS)})")
    module, cls = PROPOSERS[name]
    return getattr(importlib.import_module(module), cls)


def make_proposer(config: CampaignConfig, **extra: Any) -> Proposer:
    """The proposer ``config.proposer`` with ``config.proposer_options`` (an unknown option is
    a `ProposerError`, a ValueError naming it and the closest valid one). ``extra`` goes to
    the constructor (e.g. ``sampler=`` for the generative proposer)."""
    cls = proposer_class(config.proposer)
    options = dict(config.proposer_options)
    check_options(cls.name, options, cls.OPTIONS)
    proposer = cls(seed=config.seed, initial=config.initial, center=config.center, **extra,
                   **options)
    check = getattr(proposer, "check_space", None)
    if check is not None:
        check(config.space)   # e.g. a missing model directory, before the first round
    return proposer


def initial_design(space: Space, n: int, seed: int, skip: int = 0, **kwargs: Any) -> list[dict]:
    """Points ``skip .. skip + n - 1`` of the scrambled Sobol design (see
    `kiban.lab.proposers.design.initial_design`)."""
    from kiban.lab.proposers.design import initial_design as design

    return design(space, n, seed, skip, **kwargs)


__all__ = ["Observation", "PROPOSERS", "Proposer", "ProposerError", "initial_design",
           "make_proposer", "proposer_class"]
