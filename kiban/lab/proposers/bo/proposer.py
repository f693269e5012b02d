"""The botorch proposer: the Sobol design first, then `BatchOptimiser`.

Imports no torch until it proposes (torch, BoTorch and the model modules load in `propose`), so
that making one to check a campaign (`kiban lab init`) takes no seconds of imports.
"""

from __future__ import annotations

import dataclasses
import random
import warnings
from typing import Any

import numpy as np

from kiban.lab.proposers.base import Observation, Proposer, ProposerError, check_n
from kiban.lab.proposers.bo.options import BotorchOptions, ModelOptions
from kiban.lab.proposers.design import (
    batch_from_stream,
    design_stream,
    seen_keys,
    torch_constraints,
)
from kiban.lab.proposers.molecules import (
    Sampler,
    canonical_candidates,
    model_dir,
    model_sampler,
    sample_pool,
    unique_canonical,
)
from kiban.lab.space import Space

MIN_OBSERVED = 2  # fewer observations: keep drawing the Sobol design


class BotorchProposer(Proposer):
    """Sobol design, then BoTorch (Ax's defaults; see the module docstring)."""

    kind = "botorch"
    Options = BotorchOptions
    #: Ax's acquisition-optimiser budget, used under linear constraints (compositions,
    #: ``constraints``): SLSQP on a polytope needs it more than L-BFGS-B in a box (measured on
    #: the Olympus photo_* blends, docs/lab.md)
    CONSTRAINED_BUDGET: dict[str, int] = {
        "num_restarts": 20,
        "raw_samples": 1024,
        "maxiter": 200,
        "mc_samples": 512,
    }

    def __init__(
        self,
        *,
        seed: int = 0,
        initial: int = 0,
        center: bool = False,
        sampler: Sampler | None = None,
        **options: Any,
    ) -> None:
        super().__init__(seed=seed, initial=initial, center=center, **options)
        self._sampler = sampler

    def options_for(self, space: Space) -> ModelOptions:
        """The options one call runs with: under linear constraints, `CONSTRAINED_BUDGET`
        for those of its keys not set explicitly (unless ``constrained_budget`` is off)."""
        o = self.options
        ineq, eq = torch_constraints(space)
        if not o.constrained_budget or not (ineq or eq):
            return o
        return dataclasses.replace(
            o, **{k: v for k, v in self.CONSTRAINED_BUDGET.items() if k not in self.given}
        )

    # -- the molecule pools
    def sampler(self, space: Space) -> Sampler:
        """Where new molecules come from (an injected sampler, else the param's model)."""
        if self._sampler is not None:
            return self._sampler
        o = self.options
        return model_sampler(
            space.molecules[0],
            temperature=float(o.temperature),
            max_new_tokens=int(o.max_new_tokens),
        )

    def molecule_pool(self, space: Space, seed: int) -> list[str]:
        """Candidates, plus molecules sampled from the model when the parameter has one."""
        mol = space.molecules[0]
        pool = canonical_candidates(mol) if mol.candidates else []
        if mol.model or (self._sampler is not None and not mol.candidates):
            pool = unique_canonical(pool + self.sampler(space)(int(self.options.samples), seed))
        return pool

    def design_pools(
        self,
        space: Space,
        seed: int,
        used: set[str],
        needed: int,
    ) -> dict[str, list[str]] | None:
        """Pools the initial design walks through: the design's own (None), except for a
        model-only molecule, sampled here (the campaign's seed: a resumed design continues)."""
        mol = space.molecules[0] if space.molecules else None
        if mol is None or mol.candidates:
            return None
        return {mol.name: sample_pool(self.sampler(space), needed, self.seed)}

    def check_space(self, space: Space) -> None:
        """Refuse what this proposer cannot do before the first round (several molecule
        parameters, a molecule model directory that does not exist)."""
        if len(space.molecules) > 1:
            raise ProposerError(
                "the botorch and generative proposers handle one molecule "
                f"parameter, got {[m.name for m in space.molecules]}; use "
                "proposer = 'random' or 'sobol'"
            )
        if int(self.options.exploit_after) > 0 and len(space.objectives) != 1:
            raise ProposerError(
                "option 'exploit_after' works with one objective (this "
                f"campaign has {len(space.objectives)})"
            )
        mol = space.molecules[0] if space.molecules else None
        if mol is not None and mol.model and self._sampler is None:
            model_dir(mol)

    # -- proposing
    def propose(
        self, space: Space, observed: list[Observation], pending: list[dict], n: int, seed: int
    ) -> list[dict]:
        import torch

        check_n(n)
        self.check_space(space)
        threads = torch.get_num_threads()
        limit = int(self.options.threads)
        if limit <= 0:
            return self._propose(space, observed, pending, n, seed)
        from threadpoolctl import threadpool_limits

        # small GP problems (and a tiny sampling model): thread start-up and contention with
        # other processes cost more than the threads give -- in torch, and in the BLAS under
        # scipy's L-BFGS-B, whose idle OpenBLAS threads spin (measured: 5 ms per iteration of
        # an 8-variable fit on a loaded 2-core machine, 0.05 ms with one thread)
        torch.set_num_threads(limit)
        try:
            with threadpool_limits(limits=limit):
                return self._propose(space, observed, pending, n, seed)
        finally:
            torch.set_num_threads(threads)

    def _propose(
        self, space: Space, observed: list[Observation], pending: list[dict], n: int, seed: int
    ) -> list[dict]:
        from kiban.lab.proposers.bo.layout import used_molecules

        self.last_predictions = []
        seen = seen_keys(space, observed, pending)
        drawn = len(observed) + len(pending)
        n_design = n if len(observed) < MIN_OBSERVED else min(n, max(0, self.initial - drawn))
        out: list[dict] = []
        if n_design:
            stream = design_stream(
                space,
                self.seed,
                "sobol",
                needed=drawn + n_design,
                pools=self.design_pools(
                    space, seed, used_molecules(space, observed, pending), drawn + n_design
                ),
                center=self.center,
            )
            for _ in range(drawn):
                next(stream)
            out = batch_from_stream(
                space, stream, n_design, seen, limit=10 * (n + len(seen)) + 10_000
            )
            self.last_predictions = [None] * len(out)  # design points: no model
        if len(out) < n:
            out += self._model_batch(
                space,
                observed,
                pending + out,
                n - len(out),
                seed,
                seen,
                first=out[0] if out else None,
            )
        return out

    def _model_batch(
        self,
        space: Space,
        observed: list[Observation],
        pending: list[dict],
        n: int,
        seed: int,
        seen: set,
        first: dict | None,
    ) -> list[dict]:
        import torch

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit in linear_operator
            from botorch.exceptions.warnings import (
                BadInitialCandidatesWarning,
                InputDataWarning,
                OptimizationWarning,
            )
            from linear_operator.utils.warnings import NumericalWarning

            from kiban.lab.proposers.bo.optimiser import BatchOptimiser

        seed = int(seed) % (2**31)
        py_state, np_state = random.getstate(), np.random.get_state()
        try:
            with torch.random.fork_rng(), warnings.catch_warnings():
                for w in (
                    BadInitialCandidatesWarning,
                    InputDataWarning,
                    OptimizationWarning,
                    NumericalWarning,
                ):
                    warnings.simplefilter("ignore", w)
                warnings.filterwarnings("ignore", message=".*not contained to the unit cube.*")
                warnings.filterwarnings("ignore", message=".*Optimization failed.*")
                torch.manual_seed(seed)
                random.seed(seed)
                np.random.seed(seed)
                optimiser = BatchOptimiser(self, space, observed, pending, seed, seen, first)
                batch = optimiser.run(n)
                self.last_predictions += optimiser.predictions
                return batch
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)
