"""Shared fixtures: real SMILES from the MOSES test set (molsets), when it is installed."""

from __future__ import annotations

import pytest

from kiban.data import moses_smiles as read_moses


def moses_test_smiles(limit: int = 500) -> list[str]:
    """The first ``limit`` SMILES of MOSES' test set, or [] when molsets is not installed."""
    try:
        return read_moses("test", limit)
    except FileNotFoundError:
        return []


@pytest.fixture(scope="session")
def moses_smiles() -> list[str]:
    smiles = moses_test_smiles()
    if not smiles:
        pytest.skip("the MOSES test set (molsets) is not installed")
    return smiles
