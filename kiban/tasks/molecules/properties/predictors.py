"""Property predictors scored on one split: a fingerprint random forest and a fine-tuned kiban
language model.

Baseline. `FingerprintForest`: scikit-learn's random forest on Morgan fingerprints (radius 2,
2048 bits, `kiban.chem.morgan_fingerprints`); regression predicts the value, classification P(1).

Language model. A kiban model is fine-tuned (`finetune_property_model`, i.e.
`kiban.train.run.finetune`) on ``prompt = "<mol>{smiles}</mol> {question}"`` →
``completion = " <num>{value:.2f}</num>"`` (regression) or ``" <num>0</num>"`` /
``" <num>1</num>"`` (classification). `PropertyLM` reads it back: for classification the score
is P("1") / (P("0") + P("1")) from the next-token distribution after ``" <num>"`` (a proper score
for ROC-AUC); for regression the value is decoded greedily by `kiban.generate` with the ``<num>``
span constraint and parsed as a float (a row whose decoded text is not a number is counted and
predicted as the training mean).

`evaluate_split` trains each predictor on a split's training part and scores it on its test part
(RMSE / ROC-AUC).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rdkit import Chem

from kiban.chem import MORGAN_BITS, MORGAN_RADIUS, morgan_fingerprints
from kiban.tasks.molecules.properties.datasets import TASKS, PropertyDataset
from kiban.tasks.molecules.properties.scaffold_split import ScaffoldSplit


# --- metrics ----------------------------------------------------------------------------------
def rmse(targets: np.ndarray, predictions: np.ndarray) -> float:
    targets, predictions = np.asarray(targets, float), np.asarray(predictions, float)
    return float(np.sqrt(np.mean((targets - predictions) ** 2)))


def roc_auc(targets: np.ndarray, scores: np.ndarray) -> float:
    """ROC-AUC; NaN when the targets hold one class only (a small split can)."""
    from sklearn.metrics import roc_auc_score

    targets = np.asarray(targets)
    if len(np.unique(targets)) < 2:
        return float("nan")
    return float(roc_auc_score(targets, scores))


def score(task: str, targets: np.ndarray, predictions: np.ndarray) -> float:
    """RMSE for regression, ROC-AUC for classification."""
    return rmse(targets, predictions) if task == "regression" else roc_auc(targets, predictions)


METRIC = {"regression": "rmse", "classification": "roc_auc"}
#: what cross-validation reports per fold (`fold_metrics`)
CV_METRICS = {"regression": ("r2", "mae", "rmse", "spearman"), "classification": ("roc_auc",)}


def fold_metrics(task: str, targets: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
    """scikit-learn's R² and MAE, RMSE and scipy's Spearman ρ (regression) or ROC-AUC
    (classification) of one fold; NaN where undefined (one molecule, constant values, one
    class)."""
    from scipy.stats import spearmanr
    from sklearn.metrics import mean_absolute_error, r2_score

    targets, predictions = np.asarray(targets, float), np.asarray(predictions, float)
    if task == "classification":
        return {"roc_auc": roc_auc(targets, predictions)}
    varied = len(targets) > 1 and np.ptp(targets) > 0
    return {
        "r2": float(r2_score(targets, predictions)) if varied else float("nan"),
        "mae": float(mean_absolute_error(targets, predictions)),
        "rmse": rmse(targets, predictions),
        "spearman": float(spearmanr(targets, predictions).statistic)
        if varied and np.ptp(predictions) > 0
        else float("nan"),
    }


# --- random-forest baseline -------------------------------------------------------------------
class FingerprintForest:
    """Random forest on Morgan fingerprints (scikit-learn's estimator conventions).

    ``fit(molecules, targets)`` returns self; ``predict(molecules)`` gives values (regression)
    or P(1) (classification).
    """

    def __init__(
        self,
        task: str,
        *,
        n_estimators: int = 500,
        seed: int = 0,
        n_jobs: int = 1,
        radius: int = MORGAN_RADIUS,
        n_bits: int = MORGAN_BITS,
    ):
        self.task = task
        self.n_estimators = n_estimators
        self.seed = seed
        self.n_jobs = n_jobs
        self.radius = radius
        self.n_bits = n_bits

    def _features(self, molecules: Sequence[Chem.Mol]) -> np.ndarray:
        return morgan_fingerprints(molecules, radius=self.radius, n_bits=self.n_bits)

    def fit(self, molecules: Sequence[Chem.Mol], targets: np.ndarray) -> FingerprintForest:
        from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

        if self.task not in TASKS:
            raise ValueError(
                f"The 'task' parameter of FingerprintForest must be one of {TASKS}. "
                f"Got {self.task!r} instead."
            )
        model = RandomForestRegressor if self.task == "regression" else RandomForestClassifier
        self.forest_ = model(
            n_estimators=self.n_estimators, random_state=self.seed, n_jobs=self.n_jobs
        )
        self.forest_.fit(self._features(molecules), np.asarray(targets))
        return self

    def predict(self, molecules: Sequence[Chem.Mol]) -> np.ndarray:
        return self._predict(self._features(molecules))

    def _predict(self, features: np.ndarray) -> np.ndarray:
        if self.task == "regression":
            return self.forest_.predict(features)
        positive = self._positive()
        if positive is None:  # trained on negatives only
            return np.zeros(len(features))
        return self.forest_.predict_proba(features)[:, positive]

    def _positive(self) -> int | None:
        classes = list(self.forest_.classes_)
        return classes.index(1) if 1 in classes else None

    def tree_predictions(self, molecules: Sequence[Chem.Mol]) -> np.ndarray:
        """Each tree's value (regression) or P(1) (classification): shape (trees, molecules).
        The forest's prediction is their mean."""
        features = self._features(molecules)
        trees = self.forest_.estimators_
        if self.task == "regression":
            return np.stack([tree.predict(features) for tree in trees])
        positive = self._positive()
        if positive is None:
            return np.zeros((len(trees), len(features)))
        # a forest's trees are fitted on class indices, so column `positive` is class 1 here too
        return np.stack([tree.predict_proba(features)[:, positive] for tree in trees])

    def predict_with_std(self, molecules: Sequence[Chem.Mol]) -> tuple[np.ndarray, np.ndarray]:
        """The forest's prediction and the spread of its trees around it (``np.std`` over the
        trees, ddof 0): a cheap uncertainty, larger where the trees disagree."""
        per_tree = self.tree_predictions(molecules)
        return self._predict(self._features(molecules)), per_tree.std(axis=0)


# --- language model ---------------------------------------------------------------------------
def format_value(task: str, value: float) -> str:
    """The number written inside ``<num>``: 2 decimals (regression) or 0/1 (classification)."""
    if task == "classification":
        if value not in (0, 1):
            raise ValueError(f"a classification target must be 0 or 1, got {value!r}")
        return str(int(value))
    return f"{round(float(value), 2) + 0.0:.2f}"  # + 0.0: no "-0.00"


def prompt_text(smiles: str, question: str) -> str:
    return f"<mol>{smiles}</mol> {question}"


def completion_text(task: str, value: float) -> str:
    return f" <num>{format_value(task, value)}</num>"


def write_examples(
    dataset: PropertyDataset, indices: Sequence[int], path: str | os.PathLike
) -> Path:
    """The examples ``indices`` as fine-tuning JSONL (``{"prompt", "completion"}`` a line)."""
    from kiban.io import atomic_write_text

    lines = [
        json.dumps(
            {
                "prompt": prompt_text(dataset.smiles[i], dataset.question),
                "completion": completion_text(dataset.task, dataset.targets[i]),
            }
        )
        for i in indices
    ]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, "".join(line + "\n" for line in lines))
    return path


@dataclass(frozen=True, kw_only=True)
class LMSettings:
    """How the property model is fine-tuned (full fine-tuning, AdamW, cosine schedule)."""

    max_steps: int = 200
    batch_size: int = 16
    lr: float = 1e-3
    warmup_steps: int = 10
    seq_len: int = 256
    seed: int = 0
    device: str = "auto"
    progress: bool = False  # a progress bar on stderr (steps, loss, elapsed) while it trains


def finetune_property_model(
    base: str | os.PathLike,
    dataset: PropertyDataset,
    indices: Sequence[int],
    out: str | os.PathLike,
    *,
    settings: LMSettings = LMSettings(),
) -> dict[str, Any]:
    """Fine-tune the kiban model in ``base`` on ``dataset[indices]``; the model lands in
    ``out/model``. Returns the run summary (``kiban.train.run.finetune``'s), whose ``rejected``
    count includes prompts longer than ``seq_len``."""
    from kiban.train.config import (
        DataConfig,
        FinetuneConfig,
        ModelConfig,
        OptimConfig,
        RunConfig,
        TrainConfig,
        validate,
    )
    from kiban.train.run import finetune

    out = Path(out)
    data = write_examples(dataset, indices, out / "train.jsonl")
    config = RunConfig(
        out=str(out),
        model=ModelConfig(base=str(base)),
        data=DataConfig(seq_len=settings.seq_len, validation_fraction=0.0, seed=settings.seed),
        optim=OptimConfig(lr=settings.lr, warmup_steps=settings.warmup_steps),
        train=TrainConfig(
            max_steps=settings.max_steps,
            batch_size=settings.batch_size,
            micro_batch_size=settings.batch_size,
            seed=settings.seed,
            device=settings.device,
            eval_every=0,
            checkpoint_every=0,
            log_every=10,
            progress=settings.progress,
        ),
        finetune=FinetuneConfig(data=str(data)),
    )
    validate(config)
    return finetune(config)


@dataclass
class ValuePredictions:
    """Decoded regression values; ``unparsed`` lists rows whose text was not a number."""

    values: np.ndarray
    texts: list[str]
    unparsed: list[int] = field(default_factory=list)


class PropertyLM:
    """A fine-tuned kiban model directory read as a property predictor."""

    def __init__(self, model_dir: str | os.PathLike, *, engine: str = "auto"):
        from kiban.generate import load_generator

        self.generator = load_generator(model_dir, engine=engine)
        if self.generator.science is None:
            raise ValueError(
                f"{model_dir}: PropertyLM needs a kiban tokenizer (kiban_tokenizer.json)"
            )
        self.tokenizer = self.generator.science
        zero = self.tokenizer.encode(completion_text("classification", 0))
        one = self.tokenizer.encode(completion_text("classification", 1))
        # " <num>0</num>" is prefix + [digit, </num>]: the digit is read after the prefix
        if len(zero) != len(one) or zero[:-2] != one[:-2] or zero[-1] != one[-1]:
            raise ValueError(
                f"{model_dir}: the tokenizer does not write 0 and 1 as one token "
                f"inside <num> ({zero} vs {one})"
            )
        self.answer_prefix = zero[:-2]  # ids of " <num>"
        self.zero_id, self.one_id = zero[-2], one[-2]

    def _prompt_ids(self, smiles: Sequence[str], question: str) -> list[list[int]]:
        from kiban.corpus.clean import canonical_text

        texts = [canonical_text(prompt_text(s, question)) for s in smiles]
        return [
            ids.tolist() if hasattr(ids, "tolist") else list(ids)
            for ids in self.tokenizer.encode_batch(texts)
        ]

    def class_probabilities(
        self, dataset: PropertyDataset, indices: Sequence[int], *, batch_size: int = 64
    ) -> np.ndarray:
        """P("1") / (P("0") + P("1")) at the number position, for each molecule in ``indices``."""
        return self.smiles_class_probabilities(
            [dataset.smiles[i] for i in indices], dataset.question, batch_size=batch_size
        )

    def smiles_class_probabilities(
        self, smiles: Sequence[str], question: str, *, batch_size: int = 64
    ) -> np.ndarray:
        """`class_probabilities` of canonical ``smiles`` asked ``question``."""
        import torch

        rows = [ids + self.answer_prefix for ids in self._prompt_ids(smiles, question)]
        model = self.generator.model
        scores = np.zeros(len(rows), dtype=np.float64)
        with torch.inference_mode():
            for start in range(0, len(rows), batch_size):
                chunk = rows[start : start + batch_size]
                width = max(map(len, chunk))
                input_ids = torch.full(
                    (len(chunk), width), self.generator.pad_id, dtype=torch.long
                )  # (B, T), right-padded
                mask = torch.zeros((len(chunk), width), dtype=torch.long)
                for row, ids in enumerate(chunk):
                    input_ids[row, : len(ids)] = torch.tensor(ids)
                    mask[row, : len(ids)] = 1
                logits = model(input_ids=input_ids, attention_mask=mask).logits  # (B, T, V)
                last = torch.tensor([len(ids) - 1 for ids in chunk])
                pair = logits[torch.arange(len(chunk)), last][:, [self.zero_id, self.one_id]]
                scores[start : start + len(chunk)] = torch.softmax(pair.float(), -1)[:, 1].numpy()
        return scores

    def predict_values(
        self,
        dataset: PropertyDataset,
        indices: Sequence[int],
        *,
        fallback: float,
        batch_size: int = 64,
        max_new_tokens: int = 10,
    ) -> ValuePredictions:
        """Greedy, span-constrained decoding of the number after ``" <num>"``; a row whose text
        does not parse as a float gets ``fallback`` and is listed in ``unparsed``."""
        return self.smiles_values(
            [dataset.smiles[i] for i in indices],
            dataset.question,
            fallback=fallback,
            batch_size=batch_size,
            max_new_tokens=max_new_tokens,
        )

    def smiles_values(
        self,
        smiles: Sequence[str],
        question: str,
        *,
        fallback: float,
        batch_size: int = 64,
        max_new_tokens: int = 10,
    ) -> ValuePredictions:
        """`predict_values` of canonical ``smiles`` asked ``question``."""
        from kiban.corpus.clean import canonical_text

        prompts = [canonical_text(prompt_text(s, question)) + " <num>" for s in smiles]
        values = np.full(len(prompts), float(fallback))
        texts: list[str] = []
        unparsed: list[int] = []
        for start in range(0, len(prompts), batch_size):
            completions = self.generator.generate(
                prompts[start : start + batch_size], max_new_tokens=max_new_tokens, temperature=0.0
            )
            for offset, completion in enumerate(completions):
                text = completion.completion.split("</num>", 1)[0]
                texts.append(text)
                try:
                    value = float(text)
                except ValueError:
                    unparsed.append(start + offset)
                    continue
                if math.isfinite(value):
                    values[start + offset] = value
                else:
                    unparsed.append(start + offset)
        return ValuePredictions(values, texts, unparsed)

    def predict(
        self, dataset: PropertyDataset, indices: Sequence[int], *, fallback: float = 0.0
    ) -> tuple[np.ndarray, int]:
        """Scores for ``score(dataset.task, ...)`` and the number of unparsed rows."""
        return self.predict_smiles(
            [dataset.smiles[i] for i in indices], dataset.question, dataset.task, fallback=fallback
        )

    def predict_smiles(
        self, smiles: Sequence[str], question: str, task: str, *, fallback: float = 0.0
    ) -> tuple[np.ndarray, int]:
        """`predict` of canonical ``smiles``: P(1) for classification, decoded values (the
        unparsed ones ``fallback``) for regression; and the number of unparsed rows."""
        if task == "classification":
            return self.smiles_class_probabilities(smiles, question), 0
        decoded = self.smiles_values(smiles, question, fallback=fallback)
        return decoded.values, len(decoded.unparsed)


# --- one split, both predictors ---------------------------------------------------------------
METHODS = ("rf", "lm")


def evaluate_split(
    dataset: PropertyDataset,
    split: ScaffoldSplit,
    *,
    seed: int,
    methods: Sequence[str] = METHODS,
    trees: int = 100,
    n_jobs: int = 1,
    lm_base: str | os.PathLike | None = None,
    lm_settings: LMSettings = LMSettings(),
    work: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Train each of ``methods`` on ``split.train`` and score it on ``split.test``.

    The forest gets ``trees`` trees and ``random_state=seed``; the LM is ``lm_base`` fine-tuned
    with ``lm_settings`` (its seed replaced by ``seed``) in ``work`` (its checkpoints removed
    afterwards). Returns the run record: ``rf`` / ``lm`` scores (RMSE or ROC-AUC; NaN when the
    test part holds one class), their seconds, the LM's final loss, rejected prompts and unparsed
    decodes, and for regression ``train_mean_baseline`` (the score of predicting the training
    mean).
    """
    import shutil
    import time
    from dataclasses import replace

    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(
            f"The 'methods' parameter of evaluate_split must hold only {METHODS}. "
            f"Got {list(methods)!r} instead."
        )
    if "lm" in methods and (lm_base is None or work is None):
        raise ValueError(
            "evaluate_split with method 'lm' needs lm_base (a kiban model "
            "directory) and work (a directory for the fine-tuning run)"
        )
    test_targets = dataset.targets[split.test]
    run: dict[str, Any] = {"seed": seed, "split": split.describe()}
    if dataset.task == "classification":
        run["test_positives"] = int(test_targets.sum())
    if "rf" in methods:
        t0 = time.perf_counter()
        forest = FingerprintForest(dataset.task, n_estimators=trees, seed=seed, n_jobs=n_jobs)
        forest.fit([dataset.molecules[i] for i in split.train], dataset.targets[split.train])
        run["rf"] = score(
            dataset.task, test_targets, forest.predict([dataset.molecules[i] for i in split.test])
        )
        run["rf_s"] = time.perf_counter() - t0
    fallback = float(dataset.targets[split.train].mean())
    if "lm" in methods:
        t0 = time.perf_counter()
        run_dir = Path(work)
        shutil.rmtree(run_dir, ignore_errors=True)
        summary = finetune_property_model(
            lm_base, dataset, split.train, run_dir, settings=replace(lm_settings, seed=seed)
        )
        run["lm_finetune_s"] = time.perf_counter() - t0
        run["lm_final_loss"] = summary.get("loss")
        run["lm_rejected"] = summary.get("rejected")
        t0 = time.perf_counter()
        model = PropertyLM(run_dir / "model")
        predictions, unparsed = model.predict(dataset, split.test, fallback=fallback)
        run["lm"] = score(dataset.task, test_targets, predictions)
        run["lm_unparsed"] = unparsed
        run["lm_predict_s"] = time.perf_counter() - t0
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    if dataset.task == "regression":
        run["train_mean_baseline"] = score(
            "regression", test_targets, np.full(len(test_targets), fallback)
        )
    return run


def summarize(values: Sequence[float]) -> dict[str, Any]:
    """Mean, sample standard deviation and count of the non-NaN ``values`` (None when none)."""
    import statistics

    clean = [float(v) for v in values if v == v]
    return {
        "mean": statistics.fmean(clean) if clean else None,
        "std": statistics.stdev(clean) if len(clean) > 1 else 0.0 if clean else None,
        "n": len(clean),
    }


def summarize_runs(
    runs: Sequence[dict[str, Any]],
    keys: Sequence[str] = ("rf", "lm", "train_mean_baseline", "rf_s", "lm_finetune_s"),
) -> dict[str, dict[str, Any]]:
    """`summarize` of each of ``keys`` over the runs that have it."""
    out = {}
    for key in keys:
        values = [run[key] for run in runs if key in run]
        if values:
            out[key] = summarize(values)
    return out
