"""Atomic, resumable training checkpoints.

A checkpoint is a directory ``OUT/checkpoints/step-NNNNNNNN`` holding the model and optimizer
state (``torch.distributed.checkpoint``: sharded under FSDP2, one file per rank otherwise),
``trainer.pt`` (scheduler, step, config), ``rng-R.pt`` per rank (torch / CUDA / NumPy / Python
generators) and ``meta.json`` (written last: format ``kiban.checkpoint`` version 2, the size and
SHA-256 of every other file, and the fingerprint of the data the run trained on). Every file is
written inside ``step-NNNNNNNN.tmp`` which is renamed into place only when complete, and
``latest`` is replaced atomically after the rename, so a kill at any moment leaves the previous
checkpoint intact. Loading re-hashes every file first: a flipped byte is refused by name instead
of resuming to another loss (or unpickling damaged bytes).
"""

from __future__ import annotations

import json
import os
import random
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from kiban.errors import InputError
from kiban.formats import FormatError, check, register, write_json
from kiban.io import atomic_write_text, file_sha256


class CheckpointError(InputError):
    """A checkpoint that cannot be resumed (incomplete, damaged, another process count): the
    input of ``--resume`` is wrong, so exit status 2. The message names the file and the
    checkpoint to fall back to."""


def _from_v1(meta: dict[str, Any]) -> dict[str, Any]:
    # version 1 (before formats were recorded) kept file sizes only: no checksums, no data
    return {**meta, "sha256": {}, "data": None}


CHECKPOINT = register(
    "kiban.checkpoint",
    2,
    upgrades={1: _from_v1},
    description="OUT/checkpoints/step-N/meta.json: step, world, file sizes "
    "and SHA-256, data fingerprint",
)


def read_meta(path: Path, fmt: Any) -> dict[str, Any]:
    """A run or checkpoint metadata file, checked against ``fmt``; a file written before
    formats were recorded (no ``format`` key) is read as version 1."""
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FormatError(f"{path} is missing: expected a {fmt.name!r} file there") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise FormatError(f"{path}: corrupt, not a {fmt.name!r} JSON file ({error})") from None
    if isinstance(meta, dict) and "format" not in meta:
        meta = {"format": fmt.name, "version": 1, **meta}
    return check(meta, fmt, where=path)


def checkpoint_dir(out: Path, step: int) -> Path:
    return out / "checkpoints" / f"step-{step:08d}"


def latest(out: Path) -> Path | None:
    """The newest complete checkpoint: the highest ``step-*`` directory (``.tmp`` ones are
    unfinished). ``checkpoints/latest`` names it too, for people; it is not trusted, since a kill
    can land between the rename and its update."""
    root = out / "checkpoints"
    done = sorted(p for p in root.glob("step-*") if p.is_dir() and not p.name.endswith(".tmp"))
    return done[-1] if done else None


def rng_state() -> dict[str, Any]:
    import torch

    state = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    import torch

    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _files(directory: Path) -> list[Path]:
    return [p for p in sorted(directory.rglob("*")) if p.is_file() and p.name != "meta.json"]


def _hashes(directory: Path, files: list[Path]) -> dict[str, str]:
    # hashlib releases the GIL on large blocks: one thread per file (a file per rank under
    # torchrun) hashes them in parallel
    with ThreadPoolExecutor(max_workers=min(8, max(1, len(files)))) as pool:
        digests = list(pool.map(file_sha256, files))
    return {str(p.relative_to(directory)): d for p, d in zip(files, digests)}


def save(
    out: Path,
    step: int,
    model: Any,
    optimizer: Any,
    trainer_state: dict[str, Any],
    *,
    rank: int,
    world: int,
    keep: int,
    data: dict[str, Any] | None = None,
) -> Path:
    """Write checkpoint ``step`` (a collective when ``world > 1``: every rank calls it).
    ``data`` is the fingerprint of what the run trains on, checked by ``--resume``."""
    import torch
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    final = checkpoint_dir(out, step)
    tmp = final.with_name(final.name + ".tmp")
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    _barrier(world)
    model_state, optim_state = get_state_dict(model, optimizer)
    dcp.save({"model": model_state, "optim": optim_state}, checkpoint_id=str(tmp / "state"))
    torch.save(rng_state(), tmp / f"rng-{rank}.pt")
    if rank == 0:
        torch.save(trainer_state, tmp / "trainer.pt")
    _barrier(world)
    if rank == 0:
        files = _files(tmp)
        write_json(
            tmp / "meta.json",
            CHECKPOINT,
            {
                "step": step,
                "world": world,
                "files": {str(p.relative_to(tmp)): p.stat().st_size for p in files},
                "sha256": _hashes(tmp, files),
                "data": data,
            },
        )
        _fsync_dir(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        atomic_write_text(out / "checkpoints" / "latest", final.name + "\n")
        _prune(out, keep)
    _barrier(world)
    return final


def _fsync_dir(directory: Path) -> None:
    for path in directory.rglob("*"):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())


def _prune(out: Path, keep: int) -> None:
    done = sorted(p for p in (out / "checkpoints").glob("step-*") if not p.name.endswith(".tmp"))
    for old in done[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def clean_partial(out: Path) -> None:
    for tmp in (out / "checkpoints").glob("step-*.tmp"):
        shutil.rmtree(tmp, ignore_errors=True)


def fallback(path: Path) -> str:
    """What to do when checkpoint ``path`` cannot be used: delete it and resume from the one
    before (named), or start over when there is none."""
    earlier = sorted(
        p
        for p in path.parent.glob("step-*")
        if p.is_dir() and not p.name.endswith(".tmp") and p.name < path.name
    )
    if earlier:
        return f"delete {path} to resume from {earlier[-1]}"
    return f"no earlier checkpoint is kept: delete {path} and start the run again"


def verify(path: Path, world: int) -> dict[str, Any]:
    """The checkpoint's metadata, after checking every file's size and SHA-256 against it."""
    meta_path = path / "meta.json"
    if not meta_path.is_file():
        raise CheckpointError(
            f"{path} has no meta.json: the checkpoint is incomplete; {fallback(path)}"
        )
    try:
        meta = read_meta(meta_path, CHECKPOINT)
    except FormatError as error:
        raise CheckpointError(f"{error}; {fallback(path)}") from None
    for name, size in meta["files"].items():
        file = path / name
        if not file.is_file():
            raise CheckpointError(f"{file} is missing from the checkpoint; {fallback(path)}")
        if file.stat().st_size != size:
            raise CheckpointError(
                f"{file} has {file.stat().st_size} bytes, the checkpoint "
                f"recorded {size}: it is truncated or corrupt; "
                f"{fallback(path)}"
            )
    recorded = meta["sha256"]
    found = _hashes(path, [path / name for name in recorded])
    for name, digest in recorded.items():
        if found[name] != digest:
            raise CheckpointError(
                f"{path / name}: its SHA-256 is {found[name][:16]}…, the "
                f"checkpoint recorded {digest[:16]}… when it was saved: the "
                f"file is damaged; {fallback(path)}"
            )
    if meta["world"] != world:
        raise CheckpointError(
            f"{path} was written by {meta['world']} processes; resume it with "
            f"the same number (got {world})"
        )
    return meta


def load(
    path: Path,
    model: Any,
    optimizer: Any,
    *,
    rank: int,
    world: int,
    verified: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Restore model, optimizer and this rank's generators; returns the trainer state.
    ``verified``: the metadata `verify` returned for ``path`` (so its files are not hashed
    twice); without it the checkpoint is verified here."""
    import torch
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    if verified is None:
        verify(path, world)
    model_state, optim_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optim": optim_state}
    try:
        dcp.load(state, checkpoint_id=str(path / "state"))
        trainer_state = torch.load(path / "trainer.pt", weights_only=False)
        rng = torch.load(path / f"rng-{rank}.pt", weights_only=False)
    except Exception as error:  # noqa: BLE001 - torch raises many kinds for damaged files
        raise CheckpointError(
            f"{path}: cannot be read ({type(error).__name__}: {error}); {fallback(path)}"
        ) from None
    set_state_dict(
        model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"]
    )
    set_rng_state(rng)
    return trainer_state


def _barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
