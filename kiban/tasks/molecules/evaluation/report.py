"""A self-contained HTML report of a molecule generator trained on a kiban corpus.

Everything in it is computed when it is written: the model's loss curve (from its run's
``metrics.jsonl``), molecules sampled now, their validity / uniqueness / novelty / internal
diversity, the distributions of RDKit-computed properties against the training molecules
(Wasserstein distances), molecule images (RDKit SVG), and, for a few generated molecules, the
training documents they trace back to: maximal verbatim token spans from the corpus index, and
the most similar training molecule by Tanimoto similarity (Morgan radius 2, 2048 bits).
"""

from __future__ import annotations

import html
import io
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kiban import chem
from kiban.io import atomic_write_text

PROPERTIES = {
    "qed": "QED",
    "logp": "logP",
    "mw": "molecular weight",
    "tpsa": "TPSA",
    "sa": "SA score",
}
_MOL_SPAN = re.compile(r"<mol>(.*?)</mol>")


@dataclass
class TrainingMolecules:
    smiles: list[str]
    documents: list[str]  # the id of the first document holding each molecule
    words: np.ndarray  # packed Morgan fingerprints (n, 32) uint64
    counts: np.ndarray

    @property
    def canonical_set(self) -> set[str]:
        return set(self.smiles)


@dataclass
class Report:
    values: dict[str, Any] = field(default_factory=dict)
    sections: list[str] = field(default_factory=list)


def morgan_bits(molecules: list) -> np.ndarray:
    """(n, 2048) uint8 Morgan radius-2 bits."""
    return chem.morgan_fingerprints(molecules, radius=2, n_bits=2048)


def training_molecules(corpus_dir: str | Path) -> TrainingMolecules:
    """Every distinct molecule of the corpus (its spans are canonical already) with the first
    document that holds it."""
    from kiban.corpus.store import Corpus
    from kiban.tasks.molecules.evaluation._tanimoto import pack_fingerprints

    table = Corpus(corpus_dir).documents_table(["id", "text", "n_mol"])
    seen: dict[str, str] = {}
    for doc_id, text, n_mol in zip(
        table.column("id").to_pylist(),
        table.column("text").to_pylist(),
        table.column("n_mol").to_pylist(),
    ):
        if n_mol:
            for smiles in _MOL_SPAN.findall(text):
                seen.setdefault(smiles, doc_id)
    smiles = list(seen)
    molecules = [chem.mol_or_none(s) for s in smiles]
    keep = [i for i, m in enumerate(molecules) if m is not None]
    words, counts = pack_fingerprints(morgan_bits([molecules[i] for i in keep]))
    return TrainingMolecules(
        [smiles[i] for i in keep], [seen[smiles[i]] for i in keep], words, counts
    )


def nearest(
    words: np.ndarray,
    counts: np.ndarray,
    reference: TrainingMolecules,
) -> tuple[np.ndarray, np.ndarray]:
    """(index, similarity) of the most similar training molecule for each query (NumPy
    popcounts over all pairs, one query row at a time)."""
    index = np.empty(len(words), dtype=np.int64)
    similarity = np.empty(len(words))
    for i in range(len(words)):
        common = np.bitwise_count(words[i][None, :] & reference.words).sum(axis=1)
        union = counts[i] + reference.counts - common
        scores = np.where(union > 0, common / np.maximum(union, 1), 1.0)
        index[i] = int(scores.argmax())
        similarity[i] = scores[index[i]]
    return index, similarity


def properties(molecules: list) -> dict[str, np.ndarray]:
    return {
        name: np.array([chem.DESCRIPTORS[name](m) for m in molecules], dtype=np.float64)
        for name in PROPERTIES
    }


def _svg(figure) -> str:
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(figure)
    text = buffer.getvalue()
    return text[text.index("<svg") :]


def loss_plot(metrics_path: Path) -> str | None:
    if not metrics_path.is_file():
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in metrics_path.read_text().splitlines() if line]
    figure, axis = plt.subplots(figsize=(6, 3))
    train = [(r["step"], r["loss"]) for r in records if "loss" in r]
    valid = [(r["step"], r["val_loss"]) for r in records if "val_loss" in r]
    if train:
        axis.plot(*zip(*train), label="training loss")
    if valid:
        axis.plot(*zip(*valid), "o-", label="validation loss")
    axis.set_xlabel("step")
    axis.set_ylabel("cross-entropy (nats/token)")
    axis.legend()
    return _svg(figure)


def property_plots(generated: dict[str, np.ndarray], training: dict[str, np.ndarray]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(PROPERTIES), figsize=(3 * len(PROPERTIES), 2.6))
    for axis, (name, label) in zip(axes, PROPERTIES.items()):
        both = np.concatenate([generated[name], training[name]])
        bins = np.linspace(np.percentile(both, 0.5), np.percentile(both, 99.5), 30)
        axis.hist(training[name], bins=bins, density=True, alpha=0.5, label="training")
        axis.hist(generated[name], bins=bins, density=True, alpha=0.5, label="generated")
        axis.set_title(label)
        axis.set_yticks([])
    axes[0].legend(fontsize=8)
    return _svg(figure)


def similarity_plot(similarity: np.ndarray) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5, 2.6))
    axis.hist(similarity, bins=np.linspace(0, 1, 41))
    axis.set_xlabel("Tanimoto similarity to the nearest training molecule")
    axis.set_ylabel("generated molecules")
    return _svg(figure)


def molecule_svg(mol, size: int = 220) -> str:
    from rdkit.Chem.Draw import rdMolDraw2D

    drawer = rdMolDraw2D.MolDraw2DSVG(size, size)
    drawer.DrawMolecule(mol)
    drawer.FinishDrawing()
    text = drawer.GetDrawingText()
    return text[text.index("<svg") :]


def _table(rows: list[tuple[str, str]]) -> str:
    return (
        "<table>"
        + "".join(f"<tr><th>{html.escape(k)}</th><td>{v}</td></tr>" for k, v in rows)
        + "</table>"
    )


def _fmt(value: float | None, digits: int = 3) -> str:
    return "not computable" if value is None else f"{value:.{digits}f}"


def training_corpus_check(model_dir: str | Path, corpus_dir: str | Path) -> dict[str, Any]:
    """Whether ``corpus_dir`` is the corpus the model in ``model_dir`` was trained on, by the
    sha256 of its documents table, which ``kiban train`` records in ``kiban_run.json``.
    ``status``: "match", "mismatch", or "unknown" (no record: an older run, a fine-tuned or a
    Hugging Face model); ``message`` says it in one line."""
    from kiban.corpus.store import documents_sha256

    model_dir, corpus_dir = Path(model_dir), Path(corpus_dir)
    actual = documents_sha256(corpus_dir)
    record: dict[str, Any] = {}
    path = model_dir / "kiban_run.json"
    if path.is_file():
        from kiban.formats import read_json
        from kiban.train.loop import SUMMARY

        record = read_json(path, SUMMARY)
    recorded = record.get("corpus_sha256")
    check = {"corpus_sha256": actual, "recorded_sha256": recorded}
    if recorded is None:
        return {
            **check,
            "status": "unknown",
            "message": f"{model_dir} does not record the corpus it was trained on (a run from "
            f"before kiban recorded it, a fine-tuned or a Hugging Face model): cannot check "
            f"that {corpus_dir} is it",
        }
    if recorded == actual:
        return {**check, "status": "match", "message": f"{corpus_dir} is the training corpus"}
    return {
        **check,
        "status": "mismatch",
        "message": f"{corpus_dir} (documents sha256 {actual[:16]}…) is not the corpus "
        f"{model_dir} was trained on ({record.get('corpus')}, sha256 {recorded[:16]}…): "
        f"novelty, nearest neighbours and property distributions are measured against "
        f"another corpus",
    }


class CorpusMismatch(ValueError):
    """``report molecules --strict`` on a corpus the model was not trained on (exit 2)."""


def molecule_report(
    model_dir: str | Path,
    corpus_dir: str | Path,
    out: str | Path,
    *,
    n: int = 1000,
    prompt: str = "<mol>",
    title: str | None = None,
    strict: bool = False,
    temperature: float = 1.0,
    seed: int = 0,
    max_new_tokens: int = 96,
    batch_size: int = 250,
    traced: int = 5,
    grid: int = 12,
) -> dict[str, Any]:
    """Sample ``n`` molecules from the model, evaluate them against the corpus's molecules and
    write ``out`` (HTML) plus ``out`` with suffix ``.json`` (the numbers). Returns the numbers."""
    from rdkit import rdBase

    from kiban.generate import load_generator
    from kiban.index.search import CorpusSearch
    from kiban.tasks.molecules.evaluation._tanimoto import (
        mean_similarity,
        pack_fingerprints,
    )
    from kiban.tasks.molecules.evaluation.moses import wasserstein_1d

    model_dir, corpus_dir, out = Path(model_dir), Path(corpus_dir), Path(out)
    corpus_check = training_corpus_check(model_dir, corpus_dir)
    if strict and corpus_check["status"] != "match":
        raise CorpusMismatch(corpus_check["message"] + "; drop --strict to write the report anyway")
    title = title or f"molecules from {model_dir} (corpus {corpus_dir.name})"
    quiet = rdBase.BlockLogs()  # invalid samples are counted, not printed  # noqa: F841
    timings: dict[str, float] = {}
    started = time.perf_counter()
    generator = load_generator(model_dir)
    completions = []
    for first in range(0, n, batch_size):
        completions += generator.generate(
            prompt,
            n=min(batch_size, n - first),
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            seed=seed + first,
        )
    timings["generate_s"] = time.perf_counter() - started
    texts = [c.spans[0].text if c.spans else "" for c in completions]
    canonical = [
        c.spans[0].canonical if c.spans and c.spans[0].canonical else None for c in completions
    ]
    valid = [s for s in canonical if s is not None]
    unique = list(dict.fromkeys(valid))

    started = time.perf_counter()
    reference = training_molecules(corpus_dir)
    timings["training_set_s"] = time.perf_counter() - started
    values: dict[str, Any] = {
        "samples": n,
        "valid": len(valid) / n if n else None,
        "unique": len(unique) / len(valid) if valid else None,
        "novel": len(set(unique) - reference.canonical_set) / len(unique) if unique else None,
        "training_molecules": len(reference.smiles),
        "prompt": prompt,
        "title": title,
        "training_corpus": corpus_check,
        "temperature": temperature,
        "seed": seed,
        "generated_tokens": sum(c.completion_tokens for c in completions),
        "stop_reasons": {
            r: sum(c.stop_reason == r for c in completions)
            for r in sorted({c.stop_reason for c in completions})
        },
    }
    sections: list[str] = []
    run = model_dir.parent
    summary_path = run / "summary.json"
    run_rows = [("model", html.escape(str(model_dir)))]
    if summary_path.is_file():
        summary = json.loads(summary_path.read_text())
        values["model"] = {
            k: summary.get(k) for k in ("steps", "loss", "val_loss", "parameters", "tokens_per_s")
        }
        run_rows += [
            ("parameters", f"{summary['parameters']['total']:,}"),
            ("optimizer steps", str(summary.get("steps"))),
            ("final training loss", _fmt(summary.get("loss"))),
            ("final validation loss", _fmt(summary.get("val_loss"))),
            ("throughput", f"{summary.get('tokens_per_s', 0):,.0f} tokens/s"),
        ]
    plot = loss_plot(run / "metrics.jsonl")
    sections.append("<h2>Model</h2>" + _table(run_rows) + (plot or ""))

    mols = [chem.mol_or_none(s) for s in unique]
    pairs = [(s, m) for s, m in zip(unique, mols) if m is not None]
    if pairs:
        started = time.perf_counter()
        words, counts = pack_fingerprints(morgan_bits([m for _, m in pairs]))
        neighbour, similarity = nearest(words, counts, reference)
        row_mean, _ = mean_similarity(morgan_bits([m for _, m in pairs]))
        values["internal_diversity"] = float(1 - row_mean.mean())
        values["nearest_training_similarity_mean"] = float(similarity.mean())
        rng = np.random.default_rng(seed)
        sample = rng.choice(
            len(reference.smiles), size=min(3000, len(reference.smiles)), replace=False
        )
        values["property_reference_molecules"] = len(sample)
        train_props = properties([chem.mol_or_none(reference.smiles[i]) for i in sample])
        gen_props = properties([m for _, m in pairs])
        values["wasserstein"] = {
            k: wasserstein_1d(train_props[k], gen_props[k]) for k in PROPERTIES
        }
        values["property_means"] = {
            k: {"generated": float(gen_props[k].mean()), "training": float(train_props[k].mean())}
            for k in PROPERTIES
        }
        timings["evaluate_s"] = time.perf_counter() - started
    metric_rows = [
        (
            "samples",
            f"{n:,} (prompt <code>{html.escape(prompt)}</code>, temperature {temperature}, "
            f"seed {seed}, modality constraints on)",
        ),
        ("valid (RDKit parses the span)", _fmt(values["valid"])),
        ("unique (of valid)", _fmt(values["unique"])),
        ("novel (unique valid not in the corpus)", _fmt(values["novel"])),
        ("internal diversity (1 − mean Tanimoto)", _fmt(values.get("internal_diversity"))),
        (
            "mean Tanimoto to nearest training molecule",
            _fmt(values.get("nearest_training_similarity_mean")),
        ),
    ]
    for k, label in PROPERTIES.items():
        if "wasserstein" in values:
            metric_rows.append(
                (
                    f"Wasserstein distance, {label}",
                    f"{values['wasserstein'][k]:.3f} (means: generated "
                    f"{values['property_means'][k]['generated']:.2f}, training "
                    f"{values['property_means'][k]['training']:.2f})",
                )
            )
    sections.append("<h2>Generated molecules</h2>" + _table(metric_rows))
    if pairs:
        sections.append(
            f"<h3>Property distributions (RDKit), generated vs {len(sample):,} training "
            f"molecules{' (a random sample)' if len(sample) < len(reference.smiles) else ''}"
            "</h3>" + property_plots(gen_props, train_props)
        )
        sections.append(
            "<h3>Nearest-neighbour similarity to the training set</h3>"
            + similarity_plot(similarity)
        )
        cells = []
        for (smiles, mol), sim, qed in list(zip(pairs, similarity, gen_props["qed"]))[:grid]:
            cells.append(
                f"<figure>{molecule_svg(mol)}<figcaption><code>{html.escape(smiles)}"
                f"</code><br>QED {qed:.2f} · nearest training "
                f"{sim:.2f}</figcaption></figure>"
            )
        sections.append("<h3>Examples</h3><div class=grid>" + "".join(cells) + "</div>")

        started = time.perf_counter()
        search = CorpusSearch(corpus_dir)
        traces = []
        blocks = []
        for (smiles, mol), sim, j in list(zip(pairs, similarity, neighbour))[:traced]:
            spans = search.trace(f"<mol>{smiles}</mol>", max_spans=3, documents_per_span=2)
            entry = {
                "smiles": smiles,
                "nearest_training": reference.smiles[j],
                "nearest_similarity": float(sim),
                "nearest_document": reference.documents[j],
                "spans": [s.to_dict() for s in spans],
            }
            traces.append(entry)
            span_rows = "".join(
                f"<li><code>{html.escape(s.text)}</code> — {s.count:,} occurrences; e.g. "
                + ", ".join(
                    f"<code>{html.escape(d.id)}</code> ({html.escape(d.source or '')})"
                    for d in s.documents
                )
                + "</li>"
                for s in spans
            )
            blocks.append(
                f"<div class=trace><div>{molecule_svg(mol, 180)}</div><div><p><b>generated</b> "
                f"<code>{html.escape(smiles)}</code></p><p>longest verbatim spans in the "
                f"training tokens:</p><ul>{span_rows}</ul><p>most similar training molecule "
                f"(Tanimoto {sim:.2f}): <code>{html.escape(reference.smiles[j])}</code> in "
                f"document <code>{html.escape(reference.documents[j])}</code></p></div>"
                f"{molecule_svg(chem.parse_smiles(reference.smiles[j]), 180)}</div>"
            )
        values["traces"] = traces
        timings["trace_s"] = time.perf_counter() - started
        sections.append(
            "<h2>Where they come from</h2><p>Each generated molecule traced back to "
            "the corpus the model was trained on: maximal token spans found verbatim "
            "in the training shards (exact suffix-array search) and the nearest "
            "training molecule by fingerprint similarity.</p>" + "".join(blocks)
        )
    invalid = [t for t, c in zip(texts, canonical) if c is None][:10]
    if invalid:
        sections.append(
            "<h3>Invalid samples (first 10)</h3><ul>"
            + "".join(f"<li><code>{html.escape(t) or '(empty)'}</code></li>" for t in invalid)
            + "</ul>"
        )
    values["timings"] = timings
    values["generated"] = texts
    page = _page(sections, corpus_dir, title=title, corpus_check=corpus_check)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, page)
    atomic_write_text(out.with_suffix(".json"), json.dumps(values, indent=1))
    return values


def _page(
    sections: list[str], corpus_dir: Path, *, title: str, corpus_check: dict[str, Any]
) -> str:
    from kiban.corpus.store import Corpus

    info = Corpus(corpus_dir).info()
    corpus_rows = _table(
        [
            ("corpus", html.escape(str(corpus_dir))),
            ("documents", f"{info['documents']:,}"),
            ("tokens", f"{info['tokens']:,}"),
            ("sources", ", ".join(f"{html.escape(k)} ({v:,})" for k, v in info["sources"].items())),
            ("spans", ", ".join(f"{k} {v:,}" for k, v in info["modalities"].items() if v)),
            ("exact duplicates removed", f"{info['exact_duplicates']:,}"),
            (
                "documents sha256",
                f"{corpus_check['corpus_sha256'][:16]}… ({corpus_check['status']}: "
                f"{html.escape(corpus_check['message'])})",
            ),
        ]
    )
    banner = (
        f"<p class=warning><b>Warning:</b> {html.escape(corpus_check['message'])}.</p>"
        if corpus_check["status"] == "mismatch"
        else ""
    )
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:.5em 0}th,td{border:1px solid #ccc;"
        "padding:3px 8px;text-align:left}th{background:#f4f4f4;font-weight:normal}"
        ".grid{display:flex;flex-wrap:wrap;gap:8px}figure{margin:0;width:220px;"
        "font-size:11px;word-break:break-all}.trace{display:flex;gap:12px;"
        "border-top:1px solid #ddd;padding:8px 0;font-size:13px}code{font-size:12px}"
        ".warning{background:#fff3cd;border:1px solid #e0b000;padding:8px}"
    )
    return (
        f"<!doctype html><html><head><meta charset=utf-8><title>{html.escape(title)}</title>"
        f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>{banner}"
        f"<p>Every number on this page was computed by this run "
        f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}).</p>"
        f"<h2>Corpus</h2>{corpus_rows}" + "".join(sections) + "</body></html>\n"
    )
