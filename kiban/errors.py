"""Errors shared by every package, and the one "did you mean" helper.

Convention (used by the CLI runner in `kiban._cli`): a `ValueError` (and its subclasses, every
kiban ``...Error`` about bad input) means the user's input was wrong and exits 2; a
`RuntimeError` means the run itself failed (diverged training, a full disk) and exits 1. A class
may set ``exit_code`` to say otherwise.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class InputError(ValueError):
    """Bad input from the user: a path, a value, a record. Exit status 2 at the CLI."""

    exit_code = 2


class RunFailure(RuntimeError):
    """A run that could not finish (diverged, interrupted, out of space). Exit status 1."""

    exit_code = 1


def close_matches(
    value: object, choices: Iterable[object], *, n: int = 1, cutoff: float = 0.6
) -> list[str]:
    """The ``n`` choices closest to ``value`` (difflib ratio >= ``cutoff``), best first."""
    return difflib.get_close_matches(str(value), [str(c) for c in choices], n=n, cutoff=cutoff)


def did_you_mean(
    value: object, choices: Iterable[object], *, n: int = 1, cutoff: float = 0.6
) -> str:
    """``" (did you mean 'x'?)"`` for the closest choice, or ``""`` when none is close.

    Written to be appended to a message: ``f"unknown kind {kind!r}{did_you_mean(kind, kinds)}"``.
    """
    close = close_matches(value, choices, n=n, cutoff=cutoff)
    if not close:
        return ""
    return " (did you mean " + " or ".join(repr(c) for c in close) + "?)"
