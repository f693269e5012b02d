"""Every persistent kiban artifact carries a format name and version; this registry maps
``(name, version)`` to how kiban reads it, with one format check for all of them.

Pattern (anndata's ``_io/specs/registry.py``): each owner registers its format once, at import::

    CORPUS = register("kiban.corpus", 2, upgrades={1: _from_v1})

and reads its metadata through the registry::

    manifest = read_json(path, CORPUS)        # checked, old versions upgraded in memory
    write_json(path, CORPUS, {...})           # stamped {"format", "version"}, written atomically

A file of another format, of a newer version than this kiban, or of an old version with no
upgrade path is a `FormatError` naming the file, what it holds and what kiban reads.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kiban.errors import InputError, did_you_mean
from kiban.io import atomic_write_text


class FormatError(InputError):
    """A file that is not of the format (or version) the reader expects."""


Upgrade = Callable[[dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True, kw_only=True)
class Format:
    """A named, versioned on-disk format. ``upgrades[v]`` turns version ``v`` metadata into
    version ``v + 1`` (in memory; the file is left as it is)."""

    name: str
    version: int
    description: str = ""
    upgrades: Mapping[int, Upgrade] = field(default_factory=dict)

    def stamp(self) -> dict[str, Any]:
        return {"format": self.name, "version": self.version}

    @property
    def readable_versions(self) -> tuple[int, ...]:
        oldest = self.version
        while oldest - 1 in self.upgrades:
            oldest -= 1
        return tuple(range(oldest, self.version + 1))


_FORMATS: dict[str, Format] = {}


def register(
    name: str, version: int, *, description: str = "", upgrades: Mapping[int, Upgrade] | None = None
) -> Format:
    """Register (or return the identical existing) format ``name`` at ``version``."""
    fmt = Format(name=name, version=version, description=description, upgrades=dict(upgrades or {}))
    existing = _FORMATS.get(name)
    if existing is not None and (existing.version, existing.upgrades.keys()) != (
        fmt.version,
        fmt.upgrades.keys(),
    ):
        raise ValueError(f"format {name!r} is already registered at version {existing.version}")
    _FORMATS.setdefault(name, fmt)
    return _FORMATS[name]


def get_format(name: str) -> Format:
    try:
        return _FORMATS[name]
    except KeyError:
        raise FormatError(
            f"unknown format {name!r}{did_you_mean(name, _FORMATS)}; "
            f"registered: {', '.join(sorted(_FORMATS))}"
        ) from None


def registered() -> dict[str, Format]:
    """Every registered format by name (those whose owning modules have been imported)."""
    return dict(_FORMATS)


def check(meta: Mapping[str, Any], fmt: Format, *, where: str | os.PathLike) -> dict[str, Any]:
    """``meta`` checked to be ``fmt`` at a readable version, upgraded to the current version."""
    if not isinstance(meta, Mapping):
        raise FormatError(
            f"{where}: expected a JSON object with 'format' and 'version', got "
            f"{type(meta).__name__}"
        )
    name, version = meta.get("format"), meta.get("version")
    if name != fmt.name:
        raise FormatError(
            f"{where}: not a {fmt.name!r} file (it says format={name!r}, version={version!r})"
        )
    if not isinstance(version, int) or isinstance(version, bool):
        raise FormatError(f"{where}: {fmt.name!r} with version {version!r}; expected an integer")
    if version > fmt.version:
        raise FormatError(
            f"{where}: {fmt.name!r} version {version} was written by a newer kiban; "
            f"this one reads versions {_span(fmt.readable_versions)}: upgrade kiban"
        )
    if version not in fmt.readable_versions:
        raise FormatError(
            f"{where}: {fmt.name!r} version {version} is too old; this kiban reads "
            f"versions {_span(fmt.readable_versions)}: rebuild it"
        )
    meta = dict(meta)
    while (current := meta["version"]) < fmt.version:
        meta = {**fmt.upgrades[current](meta), "version": current + 1}
    return meta


def _span(versions: tuple[int, ...]) -> str:
    return str(versions[0]) if len(versions) == 1 else f"{versions[0]}-{versions[-1]}"


def read_json(path: str | os.PathLike, fmt: Format) -> dict[str, Any]:
    """A JSON metadata file of format ``fmt``: checked, upgraded to the current version."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FormatError(f"{path} is missing: expected a {fmt.name!r} file there") from None
    except UnicodeDecodeError:
        raise FormatError(f"{path}: not UTF-8 text; expected a {fmt.name!r} JSON file") from None
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as error:
        raise FormatError(
            f"{path}: not valid JSON ({error.msg} at line {error.lineno} column "
            f"{error.colno}); expected a {fmt.name!r} file"
        ) from None
    return check(meta, fmt, where=path)


def write_json(
    path: str | os.PathLike, fmt: Format, payload: Mapping[str, Any], *, indent: int | None = 1
) -> dict[str, Any]:
    """Write ``payload`` stamped with ``fmt``'s name and version, atomically. Returns it."""
    meta = {**fmt.stamp(), **{k: v for k, v in payload.items() if k not in ("format", "version")}}
    atomic_write_text(path, json.dumps(meta, indent=indent, ensure_ascii=False) + "\n")
    return meta
