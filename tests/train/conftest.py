"""Shared fixtures for the training tests: a small built corpus and run configs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from corpus.helpers import KIBAN, prose_documents, write_jsonl

TINY_MODEL = {
    "preset": "llama-1m",
    "hidden_size": 32,
    "num_layers": 2,
    "num_heads": 2,
    "intermediate_size": 64,
}


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> Path:
    from kiban.corpus import BuildConfig, SourceSpec, build_corpus

    root = tmp_path_factory.mktemp("train-corpus")
    source = write_jsonl(root / "docs.jsonl", prose_documents(600, seed=3))
    build_corpus(
        BuildConfig(sources=(SourceSpec(path=str(source)),), vocab_size=300), root / "corpus"
    )
    return root / "corpus"


def write_config(path: Path, corpus: Path, out: Path, **sections) -> Path:
    """A TOML run config: a 2-layer, 32-wide Llama on ``corpus``; ``sections`` update tables."""
    from kiban.train.config import _toml_value

    tables = {
        "model": dict(TINY_MODEL),
        "data": {"corpus": str(corpus), "seq_len": 32, "validation_fraction": 0.05},
        "optim": {"lr": 1e-2, "warmup_steps": 2},
        "train": {
            "max_steps": 8,
            "batch_size": 8,
            "micro_batch_size": 4,
            "eval_every": 4,
            "eval_batches": 2,
            "checkpoint_every": 4,
            "progress": False,
        },
    }
    for name, values in sections.items():
        tables.setdefault(name, {}).update(values)
    lines = [f"out = {_toml_value(str(out))}"]
    for name, values in tables.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in values.items() if v is not None]
    path.write_text("\n".join(lines) + "\n")
    return path


def run_kiban(
    *args: str, env: dict | None = None, timeout: int = 300
) -> subprocess.CompletedProcess:
    environment = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(
        [*KIBAN, *args], capture_output=True, text=True, timeout=timeout, env=environment
    )


def torchrun(nproc: int, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "kiban",
        *args,
    ]
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
