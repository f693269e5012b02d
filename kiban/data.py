"""Real public data that ships inside installed packages (see the README's install step)."""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path


def package_file(package: str, path: str) -> Path:
    """``path`` inside the installed ``package``, found without importing it (data-only packages
    such as molsets and crystal-toolkit are installed without their heavy dependencies)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"package {package!r} is not installed; it provides {path!r} "
            "(see the README's install step)"
        )
    return Path(list(spec.submodule_search_locations)[0]) / path


def moses_smiles(split: str = "train", limit: int | None = None) -> list[str]:
    """SMILES of a MOSES split (``train``, ``test`` or ``test_scaffolds``) from molsets' data."""
    path = package_file("moses", f"dataset/data/{split}.csv.gz")
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: MOSES splits are train, test, test_scaffolds")
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        header = handle.readline().strip()
        if header != "SMILES":
            raise ValueError(f"{path}: expected the header 'SMILES', got {header!r}")
        lines = handle if limit is None else (line for _, line in zip(range(limit), handle))
        return [line.strip() for line in lines]
