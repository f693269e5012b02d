"""Atomic, resumable training checkpoints.

A checkpoint is a directory ``OUT/checkpoints/step-NNNNNNNN`` holding the model and optimizer
state (``torch.distributed.checkpoint``: sharded under FSDP2, one file per rank otherwise),
``trainer.pt`` (scheduler, step, config), ``rng-R.pt`` per rank (torch / CUDA / NumPy / Python
generators) and ``meta.json`` (file sizes, written last). Every file is written inside
``step-NNNNNNNN.tmp`` which is renamed into place only when complete, and ``latest`` is replaced
atomically after the rename, so a kill at any moment leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from kiban.io import atomic_write_text


class CheckpointError(RuntimeError):
    pass


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

    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
             "python": random.getstate()}
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


def _sizes(directory: Path) -> dict[str, int]:
    return {str(p.relative_to(directory)): p.stat().st_size
            for p in sorted(directory.rglob("*")) if p.is_file() and p.name != "meta.json"}


def save(out: Path, step: int, model: Any, optimizer: Any, trainer_state: dict[str, Any],
         *, rank: int, world: int, keep: int) -> Path:
    """Write checkpoint ``step`` (a collective when ``world > 1``: every rank calls it)."""
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
        meta = {"step": step, "world": world, "files": _sizes(tmp)}
        atomic_write_text(tmp / "meta.json", json.dumps(meta, indent=1))
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


def verify(path: Path, world: int) -> dict[str, Any]:
    meta_path = path / "meta.json"
    if not meta_path.is_file():
        raise CheckpointError(f"{path} has no meta.json: the checkpoint is incomplete; delete it "
                              "to resume from the one before")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{meta_path}: corrupt ({error.msg})") from None
    for name, size in meta["files"].items():
        file = path / name
        if not file.is_file():
            raise CheckpointError(f"{file} is missing from the checkpoint; delete {path} to "
                                  "resume from the one before")
        if file.stat().st_size != size:
            raise CheckpointError(f"{file} has {file.stat().st_size} bytes, the checkpoint "
                                  f"recorded {size}: it is truncated or corrupt; delete {path} to "
                                  "resume from the one before")
    if meta["world"] != world:
        raise CheckpointError(f"{path} was written by {meta['world']} processes; resume it with "
                              f"the same number (got {world})")
    return meta


def load(path: Path, model: Any, optimizer: Any, *, rank: int, world: int) -> dict[str, Any]:
    """Restore model, optimizer and this rank's generators; returns the trainer state."""
    import torch
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    verify(path, world)
    model_state, optim_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optim": optim_state}
    try:
        dcp.load(state, checkpoint_id=str(path / "state"))
        trainer_state = torch.load(path / "trainer.pt", weights_only=False)
        rng = torch.load(path / f"rng-{rank}.pt", weights_only=False)
    except Exception as error:  # torch raises many kinds for damaged files
        raise CheckpointError(f"{path}: cannot be read ({type(error).__name__}: {error}); "
                              "delete it to resume from the one before") from None
    set_state_dict(model, optimizer, model_state_dict=state["model"],
                   optim_state_dict=state["optim"])
    set_rng_state(rng)
    return trainer_state


def _barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
