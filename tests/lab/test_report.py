"""kiban/lab/report.py: molecules drawn, predictions against measurements, no raw JSON."""

from __future__ import annotations

import csv
import re

import numpy as np
import pytest

from kiban.lab.campaign import add_csv, propose, record_csv
from kiban.lab.report import molecule_svg, prediction_pairs, prediction_scores, write_report
from kiban.lab.store import Store

from .helpers import write_config
from .test_campaign import _CANDIDATES, _MOLECULE_CONFIG, _history, _write_history


def test_prediction_scores_match_their_definitions():
    pairs = [(1, 1.0, 0.5, 1.2), (2, 2.0, 0.1, 1.5), (3, 3.0, 1.0, 3.5), (4, 4.0, 0.2, 4.1)]
    scores = prediction_scores(pairs)
    measured = np.array([1.2, 1.5, 3.5, 4.1])
    predicted = np.array([1.0, 2.0, 3.0, 4.0])
    from scipy.stats import spearmanr
    from sklearn.metrics import r2_score

    assert scores["n"] == 4
    assert scores["r2"] == pytest.approx(r2_score(measured, predicted), abs=1e-12)
    assert scores["r2"] == pytest.approx(1 - 0.55 / 6.2275, abs=1e-12)
    assert scores["spearman"] == pytest.approx(spearmanr(predicted, measured).statistic)
    assert scores["spearman"] == 1.0
    assert scores["mae"] == pytest.approx(0.325)
    # |1.5 - 2.0| = 0.5 > 2 * 0.1: one of four outside two sd
    assert scores["within_2sd"] == 0.75
    assert prediction_scores([]) == {
        "n": 0,
        "r2": None,
        "spearman": None,
        "mae": None,
        "within_2sd": None,
    }
    assert prediction_scores(pairs[:1])["r2"] is None


def test_the_report_compares_predictions_with_measurements(tmp_path, monkeypatch):
    (tmp_path / "labfn.py").write_text("def measure(params):\n    return {'score': 0.0}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    from kiban.lab.space import load_config

    store = Store.create(tmp_path / "c.db", load_config(write_config(tmp_path, "botorch", 3)))
    add_csv(store, _write_history(tmp_path / "past.csv", _history(8)))
    proposed = propose(store)
    results = tmp_path / "results.csv"
    measured = [-0.4, -0.2, "<-1"]
    results.write_text(
        "proposal_id,score\n" + "".join(f"{p.id},{v}\n" for p, v in zip(proposed, measured))
    )
    record_csv(store, results)
    pairs = prediction_pairs(store)["score"]
    # the censored one is left out; the others pair the stored prediction with the value
    assert [(pid, m) for pid, _, _, m in pairs] == [(proposed[0].id, -0.4), (proposed[1].id, -0.2)]
    assert [mean for _, mean, _, _ in pairs] == [
        p.prediction["objectives"]["score"]["mean"] for p in proposed[:2]
    ]
    info = write_report(store, tmp_path / "report")
    assert info["files"] == ["best_so_far.png", "predicted_vs_measured.png", "report.html"]
    page = (tmp_path / "report" / "report.html").read_text()
    scores = prediction_scores(pairs)
    assert f"<td>score</td><td>2</td><td>{scores['r2']:.6g}</td><td></td>" in page
    assert "<td>&lt;-1</td>" not in page  # bounded above: not among the best
    assert "1 result(s) with a censored value that only bounds them from above" in page
    assert not re.search(r"[{]\s*&quot;|[{]\"", page)  # no raw JSON


def test_the_report_draws_the_best_molecules_with_their_ids(tmp_path, monkeypatch):
    table = tmp_path / "compounds.csv"
    table.write_text("compound_id,smiles\n" + "".join(f"{i},{s}\n" for i, s in _CANDIDATES.items()))
    (tmp_path / "mols.toml").write_text(_MOLECULE_CONFIG)
    from kiban.lab.space import load_config

    store = Store.create(tmp_path / "m.db", load_config(tmp_path / "mols.toml"))
    past = tmp_path / "past.csv"
    with past.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["mol", "pIC50"])
        for i, smiles in enumerate(_CANDIDATES.values()):
            writer.writerow([smiles, 5 + i / 2 if i != 3 else ">9"])
    add_csv(store, past)
    write_report(store, tmp_path / "report")
    page = (tmp_path / "report" / "report.html").read_text()
    best = page[page.index("<h2>Best results</h2>") : page.index("<h2>Predictions")]
    assert best.count("<svg") == 6  # one drawing per result shown
    ids = re.findall(r"<tr><td>\d+</td><td>(CPD-\d+)</td>", best)
    assert ids == ["CPD-004", "CPD-006", "CPD-005", "CPD-003", "CPD-002", "CPD-001"]
    assert "<td>&gt;9</td>" in best  # a lower bound when maximising: the best, with its sign
    assert "<td>0</td><td></td><td></td>" in page  # no predictions: n = 0, no scores


def test_molecule_svg():
    svg = molecule_svg("c1ccccc1O")
    assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>")
    assert molecule_svg("not a smiles") == ""
