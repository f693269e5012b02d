"""Atomic file writes: a temporary file in the same folder, fsync, then rename over the target;
and the SHA-256 of a file."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs) -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success it replaces ``path`` in one rename, on
    error it is removed and ``path`` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give what open() would have given
    try:
        with os.fdopen(fd, mode, **kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path, "w", encoding="utf-8") as handle:
        handle.write(text)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def toml_value(value: Any) -> str:
    """One TOML value (scalars, arrays, inline tables): what the config writers need."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return (
            "{"
            + ", ".join(f"{json.dumps(str(k))} = {toml_value(v)}" for k, v in value.items())
            + "}"
        )
    raise TypeError(f"cannot write {value!r} as TOML")


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 24) -> str:
    """Hex SHA-256 of a file, read in ``chunk``-byte blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


#: sha256 of files already hashed by this process, by (path, device, inode, size, mtime):
#: a file reopened unchanged (a second `TokenIndex`, a training run's second pass) is not read
#: again, while any rewrite (new inode, size or time) is hashed afresh.
_DIGESTS: dict[tuple, str] = {}


def file_identity(path: str | os.PathLike) -> tuple:
    """What `cached_file_sha256` keys on: the file's path, device, inode, size and mtime."""
    stat = os.stat(path)
    return (os.fspath(path), stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)


def cached_file_sha256(path: str | os.PathLike) -> str:
    """`file_sha256`, remembered for the rest of the process while the file is unchanged."""
    key = file_identity(path)
    digest = _DIGESTS.get(key)
    if digest is None:
        digest = _DIGESTS[key] = file_sha256(path)
    return digest


def files_sha256(paths: list[str | os.PathLike], *, threads: int | None = None) -> list[str]:
    """`cached_file_sha256` of many files, hashed by parallel threads (hashlib and file reads
    release the GIL), in the order given."""
    paths = list(paths)
    threads = min(len(paths), threads or min(8, os.cpu_count() or 1))
    if threads <= 1:
        return [cached_file_sha256(p) for p in paths]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(cached_file_sha256, paths))


def json_ready(value: Any) -> Any:
    """``value`` with NaN and infinities as None (JSON has neither; -inf log-probabilities)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_ready(v) for v in value]
    return value


def emit(payload: dict[str, Any], as_json: bool, render) -> None:
    """Print a command's result: as JSON with ``as_json``, else through ``render(payload)``."""
    if as_json:
        print(json.dumps(json_ready(payload), indent=1, ensure_ascii=False, allow_nan=False))
    else:
        render(payload)
