"""A REINVENT 4-like scoring function: components, transforms and their aggregation.

A component turns an `rdkit.Chem.Mol` into a raw value (QED, SA score, a Tanimoto similarity, a
count of structural alerts, Lipinski violations, a saved `kiban property` model's prediction);
a transform maps the raw value onto [0, 1] (REINVENT 4's sigmoid, reverse_sigmoid and
double_sigmoid, or the component's own default); the total is the weighted geometric mean of the
transformed scores (REINVENT's default) or their weighted arithmetic mean. Component kinds live in
`COMPONENTS`, a registry keyed by the TOML ``type``; each kind declares its parameters, so a
misspelt key is an error that names the closest one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from rdkit import Chem

from kiban import chem
from kiban.errors import InputError, did_you_mean


# --- transforms (REINVENT 4's formulas) --------------------------------------------------------
def _power10_ratio(exponent: float) -> float:
    """1 / (1 + 10**exponent) without overflowing for large exponents."""
    if exponent > 300:
        return 0.0
    return 1.0 / (1.0 + 10.0**exponent)


def sigmoid(value: float, *, low: float, high: float, k: float) -> float:
    """REINVENT 4's ``sigmoid``: rises from 0 below ``low`` to 1 above ``high``; 0.5 at their
    midpoint; ``k`` sets the steepness."""
    return _power10_ratio(10 * k * (value - (low + high) / 2) / (low - high))


def reverse_sigmoid(value: float, *, low: float, high: float, k: float) -> float:
    """REINVENT 4's ``reverse_sigmoid``: 1 below ``low``, falling to 0 above ``high``."""
    return _power10_ratio(10 * k * (value - (low + high) / 2) / (high - low))


def double_sigmoid(
    value: float,
    *,
    low: float,
    high: float,
    coef_div: float = 100.0,
    coef_si: float = 150.0,
    coef_se: float = 150.0,
) -> float:
    """REINVENT 4's ``double_sigmoid``: ~1 inside [``low``, ``high``], 0 outside.
    ``A/B - C`` of REINVENT written as two logistic terms (same value, no overflow)."""
    rising = _power10_ratio(coef_se * (low - value) / coef_div)
    falling = _power10_ratio(coef_si * (high - value) / coef_div)
    return rising - falling


@dataclass(frozen=True, kw_only=True)
class Transform:
    """``type`` one of `TRANSFORMS`; ``low``/``high``/``k`` as in REINVENT 4 (``coef_*`` for
    double_sigmoid)."""

    type: str = "none"
    low: float | None = None
    high: float | None = None
    k: float = 0.5
    coef_div: float = 100.0
    coef_si: float = 150.0
    coef_se: float = 150.0

    def __post_init__(self) -> None:
        if self.type not in TRANSFORMS:
            raise InputError(
                f"transform type {self.type!r}{did_you_mean(self.type, TRANSFORMS)}; "
                f"expected one of {', '.join(TRANSFORMS)}"
            )
        if self.type != "none":
            if self.low is None or self.high is None:
                raise InputError(
                    f"transform {self.type!r} needs low and high; got low={self.low}, "
                    f"high={self.high}"
                )
            if not self.low < self.high:
                raise InputError(
                    f"transform {self.type!r} needs low < high; got low={self.low}, "
                    f"high={self.high}"
                )

    def __call__(self, value: float) -> float:
        if self.type == "none":
            return min(1.0, max(0.0, value))
        if self.type == "double_sigmoid":
            return double_sigmoid(
                value,
                low=self.low,
                high=self.high,
                coef_div=self.coef_div,
                coef_si=self.coef_si,
                coef_se=self.coef_se,
            )
        return TRANSFORMS[self.type](value, low=self.low, high=self.high, k=self.k)


TRANSFORMS: dict[str, Callable[..., float] | None] = {
    "none": None,  # the raw value clipped to [0, 1]
    "sigmoid": sigmoid,
    "reverse_sigmoid": reverse_sigmoid,
    "double_sigmoid": double_sigmoid,
}


# --- components --------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class ComponentKind:
    """One ``type`` of scoring component. ``build(params, where)`` returns the raw-value
    function of a molecule; ``default`` maps the raw value onto [0, 1] when the component has
    no ``transform``; ``params`` are its TOML keys (``required`` among them)."""

    name: str
    description: str
    build: Callable[[Mapping[str, Any], str], Callable[[Chem.Mol], float]]
    default: Callable[[float], float]
    params: tuple[str, ...] = ()
    required: tuple[str, ...] = ()


def _qed(params: Mapping[str, Any], where: str) -> Callable[[Chem.Mol], float]:
    return chem.qed


def _sa(params: Mapping[str, Any], where: str) -> Callable[[Chem.Mol], float]:
    return chem.sa_score


def _similarity(params: Mapping[str, Any], where: str) -> Callable[[Chem.Mol], float]:
    from rdkit import DataStructs

    smiles = params["smiles"]
    radius, n_bits = int(params.get("radius", 2)), int(params.get("n_bits", 2048))
    try:
        target = chem.parse_smiles(str(smiles))
    except chem.SmilesError as error:
        raise InputError(
            f"{where}.smiles = {smiles!r} is not a valid SMILES ({error.reason})"
        ) from None
    reference = chem.morgan_fingerprint(target, radius=radius, n_bits=n_bits)

    def similarity(mol: Chem.Mol) -> float:
        fingerprint = chem.morgan_fingerprint(mol, radius=radius, n_bits=n_bits)
        return DataStructs.TanimotoSimilarity(reference, fingerprint)

    return similarity


@cache
def _filter_catalog(name: str):
    from rdkit.Chem.FilterCatalog import FilterCatalog, FilterCatalogParams

    params = FilterCatalogParams()
    params.AddCatalog(getattr(FilterCatalogParams.FilterCatalogs, name))
    return FilterCatalog(params)


def _catalog_names() -> list[str]:
    from rdkit.Chem.FilterCatalog import FilterCatalogParams

    return [n for n in FilterCatalogParams.FilterCatalogs.names if n != "ALL"]


def _alerts(params: Mapping[str, Any], where: str) -> Callable[[Chem.Mol], float]:
    names = params.get("catalogs", ["PAINS", "BRENK"])
    if isinstance(names, str) or not isinstance(names, list):
        raise InputError(f"{where}.catalogs must be a list of names; got {names!r}")
    known = _catalog_names()
    catalogs = []
    for name in names:
        upper = str(name).upper()
        if upper not in known:
            raise InputError(
                f"{where}.catalogs: unknown RDKit filter catalog {name!r}"
                f"{did_you_mean(upper, known)}; known: {', '.join(known)}"
            )
        catalogs.append(_filter_catalog(upper))

    def count(mol: Chem.Mol) -> float:
        return float(sum(len(catalog.GetMatches(mol)) for catalog in catalogs))

    return count


def _custom_alerts(params: Mapping[str, Any], where: str) -> Callable[[Chem.Mol], float]:
    smarts = params["smarts"]
    if isinstance(smarts, str) or not isinstance(smarts, list) or not smarts:
        raise InputError(f"{where}.smarts must be a non-empty list of SMARTS; got {smarts!r}")
    patterns = []
    for i, text in enumerate(smarts):
        pattern = Chem.MolFromSmarts(str(text))
        if pattern is None:
            raise InputError(f"{where}.smarts[{i}] = {text!r} is not a valid SMARTS")
        patterns.append(pattern)

    def count(mol: Chem.Mol) -> float:
        return float(sum(mol.HasSubstructMatch(p) for p in patterns))

    return count


def lipinski_violations(mol: Chem.Mol) -> int:
    """Rule-of-five violations: MW > 500, logP > 5, H-bond donors > 5, acceptors > 10 (RDKit's
    Descriptors.MolWt, Crippen.MolLogP, Lipinski.NumHDonors, Lipinski.NumHAcceptors)."""
    from rdkit.Chem import Crippen, Descriptors, Lipinski

    return (
        int(Descriptors.MolWt(mol) > 500)
        + int(Crippen.MolLogP(mol) > 5)
        + int(Lipinski.NumHDonors(mol) > 5)
        + int(Lipinski.NumHAcceptors(mol) > 10)
    )


def _lipinski(params: Mapping[str, Any], where: str) -> Callable[[Chem.Mol], float]:
    return lambda mol: float(lipinski_violations(mol))


def _property(params: Mapping[str, Any], where: str) -> Callable[[Chem.Mol], float]:
    from kiban.tasks.molecules.properties.saved_models import PropertyModel

    model = PropertyModel(params["path"])

    def predict(mol: Chem.Mol) -> float:
        values, unpredicted = model.predict([mol])
        if unpredicted:  # an LM that wrote no number: the molecule gets the worst raw value
            return float("nan")
        return float(values[0])

    return predict


def _no_alert(count: float) -> float:
    return 1.0 if count == 0 else 0.0


COMPONENTS: dict[str, ComponentKind] = {
    kind.name: kind
    for kind in (
        ComponentKind(
            name="qed",
            description="RDKit QED, already in [0, 1]",
            build=_qed,
            default=lambda value: value,
        ),
        ComponentKind(
            name="sa",
            description="synthetic accessibility (RDKit Contrib SA_Score), 1 easy to 10 hard; "
            "default score (10 - SA) / 9",
            build=_sa,
            default=lambda value: (10.0 - value) / 9.0,
        ),
        ComponentKind(
            name="similarity",
            description="Tanimoto similarity of Morgan fingerprints to `smiles`",
            build=_similarity,
            default=lambda value: value,
            params=("smiles", "radius", "n_bits"),
            required=("smiles",),
        ),
        ComponentKind(
            name="alerts",
            description="number of RDKit FilterCatalog matches (`catalogs`, default PAINS and "
            "BRENK); default score 1 with none, 0 with any (a filter under the geometric mean)",
            build=_alerts,
            default=_no_alert,
            params=("catalogs",),
        ),
        ComponentKind(
            name="custom_alerts",
            description="number of the `smarts` patterns matched; default score 1 with none, "
            "0 with any",
            build=_custom_alerts,
            default=_no_alert,
            params=("smarts",),
            required=("smarts",),
        ),
        ComponentKind(
            name="lipinski",
            description="rule-of-five violations (0-4); default score 1 - violations / 4",
            build=_lipinski,
            default=lambda value: 1.0 - value / 4.0,
        ),
        ComponentKind(
            name="property",
            description="the prediction of a saved `kiban property` model directory (`path`); "
            "a regression model needs a transform",
            build=_property,
            default=lambda value: value,
            params=("path",),
            required=("path",),
        ),
    )
}


@dataclass(frozen=True, kw_only=True)
class ComponentConfig:
    """One ``[[scoring.component]]`` entry."""

    type: str
    name: str = ""
    weight: float = 1.0
    transform: Transform | None = None
    params: Mapping[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.name or self.type


@dataclass(frozen=True, kw_only=True)
class ScoringConfig:
    """``[scoring]``: the components and how they are combined."""

    aggregation: str = "geometric"
    components: tuple[ComponentConfig, ...] = ()


AGGREGATIONS = ("geometric", "arithmetic")


@dataclass(frozen=True)
class ComponentScore:
    raw: float
    score: float


class ScoringFunction:
    """Callable on an `rdkit.Chem.Mol` → total score in [0, 1]; every call's per-component
    (raw, transformed) values are appended to ``details`` (in call order, so ``details[i]``
    belongs to the oracle's ``history[i]``)."""

    def __init__(self, config: ScoringConfig, *, where: str = "scoring"):
        if config.aggregation not in AGGREGATIONS:
            raise InputError(
                f"{where}.aggregation = {config.aggregation!r}"
                f"{did_you_mean(config.aggregation, AGGREGATIONS)}; expected one of "
                f"{', '.join(AGGREGATIONS)}"
            )
        if not config.components:
            raise InputError(f"{where}: no [[scoring.component]]; give at least one")
        self.config = config
        self.labels = [c.label for c in config.components]
        self.functions = []
        for i, component in enumerate(config.components):
            self.functions.append(
                COMPONENTS[component.type].build(component.params, f"{where}.component[{i}]")
            )
        self.details: list[dict[str, ComponentScore]] = []

    def score_components(self, mol: Chem.Mol) -> dict[str, ComponentScore]:
        out = {}
        for component, function in zip(self.config.components, self.functions):
            raw = float(function(mol))
            transform = component.transform or COMPONENTS[component.type].default
            score = 0.0 if math.isnan(raw) else min(1.0, max(0.0, float(transform(raw))))
            out[component.label] = ComponentScore(raw=raw, score=score)
        return out

    def total(self, scores: Sequence[float]) -> float:
        return aggregate(
            scores, [c.weight for c in self.config.components], self.config.aggregation
        )

    def __call__(self, mol: Chem.Mol) -> float:
        parts = self.score_components(mol)
        self.details.append(parts)
        return self.total([p.score for p in parts.values()])


def aggregate(scores: Sequence[float], weights: Sequence[float], how: str) -> float:
    """Weighted geometric mean ``prod(s_i ** w_i) ** (1 / sum w)`` (REINVENT 4's default; one
    zero score zeroes the total) or weighted arithmetic mean ``sum(w_i s_i) / sum w``."""
    total_weight = sum(weights)
    if how == "arithmetic":
        return sum(w * s for w, s in zip(weights, scores)) / total_weight
    if any(s <= 0 for s, w in zip(scores, weights) if w > 0):
        return 0.0
    return math.exp(sum(w * math.log(s) for s, w in zip(scores, weights) if w > 0) / total_weight)
