"""Readers: every supported input format, read into canonical documents with file:line provenance."""

from __future__ import annotations

import csv
import gzip
import io
import json
import re

import pytest

from kiban.corpus import RawRecord, Reject, SourceSpec, read_source
from kiban.corpus.clean import clean_records
from kiban.corpus.readers import check_source

from .helpers import build, write_jsonl


def documents_of(spec: SourceSpec) -> list[tuple[str, str]]:
    """(where, canonical text) of every document a source yields; fails on any reject."""
    result = clean_records(list(read_source(spec)))
    assert result.rejects == []
    return [(where, document.text) for where, document in result.documents]


def write_csv(path, rows, *, compress=False):
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    data = buffer.getvalue().encode("utf-8")
    path.write_bytes(gzip.compress(data, mtime=0) if compress else data)
    return path


# --- JSONL -------------------------------------------------------------------------------------
def test_jsonl_records_keep_line_numbers_ids_and_provenance(in_tmp):
    write_jsonl(
        in_tmp / "docs.jsonl",
        [
            {
                "text": "Ethanol <mol>OCC</mol> boils at <num>+78.370</num> C.",
                "id": "eth",
                "source": "handbook",
                "license": "CC0",
                "meta": {"page": 3},
            },
            "",  # blank lines are skipped but still counted
            {"text": "Caf\u0065\u0301 is prose."},
        ],
    )
    records = list(read_source(SourceSpec(path="docs.jsonl", license="MIT")))
    assert [r.where for r in records] == ["docs.jsonl:1", "docs.jsonl:3"]
    assert all(isinstance(r, RawRecord) and r.source == "docs" for r in records)
    result = clean_records(records)
    assert result.rejects == []
    (where1, doc1), (where2, doc2) = result.documents
    assert (where1, doc1.id, doc1.text, doc1.source, doc1.license, dict(doc1.meta)) == (
        "docs.jsonl:1",
        "eth",
        "Ethanol <mol>CCO</mol> boils at <num>78.370</num> C.",
        "handbook",
        "CC0",
        {"page": 3},
    )
    # prose is put in NFC; source and license fall back to the source spec's
    assert (where2, doc2.text, doc2.source, doc2.license) == (
        "docs.jsonl:3",
        "Caf\u00e9 is prose.",
        "docs",
        "MIT",
    )


def test_limit_counts_records(in_tmp):
    write_jsonl(in_tmp / "docs.jsonl", [{"text": f"document {i}"} for i in range(10)])
    assert [r.where for r in read_source(SourceSpec(path="docs.jsonl", limit=3))] == [
        "docs.jsonl:1",
        "docs.jsonl:2",
        "docs.jsonl:3",
    ]
    assert list(read_source(SourceSpec(path="docs.jsonl", limit=0))) == []
    assert len(list(read_source(SourceSpec(path="docs.jsonl", limit=99)))) == 10
    with pytest.raises(ValueError, match="limit must be >= 0"):
        SourceSpec(path="docs.jsonl", limit=-1)


def test_format_from_name_and_errors(in_tmp):
    assert SourceSpec(path="a.jsonl.gz").file_format == "jsonl"
    assert SourceSpec(path="a.CSV.xz").file_format == "csv"
    assert SourceSpec(path="a.json").file_format == "structures"
    assert SourceSpec(path="a.sdf").file_format == "sdf"
    assert SourceSpec(path="a.cif").file_format == "cif"
    assert SourceSpec(path="data/esol.csv.gz").label == "esol"
    with pytest.raises(ValueError, match="cannot tell the format"):
        SourceSpec(path="a.parquet").file_format
    with pytest.raises(ValueError, match="format must be one of"):
        SourceSpec(path="a.jsonl", format="xml")
    with pytest.raises(ValueError, match="unknown properties"):
        SourceSpec(path="a.csv", properties=("boiling_point",))
    with pytest.raises(FileNotFoundError, match="missing.jsonl does not exist"):
        list(read_source(SourceSpec(path="missing.jsonl")))


# --- CSV ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("compress", [False, True])
def test_csv_default_template(in_tmp, compress):
    name = "esol.csv.gz" if compress else "esol.csv"
    write_csv(
        in_tmp / name,
        [
            ["id", "smiles", "logS", "split"],
            ["a", "OCC", "-0.770", "train"],
            ["b", "c1ccccc1", "+1.5", "test"],
        ],
        compress=compress,
    )
    assert documents_of(SourceSpec(path=name)) == [
        (f"{name}:2", "<mol>CCO</mol> logS <num>-0.770</num>"),
        (f"{name}:3", "<mol>c1ccccc1</mol> logS <num>1.5</num>"),
    ]


def documents_and_meta(spec: SourceSpec) -> list[tuple[str, dict]]:
    result = clean_records(list(read_source(spec)))
    assert result.rejects == []
    return [(document.text, dict(document.meta)) for _, document in result.documents]


def test_csv_default_rendering_keeps_id_and_text_columns_as_metadata(in_tmp):
    write_csv(
        in_tmp / "assay.csv",
        [
            ["compound_id", "smiles", "pIC50", "note", "Name", "mw"],
            ["CPD-1", "OCC", "6.5", "kinase hit", "ethanol", "46.07"],
            ["CPD-2", "c1ccccc1", "7", "", "benzene", ""],
        ],
    )
    # before: every non-SMILES column went into <num>: "invalid num 'CPD-1'", all rows rejected
    assert documents_and_meta(SourceSpec(path="assay.csv")) == [
        (
            "<mol>CCO</mol> pIC50 <num>6.5</num> mw <num>46.07</num>",
            {"compound_id": "CPD-1", "note": "kinase hit", "Name": "ethanol"},
        ),
        # an empty number cell is left out of the text, an empty text cell out of the metadata
        ("<mol>c1ccccc1</mol> pIC50 <num>7</num>", {"compound_id": "CPD-2", "Name": "benzene"}),
    ]
    spec = SourceSpec(path="assay.csv", smiles_column="smiles", id_column="compound_id")
    assert spec.columns == {"smiles": "mol"}
    assert [meta for _, meta in documents_and_meta(spec)] == [
        {"note": "kinase hit", "Name": "ethanol", "source_id": "CPD-1"},
        {"Name": "benzene", "source_id": "CPD-2"},
    ]


def test_csv_numeric_columns_are_told_from_the_first_rows(in_tmp, monkeypatch):
    import kiban.corpus.readers

    monkeypatch.setattr(kiban.corpus.readers, "SAMPLE_ROWS", 2)
    write_csv(
        in_tmp / "late.csv",
        [["smiles", "value"], ["C", "1"], ["CC", "2"], ["CCC", "n/a"]],
    )
    result = clean_records(list(read_source(SourceSpec(path="late.csv"))))
    assert [d.text for _, d in result.documents] == [
        "<mol>C</mol> value <num>1</num>",
        "<mol>CC</mol> value <num>2</num>",
    ]
    assert [(r.where, r.reason.split(":")[0]) for r in result.rejects] == [
        ("late.csv:4", "span 2 <num>")
    ]


def test_a_template_id_or_smiles_column_naming_a_missing_column(in_tmp):
    write_csv(in_tmp / "a.csv", [["smiles", "pIC50"], ["C", "1"]])
    for spec, message in (
        (
            SourceSpec(path="a.csv", template="<mol>{smiles}</mol> <num>{pic50}</num>"),
            "a.csv:1: template field {pic50} is not a column of the source (did you mean "
            "'pIC50'?); columns: smiles, pIC50",
        ),
        (
            SourceSpec(path="a.csv", template="<mol>{smiles}</mol> QED <num>{qed}</num>"),
            "a.csv:1: template field {qed} is not a column of the source; columns: smiles, "
            "pIC50; add properties = ['qed'] to compute it with RDKit",
        ),
        (
            SourceSpec(path="a.csv", id_column="compound_id"),
            "a.csv:1: id_column 'compound_id' is not a column of the source; columns: smiles, "
            "pIC50",
        ),
        (
            SourceSpec(path="a.csv", smiles_column="smile"),
            "a.csv:1: columns key 'smile' is not a column of the source (did you mean "
            "'smiles'?); columns: smiles, pIC50",
        ),
    ):
        with pytest.raises(ValueError, match=re.escape(message) + "$"):
            check_source(spec)
    with pytest.raises(ValueError, match="smiles_column 'smiles' is given modality 'protein'"):
        SourceSpec(path="a.csv", smiles_column="smiles", columns={"smiles": "protein"})


def test_csv_explicit_template_and_columns(in_tmp):
    write_csv(
        in_tmp / "sol.csv",
        [
            ["drug", "name", "logS"],
            ["OCC", "ethanol", "-0.77"],
            ["C1=CC=CC=C1", "benzene", "-1.64"],
        ],
    )
    spec = SourceSpec(
        path="sol.csv",
        columns={"drug": "mol"},
        template="The solubility of {name} <mol>{drug}</mol> is <num>{logS}</num>.",
    )
    assert documents_of(spec) == [
        ("sol.csv:2", "The solubility of ethanol <mol>CCO</mol> is <num>-0.77</num>."),
        ("sol.csv:3", "The solubility of benzene <mol>c1ccccc1</mol> is <num>-1.64</num>."),
    ]
    # columns without a template choose the modality of each column for the default template
    write_csv(in_tmp / "seq.csv", [["drug", "target"], ["OCC", "MKTAYIAK"]])
    assert documents_of(
        SourceSpec(path="seq.csv", columns={"drug": "mol", "target": "protein"})
    ) == [("seq.csv:2", "<mol>CCO</mol> <protein>MKTAYIAK</protein>")]
    with pytest.raises(
        ValueError,
        match=r"sol.csv:1: columns key 'nope' is not a column of the source; columns: drug, name, logS$",
    ):
        list(read_source(SourceSpec(path="sol.csv", columns={"nope": "mol"})))


def test_computed_properties_equal_rdkit(in_tmp):
    from rdkit import Chem
    from rdkit.Chem import QED, Crippen, Descriptors, rdMolDescriptors

    smiles = ["CC(=O)Oc1ccccc1C(=O)O", "Cn1cnc2c1c(=O)n(C)c(=O)n2C", "CCO"]
    write_csv(in_tmp / "mols.csv", [["smi"], *[[s] for s in smiles]])
    spec = SourceSpec(
        path="mols.csv",
        columns={"smi": "mol"},
        properties=("qed", "logp", "mw", "tpsa"),
        template="<mol>{smi}</mol> qed <num>{qed}</num> logp <num>{logp}</num> "
        "mw <num>{mw}</num> tpsa <num>{tpsa}</num>",
    )
    expected = []
    for number, smi in enumerate(smiles, start=2):
        mol = Chem.MolFromSmiles(smi)
        values = [
            QED.qed(mol),
            Crippen.MolLogP(mol),
            Descriptors.MolWt(mol),
            rdMolDescriptors.CalcTPSA(mol),
        ]
        qed, logp, mw, tpsa = (f"{v:.4g}" for v in values)
        assert not any("e" in v for v in (qed, logp, mw, tpsa))
        expected.append(
            (
                f"mols.csv:{number}",
                f"<mol>{Chem.MolToSmiles(mol)}</mol> qed <num>{qed}</num> logp "
                f"<num>{logp}</num> mw <num>{mw}</num> tpsa <num>{tpsa}</num>",
            )
        )
    got = documents_of(spec)
    assert got == expected
    # spot check one value literally: aspirin's molecular weight is 180.159 g/mol
    assert "mw <num>180.2</num>" in got[0][1]


def test_properties_need_a_molecule_column(in_tmp):
    write_csv(in_tmp / "x.csv", [["a"], ["1"]])
    with pytest.raises(ValueError, match="need a molecule column"):
        list(read_source(SourceSpec(path="x.csv", properties=("qed",))))


# --- SDF ---------------------------------------------------------------------------------------
def test_sdf_records_start_lines_and_fields(in_tmp):
    from rdkit import Chem

    rows = [
        ("OCC", "ethanol", "-0.77"),
        ("c1ccccc1", "benzene", "-1.64"),
        ("CC(=O)O", "acetic acid", "1.22"),
    ]
    writer = Chem.SDWriter(str(in_tmp / "mols.sdf"))
    for smiles, name, logs in rows:
        mol = Chem.MolFromSmiles(smiles)
        mol.SetProp("_Name", name)
        mol.SetProp("Name", name)
        mol.SetProp("logS", logs)
        writer.write(mol)
    writer.close()
    lines = (in_tmp / "mols.sdf").read_text().splitlines()
    starts = [1] + [i + 2 for i, line in enumerate(lines[:-1]) if line == "$$$$"]
    assert starts[:1] == [1] and len(starts) == 3
    spec = SourceSpec(
        path="mols.sdf",
        properties=("mw",),
        template="<mol>{smiles}</mol> named {Name} has logS <num>{logS}</num>, "
        "mass <num>{mw}</num>.",
    )
    assert documents_of(spec) == [
        (
            f"mols.sdf:{starts[0]}",
            "<mol>CCO</mol> named ethanol has logS <num>-0.77</num>, mass <num>46.07</num>.",
        ),
        (
            f"mols.sdf:{starts[1]}",
            "<mol>c1ccccc1</mol> named benzene has logS <num>-1.64</num>, mass <num>78.11</num>.",
        ),
        (
            f"mols.sdf:{starts[2]}",
            "<mol>CC(=O)O</mol> named acetic acid has logS <num>1.22</num>, mass <num>60.05</num>.",
        ),
    ]
    # default template: the molecule, its data fields kept as metadata (before: dropped)
    assert documents_and_meta(SourceSpec(path="mols.sdf")) == [
        ("<mol>CCO</mol>", {"Name": "ethanol", "logS": "-0.77"}),
        ("<mol>c1ccccc1</mol>", {"Name": "benzene", "logS": "-1.64"}),
        ("<mol>CC(=O)O</mol>", {"Name": "acetic acid", "logS": "1.22"}),
    ]
    assert documents_and_meta(SourceSpec(path="mols.sdf", id_column="Name"))[0] == (
        "<mol>CCO</mol>",
        {"logS": "-0.77", "source_id": "ethanol"},
    )
    with pytest.raises(ValueError, match=r"template field \{logs\} is not a column"):
        check_source(SourceSpec(path="mols.sdf", template="<num>{logs}</num>"))


def test_sdf_bad_molblock_and_unterminated_record(in_tmp):
    good = (
        "ethanol\n     RDKit          2D\n\n  3  2  0  0  0  0  0  0  0  0999 V2000\n"
        + "".join(
            f"    {x:.4f}    0.0000    0.0000 {e}   0  0  0  0  0  0  0  0  0  0  0  0\n"
            for x, e in ((0.0, "C"), (1.3, "C"), (2.6, "O"))
        )
        + "  1  2  1  0\n  2  3  1  0\nM  END\n"
    )
    bad = good.replace("  3  2  0", "  3  9  0")  # 9 bonds announced, 2 written
    (in_tmp / "m.sdf").write_text(good + "$$$$\n" + bad + "$$$$\n" + good)  # last: no $$$$
    items = list(read_source(SourceSpec(path="m.sdf")))
    assert [type(i).__name__ for i in items] == ["RawRecord", "RawRecord", "Reject"]
    assert items[2].where == "m.sdf:23" and "not terminated" in items[2].reason
    result = clean_records(items)
    assert [(w, d.text) for w, d in result.documents] == [("m.sdf:1", "<mol>CCO</mol>")]
    assert [r.where for r in result.rejects] == ["m.sdf:12", "m.sdf:23"]
    assert "MOL block" in result.rejects[0].reason


# --- crystals ----------------------------------------------------------------------------------
@pytest.fixture
def structures():
    pytest.importorskip("kiban.modalities.crystal")
    from pymatgen.core import Lattice, Structure

    nacl = Structure.from_spacegroup(
        "Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]
    )
    si = Structure.from_spacegroup("Fd-3m", Lattice.cubic(5.43), ["Si"], [[0, 0, 0]])
    return nacl, si


def test_cif_file(in_tmp, structures):
    from pymatgen.io.cif import CifWriter

    from kiban.modalities import get_codec

    nacl, _ = structures
    cif = str(CifWriter(nacl))
    (in_tmp / "nacl.cif").write_text(cif)
    [(where, text)] = documents_of(SourceSpec(path="nacl.cif"))
    assert where == "nacl.cif:1"
    assert text == f"<crystal>{get_codec('crystal').canonical(cif)}</crystal>"
    spec = SourceSpec(path="nacl.cif", template="Rock salt: <crystal>{cif}</crystal>.")
    assert documents_of(spec) == [("nacl.cif:1", f"Rock salt: {text}.")]


def test_structure_json_list_and_pandas_table(in_tmp, structures):
    from kiban.modalities import get_codec

    nacl, si = structures
    codec = get_codec("crystal")
    expected = [
        f"<crystal>{codec.canonical(json.dumps(s.as_dict()))}</crystal>" for s in (nacl, si)
    ]
    assert expected[0] == f"<crystal>{codec.to_text(nacl)}</crystal>"

    (in_tmp / "plain.json").write_text(json.dumps([nacl.as_dict(), si.as_dict()]))
    assert documents_of(SourceSpec(path="plain.json")) == [
        ("plain.json#0", expected[0]),
        ("plain.json#1", expected[1]),
    ]

    (in_tmp / "records.json").write_text(
        json.dumps(
            [{"structure": nacl.as_dict(), "n": 1.544}, {"structure": si.as_dict(), "n": 3.42}]
        )
    )
    template = "<crystal>{structure}</crystal> has refractive index <num>{n}</num>."
    assert documents_of(SourceSpec(path="records.json", template=template)) == [
        ("records.json#0", f"{expected[0]} has refractive index <num>1.544</num>."),
        ("records.json#1", f"{expected[1]} has refractive index <num>3.42</num>."),
    ]

    table = {"structure": {"7": nacl.as_dict(), "9": si.as_dict()}, "n": {"7": 1.544, "9": 3.42}}
    (in_tmp / "matbench.json.gz").write_bytes(gzip.compress(json.dumps(table).encode()))
    assert documents_of(SourceSpec(path="matbench.json.gz", template=template)) == [
        ("matbench.json.gz#7", f"{expected[0]} has refractive index <num>1.544</num>."),
        ("matbench.json.gz#9", f"{expected[1]} has refractive index <num>3.42</num>."),
    ]


def test_structure_table_of_wrong_shape_is_rejected(in_tmp):
    (in_tmp / "odd.json").write_text(json.dumps({"a": 1}))
    [item] = read_source(SourceSpec(path="odd.json"))
    assert isinstance(item, Reject) and item.where == "odd.json"
    assert "expected a list of records" in item.reason
    (in_tmp / "broken.json").write_text('[{"structure": ')
    [item] = read_source(SourceSpec(path="broken.json"))
    assert isinstance(item, Reject) and "unreadable structure table" in item.reason


# --- installed packages ------------------------------------------------------------------------
def test_package_resolution_and_limit(tmp_path):
    import importlib.util

    if importlib.util.find_spec("moses") is None:  # found, not imported (it imports fcd_torch)
        pytest.skip("moses (molsets) is not installed")
    spec = SourceSpec(package="moses", path="dataset/data/test.csv.gz", limit=50)
    location = importlib.util.find_spec("moses").submodule_search_locations[0]
    assert str(spec.resolved_path) == f"{location}/dataset/data/test.csv.gz"
    with gzip.open(spec.resolved_path, "rt") as handle:
        smiles = [line.strip() for line in handle][1:51]
    records = list(read_source(spec))
    assert [r.fields["SMILES"] for r in records] == smiles
    corpus = build(tmp_path / "out", spec)
    from rdkit import Chem

    table = corpus.documents_table(["text", "where"]).to_pylist()
    canonical = [f"<mol>{Chem.MolToSmiles(Chem.MolFromSmiles(s))}</mol>" for s in smiles]
    assert [row["text"] for row in table] == list(dict.fromkeys(canonical))
    assert table[0]["where"] == f"{spec.resolved_path}:2"
    assert corpus.manifest["sources"] == {"test": len(table)}


def test_missing_package_is_a_clear_error():
    spec = SourceSpec(package="kiban_no_such_package", path="data.csv")
    with pytest.raises(FileNotFoundError, match="package 'kiban_no_such_package' is not installed"):
        spec.resolved_path


def test_text_files_one_document_per_line(in_tmp):
    (in_tmp / "notes.txt").write_text("Ethanol <mol>OCC</mol>.\n\n  \nPlain prose line.\n")
    assert documents_of(SourceSpec(path="notes.txt")) == [
        ("notes.txt:1", "Ethanol <mol>CCO</mol>."),
        ("notes.txt:4", "Plain prose line."),
    ]


# --- data lost or cut silently (issue 15, fault 7) ---------------------------------------------
def test_a_quoted_csv_field_keeps_its_line_break_and_records_their_first_line(in_tmp):
    # before: the record was cut at the line break ("expected 3 fields, got 2") and the rest of
    # the field read as a record of its own
    (in_tmp / "notes.csv").write_text(
        'smiles,logS,note\nCCO,-0.77,"boils at 78 C,\nmiscible with water"\n'
        'c1ccccc1,-1.64,plain\nCCN,1\n\n"CCCl",0.1,"a ""quoted"" word"\n',
        encoding="utf-8",
    )
    spec = SourceSpec(
        path="notes.csv", template="<mol>{smiles}</mol> {note}", columns={"smiles": "mol"}
    )
    records = list(read_source(spec))
    assert [(r.where, r.fields if isinstance(r, RawRecord) else r.reason) for r in records] == [
        (
            "notes.csv:2",
            {"smiles": "CCO", "logS": "-0.77", "note": "boils at 78 C,\nmiscible with water"},
        ),
        ("notes.csv:4", {"smiles": "c1ccccc1", "logS": "-1.64", "note": "plain"}),
        ("notes.csv:5", "expected 3 fields (smiles, logS, note), got 2"),
        ("notes.csv:7", {"smiles": "CCCl", "logS": "0.1", "note": 'a "quoted" word'}),
    ]
    assert (
        clean_records(records).documents[0][1].text
        == "<mol>CCO</mol> boils at 78 C,\nmiscible with water"
    )


def test_csv_lines_that_are_not_utf8_are_rejects_in_file_order(in_tmp):
    (in_tmp / "bad.csv").write_bytes(b"smiles,logS\nCCO,1\nC\xffC,2\nCCN,3\n")
    records = list(read_source(SourceSpec(path="bad.csv")))
    assert [(r.where, type(r).__name__) for r in records] == [
        ("bad.csv:2", "RawRecord"),
        ("bad.csv:3", "Reject"),
        ("bad.csv:4", "RawRecord"),
    ]


def test_a_line_over_the_limit_is_a_reject_and_reading_goes_on(in_tmp, monkeypatch):
    from kiban.corpus import readers

    monkeypatch.setattr(readers, "MAX_LINE_BYTES", 64)
    long_text = "x" * 1000
    write_jsonl(
        in_tmp / "docs.jsonl", [{"text": "short one"}, {"text": long_text}, {"text": "short two"}]
    )
    records = list(read_source(SourceSpec(path="docs.jsonl")))
    assert [r.where for r in records] == ["docs.jsonl:1", "docs.jsonl:2", "docs.jsonl:3"]
    assert records[1] == Reject(
        "docs.jsonl:2",
        "docs",
        (
            f"line of {len(json.dumps({'text': long_text})) + 1:,} bytes is longer than the limit "
            "of 64 bytes (kiban.corpus.readers.MAX_LINE_BYTES); split the record"
        ),
    )
    assert json.loads(records[2].line) == {"text": "short two"}
    # a build counts it among the rejects, with its line
    corpus = build(in_tmp / "out", "docs.jsonl")
    assert (corpus.manifest["documents"], corpus.manifest["rejected"]) == (2, 1)
    assert readers.MAX_LINE_BYTES == 64


def test_the_line_limit_is_4_mib():
    from kiban.corpus.readers import MAX_LINE_BYTES

    assert MAX_LINE_BYTES == 4 * 2**20


def test_a_directory_is_not_a_source(in_tmp):
    (in_tmp / "data").mkdir()
    with pytest.raises(
        IsADirectoryError,
        match=r"source data is a directory, not a file: name "
        r"the files in it \(e.g. data/\*.jsonl\)",
    ):
        list(read_source(SourceSpec(path="data", format="jsonl")))
