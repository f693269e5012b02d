"""Shared fixtures: real SMILES from the MOSES test set (molsets), when it is installed."""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import pytest


def moses_test_smiles(limit: int = 500) -> list[str]:
    """The first ``limit`` SMILES of MOSES' test.csv.gz, or [] when molsets is not installed
    (found without importing moses, which pulls in heavy dependencies)."""
    spec = importlib.util.find_spec("moses")
    if spec is None or not spec.submodule_search_locations:
        return []
    path = Path(list(spec.submodule_search_locations)[0]) / "dataset" / "data" / "test.csv.gz"
    if not path.is_file():
        return []
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        assert handle.readline().strip() == "SMILES"
        return [line.strip() for _, line in zip(range(limit), handle)]


@pytest.fixture(scope="session")
def moses_smiles() -> list[str]:
    smiles = moses_test_smiles()
    if not smiles:
        pytest.skip("the MOSES test set (molsets) is not installed")
    return smiles
