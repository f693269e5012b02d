"""Fixtures for the corpus tests (helpers live in ``helpers.py``)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest


@pytest.fixture
def fast_tmp(tmp_path) -> Path:
    """A fresh directory in memory (``/dev/shm``) where there is one, else ``tmp_path``: builds
    fsync every file they write, which on a disk makes the many-chunk tests several times slower."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path
        return
    directory = Path(tempfile.mkdtemp(prefix="kiban-test-", dir=shm))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def in_tmp(fast_tmp, monkeypatch) -> Path:
    """Run the test inside a fresh directory so sources can be named by relative paths (the
    manifest records paths as given, so builds in different places compare byte for byte)."""
    monkeypatch.chdir(fast_tmp)
    return fast_tmp
