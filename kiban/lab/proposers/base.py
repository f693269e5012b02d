"""The proposer interface, its options base and shared helpers (no torch at import time)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from kiban.lab.options import Options
from kiban.lab.space import Composition, Molecule, Space


class ProposerError(ValueError):
    """A proposer cannot do what was asked (bad option, missing model, exhausted candidates)."""


@dataclass(frozen=True)
class Observation:
    """A completed proposal: its params and the measured (finite, validated) objective values."""

    params: dict[str, Any]
    values: dict[str, float]


@dataclass(frozen=True, kw_only=True)
class ProposerOptions(Options):
    """Base of a proposer kind's options: the campaign's ``[proposer]`` table. A kind with no
    options uses it as is."""

    owner = "proposer"
    error = ProposerError
    #: the smallest table that works, for the docs and the conformance test
    example: ClassVar[Mapping[str, Any]] = {}


class Proposer(ABC):
    """Turns what was measured (and what is still pending) into ``n`` new proposals.

    A kind declares ``kind`` (its registered name) and ``Options`` (a frozen keyword-only
    `ProposerOptions` dataclass); the constructor takes the options as keywords (checked by
    name and type) and :meth:`from_config` takes a ``[proposer]`` table.

    ``seed`` (the constructor's) fixes the initial Sobol sequence of a campaign so that a
    resumed campaign continues it; ``seed`` given to :meth:`propose` seeds that call's
    randomness (restarts, MC samples), so one call is reproducible."""

    kind: ClassVar[str] = ""
    Options: ClassVar[type[ProposerOptions]] = ProposerOptions

    def __init__(
        self, *, seed: int = 0, initial: int = 0, center: bool = False, **options: Any
    ) -> None:
        self.options = self.Options.from_config(options, where=f"proposer {self.kind!r}")
        self.given = frozenset(options)  # the options set explicitly (not defaults)
        self.seed = int(seed)
        self.initial = int(initial)
        self.center = bool(center)
        #: the model's prediction of each point the last `propose` returned, in order (see
        #: `BatchOptimiser.predict`); empty, or None for a point: no model made it
        self.last_predictions: list[dict[str, Any] | None] = []

    @classmethod
    def from_config(
        cls,
        config: Mapping[str, Any],
        *,
        seed: int = 0,
        initial: int = 0,
        center: bool = False,
        **extra: Any,
    ) -> Proposer:
        """The proposer a ``[proposer]`` table describes (``seed``, ``initial``, ``center``:
        the campaign's; ``extra``: constructor arguments that are not options)."""
        # checked before the call, so that a key such as `seed` is refused as an option
        cls.Options.from_config(config, where=f"proposer {cls.kind!r}")
        return cls(seed=seed, initial=initial, center=center, **extra, **dict(config))

    @property
    def name(self) -> str:
        """The kind, as proposals record who proposed them."""
        return self.kind

    def check_space(self, space: Space) -> None:  # noqa: B027 - a hook: any space by default
        """Refuse a space this proposer cannot work on, before the first round (default: any
        space works)."""

    @abstractmethod
    def propose(
        self, space: Space, observed: list[Observation], pending: list[dict], n: int, seed: int
    ) -> list[dict]:
        """``n`` new params dicts, each passing ``space.check_params``."""


def check_n(n: int) -> None:
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ProposerError(f"n must be an integer >= 1, got {n!r}")


def canonical_smiles(smiles: str) -> str:
    """RDKit canonical SMILES: the identity of a molecule (so 'OCC' and 'CCO' are one); text
    that is not a molecule is its own identity."""
    from kiban.chem import canonical_or_none

    return canonical_or_none(smiles) or smiles


def params_key(space: Space, params: dict[str, Any]) -> tuple:
    """A hashable identity of a proposal: molecules canonical, numbers to 10 significant
    digits (so a float round trip through the unit cube still compares equal)."""
    out: list[Any] = []
    for p in space.parameters:
        if isinstance(p, Molecule):
            out.append(canonical_smiles(str(params.get(p.name, ""))))
        elif isinstance(p, Composition):
            out.extend(_round(params.get(c)) for c in p.components)
        else:
            out.append(_round(params.get(p.name)))
    return tuple(out)


def _round(value: Any) -> Any:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(f"{float(value):.10g}")
    return value


def clean(space: Space, params: dict[str, Any]) -> dict[str, Any]:
    """Plain Python values in the space's key order (what the store writes and reads back)."""
    return {k: (params[k].item() if hasattr(params[k], "item") else params[k]) for k in space.keys}
