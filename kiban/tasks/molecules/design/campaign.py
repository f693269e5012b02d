"""``kiban design CONFIG.toml``: a design run read from a TOML file, run, and written out.

`read_config` turns the TOML into a typed `DesignConfig` (an unknown key is an error naming its
TOML path and the closest known key); `run_design` scores molecules through an `Oracle` wrapping
the `ScoringFunction`, runs the graph GA or the REINVENT-style loop until the oracle budget is
spent, and writes, into a directory that appears whole or not at all:

* ``ranked.csv``: every scored molecule, best first: rank, smiles, total score, each
  component's raw and transformed score, and the oracle call that first scored it;
* ``summary.json``: budget used, top-1 and top-10 mean, PMO top-10 AUC, timings;
* ``report.html``: RDKit drawings of the best molecules and a score-vs-calls plot;
* ``config.toml``: the configuration the run was given, verbatim.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import os
import shutil
import tempfile
import time
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from kiban.errors import InputError, did_you_mean
from kiban.formats import register, write_json
from kiban.tasks.molecules.design.optimize import GAConfig, Oracle, graph_ga, summarize
from kiban.tasks.molecules.design.reinvent import AugmentedConfig, optimize_augmented_likelihood
from kiban.tasks.molecules.design.scoring import (
    COMPONENTS,
    TRANSFORMS,
    ComponentConfig,
    ScoringConfig,
    ScoringFunction,
    Transform,
)

DESIGN_SUMMARY = register(
    "kiban-design-summary", 1, description="summary.json of a kiban design run"
)
ALGORITHMS = ("graph_ga", "reinvent")
TOP_DRAWN = 12


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """``[run]``. graph_ga starts from ``start`` (a .smi/.txt file, one SMILES per line, or a
    CSV with a ``smiles`` column or ``start_column``) or ``start_corpus`` (the molecules of a
    kiban corpus); reinvent samples from the kiban model in ``model``."""

    algorithm: str
    budget: int
    seed: int = 0
    model: str | None = None
    start: str | None = None
    start_column: str | None = None
    start_corpus: str | None = None


@dataclass(frozen=True, kw_only=True)
class DesignConfig:
    run: RunConfig
    scoring: ScoringConfig
    graph_ga: GAConfig = GAConfig()
    reinvent: AugmentedConfig = AugmentedConfig()
    source: str = "<config>"  # where the config came from, for messages
    text: str = ""  # the TOML text, saved beside the results


# --- reading the TOML ---------------------------------------------------------------------------
def _check_keys(table: Any, allowed: list[str], where: str) -> dict[str, Any]:
    if not isinstance(table, Mapping):
        raise InputError(f"{where} must be a table; got {table!r}")
    for key in table:
        if key not in allowed:
            raise InputError(
                f"unknown key {where}.{key}{did_you_mean(key, allowed)}; "
                f"known: {', '.join(allowed)}"
            )
    return dict(table)


def _build(cls: type, table: Any, where: str, skip: tuple[str, ...] = ()) -> Any:
    """``cls(**table)`` after checking every key is one of its fields; types are checked
    against the field defaults (a bad value names its key)."""
    names = [f.name for f in fields(cls) if f.name not in skip]
    values = _check_keys(table, names, where)
    try:
        return cls(**values)
    except TypeError as error:
        raise InputError(f"{where}: {error}") from None
    except InputError:
        raise
    except ValueError as error:
        raise InputError(f"{where}: {error}") from None


def _component(entry: Any, where: str) -> ComponentConfig:
    if not isinstance(entry, Mapping):
        raise InputError(f"{where} must be a table; got {entry!r}")
    kind_name = entry.get("type")
    if kind_name not in COMPONENTS:
        raise InputError(
            f"{where}.type = {kind_name!r}{did_you_mean(str(kind_name), COMPONENTS)}; "
            f"expected one of {', '.join(COMPONENTS)}"
        )
    kind = COMPONENTS[kind_name]
    common = ["type", "name", "weight", "transform"]
    values = _check_keys(entry, common + list(kind.params), where)
    missing = [p for p in kind.required if p not in values]
    if missing:
        raise InputError(f"{where} (type {kind_name!r}) needs {', '.join(missing)}")
    weight = values.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, int | float) or weight < 0:
        raise InputError(f"{where}.weight must be a number >= 0; got {weight!r}")
    transform = None
    if "transform" in values:
        spec = values["transform"]
        if isinstance(spec, str):
            spec = {"type": spec}
        transform = _build(Transform, spec, f"{where}.transform")
    if kind_name == "property" and transform is None:
        from kiban.tasks.molecules.properties.saved_models import PropertyModel

        if PropertyModel(values["path"]).task == "regression":
            raise InputError(
                f"{where}: a regression property model predicts values outside [0, 1]; give "
                f'a transform, e.g. transform = {{type = "sigmoid", low = 5, high = 8}}'
            )
    name = values.get("name", "")
    if not isinstance(name, str):
        raise InputError(f"{where}.name must be a string; got {name!r}")
    return ComponentConfig(
        type=kind_name,
        name=name,
        weight=float(weight),
        transform=transform,
        params={k: v for k, v in values.items() if k in kind.params},
    )


def _scoring(table: Any, where: str) -> ScoringConfig:
    values = _check_keys(table, ["aggregation", "component"], where)
    entries = values.get("component", [])
    if not isinstance(entries, list) or not entries:
        raise InputError(f"{where}: add at least one [[scoring.component]] table")
    components = tuple(_component(e, f"{where}.component[{i}]") for i, e in enumerate(entries))
    labels = [c.label for c in components]
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise InputError(
            f"{where}: components {repeated} appear more than once; give each a distinct name"
        )
    if not sum(c.weight for c in components) > 0:
        raise InputError(f"{where}: the component weights sum to 0")
    config = ScoringConfig(
        aggregation=values.get("aggregation", "geometric"), components=components
    )
    ScoringFunction(config, where=where)  # bad aggregations, SMILES and SMARTS fail here
    return config


def parse_config(
    data: Mapping[str, Any], *, source: str = "<config>", text: str = ""
) -> DesignConfig:
    """A `DesignConfig` from the parsed TOML ``data``; errors name ``source`` and the key path."""
    values = _check_keys(data, ["run", "scoring", "graph_ga", "reinvent"], source)
    if "run" not in values or "scoring" not in values:
        raise InputError(f"{source}: needs a [run] and a [scoring] table")
    run = _build(RunConfig, values["run"], f"{source}: run")
    if run.algorithm not in ALGORITHMS:
        raise InputError(
            f"{source}: run.algorithm = {run.algorithm!r}{did_you_mean(run.algorithm, ALGORITHMS)}"
            f"; expected one of {', '.join(ALGORITHMS)}"
        )
    if isinstance(run.budget, bool) or not isinstance(run.budget, int) or run.budget < 1:
        raise InputError(f"{source}: run.budget must be an integer >= 1; got {run.budget!r}")
    if run.algorithm == "reinvent" and not run.model:
        raise InputError(f"{source}: run.algorithm = 'reinvent' needs run.model (a model dir)")
    if run.algorithm == "graph_ga" and (run.start is None) == (run.start_corpus is None):
        raise InputError(
            f"{source}: run.algorithm = 'graph_ga' needs exactly one of run.start (a SMILES "
            f"file or CSV) and run.start_corpus (a kiban corpus)"
        )
    return DesignConfig(
        run=run,
        scoring=_scoring(values["scoring"], f"{source}: scoring"),
        graph_ga=_build(GAConfig, values.get("graph_ga", {}), f"{source}: graph_ga"),
        reinvent=_build(AugmentedConfig, values.get("reinvent", {}), f"{source}: reinvent"),
        source=source,
        text=text,
    )


def read_config(path: str | os.PathLike) -> DesignConfig:
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise InputError(f"{path}: not valid TOML ({error})") from None
    config = parse_config(data, source=str(path), text=text)
    return _relative_paths(config, path.parent)


def _relative_paths(config: DesignConfig, base: Path) -> DesignConfig:
    """Paths in the TOML are read relative to the working directory when they exist there,
    else relative to the TOML file (so a config works from the repository root and from beside
    its data)."""
    from dataclasses import replace

    def resolve(value: str | None) -> str | None:
        if value is None or Path(value).is_absolute() or Path(value).exists():
            return value
        beside = base / value
        return str(beside) if beside.exists() else value

    run = replace(
        config.run,
        model=resolve(config.run.model),
        start=resolve(config.run.start),
        start_corpus=resolve(config.run.start_corpus),
    )
    return replace(config, run=run)


# --- running ------------------------------------------------------------------------------------
def starting_smiles(run: RunConfig) -> list[str]:
    """The graph GA's starting molecules, canonical and sorted (so a seed fixes the run)."""
    from kiban.tasks.molecules.evaluation.moses import read_training_corpus, read_training_set

    if run.start_corpus is not None:
        training = read_training_corpus(run.start_corpus)
    else:
        training = read_training_set(run.start, smiles_column=run.start_column)
    return sorted(training.smiles)


@dataclass(frozen=True)
class DesignResult:
    out: Path
    summary: dict[str, Any]


def run_design(
    config: DesignConfig, out: str | os.PathLike, *, overwrite: bool = False, progress=None
) -> DesignResult:
    """Run ``config`` and write its results into ``out`` (built in a temporary directory beside
    it and renamed into place, so a failed run leaves no partial ``out``)."""
    out = Path(out)
    if out.exists() and not overwrite and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} exists and is not empty; pass --overwrite to replace it")
    scoring = ScoringFunction(config.scoring)
    oracle = Oracle(scoring, budget=config.run.budget, name="design")
    began = time.perf_counter()
    if config.run.algorithm == "graph_ga":
        start = starting_smiles(config.run)
        result = graph_ga(oracle, start, config=config.graph_ga, seed=config.run.seed)
        extra = {"generations": result["generations"], "start_molecules": len(start)}
    else:
        result = optimize_augmented_likelihood(
            oracle,
            config.run.model,
            config=config.reinvent,
            seed=config.run.seed,
            progress=progress,
            every=5,  # a round costs seconds on a CPU: report often enough to see it move
        )
        extra = {k: result[k] for k in ("rounds", "samples", "valid_samples", "stopped")}
    seconds = time.perf_counter() - began
    if not oracle.history:
        raise RuntimeError(
            f"{config.source}: the run scored no molecule (algorithm {config.run.algorithm})"
        )
    metrics = summarize(oracle)
    summary = {
        "config": config.source,
        "algorithm": config.run.algorithm,
        "seed": config.run.seed,
        "budget": config.run.budget,
        "oracle_calls": oracle.calls,
        "top1": metrics["top1"],
        "top10_mean": metrics["top10_mean"],
        "top10_auc": metrics["top10_auc"],
        "top1_auc": metrics["top1_auc"],
        "aggregation": config.scoring.aggregation,
        "components": [
            {
                "name": c.label,
                "type": c.type,
                "weight": c.weight,
                "transform": None if c.transform is None else c.transform.type,
            }
            for c in config.scoring.components
        ],
        "best": metrics["best"],
        "seconds": round(seconds, 2),
        **extra,
    }
    rows = ranked_rows(oracle, scoring)
    out.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        _write_csv(building / "ranked.csv", rows, scoring.labels)
        summary = write_json(building / "summary.json", DESIGN_SUMMARY, summary)
        (building / "report.html").write_text(
            report_html(summary, rows, oracle, scoring.labels), encoding="utf-8"
        )
        (building / "config.toml").write_text(config.text, encoding="utf-8")
        os.chmod(building, 0o777 & ~_umask())
        if out.exists():
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        os.replace(building, out)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    return DesignResult(out=out, summary=summary)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def ranked_rows(oracle: Oracle, scoring: ScoringFunction) -> list[dict[str, Any]]:
    """One row per paid oracle call, best total first (ties: earlier call first)."""
    order = sorted(range(len(oracle.history)), key=lambda i: (-oracle.history[i][1], i))
    rows = []
    for rank, i in enumerate(order, start=1):
        smiles, total = oracle.history[i]
        row: dict[str, Any] = {"rank": rank, "smiles": smiles, "score": total}
        for label, part in scoring.details[i].items():
            row[f"{label}_raw"] = part.raw
            row[f"{label}_score"] = part.score
        row["oracle_call"] = i + 1
        rows.append(row)
    return rows


def _write_csv(path: Path, rows: list[dict[str, Any]], labels: list[str]) -> None:
    header = ["rank", "smiles", "score"]
    for label in labels:
        header += [f"{label}_raw", f"{label}_score"]
    header.append("oracle_call")
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=header, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: f"{v:.6g}" if isinstance(v, float) else v for k, v in row.items()})


# --- the HTML report ----------------------------------------------------------------------------
def score_plot_png(oracle: Oracle) -> bytes:
    """Each call's total score, the best so far and the mean of the 10 best so far."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    scores = np.array([score for _, score in oracle.history])
    calls = np.arange(1, len(scores) + 1)
    top10 = [float(np.mean(sorted(scores[:n], reverse=True)[:10])) for n in calls]
    figure, axis = plt.subplots(figsize=(6.5, 3.2))
    axis.scatter(calls, scores, s=4, alpha=0.35, color="grey", label="each molecule")
    axis.plot(calls, np.maximum.accumulate(scores), label="best so far")
    axis.plot(calls, top10, label="mean of the 10 best")
    axis.set_xlabel("oracle calls")
    axis.set_ylabel("total score")
    axis.set_ylim(0, 1.02)
    axis.legend(fontsize=8, loc="lower right")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def report_html(
    summary: Mapping[str, Any], rows: list[dict[str, Any]], oracle: Oracle, labels: list[str]
) -> str:
    from kiban import chem
    from kiban.tasks.molecules.evaluation.report import molecule_svg

    plot = base64.b64encode(score_plot_png(oracle)).decode("ascii")
    figures = []
    for row in rows[:TOP_DRAWN]:
        parts = ", ".join(f"{label} {row[f'{label}_score']:.2f}" for label in labels)
        figures.append(
            f"<figure>{molecule_svg(chem.parse_smiles(row['smiles']))}<figcaption>"
            f"#{row['rank']} score {row['score']:.3f}<br><code>{html.escape(row['smiles'])}"
            f"</code><br><small>{html.escape(parts)}; call {row['oracle_call']}</small>"
            f"</figcaption></figure>"
        )
    facts = [
        ("configuration", html.escape(str(summary["config"]))),
        ("algorithm", html.escape(summary["algorithm"])),
        ("oracle calls", f"{summary['oracle_calls']:,} of {summary['budget']:,}"),
        ("best score", f"{summary['top1']:.3f}"),
        ("mean of the 10 best", f"{summary['top10_mean']:.3f}"),
        ("top-10 AUC (PMO)", f"{summary['top10_auc']:.3f}"),
        (
            "scoring",
            html.escape(
                f"{summary['aggregation']} mean of "
                + ", ".join(
                    f"{c['name']} (weight {c['weight']:g}"
                    + (f", {c['transform']}" if c["transform"] else "")
                    + ")"
                    for c in summary["components"]
                )
            ),
        ),
        ("seconds", f"{summary['seconds']:.1f}"),
    ]
    table = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in facts)
    return (
        "<!doctype html><html><head><meta charset=utf-8><title>kiban design: "
        f"{html.escape(str(summary['config']))}</title><style>"
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto}"
        "th{text-align:left;padding-right:1em}figure{display:inline-block;width:240px;"
        "margin:6px;vertical-align:top}figcaption{font-size:12px;word-break:break-all}"
        "</style></head><body>"
        f"<h1>Design run: {html.escape(str(summary['config']))}</h1><table>{table}</table>"
        f"<h2>Score against oracle calls</h2><img alt='score vs calls' "
        f"src='data:image/png;base64,{plot}'>"
        f"<h2>The {min(TOP_DRAWN, len(rows))} best molecules</h2>{''.join(figures)}"
        "<p>All scored molecules, ranked, are in ranked.csv; the numbers in summary.json.</p>"
        "</body></html>\n"
    )


__all__ = [
    "ALGORITHMS",
    "TRANSFORMS",
    "DesignConfig",
    "DesignResult",
    "RunConfig",
    "parse_config",
    "read_config",
    "run_design",
]
