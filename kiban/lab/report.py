"""``kiban lab report``: best-so-far curves, the Pareto front and the model's predictions against
what was measured, as PNG files and one HTML page.

Every number on the page is read from the campaign database at the time of the report. Molecules
are drawn (RDKit SVG, inline) next to their candidate IDs; censored values are shown with their
sign (``<4``); nothing is printed as raw JSON.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

import numpy as np

from kiban.io import atomic_write_bytes, atomic_write_text
from kiban.lab.campaign import (
    best_so_far,
    experiment_ids,
    only_bounded_above,
    pareto_mask,
    status,
)
from kiban.lab.store import Store


def _figure_bytes(fig) -> bytes:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def _plots(store: Store) -> dict[str, bytes]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    space = store.config().space
    out: dict[str, bytes] = {}
    x, curve = best_so_far(store)
    results = store.results()
    n_obj = len(space.objectives)
    fig, axes = plt.subplots(1, n_obj, figsize=(4.2 * n_obj, 3.2), squeeze=False)
    done = sorted(p.id for p in store.proposals() if p.status in ("completed", "failed"))
    position = {pid: i + 1 for i, pid in enumerate(done)}
    for j, objective in enumerate(space.objectives):
        ax = axes[0, j]
        sign = -1.0 if objective.goal == "min" else 1.0
        shown = curve[:, j] * sign if objective.goal != "target" else curve[:, j]
        finite = np.isfinite(shown)
        ax.step(x[finite], shown[finite], where="post", color="C0", label="best so far")
        pts = [
            (position[r.proposal_id], r.values[objective.name])
            for r in results
            if r.proposal_id in position
        ]
        if pts:
            px, py = zip(*pts)
            if objective.goal == "target":
                py = [-abs(v - objective.target) for v in py]
            ax.scatter(px, py, s=10, color="C1", alpha=0.6, label="measured")
        label = (
            objective.name
            if objective.goal != "target"
            else f"-|{objective.name} - {objective.target:g}|"
        )
        ax.set_xlabel("experiment")
        ax.set_ylabel(f"{label} ({objective.goal})")
        ax.legend(fontsize=7)
    fig.tight_layout()
    out["best_so_far.png"] = _figure_bytes(fig)
    plt.close(fig)
    if n_obj >= 2 and results:
        a, b = space.objectives[0], space.objectives[1]
        values = np.asarray([[r.values[a.name], r.values[b.name]] for r in results])
        util = np.stack([space.utilities(r.values) for r in results])
        mask = pareto_mask(util)
        fig, ax = plt.subplots(figsize=(4.5, 3.6))
        ax.scatter(values[~mask, 0], values[~mask, 1], s=12, color="0.6", label="dominated")
        front = values[mask][np.argsort(values[mask, 0])]
        ax.plot(front[:, 0], front[:, 1], "o-", color="C3", ms=4, label="Pareto front")
        ax.set_xlabel(f"{a.name} ({a.goal})")
        ax.set_ylabel(f"{b.name} ({b.goal})")
        ax.legend(fontsize=7)
        fig.tight_layout()
        out["pareto.png"] = _figure_bytes(fig)
        plt.close(fig)
    return out


def prediction_pairs(store: Store) -> dict[str, list[tuple[int, float, float, float]]]:
    """Per objective, ``(proposal, predicted mean, predicted sd, measured)`` for each result
    whose proposal the model predicted in the objective's units; censored values are left out
    (a bound is not the value the prediction is compared with)."""
    proposals = {p.id: p for p in store.proposals()}
    out: dict[str, list[tuple[int, float, float, float]]] = {}
    for o in store.config().space.objectives:
        pairs = []
        for r in store.results():
            pred = proposals[r.proposal_id].prediction
            made = (pred or {}).get("objectives", {}).get(o.name) or {}
            if made.get("mean") is None or o.name in r.censored or o.name not in r.values:
                continue
            pairs.append((r.proposal_id, made["mean"], made["sd"], r.values[o.name]))
        out[o.name] = pairs
    return out


def prediction_scores(pairs: list[tuple[int, float, float, float]]) -> dict[str, Any]:
    """How well the predictions made at proposal time matched: ``n``; ``r2`` (1 - residual
    over total sum of squares of the measured values; None below 2 points or with no spread);
    ``spearman`` (rank correlation; None below 3 points); ``mae``; ``within_2sd`` (the
    fraction measured within two predicted standard deviations)."""
    n = len(pairs)
    if n == 0:
        return {"n": 0, "r2": None, "spearman": None, "mae": None, "within_2sd": None}
    mean = np.asarray([p[1] for p in pairs])
    sd = np.asarray([p[2] for p in pairs])
    measured = np.asarray([p[3] for p in pairs])
    total = float(((measured - measured.mean()) ** 2).sum())
    r2 = 1.0 - float(((measured - mean) ** 2).sum()) / total if n >= 2 and total > 0 else None
    spearman = None
    if n >= 3 and np.ptp(mean) > 0 and np.ptp(measured) > 0:
        from scipy.stats import spearmanr

        spearman = float(spearmanr(mean, measured).statistic)
    return {
        "n": n,
        "r2": r2,
        "spearman": spearman,
        "mae": float(np.abs(measured - mean).mean()),
        "within_2sd": float((np.abs(measured - mean) <= 2 * sd).mean()),
    }


def _prediction_plot(pairs: dict[str, list[tuple[int, float, float, float]]]) -> bytes | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = {name: p for name, p in pairs.items() if p}
    if not shown:
        return None
    fig, axes = plt.subplots(1, len(shown), figsize=(4.0 * len(shown), 3.6), squeeze=False)
    for ax, (name, points) in zip(axes[0], shown.items()):
        _, mean, sd, measured = (np.asarray(c, dtype=float) for c in zip(*points))
        ax.errorbar(mean, measured, xerr=2 * sd, fmt="o", ms=4, alpha=0.7, elinewidth=0.8)
        low = float(min(mean.min(), measured.min()))
        high = float(max(mean.max(), measured.max()))
        ax.plot([low, high], [low, high], color="0.5", lw=0.8, ls="--")
        ax.set_xlabel(f"{name} predicted when proposed (± 2 sd)")
        ax.set_ylabel(f"{name} measured")
    fig.tight_layout()
    data = _figure_bytes(fig)
    plt.close(fig)
    return data


def molecule_svg(smiles: str, width: int = 180, height: int = 130) -> str:
    """An RDKit drawing of ``smiles`` as inline SVG (no XML declaration); "" for text RDKit
    cannot parse (shown as text instead)."""
    from rdkit.Chem.Draw import rdMolDraw2D

    from kiban.chem import mol_or_none

    mol = mol_or_none(smiles)
    if mol is None:
        return ""
    drawer = rdMolDraw2D.MolDraw2DSVG(width, height)
    drawer.drawOptions().clearBackground = False
    rdMolDraw2D.PrepareAndDrawMolecule(drawer, mol)
    drawer.FinishDrawing()
    svg = drawer.GetDrawingText()
    return svg[svg.index("<svg") :]


def _table(rows: list[dict[str, Any]], columns: list[str], raw: tuple[str, ...] = ()) -> str:
    """An HTML table; cells of the ``raw`` columns are HTML already (drawings)."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>"
        + "".join(
            f"<td>{r.get(c, '') if c in raw else html.escape(_fmt(r.get(c)))}</td>" for c in columns
        )
        + "</tr>"
        for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else str(value)


def write_report(store: Store, out_dir: str | Path) -> dict[str, Any]:
    """Writes ``best_so_far.png``, ``pareto.png`` (≥ 2 objectives) and ``report.html``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = _plots(store)
    for name, data in plots.items():
        atomic_write_bytes(out_dir / name, data)
    info = status(store)
    config = store.config()
    space = config.space
    every = store.results()
    # bounded above only (a censored "<4" when maximising): never among the best (`best`)
    results = [r for r in every if not only_bounded_above(space, r)]
    util = np.stack([space.utilities(r.values) for r in results]) if results else np.zeros((0, 1))
    # the top 10 by the first objective's utility (or the Pareto set for several objectives)
    if len(space.objectives) > 1 and results:
        keep = [r for r, m in zip(results, pareto_mask(util)) if m]
    else:
        keep = [results[i] for i in np.argsort(-util[:, 0])[:10]] if results else []
    ids = experiment_ids(store)
    id_columns = list(next(iter(ids.values()), {}))
    molecules = [m.name for m in space.molecules]
    rows = []
    for r in keep:
        row: dict[str, Any] = {"proposal": r.proposal_id, **ids.get(r.proposal_id, {})}
        row.update(r.params)
        # a censored value keeps its sign: "<4" is not the number 4
        row.update(
            {k: f"{r.censored[k]}{v:.6g}" if k in r.censored else v for k, v in r.values.items()}
        )
        row.update({f"{m} (drawn)": molecule_svg(str(r.params[m])) for m in molecules})
        row["source"] = r.source
        rows.append(row)
    drawn = tuple(f"{m} (drawn)" for m in molecules)
    columns = [
        "proposal",
        *id_columns,
        *drawn,
        *space.keys,
        *[o.name for o in space.objectives],
        "source",
    ]
    bounded = [r.proposal_id for r in every if only_bounded_above(space, r)]
    pairs = prediction_pairs(store)
    scores = [{"objective": name, **prediction_scores(p)} for name, p in pairs.items()]
    prediction_png = _prediction_plot(pairs)
    if prediction_png is not None:
        plots["predicted_vs_measured.png"] = prediction_png
        atomic_write_bytes(out_dir / "predicted_vs_measured.png", prediction_png)
    failures = [
        {"proposal": f.proposal_id, "reason": f.reason, "source": f.source}
        for f in store.failures(corrected=False)  # corrected ones are no longer failures
    ]
    images = "".join(
        f'<figure><img alt="{html.escape(n)}" src="data:image/png;base64,'
        f'{base64.b64encode(d).decode()}"><figcaption>{html.escape(n)}</figcaption></figure>'
        for n, d in plots.items()
    )
    counts = {
        k: info[k] for k in ("proposed", "pending", "running", "completed", "failed", "cancelled")
    }
    page = f"""<!doctype html><html><head><meta charset="utf-8">
<title>kiban lab: {html.escape(str(info["name"]))}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}
table{{border-collapse:collapse;font-size:12px}}td,th{{border:1px solid #ccc;padding:2px 6px}}
figure{{display:inline-block;margin:0 1em 1em 0}}</style></head><body>
<h1>Campaign {html.escape(str(info["name"]))}</h1>
<p>Database <code>{html.escape(str(store.path))}</code>; config fingerprint
<code>{html.escape(str(store.meta("fingerprint")))}</code>; proposer {html.escape(config.proposer)},
batch {config.batch_size}, instrument {html.escape(str(config.instrument.get("kind")))}.</p>
<h2>Status</h2>
{_table([counts], list(counts))}
{images}
<h2>{"Pareto set" if len(space.objectives) > 1 else "Best results"}</h2>
{_table(rows, columns, drawn)}
<p>{len(bounded)} result(s) with a censored value that only bounds them from above (e.g. &lt;4
when maximising) are not candidates for the best: their true value may be worse.</p>
<h2>Predictions made when proposing, against what was measured</h2>
<p>The model's posterior mean and sd for each proposal, recorded when it was proposed, compared
with the measured value (design points, imported results, model-free proposers and censored
values have none). r2: 1 - residual / total sum of squares; spearman: rank correlation;
within_2sd: the fraction measured within two predicted standard deviations.</p>
{_table(scores, ["objective", "n", "r2", "spearman", "mae", "within_2sd"])}
<h2>Failures ({len(failures)})</h2>
{_table(failures, ["proposal", "reason", "source"])}
</body></html>"""
    atomic_write_text(out_dir / "report.html", page)
    return {"out": str(out_dir), "files": sorted([*plots, "report.html"]), **counts}
