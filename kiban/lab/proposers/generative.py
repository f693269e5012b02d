"""The `generative` proposer: new molecules sampled from a kiban model each round, ranked by
the acquisition of the Tanimoto GP (before there is data: a random choice from the samples)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kiban.lab.proposers.base import ProposerError
from kiban.lab.proposers.bo import BotorchProposer, ModelOptions
from kiban.lab.proposers.molecules import model_dir, unique_canonical
from kiban.lab.space import Space


@dataclass(frozen=True, kw_only=True)
class GenerativeOptions(ModelOptions):
    """The botorch options less ``max_candidates`` (every fresh sample is scored); new
    molecules only by default."""

    new_molecules_only: bool = True

    @property
    def max_candidates(self) -> int:
        return 1 << 30


class GenerativeProposer(BotorchProposer):
    """Each call samples ``samples`` molecules from the Molecule parameter's ``model`` (prompt
    ``<mol>``, ``temperature``), keeps the valid ones never observed nor pending, and proposes
    the best by qLogNEI under a GP with a Tanimoto kernel; other parameters, if any, are
    optimised as the `botorch` proposer does. ``sampler`` (``(n, seed) -> SMILES``) replaces the
    model, for tests and for custom generators."""

    kind = "generative"
    Options = GenerativeOptions

    def check_space(self, space: Space) -> None:
        """One molecule parameter, with a model directory that exists (unless injected)."""
        if len(space.molecules) != 1:
            raise ProposerError(
                "the generative proposer needs exactly one molecule parameter, "
                f"got {[m.name for m in space.molecules]}"
            )
        super().check_space(space)
        if self._sampler is None:
            model_dir(space.molecules[0])

    def molecule_pool(self, space: Space, seed: int) -> list[str]:
        """This round's fresh samples (the candidates list, if any, is not used)."""
        return unique_canonical(self.sampler(space)(int(self.options.samples), seed))

    def design_pools(
        self,
        space: Space,
        seed: int,
        used: set[str],
        needed: int,
    ) -> dict[str, list[str]] | None:
        """Before the model: the fresh samples in a seeded random order."""
        pool = [s for s in self.molecule_pool(space, seed) if s not in used]
        if not pool:
            raise ProposerError(
                f"the model of {space.molecules[0].name!r} sampled no new "
                "valid molecules (try more `samples` or a higher "
                "`temperature`)"
            )
        order = np.random.default_rng([int(seed) % (2**32), 11]).permutation(len(pool))
        return {space.molecules[0].name: [pool[i] for i in order]}
