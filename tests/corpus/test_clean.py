"""Cleaning: canonical text, and every kind of bad record becoming a reject with file:line."""

from __future__ import annotations

import gzip
import json

import pytest

from kiban.corpus import RawRecord, Reject, SourceSpec, read_source
from kiban.corpus.clean import canonical_text, clean_record, clean_records
from kiban.document import DocumentError


def jsonl_record(line: str, where: str = "f.jsonl:1") -> RawRecord:
    return RawRecord(where, "f", None, line=line)


def test_canonical_text_rewrites_every_span_and_nfc_prose():
    text = "Cafe\u0301 <mol>OCC</mol> at <num>+007.50</num> and <protein>MKT</protein>."
    assert (
        canonical_text(text)
        == "Caf\u00e9 <mol>CCO</mol> at <num>7.50</num> and <protein>MKT</protein>."
    )
    assert canonical_text("x < 5 and a<->b") == "x < 5 and a<->b"  # literal '<' stays prose
    assert canonical_text(canonical_text(text)) == canonical_text(text)


def test_same_molecule_spelled_twice_gives_one_text():
    a = clean_record(jsonl_record(json.dumps({"text": "Solvent <mol>OCC</mol> is polar."})))
    b = clean_record(jsonl_record(json.dumps({"text": "Solvent <mol>C(O)C</mol> is polar."})))
    assert a.text == b.text == "Solvent <mol>CCO</mol> is polar."
    assert a.id == b.id  # content ids are hashes of the canonical text


@pytest.mark.parametrize(
    "line, reason",
    [
        ('{"text": "unterminated', "malformed JSON: Unterminated string starting at: column 10"),
        ('["a list"]', "expected a JSON object with a 'text' field, got list"),
        ('{"txt": "x"}', "missing required field 'text'"),
        ('{"text": "x", "colour": "red"}', "unknown field(s) ['colour']"),
        ('{"text": 5}', "'text' must be a string, got int"),
        ('{"text": "x", "id": 5}', "'id' must be a string or absent, got 5"),
        ('{"text": "a <foo>b</foo>"}', "unknown tag '<foo>' at character 2"),
        ('{"text": "a <mol>CCO"}', "unclosed tag <mol> opened at character 2"),
        ('{"text": "a </mol>"}', "closing tag </mol> at character 2 but expected no closing tag"),
        ('{"text": "<mol><num>1</num></mol>"}', "tag <num> at character 5 opens inside <mol>"),
        ('{"text": "x <mol>C1CC</mol> y <mol>Q</mol>"}', "span 1 <mol>: invalid mol 'C1CC'"),
        ('{"text": "ok <mol>CCO</mol> bad <mol>CC(</mol>"}', "span 2 <mol>: invalid mol 'CC('"),
        ('{"text": "n <num>1.2.3</num>"}', "span 1 <num>: invalid num '1.2.3'"),
        ('{"text": "p <protein>MK1T</protein>"}', "span 1 <protein>: invalid protein 'MK1T'"),
    ],
)
def test_bad_json_records_become_rejects(line, reason):
    result = clean_records([jsonl_record(line, "f.jsonl:7")])
    assert result.documents == []
    [reject] = result.rejects
    assert (reject.where, reject.source) == ("f.jsonl:7", "f")
    assert reason in reject.reason


def test_unparsable_crystal_is_rejected():
    pytest.importorskip("kiban.modalities.crystal")
    result = clean_records([jsonl_record('{"text": "See <crystal>not a crystal</crystal>."}')])
    [reject] = result.rejects
    assert reject.reason.startswith("span 1 <crystal>: invalid crystal 'not a crystal'")


def test_rejects_keep_order_and_good_records_survive():
    records = [
        jsonl_record('{"text": "one"}', "f.jsonl:1"),
        Reject("f.jsonl:2", "f", "read error"),
        jsonl_record('{"text": "<mol>X</mol>"}', "f.jsonl:3"),
        jsonl_record('{"text": "four"}', "f.jsonl:4"),
    ]
    result = clean_records(records)
    assert [(w, d.text) for w, d in result.documents] == [
        ("f.jsonl:1", "one"),
        ("f.jsonl:4", "four"),
    ]
    assert [r.where for r in result.rejects] == ["f.jsonl:2", "f.jsonl:3"]
    assert result.rejects[0].reason == "read error"


def test_template_errors_are_rejects():
    record = RawRecord(
        "t.csv:2",
        "t",
        None,
        fields={"smiles": "CCO", "y": ""},
        template="<mol>{smiles}</mol> y <num>{y}</num>",
    )
    [reject] = clean_records([record]).rejects
    assert reject.reason == "field 'y' is empty"
    record = RawRecord(
        "t.csv:3",
        "t",
        None,
        fields={"smiles": "CCO"},
        template="<mol>{smiles}</mol> y <num>{y}</num>",
    )
    [reject] = clean_records([record]).rejects
    assert reject.reason == "template names field 'y', which the record lacks; fields: smiles"
    record = RawRecord(
        "t.csv:4",
        "t",
        None,
        fields={"smiles": "CCO", "y": "n/a"},
        template="<mol>{smiles}</mol> y <num>{y}</num>",
    )
    [reject] = clean_records([record]).rejects
    assert "span 2 <num>: invalid num 'n/a'" in reject.reason
    record = RawRecord(
        "t.csv:5",
        "t",
        None,
        fields={"smiles": "C1CC"},
        template="<mol>{smiles}</mol>",
        properties=("qed",),
        mol_column="smiles",
    )
    [reject] = clean_records([record]).rejects
    assert reject.reason.startswith("invalid mol 'C1CC'")


# --- reading errors: file:line --------------------------------------------------------------------
def test_non_utf8_line_is_a_reject_and_reading_goes_on(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"text": "one"}\n{"text": "caf\xe9"}\n{"text": "three"}\n')
    items = list(read_source(SourceSpec(path=str(path))))
    assert [type(i).__name__ for i in items] == ["RawRecord", "Reject", "RawRecord"]
    assert items[1].where == f"{path}:2"
    assert items[1].reason == "not valid UTF-8: byte 0xe9 at column 14"
    assert items[2].where == f"{path}:3"


def test_empty_file_is_a_reject(tmp_path):
    (tmp_path / "empty.jsonl").write_bytes(b"")
    [item] = read_source(SourceSpec(path=str(tmp_path / "empty.jsonl")))
    assert isinstance(item, Reject)
    assert (item.where, item.reason) == (str(tmp_path / "empty.jsonl"), "empty file: no records")


def test_truncated_gzip_keeps_earlier_records(tmp_path):
    lines = b"".join(
        json.dumps({"text": f"record {i} " + "word " * 20}).encode() + b"\n" for i in range(400)
    )
    data = gzip.compress(lines, mtime=0)
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(data[: len(data) // 2])
    items = list(read_source(SourceSpec(path=str(path))))
    *records, last = items
    assert 0 < len(records) < 400
    assert all(isinstance(r, RawRecord) for r in records)
    assert [r.where for r in records] == [f"{path}:{i}" for i in range(1, len(records) + 1)]
    # every record read is whole (nothing half-decoded slips through)
    assert [json.loads(r.line)["text"] for r in records] == [
        f"record {i} " + "word " * 20 for i in range(len(records))
    ]
    assert isinstance(last, Reject) and last.where == f"{path}:{len(records) + 1}"
    assert last.reason.startswith(
        f"compressed file is truncated or corrupt after line {len(records)}"
    )


def test_csv_row_with_wrong_field_count(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("smiles,y\nCCO,1.0\nCCC,2.0,extra\n\nCCN,3.0\n")
    items = list(read_source(SourceSpec(path=str(path))))
    assert [i.where for i in items] == [f"{path}:2", f"{path}:3", f"{path}:5"]
    assert isinstance(items[1], Reject)
    assert items[1].reason == "expected 2 fields (smiles, y), got 3"


def test_document_error_carries_where():
    with pytest.raises(DocumentError, match="^f.jsonl:3: missing required field 'text'$"):
        from kiban.document import Document

        Document.from_dict({}, where="f.jsonl:3")


@pytest.mark.parametrize("token", ["<|endoftext|>", "<|pad|>", "<|unk|>"])
def test_reserved_token_strings_in_text_stay_text(token):
    """A paper may write "<|endoftext|>": it is prose, encoded as text, never as the special
    token (an end-of-text inside a document would split it)."""
    from kiban.tokenizer import train_tokenizer

    text = f"GPT-2 separates documents with {token} between them."
    [(_, document)] = clean_records([jsonl_record(json.dumps({"text": text}))]).documents
    assert document.text == text
    tokenizer = train_tokenizer([text], vocab_size=300)
    ids = tokenizer.encode(text)
    assert tokenizer.hf.token_to_id(token) not in ids
    assert tokenizer.decode(ids) == text


def test_byte_order_mark_is_ignored(tmp_path):
    (tmp_path / "excel.csv").write_bytes(b"\xef\xbb\xbfsmiles,logS\r\nOCC,-0.77\r\n")
    (tmp_path / "bom.jsonl").write_bytes(b'\xef\xbb\xbf{"text": "first"}\n{"text": "second"}\n')
    csv_docs = clean_records(list(read_source(SourceSpec(path=str(tmp_path / "excel.csv")))))
    assert csv_docs.rejects == []
    assert [d.text for _, d in csv_docs.documents] == ["<mol>CCO</mol> logS <num>-0.77</num>"]
    json_docs = clean_records(list(read_source(SourceSpec(path=str(tmp_path / "bom.jsonl")))))
    assert json_docs.rejects == []
    assert [d.text for _, d in json_docs.documents] == ["first", "second"]


def test_column_names_with_dots_and_brackets_fill_templates(tmp_path):
    (tmp_path / "t.csv").write_text("smiles,mw,mw.err,y[1]\nCCO,46.07,0.01,3\n")
    result = clean_records(list(read_source(SourceSpec(path=str(tmp_path / "t.csv")))))
    assert result.rejects == []
    assert [d.text for _, d in result.documents] == [
        "<mol>CCO</mol> mw <num>46.07</num> mw.err <num>0.01</num> y[1] <num>3</num>"
    ]


@pytest.mark.parametrize(
    "template, reason",
    [
        (
            "<mol>{smiles}</mol> {smiles.upper.x}",
            "cannot fill the template '<mol>{smiles}</mol> {smiles.upper.x}': AttributeError",
        ),
        ("{smiles[99]}", "cannot fill the template '{smiles[99]}': IndexError"),
        ("{0}", "cannot fill the template '{0}': IndexError"),
        ("{smiles", "expected '}' before end of string"),
    ],
)
def test_bad_templates_reject_instead_of_crashing(template, reason):
    record = RawRecord("t.csv:2", "t", None, fields={"smiles": "CCO"}, template=template)
    [reject] = clean_records([record]).rejects
    assert reject.reason.startswith(reason)


def test_corrupt_gzip_is_one_reject(tmp_path):
    (tmp_path / "plain.jsonl.gz").write_bytes(b'{"text": "not compressed"}\n')
    data = gzip.compress(b'{"text": "a"}\n' * 1000, mtime=0)
    (tmp_path / "early.jsonl.gz").write_bytes(data[:12])  # cut inside the first block
    for name in ("plain.jsonl.gz", "early.jsonl.gz"):
        [item] = read_source(SourceSpec(path=str(tmp_path / name)))
        assert isinstance(item, Reject) and item.where == f"{tmp_path / name}:1"
        assert item.reason.startswith("compressed file is truncated or corrupt after line 0")
