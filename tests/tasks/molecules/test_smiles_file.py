"""Tests for kiban/tasks/molecules/_smiles_file.py: SMILES lines from data files."""

from __future__ import annotations

import pytest

from kiban.tasks.molecules._smiles_file import parse_line, read_lines


def test_every_line_is_a_sample(tmp_path):
    path = tmp_path / "samples.smi"
    path.write_bytes(b"CCO\n\n  c1ccccc1 \nC\xffC\nCCN")
    assert read_lines(path) == ["CCO", "", "c1ccccc1", "C\ufffdC", "CCN"]
    path.write_bytes(b"CCO\n")
    assert read_lines(path) == ["CCO"]  # a final newline only ends the last line
    with pytest.raises(FileNotFoundError, match="does not exist or is not a file"):
        read_lines(tmp_path)


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("", "empty line"),
        ("C\ufffdC", "not UTF-8 text (undecodable bytes)"),
        ("\x00\x01", "contains control characters (binary data, not a SMILES)"),
        ("C1CC", "not a valid SMILES: unclosed ring for input: 'C1CC'"),
        (
            "hello world",
            "not a valid SMILES: syntax error while parsing: hello; check for mistakes "
            "around position 1",
        ),
    ],
)
def test_invalid_lines_give_the_reason(line, reason):
    assert parse_line(line) == (None, reason)


def test_a_smi_line_may_name_its_molecule():
    mol, reason = parse_line("OCC\tethanol")
    assert reason == "" and mol.GetNumAtoms() == 3 and mol.GetProp("_Name") == "ethanol"
