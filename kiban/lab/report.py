"""``kiban lab report``: best-so-far curves and the Pareto front, as PNG files and one HTML page.

Every number on the page is read from the campaign database at the time of the report.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

import numpy as np

from kiban.io import atomic_write_bytes, atomic_write_text
from kiban.lab.campaign import best_so_far, pareto_mask, status
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


def _table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(r.get(c)))}</td>" for c in columns) + "</tr>"
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
    results = store.results()
    util = np.stack([space.utilities(r.values) for r in results]) if results else np.zeros((0, 1))
    # the top 10 by the first objective's utility (or the Pareto set for several objectives)
    if len(space.objectives) > 1 and results:
        keep = [r for r, m in zip(results, pareto_mask(util)) if m]
    else:
        keep = [results[i] for i in np.argsort(-util[:, 0])[:10]] if results else []
    rows = [{"proposal": r.proposal_id, **r.params, **r.values, "source": r.source} for r in keep]
    columns = ["proposal", *space.keys, *[o.name for o in space.objectives], "source"]
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
{_table(rows, columns)}
<h2>Failures ({len(failures)})</h2>
{_table(failures, ["proposal", "reason", "source"])}
</body></html>"""
    atomic_write_text(out_dir / "report.html", page)
    return {"out": str(out_dir), "files": sorted([*plots, "report.html"]), **counts}
