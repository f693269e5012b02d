"""SMILES read from data files, shared by evaluation (MOSES samples) and property prediction
(training and prediction files): one sample per line, and one molecule per file field with the
reason it is not one.

`parse_line` adds to `kiban.chem.parse_smiles` what a file can hold and a span cannot: blank
lines, bytes that are not UTF-8, binary junk; and it returns the reason instead of raising,
because an invalid line in a file is a counted, reported outcome, not the end of the run.
Whitespace inside a line is RDKit's: ``CCO ethanol`` (a ``.smi`` line) is ethanol.
"""

from __future__ import annotations

from pathlib import Path

from rdkit import Chem

from kiban.chem import SmilesError, parse_smiles


def read_lines(path: str | Path) -> list[str]:
    """One sample per line, surrounding whitespace stripped. Every line is a sample, blank ones
    included (they count as invalid); a final newline only ends the last line. Bytes that are not
    UTF-8 are kept as U+FFFD so the line is reported, not the whole file rejected."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"samples file {path} does not exist or is not a file")
    lines = path.read_bytes().decode("utf-8", errors="replace").split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line.strip() for line in lines]


def parse_line(smiles: str) -> tuple[Chem.Mol | None, str]:
    """RDKit molecule (sanitised) and ``""``, or None and the reason it is not a molecule."""
    if not smiles:
        return None, "empty line"
    if "\ufffd" in smiles:
        return None, "not UTF-8 text (undecodable bytes)"
    if any(ord(ch) < 32 and ch != "\t" for ch in smiles):
        return None, "contains control characters (binary data, not a SMILES)"
    try:
        return parse_smiles(smiles), ""
    except SmilesError as error:
        return None, "not a valid SMILES: " + error.reason
