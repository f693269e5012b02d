"""`run_design` with the REINVENT-style loop on a tiny kiban model."""

from __future__ import annotations

import csv
import json
import tomllib

from kiban.tasks.molecules.design.campaign import parse_config, run_design


def test_reinvent_design_run(tiny_model_dir, tmp_path):
    text = (
        f'[run]\nalgorithm = "reinvent"\nbudget = 20\nseed = 0\nmodel = "{tiny_model_dir}"\n'
        "[reinvent]\nbatch = 16\nmax_rounds = 4\nmax_new_tokens = 40\n"
        '[scoring]\n[[scoring.component]]\ntype = "qed"\n'
        '[[scoring.component]]\ntype = "custom_alerts"\nname = "no_nitrogen"\nsmarts = ["[#7]"]\n'
    )
    config = parse_config(tomllib.loads(text), source="r.toml", text=text)
    result = run_design(config, tmp_path / "out")
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary == result.summary
    assert summary["algorithm"] == "reinvent"
    assert 1 <= summary["oracle_calls"] <= 20
    assert summary["rounds"] <= 4
    with (tmp_path / "out" / "ranked.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == summary["oracle_calls"]
    for row in rows:  # a molecule with nitrogen scores 0 under the geometric mean
        if float(row["no_nitrogen_raw"]) > 0:
            assert float(row["score"]) == 0.0
