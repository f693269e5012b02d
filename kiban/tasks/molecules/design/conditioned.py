"""Property-conditioned molecule generation by prompting, and its success rate.

A model trained on property-first documents (configs/molopt-corpus.toml)::

    QED <num>0.8969</num>, logP <num>1.681</num>, MW <num>281.3</num>, TPSA <num>87.31</num>,
    SA <num>3.813</num>: <mol>SMILES</mol>        (one line in the corpus)

is asked for molecules whose RDKit-computed properties fall in a `RangeSpec` by prompting it with
target values (`conditioning_prompt`, ending inside the ``<mol>`` span). Targets come from
`draw_targets`: ``"data"`` takes the whole property vector of a random training molecule that
satisfies the spec (a coherent joint target); ``"uniform"`` then replaces each constrained
property by a uniform draw from its range (open ends closed at the training data's 1st/99th
percentile). The baseline is the same model prompted with ``<mol>`` alone (the corpus also holds
every molecule without its properties) and filtered afterwards: rejection sampling with the same
number of samples. Properties are computed with the descriptor table the corpus builder uses
(`kiban.chem.DESCRIPTORS`), so prompt numbers and checks mean the same thing.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kiban.chem import DESCRIPTORS, mol_or_none

#: Property order and names in the conditioning prefix.
PROPERTY_LABELS = {"qed": "QED", "logp": "logP", "mw": "MW", "tpsa": "TPSA", "sa": "SA"}
_PREFIX = re.compile(
    ", ".join(rf"{label} <num>([^<]+)</num>" for label in PROPERTY_LABELS.values()) + ": <mol>"
)


@dataclass(frozen=True)
class PropertyRange:
    """``low <= property <= high``; a bound of None is open."""

    name: str
    low: float | None = None
    high: float | None = None

    def __post_init__(self) -> None:
        if self.name not in PROPERTY_LABELS:
            raise ValueError(
                f"The 'name' parameter of PropertyRange must be one of "
                f"{', '.join(PROPERTY_LABELS)}. Got {self.name!r} instead."
            )
        if self.low is None and self.high is None:
            raise ValueError(f"PropertyRange({self.name!r}) needs a low or a high bound")
        if self.low is not None and self.high is not None and self.low > self.high:
            raise ValueError(f"PropertyRange({self.name!r}): low={self.low} > high={self.high}")

    def contains(self, value: float) -> bool:
        return (self.low is None or value >= self.low) and (self.high is None or value <= self.high)

    def __str__(self) -> str:
        label = PROPERTY_LABELS[self.name]
        if self.low is None:
            return f"{label} <= {self.high:g}"
        if self.high is None:
            return f"{label} >= {self.low:g}"
        return f"{label} in [{self.low:g}, {self.high:g}]"


@dataclass(frozen=True)
class RangeSpec:
    """All of ``ranges`` at once."""

    ranges: tuple[PropertyRange, ...]

    def __post_init__(self) -> None:
        if not self.ranges:
            raise ValueError("RangeSpec needs at least one PropertyRange")

    @property
    def name(self) -> str:
        return " and ".join(map(str, self.ranges))

    def contains(self, properties: Mapping[str, float]) -> bool:
        return all(r.contains(properties[r.name]) for r in self.ranges)


#: The specifications the benchmark reports.
DEFAULT_SPECS = (
    RangeSpec((PropertyRange("qed", low=0.8),)),
    RangeSpec((PropertyRange("logp", 1.0, 2.0),)),
    RangeSpec((PropertyRange("mw", 250.0, 300.0), PropertyRange("tpsa", high=60.0))),
    RangeSpec((PropertyRange("qed", low=0.7), PropertyRange("sa", high=2.0))),
)


def compute_properties(mol: Any) -> dict[str, float]:
    """QED, logP, MW, TPSA, SA of an `rdkit.Chem.Mol`, by `kiban.chem.DESCRIPTORS` (the corpus
    builder's table)."""
    return {name: float(DESCRIPTORS[name](mol)) for name in PROPERTY_LABELS}


def smiles_properties(smiles: str) -> dict[str, float] | None:
    """`compute_properties` of a SMILES; None when RDKit cannot read it."""
    mol = mol_or_none(smiles)
    return None if mol is None else compute_properties(mol)


def in_range(smiles: str, spec: RangeSpec) -> bool | None:
    """Whether the molecule's computed properties satisfy ``spec``; None for invalid SMILES."""
    properties = smiles_properties(smiles)
    return None if properties is None else spec.contains(properties)


def _number(value: float) -> str:
    from kiban.modalities.number import Quantity

    return Quantity.from_float(value).text  # 4 significant digits, as the corpus writes them


def conditioning_prompt(targets: Mapping[str, float]) -> str:
    """``QED <num>…</num>, logP …, SA <num>…</num>: <mol>`` (the model writes the SMILES)."""
    missing = [name for name in PROPERTY_LABELS if name not in targets]
    if missing:
        raise ValueError(
            f"conditioning_prompt needs a value for every property; missing "
            f"{missing} in {dict(targets)!r}"
        )
    return (
        ", ".join(
            f"{label} <num>{_number(targets[name])}</num>"
            for name, label in PROPERTY_LABELS.items()
        )
        + ": <mol>"
    )


def parse_prefix(text: str) -> dict[str, float] | None:
    """The property values of a property-first document (None for any other text)."""
    match = _PREFIX.match(text)
    if match is None:
        return None
    return {name: float(value) for name, value in zip(PROPERTY_LABELS, match.groups())}


@dataclass(frozen=True)
class Reference:
    """Training molecules and their property values (as written in the corpus)."""

    smiles: tuple[str, ...]
    values: np.ndarray  # (N, 5) in PROPERTY_LABELS order

    @classmethod
    def from_corpus(cls, corpus_dir: str | Path) -> Reference:
        """The property-first documents of a built corpus (``documents.parquet``)."""
        import pyarrow.parquet as pq

        path = Path(corpus_dir) / "documents.parquet"
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} is missing: build the corpus first "
                "(kiban corpus build configs/molopt-corpus.toml)"
            )
        smiles, rows = [], []
        for text in pq.read_table(path, columns=["text"]).column("text").to_pylist():
            values = parse_prefix(text)
            if values is not None:
                smiles.append(text[text.index("<mol>") + 5 : text.index("</mol>")])
                rows.append([values[name] for name in PROPERTY_LABELS])
        if not rows:
            raise ValueError(f"{path}: no property-first document (QED <num>…</num>, …: <mol>)")
        return cls(tuple(smiles), np.array(rows, dtype=np.float64))

    def satisfying(self, spec: RangeSpec) -> np.ndarray:
        """Indices of the reference molecules inside ``spec``."""
        names = list(PROPERTY_LABELS)
        return np.array(
            [i for i, row in enumerate(self.values) if spec.contains(dict(zip(names, row)))],
            dtype=np.int64,
        )


def draw_targets(
    spec: RangeSpec, reference: Reference, n: int, rng: np.random.Generator, *, mode: str = "data"
) -> list[dict[str, float]]:
    """``n`` target property vectors for ``spec`` (see the module docstring for the modes)."""
    if mode not in ("data", "uniform"):
        raise ValueError(
            f"The 'mode' parameter of draw_targets must be 'data' or 'uniform'. "
            f"Got {mode!r} instead."
        )
    inside = reference.satisfying(spec)
    if len(inside) == 0:
        raise ValueError(f"no reference molecule satisfies {spec.name}")
    names = list(PROPERTY_LABELS)
    targets = [dict(zip(names, reference.values[i])) for i in rng.choice(inside, size=n)]
    if mode == "uniform":
        for r in spec.ranges:
            column = reference.values[:, names.index(r.name)]
            low = r.low if r.low is not None else float(np.percentile(column, 1))
            high = r.high if r.high is not None else float(np.percentile(column, 99))
            for target in targets:
                target[r.name] = float(rng.uniform(low, high))
    return targets


def _molecules(completions: Sequence[Any]) -> list[str | None]:
    """The canonical SMILES each completion wrote (None when invalid)."""
    out = []
    for c in completions:
        mols = [s for s in c.spans if s.modality == "mol"]
        out.append(mols[-1].canonical if c.valid and mols else None)
    return out


def score_samples(
    smiles: Sequence[str | None], spec: RangeSpec, training: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """Counts for one set of samples: valid, unique valid, hits (valid and in range), unique
    hits, hits not in ``training``, and the rates."""
    valid = [s for s in smiles if s is not None]
    hits = [s for s in valid if spec.contains(smiles_properties(s))]
    n = len(smiles)
    return {
        "samples": n,
        "valid": len(valid),
        "unique_valid": len(set(valid)),
        "hits": len(hits),
        "unique_hits": len(set(hits)),
        "novel_unique_hits": len(set(hits) - training),
        "success_rate": len(hits) / len(valid) if valid else 0.0,
        "hits_per_sample": len(hits) / n if n else 0.0,
    }


def generate_molecules(
    generator: Any,
    prompts: Sequence[str],
    *,
    temperature: float,
    seed: int,
    batch: int = 250,
    max_new_tokens: int = 80,
) -> list[str | None]:
    """One completion per prompt, in batches; canonical SMILES or None per prompt."""
    out: list[str | None] = []
    for start in range(0, len(prompts), batch):
        chunk = list(prompts[start : start + batch])
        completions = generator.generate(
            chunk, n=1, temperature=temperature, max_new_tokens=max_new_tokens, seed=seed + start
        )
        out += _molecules(completions)
    return out


def evaluate_conditioning(
    generator: Any,
    reference: Reference,
    specs: Sequence[RangeSpec] = DEFAULT_SPECS,
    *,
    n: int = 500,
    temperature: float = 1.0,
    seed: int = 0,
    modes: Sequence[str] = ("data", "uniform"),
) -> dict[str, Any]:
    """For every spec: ``n`` conditioned samples per target mode, and the same ``n`` unconditional
    samples (prompt ``<mol>``, drawn once and filtered against every spec)."""
    training = frozenset(reference.smiles)
    began = time.perf_counter()
    unconditional = generate_molecules(generator, ["<mol>"] * n, temperature=temperature, seed=seed)
    seconds_unconditional = time.perf_counter() - began
    names = list(PROPERTY_LABELS)
    results = []
    for index, spec in enumerate(specs):
        entry: dict[str, Any] = {
            "spec": spec.name,
            "training_fraction_in_range": len(reference.satisfying(spec)) / len(reference.smiles),
            "unconditional": score_samples(unconditional, spec, training),
        }
        for mode in modes:
            rng = np.random.default_rng(seed * 7919 + index)
            targets = draw_targets(spec, reference, n, rng, mode=mode)
            started = time.perf_counter()
            molecules = generate_molecules(
                generator,
                [conditioning_prompt(t) for t in targets],
                temperature=temperature,
                seed=seed + 1 + index,
            )
            scores = score_samples(molecules, spec, training)
            scores["seconds"] = time.perf_counter() - started
            # how closely the model follows the numbers it was given (valid samples only)
            errors = {name: [] for name in names}
            for target, smiles in zip(targets, molecules):
                if smiles is not None:
                    actual = smiles_properties(smiles)
                    for name in names:
                        errors[name].append(abs(actual[name] - target[name]))
            scores["mean_abs_error"] = {
                name: (float(np.mean(v)) if v else None) for name, v in errors.items()
            }
            entry[f"conditioned_{mode}"] = scores
        results.append(entry)
    return {
        "samples_per_arm": n,
        "temperature": temperature,
        "seed": seed,
        "unconditional_seconds": seconds_unconditional,
        "specs": results,
    }
