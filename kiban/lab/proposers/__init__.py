"""Proposers: what a campaign measures next.

``random`` and ``sobol`` are baselines; ``botorch`` (the default) is Bayesian optimisation set
up as Ax's default generation strategy; ``generative`` samples molecules from a kiban model
and ranks them with a Tanimoto-kernel GP. `initial_design` is the scrambled Sobol design every
campaign starts with.

This package does not import torch when imported: `make_proposer` imports the proposer's module.
"""

from __future__ import annotations

from typing import Any

from kiban.lab.proposers.base import Observation, Proposer, ProposerError, ProposerOptions
from kiban.lab.registry import Registry
from kiban.lab.space import CampaignConfig, Space

#: proposer kind -> class (each with ``kind`` and ``Options``); imported on first use
PROPOSERS: Registry[Proposer] = Registry(
    "proposer",
    {
        "botorch": "kiban.lab.proposers.bo:BotorchProposer",
        "random": "kiban.lab.proposers.design:RandomProposer",
        "sobol": "kiban.lab.proposers.design:SobolProposer",
        "generative": "kiban.lab.proposers.generative:GenerativeProposer",
    },
    ProposerError,
)


def proposer_class(name: str) -> type[Proposer]:
    """The class registered as ``name`` (an unknown name: the closest known one)."""
    return PROPOSERS.get(name)


def make_proposer(config: CampaignConfig, **extra: Any) -> Proposer:
    """The proposer ``config.proposer`` with ``config.proposer_options`` (an unknown option is
    a `ProposerError`, a ValueError naming it and the closest valid one). ``extra`` goes to
    the constructor (e.g. ``sampler=`` for the generative proposer)."""
    cls = proposer_class(config.proposer)
    proposer = cls.from_config(
        config.proposer_options,
        seed=config.seed,
        initial=config.initial,
        center=config.center,
        **extra,
    )
    proposer.check_space(config.space)  # e.g. a missing model directory, before round one
    return proposer


def initial_design(space: Space, n: int, seed: int, skip: int = 0, **kwargs: Any) -> list[dict]:
    """Points ``skip .. skip + n - 1`` of the scrambled Sobol design (see
    `kiban.lab.proposers.design.initial_design`)."""
    from kiban.lab.proposers.design import initial_design as design

    return design(space, n, seed, skip, **kwargs)


__all__ = [
    "Observation",
    "PROPOSERS",
    "Proposer",
    "ProposerError",
    "ProposerOptions",
    "initial_design",
    "make_proposer",
    "proposer_class",
]
