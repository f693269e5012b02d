"""Shared fixtures: real SMILES from the MOSES test set (molsets), when it is installed; the
``kiban`` command line run in this process."""

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


@pytest.fixture
def kiban(capsys):
    """Run the ``kiban`` command line in this process: ``kiban("corpus", "info", DIR)`` returns
    (exit code, stdout, stderr)."""
    from kiban.cli import main

    def run(*argv) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main([str(a) for a in argv])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run
