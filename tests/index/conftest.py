"""Fixtures for the index tests (helpers live in ``helpers.py``)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from .helpers import scratch_root

# exact comparisons on many small random corpora; each example builds a real index on disk
# (KIBAN_INDEX_EXAMPLES=2000 for a longer hunt)
settings.register_profile(
    "kiban-index",
    deadline=None,
    max_examples=int(os.environ.get("KIBAN_INDEX_EXAMPLES", "60")),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _scratch() -> Path:
    directory = Path(tempfile.mkdtemp(prefix="kiban-index-test-", dir=scratch_root()))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


#: A fresh directory in memory (``/dev/shm``) where there is one (builds fsync each file).
fast_tmp = pytest.fixture(_scratch, name="fast_tmp")
#: The same, shared by a module's tests.
module_tmp = pytest.fixture(_scratch, scope="module", name="module_tmp")


@pytest.fixture(scope="session")
def small_corpus() -> Path:
    """A built and indexed corpus (JSONL papers with provenance and licenses, a CSV of
    molecules), several shards; shared: tests must not change it."""
    from .helpers import build_small_corpus

    directory = Path(tempfile.mkdtemp(prefix="kiban-index-corpus-", dir=scratch_root()))
    try:
        yield build_small_corpus(directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
