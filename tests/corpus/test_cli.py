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
