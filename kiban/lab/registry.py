"""Kinds of a lab extension point (instruments, proposers), registered by name.

As the modality codecs are (`kiban.modalities._registry`): the built-in kinds are named by
``"module:Class"`` and imported on first use (torch, RDKit and scikit-learn take seconds to
import); `Registry.register` adds a class under its own ``kind``. An unknown kind is an error
naming the closest known one. Every registered kind must pass
``tests/lab/test_conformance.py``: a ``kind`` equal to its registered name and an ``Options``
class that is a frozen keyword-only `kiban.lab.options.Options` dataclass.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Mapping
from typing import Any, Generic, TypeVar

from kiban.errors import did_you_mean
from kiban.lab.options import Options

T = TypeVar("T")


class Registry(Generic[T]):
    """Kind name -> class, for one extension point (``what``: "instrument", "proposer")."""

    def __init__(self, what: str, builtin: Mapping[str, str], error: type[ValueError]) -> None:
        self.what = what
        self.error = error
        self._builtin = dict(builtin)
        self._loaded: dict[str, type[T]] = {}

    def names(self) -> list[str]:
        return sorted(set(self._builtin) | set(self._loaded))

    def __contains__(self, kind: object) -> bool:
        return kind in self._builtin or kind in self._loaded

    def get(self, kind: str) -> type[T]:
        """The class registered as ``kind``; an unknown kind names the closest known one."""
        cls = self._loaded.get(kind)
        if cls is not None:
            return cls
        target = self._builtin.get(kind) if isinstance(kind, str) else None
        if target is None:
            raise self.error(
                f"unknown {self.what} kind {kind!r}"
                f"{did_you_mean(kind, self.names(), cutoff=0.5)}; known kinds: "
                f"{', '.join(self.names())}"
            )
        module, name = target.split(":")
        cls = getattr(importlib.import_module(module), name)
        self._check(kind, cls)
        self._loaded[kind] = cls
        return cls

    def register(self, cls: type[T], *, replace: bool = False) -> type[T]:
        """Add ``cls`` under ``cls.kind``; replacing an existing kind must be asked for.
        Usable as a class decorator."""
        kind = getattr(cls, "kind", None)
        if not isinstance(kind, str) or not kind:
            raise self.error(f"{cls.__name__} has no `kind` (a class attribute naming it)")
        if not replace and kind in self:
            raise self.error(
                f"a {self.what} of kind {kind!r} is already registered; pass "
                "replace=True to replace it"
            )
        self._check(kind, cls)
        self._builtin.pop(kind, None)
        self._loaded[kind] = cls
        return cls

    def _check(self, kind: str, cls: Any) -> None:
        options = getattr(cls, "Options", None)
        if getattr(cls, "kind", None) != kind:
            raise self.error(
                f"{self.what} {cls.__name__} says kind {getattr(cls, 'kind', None)!r}"
                f", registered as {kind!r}"
            )
        if not (
            isinstance(options, type)
            and issubclass(options, Options)
            and dataclasses.is_dataclass(options)
        ):
            raise self.error(
                f"{self.what} {kind!r}: `Options` must be a dataclass deriving "
                f"from kiban.lab.options.Options, got {options!r}"
            )


__all__ = ["Registry"]
