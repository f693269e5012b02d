"""The proposer interface, shared helpers and option checking (no torch at import time)."""

from __future__ import annotations

import difflib
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

from kiban.lab.space import Composition, Molecule, Space


class ProposerError(ValueError):
    """A proposer cannot do what was asked (bad option, missing model, exhausted candidates)."""


@dataclass(frozen=True)
class Observation:
    """A completed proposal: its params and the measured (finite, validated) objective values."""

    params: dict[str, Any]
    values: dict[str, float]


class Proposer(ABC):
    """Turns what was measured (and what is still pending) into ``n`` new proposals.

    ``seed`` (the constructor's) fixes the initial Sobol sequence of a campaign so that a
    resumed campaign continues it; ``seed`` given to :meth:`propose` seeds that call's
    randomness (restarts, MC samples), so one call is reproducible."""

    name: ClassVar[str] = ""
    #: option name -> default; `make_proposer` refuses other keys
    OPTIONS: ClassVar[dict[str, Any]] = {}

    def __init__(self, *, seed: int = 0, initial: int = 0, center: bool = False,
                 **options: Any) -> None:
        check_options(self.name, options, self.OPTIONS)
        self.seed = int(seed)
        self.initial = int(initial)
        self.center = bool(center)
        self.options = {**self.OPTIONS, **options}

    @abstractmethod
    def propose(self, space: Space, observed: list[Observation], pending: list[dict],
                n: int, seed: int) -> list[dict]:
        """``n`` new params dicts, each passing ``space.check_params``."""


def check_options(name: str, options: dict[str, Any], allowed: dict[str, Any]) -> None:
    """Refuse an unknown option, naming the closest valid one (a typo should not be ignored)."""
    for key in sorted(options):
        if key not in allowed:
            valid = sorted(allowed)
            close = difflib.get_close_matches(key, valid, n=1, cutoff=0.0) if valid else []
            hint = (f"; did you mean {close[0]!r}? (valid: {valid})" if close
                    else "; this proposer takes no options")
            raise ProposerError(f"proposer {name!r}: unknown option {key!r}{hint}")
        default = allowed[key]
        value = options[key]
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, int):
            ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
        elif isinstance(default, float):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) \
                and math.isfinite(value) and value > 0
        else:
            ok = True
        if not ok:
            raise ProposerError(f"proposer {name!r}: option {key!r} must be like {default!r} "
                                f"(got {value!r})")


def check_n(n: int) -> None:
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ProposerError(f"n must be an integer >= 1, got {n!r}")


def canonical_smiles(smiles: str) -> str:
    """RDKit canonical SMILES: the identity of a molecule (so 'OCC' and 'CCO' are one)."""
    from rdkit import Chem

    mol = Chem.MolFromSmiles(smiles)
    return Chem.MolToSmiles(mol) if mol is not None else smiles


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
    return {k: (params[k].item() if hasattr(params[k], "item") else params[k])
            for k in space.keys}
