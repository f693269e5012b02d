"""Goal-directed molecule optimisation on RDKit-only oracles, at a fixed oracle budget.

Oracles (`qed_oracle`, `similarity_oracle`, `mpo_oracle`) score an `rdkit.Chem.Mol` in [0, 1]. An
`Oracle` wraps one: it counts calls, caches by canonical SMILES (a repeat costs nothing, as in
PMO, Gao et al. 2022) and stops at its budget. Two optimisers share it:

* `optimize_with_model` ("model in the loop", REINVENT-lite / GuacaMol's SMILES hill-climbing):
  sample a batch from a kiban model with the prompt ``<mol>``, score it, fine-tune the model for
  a few steps on the best molecules found so far, repeat until the budget is spent.
* `graph_ga` (after Jensen 2019, *Chem. Sci.* 10, 3567, GB-GA): a population of molecules;
  children by ring or non-ring crossover of two score-weighted parents, then (with some
  probability) one graph mutation written as an RDKit reaction SMARTS; the best of parents and
  children survive.

The metric is PMO's top-10 AUC (`top_k_auc`): the area under the mean-of-the-10-best vs
oracle-calls curve, sampled every ``every`` calls, held flat to the budget, divided by it.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import numpy as np
from rdkit import Chem, rdBase
from rdkit.Chem import AllChem, DataStructs

from kiban import chem
from kiban.errors import did_you_mean

#: GuacaMol's similarity targets.
CELECOXIB = "Cc1ccc(-c2cc(C(F)(F)F)nn2-c2ccc(S(N)(=O)=O)cc2)cc1"
ARIPIPRAZOLE = "O=C1CCc2ccc(OCCCCN3CCN(c4cccc(Cl)c4Cl)CC3)cc2N1"


class BudgetExhausted(RuntimeError):
    """The oracle has answered its last paid call."""


# --- oracles ----------------------------------------------------------------------------------
def qed_oracle(mol: Chem.Mol) -> float:
    return chem.qed(mol)


def morgan_fingerprint(mol: Chem.Mol):
    """Morgan radius 2 (ECFP4-like), 2048 bits."""
    return chem.morgan_fingerprint(mol, radius=2, n_bits=2048)


def similarity_oracle(target_smiles: str) -> Callable[[Chem.Mol], float]:
    """Tanimoto similarity of Morgan r2 2048-bit fingerprints to ``target_smiles``."""
    try:
        target = chem.parse_smiles(target_smiles)
    except chem.SmilesError as error:
        raise ValueError(
            f"The 'target_smiles' parameter of similarity_oracle must be a valid "
            f"SMILES. Got {target_smiles!r} instead ({error.reason})."
        ) from None
    target_fingerprint = morgan_fingerprint(target)

    def similarity(mol: Chem.Mol) -> float:
        return DataStructs.TanimotoSimilarity(target_fingerprint, morgan_fingerprint(mol))

    return similarity


def window_desirability(value: float, low: float, high: float, width: float) -> float:
    """1 inside [low, high], falling as a Gaussian of standard deviation ``width`` outside."""
    distance = max(low - value, 0.0, value - high)
    return math.exp(-0.5 * (distance / width) ** 2)


def mpo_oracle(mol: Chem.Mol) -> float:
    """Geometric mean of three desirabilities (GuacaMol/PMO MPO style): QED itself, logP in
    [2, 3] (Gaussian fall-off, sd 0.5) and TPSA in [40, 80] Å² (sd 10)."""
    parts = (
        qed_oracle(mol),
        window_desirability(chem.logp(mol), 2.0, 3.0, 0.5),
        window_desirability(chem.tpsa(mol), 40.0, 80.0, 10.0),
    )
    return float(np.prod(parts) ** (1.0 / len(parts)))


def heavy_atoms_oracle(mol: Chem.Mol) -> float:
    """A trivial objective for tests: the number of heavy atoms / 100."""
    return mol.GetNumHeavyAtoms() / 100.0


ORACLES: dict[str, Callable[[], Callable[[Chem.Mol], float]]] = {
    "qed": lambda: qed_oracle,
    "celecoxib": lambda: similarity_oracle(CELECOXIB),
    "aripiprazole": lambda: similarity_oracle(ARIPIPRAZOLE),
    "mpo": lambda: mpo_oracle,
}


def get_oracle(name: str, budget: int) -> Oracle:
    if name not in ORACLES:
        raise ValueError(
            f"unknown oracle {name!r}{did_you_mean(name, ORACLES)}; known: {', '.join(ORACLES)}"
        )
    return Oracle(ORACLES[name](), budget=budget, name=name)


@dataclass
class Oracle:
    """A scoring function with a call budget, a cache by canonical SMILES and a call history.

    ``history`` holds ``(canonical_smiles, score)`` in call order: one entry per paid call.
    Invalid SMILES (`kiban.chem.canonical_or_none` is None: unreadable, empty, no atoms) score
    None and cost nothing (no molecule reaches the scoring function)."""

    function: Callable[[Chem.Mol], float]
    budget: int
    name: str = "oracle"
    cache: dict[str, float] = field(default_factory=dict)
    history: list[tuple[str, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not isinstance(self.budget, int) or self.budget < 1:
            raise ValueError(
                f"The 'budget' parameter of Oracle must be an integer >= 1. "
                f"Got {self.budget!r} instead."
            )

    @property
    def calls(self) -> int:
        return len(self.history)

    @property
    def exhausted(self) -> bool:
        return self.calls >= self.budget

    def __call__(self, smiles: str) -> float | None:
        """The score of ``smiles``; raises `BudgetExhausted` for a new molecule once the budget
        is spent (cached molecules are still answered)."""
        key = chem.canonical_or_none(smiles)
        if key is None:
            return None
        if key in self.cache:
            return self.cache[key]
        if self.exhausted:
            raise BudgetExhausted(f"oracle {self.name!r}: budget of {self.budget} calls spent")
        with rdBase.BlockLogs():  # a scoring function's RDKit warnings are not the user's
            score = float(self.function(chem.mol_or_none(key)))
        self.cache[key] = score
        self.history.append((key, score))
        return score

    def score_many(self, smiles: Sequence[str]) -> list[float | None]:
        """Scores in order; stops paying at the budget (the rest come back as None)."""
        scores: list[float | None] = []
        for s in smiles:
            try:
                scores.append(self(s))
            except BudgetExhausted:
                key = chem.canonical_or_none(s)
                scores.append(self.cache.get(key) if key else None)
        return scores

    def top(self, k: int) -> list[tuple[str, float]]:
        return sorted(self.history, key=lambda item: -item[1])[:k]


# --- the metric -------------------------------------------------------------------------------
def _top_mean(scores: Sequence[float], k: int) -> float:
    return float(np.mean(sorted(scores, reverse=True)[:k]))


def top_k_auc(scores: Sequence[float], budget: int, *, k: int = 10, every: int = 100) -> float:
    """PMO's top-k AUC of one run: ``scores`` are the paid oracle answers in call order.

    The mean of the ``k`` best so far is read after every ``every`` calls (at ``every``,
    ``2 every``, ... below the number of calls made) and after the last call; the curve starts at
    0 before the first call and is integrated by trapezoids; a run that stopped short of
    ``budget`` is held at its final value up to ``budget``. Divided by ``budget``: in [0, 1] for
    scores in [0, 1]."""
    if budget < 1 or every < 1 or k < 1:
        raise ValueError(
            f"need budget, every and k >= 1; got budget={budget}, every={every}, k={k}"
        )
    scores = list(scores)[:budget]
    if not scores:
        return 0.0
    area = previous = 0.0
    read_at = 0
    for calls in range(every, len(scores), every):
        now = _top_mean(scores[:calls], k)
        area += (calls - read_at) * (now + previous) / 2
        previous, read_at = now, calls
    final = _top_mean(scores, k)
    area += (len(scores) - read_at) * (final + previous) / 2
    area += (budget - len(scores)) * final
    return area / budget


def summarize(oracle: Oracle, *, every: int = 100) -> dict[str, Any]:
    scores = [score for _, score in oracle.history]
    top = oracle.top(10)
    return {
        "oracle": oracle.name,
        "calls": oracle.calls,
        "budget": oracle.budget,
        "top10_auc": top_k_auc(scores, oracle.budget, k=10, every=every),
        "top1_auc": top_k_auc(scores, oracle.budget, k=1, every=every),
        "top1": top[0][1] if top else None,
        "top10_mean": float(np.mean([s for _, s in top])) if top else None,
        "best": [{"smiles": s, "score": round(v, 4)} for s, v in top[:3]],
    }


# --- graph GA (after Jensen 2019) -------------------------------------------------------------
# Mutations, each a reaction SMARTS applied to a kekulised molecule (explicit single/double bonds,
# so aromatic rings can be edited bond by bond; aromaticity is re-perceived on sanitising).
_ATOMS = ("C", "N", "O")
_APPEND_ATOMS = ("C", "N", "O", "F", "S", "Cl")


@cache
def _mutation_reactions() -> dict[str, list[Any]]:
    smarts = {
        "insert_atom": [f"[*:1]-[*:2]>>[*:1]-{a}-[*:2]" for a in _ATOMS]
        + ["[*:1]=[*:2]>>[*:1]=C-[*:2]"],
        "change_bond_order": [
            "[*:1]=[*:2]>>[*:1]-[*:2]",
            "[*;!H0:1]-[*;!H0:2]>>[*:1]=[*:2]",
            "[*;!H0:1]=[*;!H0:2]>>[*:1]#[*:2]",
            "[*:1]#[*:2]>>[*:1]=[*:2]",
        ],
        "delete_ring_bond": ["[*:1]@[*:2]>>([*:1].[*:2])"],
        "add_ring": [
            "[*;!r;!H0:1]-[*;!r:2]-[*;!r:3]-[*;!r;!H0:4]>>[*:1]1-[*:2]-[*:3]-[*:4]-1",
            "[*;!r;!H0:1]-[*;!r:2]-[*;!r:3]-[*;!r:4]-[*;!r;!H0:5]>>"
            "[*:1]1-[*:2]-[*:3]-[*:4]-[*:5]-1",
            "[*;!r;!H0:1]~[*:2]~[*:3]~[*:4]~[*:5]~[*;!r;!H0:6]>>"
            "[*:1]1~[*:2]~[*:3]~[*:4]~[*:5]~[*:6]-1",
        ],
        "delete_atom": ["[*:1]-[D1]>>[*:1]", "[*:1]=[D1]>>[*:1]", "[*:1]-[D2]-[*:2]>>[*:1]-[*:2]"],
        "change_atom": [
            f"[{a}:1]>>[{b}:1]"
            for a, b in (
                ("#6", "N"),
                ("#6", "O"),
                ("#7", "C"),
                ("#7", "O"),
                ("#8", "C"),
                ("#8", "N"),
            )
        ],
        "append_atom": [f"[*;!H0:1]>>[*:1]-{a}" for a in _APPEND_ATOMS]
        + [f"[*;!H0;!H1:1]>>[*:1]={a}" for a in ("C", "N", "O")],
    }
    return {kind: [AllChem.ReactionFromSmarts(s) for s in items] for kind, items in smarts.items()}


_CUMULENE = Chem.MolFromSmarts("[*]=[#6]=[*]")  # allenes and ketenes (sulfones are fine)


def _acceptable(mol: Chem.Mol | None, max_heavy_atoms: int) -> Chem.Mol | None:
    """Sanitised ``mol`` when it is a single connected, drug-sized molecule with rings of 3 to 7
    atoms; else None (GB-GA's size and ring checks, our limits)."""
    if mol is None:
        return None
    try:
        with rdBase.BlockLogs():
            mol = Chem.Mol(mol)
            Chem.SanitizeMol(mol)
            mol = chem.mol_or_none(chem.canonical_smiles(mol))
    except (ValueError, RuntimeError):
        return None
    if mol is None or "." in chem.canonical_smiles(mol):
        return None
    if not 1 < mol.GetNumHeavyAtoms() <= max_heavy_atoms:
        return None
    if any(not 3 <= len(ring) <= 7 for ring in mol.GetRingInfo().AtomRings()):
        return None
    if mol.HasSubstructMatch(_CUMULENE):
        return None
    return mol


def _kekulized(mol: Chem.Mol) -> Chem.Mol:
    mol = Chem.Mol(mol)
    Chem.Kekulize(mol, clearAromaticFlags=True)
    return mol


def mutate(
    mol: Chem.Mol, rng: random.Random, *, max_heavy_atoms: int = 50, tries: int = 10
) -> Chem.Mol | None:
    """One random mutation (a kind, then one of its reaction SMARTS, then one product), or None
    when ``tries`` attempts gave no acceptable molecule."""
    reactions = _mutation_reactions()
    kekule = _kekulized(mol)
    for _ in range(tries):
        reaction = rng.choice(reactions[rng.choice(sorted(reactions))])
        with rdBase.BlockLogs():
            products = reaction.RunReactants((kekule,))
        if not products:
            continue
        child = _acceptable(rng.choice(products)[0], max_heavy_atoms)
        if child is not None:
            return child
    return None


def _cut(mol: Chem.Mol, bonds: list[int]) -> list[Chem.Mol]:
    """The fragments of ``mol`` cut at ``bonds``; bond i's two new ends are dummy atoms with
    isotope i + 1 (so `Chem.molzip` rejoins matching labels)."""
    labels = [(i + 1, i + 1) for i in range(len(bonds))]
    pieces = Chem.FragmentOnBonds(mol, bonds, addDummies=True, dummyLabels=labels)
    return list(Chem.GetMolFrags(pieces, asMols=True, sanitizeFrags=False))


def _labels(fragment: Chem.Mol) -> tuple[int, ...]:
    return tuple(sorted(a.GetIsotope() for a in fragment.GetAtoms() if a.GetAtomicNum() == 0))


def _non_ring_fragments(mol: Chem.Mol, rng: random.Random) -> list[Chem.Mol]:
    bonds = [
        b.GetIdx()
        for b in mol.GetBonds()
        if not b.IsInRing() and b.GetBondType() == Chem.BondType.SINGLE
    ]
    return _cut(mol, [rng.choice(bonds)]) if bonds else []


def _ring_fragments(mol: Chem.Mol, rng: random.Random) -> list[Chem.Mol]:
    """Cut one ring at two single bonds that share no atom (the ring splits into two arcs;
    single bonds only, so the rejoined ring never gains a cumulated double bond)."""
    single = {b.GetIdx() for b in mol.GetBonds() if b.GetBondType() == Chem.BondType.SINGLE}
    rings = [[b for b in r if b in single] for r in mol.GetRingInfo().BondRings() if len(r) >= 4]
    rings = [r for r in rings if len(r) >= 2]
    if not rings:
        return []
    ring = rng.choice(rings)
    first = rng.choice(ring)
    atoms = {mol.GetBondWithIdx(first).GetBeginAtomIdx(), mol.GetBondWithIdx(first).GetEndAtomIdx()}
    others = [
        b
        for b in ring
        if b != first
        and not atoms
        & {mol.GetBondWithIdx(b).GetBeginAtomIdx(), mol.GetBondWithIdx(b).GetEndAtomIdx()}
    ]
    if not others:
        return []
    return [f for f in _cut(mol, [first, rng.choice(others)]) if _labels(f) == (1, 2)]


def crossover(
    parent_a: Chem.Mol,
    parent_b: Chem.Mol,
    rng: random.Random,
    *,
    max_heavy_atoms: int = 50,
    tries: int = 10,
) -> Chem.Mol | None:
    """A child that joins a fragment of each parent: a ring crossover (two arcs of cut rings,
    joined at both ends) half the time when both parents have rings, else a non-ring crossover
    (the two halves of two cut acyclic single bonds). None after ``tries`` failures."""
    a, b = _kekulized(parent_a), _kekulized(parent_b)
    both_rings = a.GetRingInfo().NumRings() > 0 and b.GetRingInfo().NumRings() > 0
    for _ in range(tries):
        cutter = _ring_fragments if both_rings and rng.random() < 0.5 else _non_ring_fragments
        fragments_a, fragments_b = cutter(a, rng), cutter(b, rng)
        if not fragments_a or not fragments_b:
            continue
        combined = Chem.CombineMols(rng.choice(fragments_a), rng.choice(fragments_b))
        params = Chem.MolzipParams()
        params.label = Chem.MolzipLabel.Isotope
        try:
            with rdBase.BlockLogs():
                child = Chem.molzip(combined, params)
        except (ValueError, RuntimeError):
            continue
        child = _acceptable(child, max_heavy_atoms)
        if child is not None:
            return child
    return None


@dataclass(frozen=True, kw_only=True)
class GAConfig:
    population_size: int = 100
    offspring_size: int = 200
    mutation_rate: float = 0.5
    max_heavy_atoms: int = 50
    max_generations: int = 1000


def graph_ga(
    oracle: Oracle, start: Sequence[str], *, config: GAConfig = GAConfig(), seed: int = 0
) -> dict[str, Any]:
    """Run the GA until ``oracle``'s budget is spent (or ``max_generations``). ``start``: SMILES
    the first population is drawn from (scored through the oracle, so they count)."""
    rng = random.Random(seed)
    began = time.perf_counter()
    pool = [s for s in start if chem.canonical_or_none(s)]
    rng.shuffle(pool)
    population: dict[str, float] = {}
    for smiles in pool[: config.population_size]:
        score = oracle.score_many([smiles])[0]
        if score is not None:
            population[chem.canonical_or_none(smiles)] = score
    generations = 0
    while not oracle.exhausted and generations < config.max_generations:
        generations += 1
        members = list(population)
        mols = {s: chem.mol_or_none(s) for s in members}
        weights = np.array([population[s] for s in members]) + 1e-6  # score-proportional mating
        children: list[str] = []
        for _ in range(config.offspring_size):
            a, b = rng.choices(members, weights=weights, k=2)
            child = crossover(mols[a], mols[b], rng, max_heavy_atoms=config.max_heavy_atoms)
            if child is not None and rng.random() < config.mutation_rate:
                child = mutate(child, rng, max_heavy_atoms=config.max_heavy_atoms) or child
            if child is not None:
                children.append(chem.canonical_smiles(child))
        for smiles, score in zip(children, oracle.score_many(children)):
            if score is not None:
                population[smiles] = score
        population = dict(
            sorted(population.items(), key=lambda kv: -kv[1])[: config.population_size]
        )
    return {
        "method": "graph-ga",
        "seed": seed,
        "generations": generations,
        "seconds": time.perf_counter() - began,
        **summarize(oracle),
    }


# --- model in the loop ------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class LoopConfig:
    """``batch`` samples per round (temperature ``temperature``), then ``steps`` AdamW steps
    (``lr``, ``train_batch`` rows) on the ``top_k`` best molecules scored so far."""

    batch: int = 100
    temperature: float = 1.0
    top_k: int = 64
    steps: int = 4
    train_batch: int = 32
    lr: float = 5e-4
    max_new_tokens: int = 80
    max_rounds: int = 30  # a collapsed model that only repeats cached molecules stops here
    prompt: str = "<mol>"
    #: at most this many molecules of one Bemis-Murcko scaffold among the ``top_k`` the model
    #: is fine-tuned on (REINVENT's diversity-filter idea, applied to the training set); None: no
    #: limit. Keeps the loop from training itself onto one series and then repeating it.
    max_per_scaffold: int | None = None


def diverse_top(
    history: Sequence[tuple[str, float]],
    k: int,
    max_per_scaffold: int | None,
) -> list[str]:
    """The ``k`` best-scored SMILES, taking at most ``max_per_scaffold`` of each Murcko
    scaffold (acyclic molecules share the empty scaffold) when it is set."""
    ranked = sorted(history, key=lambda item: -item[1])
    if max_per_scaffold is None:
        return [s for s, _ in ranked[:k]]
    taken: dict[str, int] = {}
    out: list[str] = []
    for smiles, _ in ranked:
        mol = chem.mol_or_none(smiles)
        scaffold = chem.murcko_scaffold(mol) if mol is not None else ""
        if taken.get(scaffold, 0) >= max_per_scaffold:
            continue
        taken[scaffold] = taken.get(scaffold, 0) + 1
        out.append(smiles)
        if len(out) == k:
            break
    return out


class _DocumentStartTokenizer:
    """Encodes the empty prompt as ``<|endoftext|>``: a fine-tuning row then reads
    ``<|endoftext|><mol>SMILES</mol><|endoftext|>``, exactly as the packed pre-training corpus
    shows a document, with loss on every token after the first."""

    def __init__(self, science: Any):
        self.science, self.eos_id, self.pad_id = science, science.eos_id, science.pad_id

    def encode(self, text: str) -> list[int]:
        return [self.eos_id] if text == "" else self.science.encode(text)


def finetune_steps(
    model: Any,
    science: Any,
    smiles: Sequence[str],
    *,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    optimizer: Any = None,
) -> Any:
    """``steps`` AdamW steps of document loss on ``<mol>SMILES</mol>`` rows (kiban's
    `SupervisedData` batches through the public step API, `kiban.train.train_steps`). Returns the
    optimizer, so its moments carry over between rounds."""
    from kiban.train import train_steps
    from kiban.train.sft import Example, SupervisedData

    examples = [Example("", f"<mol>{s}</mol>", f"top-k:{i}", "top-k") for i, s in enumerate(smiles)]
    data = SupervisedData(
        examples, _DocumentStartTokenizer(science), seq_len=256, seed=seed, validation_fraction=0.0
    )
    return train_steps(model, data, steps=steps, batch_size=batch_size, lr=lr, optimizer=optimizer)


def sample_round(loaded: Any, model: Any, config: Any, seed: int) -> list[Any]:
    """``config.batch`` completions of ``config.prompt`` from ``model`` (the loaded generator's
    model, possibly trained since), with ``config``'s max_new_tokens and temperature. A fresh
    `Generator` each call: the fast engine copies the weights when it is built."""
    from kiban.generate.generator import Generator

    generator = Generator(
        model,
        loaded.hf_tokenizer,
        science=loaded.science,
        eos_ids=loaded.eos_ids,
        pad_id=loaded.pad_id,
        model_dir=loaded.model_dir,
    )
    return generator.generate(
        config.prompt,
        n=config.batch,
        max_new_tokens=config.max_new_tokens,
        temperature=config.temperature,
        seed=seed,
    )


def optimize_with_model(
    oracle: Oracle, model_dir: str, *, config: LoopConfig = LoopConfig(), seed: int = 0
) -> dict[str, Any]:
    """Sample → score → fine-tune on the best so far, until the budget is spent (or
    ``max_rounds``). The model is loaded fresh from ``model_dir`` (the directory is not
    changed)."""
    import torch

    from kiban.generate import load_generator

    began = time.perf_counter()
    torch.manual_seed(seed)
    loaded = load_generator(model_dir)
    model, science = loaded.model, loaded.science
    optimizer = None
    rounds = samples = valid = 0
    while not oracle.exhausted and rounds < config.max_rounds:
        completions = sample_round(loaded, model, config, seed * 1_000_003 + rounds)
        smiles = [
            c.spans[0].canonical
            for c in completions
            if c.valid and c.spans and c.spans[0].modality == "mol"
        ]
        samples += len(completions)
        valid += len(smiles)
        oracle.score_many(smiles)
        rounds += 1
        if oracle.exhausted or not oracle.history or config.steps == 0:
            continue  # steps = 0: plain sampling from the base model at the same budget
        best = diverse_top(oracle.history, config.top_k, config.max_per_scaffold)
        optimizer = finetune_steps(
            model,
            science,
            best,
            steps=config.steps,
            batch_size=config.train_batch,
            lr=config.lr,
            seed=seed * 1000 + rounds,
            optimizer=optimizer,
        )
    return {
        "method": "model-loop" if config.steps else "model-sample",
        "seed": seed,
        "rounds": rounds,
        "samples": samples,
        "valid_samples": valid,
        "seconds": time.perf_counter() - began,
        **summarize(oracle),
    }
