"""``kiban design CONFIG.toml``: the graph GA end to end, the files it writes, bad configs."""

from __future__ import annotations

import csv
import json

from rdkit import Chem
from rdkit.Chem import QED

from kiban.cli import main

START = ["CCO", "c1ccccc1", "CC(=O)O", "C1CCCCC1", "c1ccncc1", "CC(=O)Nc1ccccc1", "OCCO", "CCN"]


def _write(tmp_path, *, budget=100, extra=""):
    (tmp_path / "start.smi").write_text("\n".join(START) + "\n")
    config = tmp_path / "design.toml"
    config.write_text(
        f'[run]\nalgorithm = "graph_ga"\nbudget = {budget}\nseed = 0\nstart = "start.smi"\n'
        "[graph_ga]\npopulation_size = 8\noffspring_size = 20\n"
        '[scoring]\naggregation = "arithmetic"\n'
        '[[scoring.component]]\ntype = "qed"\nweight = 3\n'
        '[[scoring.component]]\ntype = "lipinski"\nweight = 1\n' + extra
    )
    return config


def test_graph_ga_design_writes_ranked_table_summary_and_report(tmp_path, capsys):
    config = _write(tmp_path)
    out = tmp_path / "run"
    assert main(["design", str(config), "--out", str(out)]) == 0
    assert "graph_ga: 100 oracle calls of 100" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == [
        "config.toml",
        "ranked.csv",
        "report.html",
        "summary.json",
    ]
    with (out / "ranked.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 100
    assert list(rows[0]) == [
        "rank", "smiles", "score", "qed_raw", "qed_score", "lipinski_raw", "lipinski_score",
        "oracle_call",
    ]  # fmt: skip
    assert [int(r["rank"]) for r in rows] == list(range(1, 101))
    assert sorted(int(r["oracle_call"]) for r in rows) == list(range(1, 101))
    totals = [float(r["score"]) for r in rows]
    assert totals == sorted(totals, reverse=True)
    for row in rows[:5]:  # each row's numbers are RDKit's, combined as configured
        mol = Chem.MolFromSmiles(row["smiles"])
        assert float(row["qed_raw"]) == float(f"{QED.qed(mol):.6g}")
        expected = (3 * QED.qed(mol) + float(row["lipinski_score"])) / 4
        assert abs(float(row["score"]) - expected) < 1e-5
    summary = json.loads((out / "summary.json").read_text())
    assert summary["format"] == "kiban-design-summary"
    assert summary["oracle_calls"] == summary["budget"] == 100
    assert summary["top1"] == max(totals) or abs(summary["top1"] - max(totals)) < 1e-5
    assert abs(summary["top10_mean"] - sum(totals[:10]) / 10) < 1e-5
    assert 0 < summary["top10_auc"] <= summary["top10_mean"]
    assert summary["start_molecules"] == len(START)
    page = (out / "report.html").read_text()
    assert page.count("<figure>") == 12 and "data:image/png;base64," in page
    assert (out / "config.toml").read_text() == config.read_text()


def test_same_seed_same_run(tmp_path):
    config = _write(tmp_path, budget=60)
    main(["design", str(config), "--out", str(tmp_path / "a")])
    main(["design", str(config), "--out", str(tmp_path / "b")])
    assert (tmp_path / "a" / "ranked.csv").read_text() == (
        tmp_path / "b" / "ranked.csv"
    ).read_text()


def test_bad_config_exits_2_and_writes_nothing(tmp_path, capsys):
    config = _write(tmp_path, extra='[[scoring.component]]\ntype = "qed"\nwieght = 1\n')
    out = tmp_path / "run"
    assert main(["design", str(config), "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert "kiban design: error: unknown key" in error
    assert "scoring.component[2].wieght (did you mean 'weight'?)" in error
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_failed_run_leaves_no_output_and_existing_out_is_kept(tmp_path, capsys, monkeypatch):
    from kiban.tasks.molecules.design import campaign

    config = _write(tmp_path, budget=30)
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    assert main(["design", str(config), "--out", str(out)]) == 2
    assert "exists and is not empty; pass --overwrite" in capsys.readouterr().err

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(campaign, "report_html", broken)
    assert main(["design", str(config), "--out", str(out), "--overwrite"]) == 1
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]  # untouched
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
