"""Typed options for the lab's extension points (instruments, proposers).

Each kind declares its options as a frozen, keyword-only dataclass deriving from `Options`; its
field annotations are the schema. `Options.from_config` reads a config table (a TOML mapping)
into it: an unknown key is refused naming the closest valid one, a missing required key is
refused, and each value is checked against its field's type (ints are accepted where floats
are expected, lists where tuples are). Checks beyond the type (a range, a file) go in the
dataclass's ``__post_init__``, so they run however the options are made.

Supported annotations: ``bool``, ``int``, ``float``, ``str``, ``object`` (anything),
``Literal[...]``, ``X | None``, ``tuple[X, ...]`` and ``Mapping[str, X]``.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from kiban.errors import InputError, did_you_mean


class OptionsError(InputError):
    """A config table that does not fit a kind's options (unknown key, wrong type, bad value)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Options:
    """Base of every kind's options. Subclasses are ``@dataclass(frozen=True, kw_only=True)``."""

    #: what the options belong to, for messages (e.g. "proposer")
    owner: ClassVar[str] = "options"
    #: the exception a config that does not fit raises (a ValueError: exit status 2)
    error: ClassVar[type[ValueError]] = OptionsError

    @classmethod
    def from_config(cls, config: Mapping[str, Any], *, where: str | None = None) -> Options:
        """The options a config table gives (missing keys take their defaults); a table that
        does not fit raises ``cls.error`` (an `OptionsError` unless the kind says otherwise)."""
        where = where or cls.owner
        try:
            return cls._from_config(config, where)
        except (TypeError, ValueError) as error:  # __post_init__'s checks too
            message = str(error)
            raise cls.error(
                message if message.startswith(where) else f"{where}: {message}"
            ) from None

    @classmethod
    def _from_config(cls, config: Mapping[str, Any], where: str) -> Options:
        if not isinstance(config, Mapping):
            raise OptionsError(
                f"{where}: expected a table of options, got {type(config).__name__} {config!r}"
            )
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for key in config:
            if key not in fields:
                if not fields:
                    raise OptionsError(
                        f"{where}: unknown option {key!r}; this {cls.owner} takes no options"
                    )
                raise OptionsError(
                    f"{where}: unknown option {key!r}"
                    f"{did_you_mean(key, fields, cutoff=0.5)}; expected one of "
                    f"{sorted(fields)}"
                )
        hints = typing.get_type_hints(cls)
        values: dict[str, Any] = {}
        for name, field in fields.items():
            if name in config:
                values[name] = check_type(config[name], hints[name], f"{where}: option {name!r}")
            elif (
                field.default is dataclasses.MISSING
                and field.default_factory is dataclasses.MISSING
            ):
                raise OptionsError(f"{where}: missing `{name}`")
        return cls(**values)

    def to_config(self) -> dict[str, Any]:
        """The config table that gives these options back (`from_config` round-trips it)."""
        out: dict[str, Any] = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, tuple):
                value = list(value)
            elif isinstance(value, Mapping):
                value = dict(value)
            out[field.name] = value
        return out


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(annotation))
    if origin is tuple:
        return f"a list of {_type_name(typing.get_args(annotation)[0])}"
    if origin in (Mapping, dict):
        return f"a table of {_type_name(typing.get_args(annotation)[1])}"
    if annotation is type(None):
        return "absent"
    return {
        bool: "true or false",
        int: "an integer",
        float: "a finite number",
        str: "a string",
        object: "a value",
    }.get(annotation, str(annotation))


def check_type(value: Any, annotation: Any, where: str) -> Any:
    """``value`` checked against ``annotation`` (and converted: int -> float, list -> tuple);
    an `OptionsError` saying what was expected and what was given."""
    ok, converted = _convert(value, annotation)
    if not ok:
        raise OptionsError(
            f"{where} must be {_type_name(annotation)}, got {type(value).__name__} {value!r}"
        )
    return converted


def _convert(value: Any, annotation: Any) -> tuple[bool, Any]:
    origin = typing.get_origin(annotation)
    if annotation is object or annotation is Any:
        return True, value
    if origin is Literal:
        return (
            any(value == a and type(value) is type(a) for a in typing.get_args(annotation)),
            value,
        )
    if origin in (typing.Union, types.UnionType):
        for arm in typing.get_args(annotation):
            ok, converted = _convert(value, arm)
            if ok:
                return True, converted
        return False, value
    if annotation is type(None):
        return value is None, value
    if origin is tuple:
        item = typing.get_args(annotation)[0]
        if not isinstance(value, (list, tuple)):
            return False, value
        out = []
        for v in value:
            ok, converted = _convert(v, item)
            if not ok:
                return False, value
            out.append(converted)
        return True, tuple(out)
    if origin in (Mapping, dict):
        key_type, item = typing.get_args(annotation)
        if not isinstance(value, Mapping):
            return False, value
        out_map = {}
        for k, v in value.items():
            ok_key, _ = _convert(k, key_type)
            ok, converted = _convert(v, item)
            if not (ok_key and ok):
                return False, value
            out_map[k] = converted
        return True, out_map
    if annotation is bool:
        return isinstance(value, bool), value
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if annotation is float:
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
        ):
            return False, value
        return True, float(value)
    if annotation is str:
        return isinstance(value, str), value
    raise TypeError(f"unsupported option annotation {annotation!r}")


def require(condition: bool, message: str) -> None:
    """For ``__post_init__`` checks: raise `OptionsError` with ``message`` unless true."""
    if not condition:
        raise OptionsError(message)


__all__ = ["Options", "OptionsError", "check_type", "require"]
