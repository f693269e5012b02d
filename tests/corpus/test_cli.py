"""`kiban corpus build/info/show`: bad input is logged and skipped, errors are clear."""

from __future__ import annotations

import gzip
import importlib.util
import json

import pytest

from kiban.corpus import Corpus, CorpusError, load_recipe
from kiban.document import content_id

from .helpers import prose_documents, read_jsonl, write_jsonl

HAS_CRYSTAL = importlib.util.find_spec("kiban.modalities.crystal") is not None
GOOD = [
    "Ethanol <mol>CCO</mol> boils at <num>78.37</num> C.",
    "Benzene <mol>c1ccccc1</mol> is aromatic.",
    "Water is wet.",
]


@pytest.fixture
def bad_inputs(in_tmp):
    """Good documents plus one of every kind of bad input; returns the expected rejects."""
    write_jsonl(in_tmp / "good.jsonl", [{"text": t} for t in GOOD])
    bad_lines = [
        b'{"text": "broken',
        b'{"body": "no text field"}',
        b'{"text": "a <bold>tag</bold>"}',
        b'{"text": "open <mol>CCO"}',
        b'{"text": "<mol>C1CC</mol> ring"}',
        '{"text": "caf\u00e9 ok"}'.encode(),  # a good line among them
        b'{"text": "latin-1 caf\xe9"}',
    ]
    expected = [
        ("bad.jsonl:1", "malformed JSON"),
        ("bad.jsonl:2", "missing required field 'text'"),
        ("bad.jsonl:3", "unknown tag '<bold>'"),
        ("bad.jsonl:4", "unclosed tag <mol>"),
        ("bad.jsonl:5", "invalid mol 'C1CC'"),
        ("bad.jsonl:7", "not valid UTF-8: byte 0xe9"),
    ]
    if HAS_CRYSTAL:
        bad_lines.append(b'{"text": "<crystal>NaCl\\nXyz\\n1 2 3</crystal>"}')
        expected.append(("bad.jsonl:8", "span 1 <crystal>: invalid crystal"))
    (in_tmp / "bad.jsonl").write_bytes(b"\n".join(bad_lines) + b"\n")
    (in_tmp / "empty.jsonl").write_bytes(b"")
    expected.append(("empty.jsonl", "empty file: no records"))
    data = gzip.compress(
        b"".join(
            json.dumps({"text": f"Gzip record {i} reads fine."}).encode() + b"\n"
            for i in range(300)
        ),
        mtime=0,
    )
    (in_tmp / "cut.jsonl.gz").write_bytes(data[:-40])  # the tail (and end marker) is lost
    (in_tmp / "table.csv").write_text("smiles,logS\nOCC,-0.77\nCCN,1.0,extra\nc1ccncc1,0.76\n")
    expected.append(("table.csv:3", "expected 2 fields (smiles, logS), got 3"))
    (in_tmp / "broken.cif").write_text("data_broken\n_cell_length_a 5.0\n")
    if HAS_CRYSTAL:
        expected.append(("broken.cif:1", "span 1 <crystal>: invalid crystal 'data_broken"))
    return expected


SOURCES = ["good.jsonl", "bad.jsonl", "empty.jsonl", "cut.jsonl.gz", "table.csv"]
SOURCES += ["broken.cif"] if HAS_CRYSTAL else []


def test_bad_input_is_rejected_with_file_and_line(in_tmp, bad_inputs, kiban):
    code, out, err = kiban(
        "corpus",
        "build",
        *SOURCES,
        "--out",
        "out",
        "--vocab-size",
        "400",
        "--chunk-size",
        "4",
        "--json",
    )
    assert code == 0, err
    rejects = read_jsonl(in_tmp / "out" / "rejects.jsonl")
    # the truncated gzip: every whole record before the cut is kept, then one reject
    cut = [r for r in rejects if r["source"] == "cut"]
    assert len(cut) == 1
    kept_gzip = int(cut[0]["where"].rsplit(":", 1)[1]) - 1
    assert 250 < kept_gzip < 300
    assert cut[0]["reason"].startswith(
        f"compressed file is truncated or corrupt after line {kept_gzip}"
    )
    others = [r for r in rejects if r["source"] != "cut"]
    assert [r["where"] for r in others] == [w for w, _ in bad_inputs]
    for reject, (_, reason) in zip(others, bad_inputs):
        assert reason in reject["reason"]
    info = json.loads(out)
    assert info["rejected"] == len(bad_inputs) + 1
    expected_by_source = (
        {"bad": 7, "broken": 1, "cut": 1, "empty": 1, "table": 1}
        if HAS_CRYSTAL
        else {"bad": 6, "cut": 1, "empty": 1, "table": 1}
    )
    assert info["rejected_by_source"] == expected_by_source
    assert info["sources"] == {"bad": 1, "cut": kept_gzip, "good": 3, "table": 2}
    assert info["documents"] == 3 + 1 + kept_gzip + 2
    texts = Corpus(in_tmp / "out").documents_table(["text"]).column("text").to_pylist()
    assert texts[:4] == [*GOOD, "caf\u00e9 ok"]
    assert texts[-2:] == [
        "<mol>CCO</mol> logS <num>-0.77</num>",
        "<mol>c1ccncc1</mol> logS <num>0.76</num>",
    ]
    assert f"Gzip record {kept_gzip - 1} reads fine." in texts


def test_strict_stops_at_the_first_reject(in_tmp, bad_inputs, kiban):
    code, out, err = kiban(
        "corpus", "build", *SOURCES, "--out", "out", "--vocab-size", "400", "--strict"
    )
    assert code == 2
    assert "--strict: record rejected: bad.jsonl:1: malformed JSON" in err
    assert not (in_tmp / "out" / "manifest.json").exists()
    # running it again resumes the build, and still stops at the same reject
    code, out, err = kiban(
        "corpus", "build", *SOURCES, "--out", "out", "--vocab-size", "400", "--strict"
    )
    assert code == 2
    assert "--strict: record rejected: bad.jsonl:1: malformed JSON" in err
    assert not (in_tmp / "out" / "manifest.json").exists()
    # without --strict the same build finishes (the failed one left nothing in its way)
    code, out, err = kiban("corpus", "build", *SOURCES, "--out", "out", "--vocab-size", "400")
    assert code == 0, err
    code, _, err = kiban(
        "corpus", "build", "good.jsonl", "--out", "strict-ok", "--vocab-size", "400", "--strict"
    )
    assert code == 0, err


def test_everything_rejected_is_an_error(in_tmp, kiban):
    write_jsonl(in_tmp / "bad.jsonl", ['{"text": "<x>"}', "{oops"])
    code, out, err = kiban("corpus", "build", "bad.jsonl", "--out", "out", "--vocab-size", "400")
    assert code == 2
    assert (
        "nothing could be built: all 2 records were rejected or dropped (2 rejected, "
        "0 dropped); see out/rejects.jsonl and out/dropped.jsonl" in err
    )
    assert not (in_tmp / "out" / "manifest.json").exists()
    assert [r["where"] for r in read_jsonl(in_tmp / "out" / "rejects.jsonl")] == [
        "bad.jsonl:1",
        "bad.jsonl:2",
    ]

    text = "Sodium reacts violently with water, releasing hydrogen gas and heat."
    write_jsonl(in_tmp / "one.jsonl", [{"text": text}])
    write_jsonl(in_tmp / "eval.jsonl", [{"text": text}])
    code, out, err = kiban(
        "corpus",
        "build",
        "one.jsonl",
        "--out",
        "o2",
        "--vocab-size",
        "400",
        "--decontaminate",
        "eval.jsonl",
    )
    assert code == 2
    assert (
        "nothing could be built: all 1 records were rejected or dropped (0 rejected, "
        "1 dropped)" in err
    )


def test_missing_source_is_a_clear_error(in_tmp, kiban):
    write_jsonl(in_tmp / "good.jsonl", [{"text": "x"}])
    code, out, err = kiban("corpus", "build", "good.jsonl", "missing.jsonl", "--out", "out")
    assert code == 2
    assert err.strip() == "kiban corpus build: error: source file missing.jsonl does not exist"
    assert not (in_tmp / "out").exists()
    (in_tmp / "notes.docx").write_bytes(b"PK")
    code, _, err = kiban("corpus", "build", "notes.docx", "--out", "out")
    assert code == 2 and "cannot tell the format of 'notes.docx'" in err
    assert not (in_tmp / "out").exists()


def test_info_and_show(in_tmp, kiban):
    write_jsonl(
        in_tmp / "docs.jsonl",
        [
            {
                "id": "eth",
                "text": "Ethanol <mol>OCC</mol> boils at <num>78.370</num> C.",
                "source": "handbook",
                "license": "CC-BY-4.0",
                "meta": {"page": 12},
            },
            *prose_documents(12),
        ],
    )
    code, out, err = kiban(
        "corpus", "build", "docs.jsonl", "--out", "out", "--vocab-size", "400", "--chunk-size", "5"
    )
    assert code == 0, err
    assert out.startswith("corpus out\n  documents         13\n")

    code, out, err = kiban("corpus", "info", "out", "--json")
    assert code == 0
    info = json.loads(out)
    assert set(info) == {
        "directory",
        "documents",
        "tokens",
        "shards",
        "rejected",
        "exact_duplicates",
        "near_duplicates",
        "duplicate_ids",
        "decontaminated",
        "modalities",
        "sources",
        "rejected_by_source",
        "vocab_size",
        "token_dtype",
        "tokenizer_sha256",
    }
    manifest = json.loads((in_tmp / "out" / "manifest.json").read_text())
    assert {k: v for k, v in info.items() if k != "directory"} == {
        k: manifest[k] for k in info if k != "directory"
    }
    assert (info["directory"], info["documents"], info["shards"]) == ("out", 13, 3)
    assert info["sources"] == {"docs": 12, "handbook": 1}
    assert info["modalities"] == {"mol": 13, "crystal": 0, "num": 13, "protein": 0}

    code, out, _ = kiban("corpus", "info", "out")
    assert code == 0
    assert "  spans            mol 13, crystal 0, num 13, protein 0\n" in out

    code, out, _ = kiban("corpus", "show", "out", "eth")
    assert code == 0
    lines = out.splitlines()
    assert lines[:2] == ["Ethanol <mol>CCO</mol> boils at <num>78.370</num> C.", ""]
    fields = dict(line.split(None, 1) for line in lines[2:])
    assert fields["id"] == "eth" and fields["source"] == "handbook"
    assert fields["license"] == "CC-BY-4.0" and fields["where"] == "docs.jsonl:1"
    assert fields["meta"] == '{"page": 12}' and fields["shard"] == "0"
    assert fields["token_offset"] == "0"

    code, out, _ = kiban(
        "corpus",
        "show",
        "out",
        content_id(Corpus("out").documents_table(["text"]).column("text")[3].as_py()),
        "--json",
    )
    assert code == 0 and json.loads(out)["where"] == "docs.jsonl:4"

    code, _, err = kiban("corpus", "show", "out", "nope")
    assert code == 2 and "no document with id 'nope'" in err
    code, _, err = kiban("corpus", "info", "docs.jsonl")
    assert code == 2 and "is not a built kiban corpus" in err


def test_recipe(in_tmp, kiban):
    (in_tmp / "data").mkdir()
    (in_tmp / "data" / "sol.csv").write_text("drug,logS\nOCC,-0.77\nc1ccccc1,-1.64\n")
    (in_tmp / "recipe.toml").write_text(
        "[build]\nchunk_size = 1\nvocab_size = 400\n\n"
        '[[source]]\npath = "data/sol.csv"\nname = "esol"\nlicense = "MIT"\n'
        'template = "Solubility of <mol>{drug}</mol>: <num>{logS}</num>."\n'
        'columns = {drug = "mol"}\nproperties = ["mw"]\n'
    )
    config = load_recipe(in_tmp / "recipe.toml")
    assert config.chunk_size == 1 and config.sources[0].path == str(in_tmp / "data" / "sol.csv")
    assert config.sources[0].properties == ("mw",)
    code, out, err = kiban(
        "corpus", "build", "recipe.toml", "--out", "out", "--dedup", "none", "--json"
    )
    assert code == 0, err
    corpus = Corpus(in_tmp / "out")
    assert corpus.manifest["config"]["dedup"] == "none" and corpus.manifest["shards"] == 2
    rows = corpus.documents_table(["text", "source", "license"]).to_pylist()
    assert rows == [
        {
            "text": "Solubility of <mol>CCO</mol>: <num>-0.77</num>.",
            "source": "esol",
            "license": "MIT",
        },
        {
            "text": "Solubility of <mol>c1ccccc1</mol>: <num>-1.64</num>.",
            "source": "esol",
            "license": "MIT",
        },
    ]
    (in_tmp / "bad.toml").write_text('[[source]]\npath = "x.csv"\ncolour = "red"\n')
    with pytest.raises(CorpusError, match=r"\[\[source\]\] number 1: unknown keys \['colour'\]"):
        load_recipe(in_tmp / "bad.toml")
    code, _, err = kiban("corpus", "build", "bad.toml", "--out", "o2")
    assert code == 2 and "unknown keys ['colour']" in err


def test_near_dedup_flags(in_tmp, kiban):
    base = (
        "Lithium iron phosphate cathodes trade some energy density for a long cycle life, "
        "thermal stability and cheap, abundant raw materials without any cobalt or nickel."
    )
    write_jsonl(
        in_tmp / "docs.jsonl",
        [
            {"text": base},
            {"text": base.replace("cheap", "low cost")},
            {"text": "Sodium ion cells avoid lithium altogether."},
        ],
    )
    code, out, err = kiban(
        "corpus",
        "build",
        "docs.jsonl",
        "--out",
        "near",
        "--dedup",
        "near",
        "--near-threshold",
        "0.8",
        "--vocab-size",
        "400",
        "--json",
    )
    assert code == 0, err
    assert (json.loads(out)["documents"], json.loads(out)["near_duplicates"]) == (2, 1)
    assert [r["where"] for r in read_jsonl(in_tmp / "near" / "dropped.jsonl")] == ["docs.jsonl:2"]
    code, out, err = kiban(
        "corpus",
        "build",
        "docs.jsonl",
        "--out",
        "high-threshold",
        "--dedup",
        "near",
        "--near-threshold",
        "0.97",
        "--vocab-size",
        "400",
        "--json",
    )
    assert code == 0, err
    assert (json.loads(out)["documents"], json.loads(out)["near_duplicates"]) == (3, 0)
    # datasketch cannot band a threshold this close to 1 with 128 permutations: a clear error
    code, out, err = kiban(
        "corpus",
        "build",
        "docs.jsonl",
        "--out",
        "too-high",
        "--dedup",
        "near",
        "--near-threshold",
        "0.99",
    )
    assert code == 2
    assert err.startswith(
        "kiban corpus build: error: near_threshold 0.99 with num_perm 128 "
        "cannot be used for near-duplicate search"
    )
    assert not (in_tmp / "too-high").exists()


def test_a_changed_source_and_rebuild(in_tmp, kiban):
    write_jsonl(
        in_tmp / "docs.jsonl",
        [{"text": "Salt dissolves in water."}, {"text": "Oil floats on water."}],
    )
    code, out, err = kiban("corpus", "build", "docs.jsonl", "--out", "out", "--vocab-size", "300")
    assert code == 0, err
    write_jsonl(
        in_tmp / "docs.jsonl",
        [{"text": "Salt dissolves in water."}, {"text": "Sugar dissolves in tea."}],
    )
    code, out, err = kiban("corpus", "build", "docs.jsonl", "--out", "out", "--vocab-size", "300")
    assert (code, out) == (2, "")
    assert err.startswith(
        "kiban corpus build: error: out was built from other contents of docs.jsonl (now "
    )
    assert err.endswith(
        "the corpus is out of date; build it again with --rebuild (which "
        "replaces it) or choose a new --out\n"
    )
    code, out, err = kiban(
        "corpus",
        "build",
        "docs.jsonl",
        "--out",
        "out",
        "--vocab-size",
        "300",
        "--rebuild",
        "--json",
    )
    assert code == 0, err
    assert Corpus("out").documents_table(["text"]).column("text").to_pylist() == [
        "Salt dissolves in water.",
        "Sugar dissolves in tea.",
    ]


# --- own data: a chemist's CSV -----------------------------------------------------------------
def write_assay(path, rows: int = 300) -> None:
    """A CSV as a chemist has one: SMILES, a compound id, a measured pIC50 and a free-text note."""
    import csv

    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["smiles", "compound_id", "pIC50", "note"])
        for i in range(rows):
            writer.writerow(
                ["C" * (i + 1) + "O", f"CPD-{i:04d}", f"{5 + (i % 37) / 10:.2f}", f"batch {i % 3}"]
            )


def test_a_300_row_csv_builds_every_row_with_ids_in_provenance(in_tmp, kiban):
    write_assay(in_tmp / "assay.csv")
    code, out, err = kiban(
        "corpus", "build", "assay.csv", "--id-column", "compound_id", "--out", "out",
        "--vocab-size", "300", "--json",
    )  # fmt: skip
    # before: all 300 rows rejected (compound_id and note forced into <num> spans)
    assert code == 0, err
    assert json.loads(out)["documents"] == 300 and json.loads(out)["rejected"] == 0
    table = Corpus(in_tmp / "out").documents_table(["where", "text", "meta"])
    assert table.column("where").to_pylist()[:2] == ["assay.csv:2", "assay.csv:3"]
    assert table.column("text").to_pylist()[:2] == [
        "<mol>CO</mol> pIC50 <num>5.00</num>",
        "<mol>CCO</mol> pIC50 <num>5.10</num>",
    ]
    metas = [json.loads(m) for m in table.column("meta").to_pylist()]
    assert metas[0] == {"note": "batch 0", "source_id": "CPD-0000"}
    assert [m["source_id"] for m in metas] == [f"CPD-{i:04d}" for i in range(300)]
    assert not any("CPD-" in text for text in table.column("text").to_pylist())


def test_a_template_from_the_command_line(in_tmp, kiban):
    write_assay(in_tmp / "assay.csv", rows=3)
    template = "<mol>{smiles}</mol> has pIC50 <num>{pIC50}</num> ({note})."
    code, out, err = kiban(
        "corpus", "build", "assay.csv", "--template", template, "--id-column", "compound_id",
        "--out", "out", "--vocab-size", "300",
    )  # fmt: skip
    assert code == 0, err
    table = Corpus(in_tmp / "out").documents_table(["text", "meta"])
    assert table.column("text").to_pylist() == [
        "<mol>CO</mol> has pIC50 <num>5.00</num> (batch 0).",
        "<mol>CCO</mol> has pIC50 <num>5.10</num> (batch 1).",
        "<mol>CCCO</mol> has pIC50 <num>5.20</num> (batch 2).",
    ]
    assert json.loads(table.column("meta")[0].as_py()) == {"source_id": "CPD-0000"}
    # a template naming a column the file lacks: exit 2, the columns listed, nothing written
    code, out, err = kiban(
        "corpus", "build", "assay.csv", "--template", "<num>{pic50}</num>", "--out", "bad",
    )  # fmt: skip
    assert code == 2
    assert err == (
        "kiban corpus build: error: assay.csv:1: template field {pic50} is not a column of the "
        "source (did you mean 'pIC50'?); columns: smiles, compound_id, pIC50, note\n"
    )
    assert not (in_tmp / "bad").exists()
    # the same keys in a recipe; on the command line beside a recipe they are an error
    (in_tmp / "r.toml").write_text(
        '[build]\nvocab_size = 300\n[[source]]\npath = "assay.csv"\n'
        'smiles_column = "smiles"\nid_column = "compound_id"\n'
        f"template = {json.dumps(template)}\n"
    )
    code, out, err = kiban("corpus", "build", "r.toml", "--out", "recipe")
    assert code == 0, err
    assert Corpus(in_tmp / "recipe").documents_table(["text"]) == table.select(["text"])
    code, out, err = kiban("corpus", "build", "r.toml", "--id-column", "x", "--out", "o2")
    assert code == 2 and "--id-column: a recipe gives these per source" in err
    write_jsonl(in_tmp / "d.jsonl", [{"text": "Water is wet."}])
    code, out, err = kiban("corpus", "build", "d.jsonl", "--template", "{x}", "--out", "o3")
    assert code == 2 and "--template: apply to CSV and SDF sources, and none was given" in err


def test_a_failed_build_prints_the_common_reasons_and_never_blocks_the_retry(in_tmp, kiban):
    write_assay(in_tmp / "assay.csv", rows=4)
    with open(in_tmp / "assay.csv", "a", encoding="utf-8") as handle:
        handle.write("C1CC,CPD-X,6.0,ring not closed\n")
    wrong = "<mol>{smiles}</mol> is <num>{compound_id}</num>"
    code, out, err = kiban(
        "corpus", "build", "assay.csv", "--template", wrong, "--out", "out", "--vocab-size", "300"
    )
    assert code == 2
    number = "expected VALUE[±UNCERTAINTY][ UNIT], e.g. '1.31', '-2.5e-3', '1.31±0.02 eV'"
    assert err.splitlines() == [
        "5 records rejected; the most common reasons:",
        "        4  span N <num>: invalid num '…': expected VALUE[±UNCERTAINTY][ UNIT], e.g. '…', "
        "'…', '…'",
        f"           e.g. assay.csv:2: span 2 <num>: invalid num 'CPD-0000': {number}",
        "        1  span N <mol>: invalid mol '…': unclosed ring for input: '…'",
        "           e.g. assay.csv:6: span 1 <mol>: invalid mol 'C1CC': unclosed ring for input: "
        "'C1CC'",
        "kiban corpus build: error: nothing could be built: all 5 records were rejected or "
        "dropped (5 rejected, 0 dropped); see out/rejects.jsonl and out/dropped.jsonl for the "
        "reasons",
    ]
    assert sorted(p.name for p in (in_tmp / "out").iterdir()) == ["dropped.jsonl", "rejects.jsonl"]
    # the retry with the template fixed: no folder to delete by hand, no --rebuild
    code, out, err = kiban(
        "corpus", "build", "assay.csv", "--template", "<mol>{smiles}</mol> <num>{pIC50}</num>",
        "--out", "out", "--vocab-size", "300", "--json",
    )  # fmt: skip
    assert code == 0, err
    assert (json.loads(out)["documents"], json.loads(out)["rejected"]) == (4, 1)
    assert err == ""  # 1 of 5 rejected: not mostly failed, no summary


def test_a_mostly_failed_build_prints_the_reasons(in_tmp, kiban):
    write_jsonl(in_tmp / "d.jsonl", ["{oops", "{oops", '{"text": "Water is wet."}'])
    code, out, err = kiban("corpus", "build", "d.jsonl", "--out", "out", "--vocab-size", "300")
    assert code == 0
    assert err.splitlines()[:3] == [
        "2 records rejected; the most common reasons:",
        "        2  malformed JSON: Expecting property name enclosed in double quotes: column N",
        "           e.g. d.jsonl:1: malformed JSON: Expecting property name enclosed in double "
        "quotes: column 2",
    ]


def test_overwrite_replaces_a_corpus_built_otherwise(in_tmp, kiban):
    write_assay(in_tmp / "assay.csv", rows=3)
    assert kiban("corpus", "build", "assay.csv", "--out", "out", "--vocab-size", "300")[0] == 0
    template = "<mol>{smiles}</mol> pIC50 <num>{pIC50}</num>."
    args = ("corpus", "build", "assay.csv", "--template", template, "--out", "out")
    code, out, err = kiban(*args, "--vocab-size", "300")
    assert code == 2
    assert (
        "out already holds a corpus built with another configuration; choose a new --out, or "
        "--overwrite to replace it" in err
    )
    code, out, err = kiban(*args, "--vocab-size", "300", "--overwrite")
    assert code == 0, err
    assert Corpus(in_tmp / "out").documents_table(["text"]).column("text").to_pylist()[0] == (
        "<mol>CO</mol> pIC50 <num>5.00</num>."
    )
    # --overwrite never empties a directory that holds no corpus
    (in_tmp / "mine").mkdir()
    (in_tmp / "mine" / "notes.txt").write_text("keep")
    code, out, err = kiban(*args, "--vocab-size", "300", "--overwrite", "--out", "mine")
    assert code == 2 and "holds no kiban corpus" in err
    assert (in_tmp / "mine" / "notes.txt").read_text() == "keep"


def test_head_and_show_by_row_place_and_source_id(in_tmp, kiban, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # human output is cut to the terminal's width
    write_assay(in_tmp / "assay.csv", rows=3)
    with open(in_tmp / "assay.csv", "a", encoding="utf-8") as handle:
        handle.write("C1CC,CPD-X,6.0,ring not closed\n")
    code, _, err = kiban(
        "corpus", "build", "assay.csv", "--id-column", "compound_id", "--out", "out",
        "--vocab-size", "300",
    )  # fmt: skip
    assert code == 0, err
    code, out, err = kiban("corpus", "head", "out", "-n", "2", "--json")
    assert code == 0, err
    head = json.loads(out)
    assert [(r["row"], r["where"], r["source_id"], r["text"]) for r in head] == [
        (0, "assay.csv:2", "CPD-0000", "<mol>CO</mol> pIC50 <num>5.00</num>"),
        (1, "assay.csv:3", "CPD-0001", "<mol>CCO</mol> pIC50 <num>5.10</num>"),
    ]
    code, out, _ = kiban("corpus", "head", "out", "-n", "1")
    assert out.splitlines()[1].split() == [
        "0",
        head[0]["id"],
        "assay.csv:2",
        "CPD-0000",
        "<mol>CO</mol>",
        "pIC50",
        "<num>5.00</num>",
    ]
    for selector in (["--row", "2"], ["--where", "assay.csv:4"], ["--id", "CPD-0002"]):
        code, out, err = kiban("corpus", "show", "out", *selector, "--json")
        assert code == 0, err
        assert json.loads(out)["text"] == "<mol>CCCO</mol> pIC50 <num>5.20</num>"
    one_of = "give exactly one of a document id, --row N, --where FILE:LINE, --id SOURCE_ID"
    for selector, message in (
        (["--row", "3"], "--row 3: out holds 3 documents (rows 0 to 2)"),
        (["--where", "assay.csv:5"], "assay.csv:5 was rejected: span 1 <mol>: invalid mol 'C1CC'"),
        (["--where", "assay.csv:9"], "no document was read from 'assay.csv:9' in out"),
        (["--id", "CPD-9"], "no document with source id 'CPD-9' in out"),
        ([], f"{one_of}; got none"),
        (["--row", "0", "--id", "CPD-0000"], f"{one_of}; got row, id"),
    ):
        code, out, err = kiban("corpus", "show", "out", *selector)
        assert code == 2 and err.startswith(f"kiban corpus show: error: {message}"), err
