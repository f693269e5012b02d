"""What the lab tests share: a small campaign over a function instrument, run in-process or as
real `kiban lab` subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CONFIG = """
[campaign]
name = "quad"
proposer = "{proposer}"
batch_size = {batch}
initial = 3
seed = 0

[[parameters]]
name = "x"
type = "continuous"
low = -1.0
high = 1.0

[[parameters]]
name = "y"
type = "continuous"
low = 0.0
high = 2.0

[[objectives]]
name = "score"
goal = "max"
low = -100
high = 100

[instrument]
kind = "function"
target = "labfn:measure"
workers = 0
"""

FUNCTION = """
import json, os, time

def measure(params):
    log = os.environ.get("LABFN_LOG")
    if log:    # a line as the measurement starts (then it takes LABFN_SLEEP seconds)
        with open(log, "a") as handle:
            handle.write(json.dumps(params, sort_keys=True) + "\\n")
    time.sleep(float(os.environ.get("LABFN_SLEEP", "0")))
    x, y = params["x"], params["y"]
    return {"score": -(x - 0.3) ** 2 - (y - 1.2) ** 2, "extra": x + y}
"""


def write_config(tmp_path: Path, proposer: str = "random", batch: int = 2) -> Path:
    path = tmp_path / "campaign.toml"
    path.write_text(CONFIG.format(proposer=proposer, batch=batch))
    (tmp_path / "labfn.py").write_text(FUNCTION)
    return path


def init_in_subprocess(
    tmp_path: Path, config: Path, db: Path, **environ: str
) -> tuple[list[str], dict[str, str]]:
    """`kiban lab init` run as a subprocess; the command prefix and the environment (the
    function module and this checkout on PYTHONPATH, plus ``environ``) for more commands."""
    env = dict(os.environ, PYTHONPATH=f"{tmp_path}{os.pathsep}{ROOT}", **environ)
    kiban = [sys.executable, "-m", "kiban", "lab"]
    subprocess.run(
        [*kiban, "init", str(config), "--db", str(db)], check=True, env=env, capture_output=True
    )
    return kiban, env
