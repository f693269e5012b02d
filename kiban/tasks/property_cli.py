"""``kiban property train / predict / evaluate``: parse, call one function of
`kiban.tasks.molecules.properties.saved_models`, print.

Handlers raise (``kiban.cli.main`` runs them through `kiban._cli.run_command`): bad data, a bad
option or a model directory that cannot be used is a `ValueError` (exit 2), a missing file a
`FileNotFoundError` (exit 2), a failed run a `RuntimeError` (exit 1). RDKit, scikit-learn and
torch are imported inside the handlers, so building the parser stays fast.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

_DATA_HELP = (
    "a shipped dataset (logs, lipophilicity, bbbp, bace, hiv, b3db-classification, "
    "b3db-regression) or a CSV/TSV file with a header"
)


def _add_data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", metavar="DATA", help=_DATA_HELP)
    parser.add_argument(
        "--task",
        choices=("regression", "classification"),
        default=None,
        help="for a file: targets are numbers (default) or 0/1",
    )
    parser.add_argument(
        "--smiles-column",
        default=None,
        metavar="NAME",
        help="for a file: the SMILES column (default: as `kiban corpus build` finds it, a "
        "column named smiles or canonical_smiles, any case)",
    )
    parser.add_argument(
        "--target",
        "--target-column",
        dest="target_column",
        default=None,
        metavar="NAME",
        help="for a file: the target column (default: the only numeric column that is not an "
        "ID; ID/text columns are those corpus build keeps as metadata)",
    )
    parser.add_argument(
        "--id-column",
        default=None,
        metavar="NAME",
        help="for a file: a compound ID column (never taken as the target; recorded in the "
        "model so predict names rows by it)",
    )
    parser.add_argument(
        "--base",
        default=None,
        metavar="MODEL_DIR",
        help="kiban model directory to fine-tune (needed by --method lm)",
    )
    parser.add_argument("--trees", type=int, default=500, help="random forest size (default 500)")
    parser.add_argument("--steps", type=int, default=200, help="LM fine-tuning steps (default 200)")
    parser.add_argument(
        "--batch-size", type=int, default=16, help="LM fine-tuning examples per step (default 16)"
    )
    parser.add_argument("--lr", type=float, default=1e-3, help="LM learning rate (default 1e-3)")
    parser.add_argument("--jobs", type=int, default=1, help="forest worker threads (default 1)")
    parser.add_argument(
        "--device", default="auto", help="LM device: auto, cpu, cuda (default auto)"
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Adds ``property`` (train, predict, evaluate) to the ``kiban`` subcommands."""
    parser = subparsers.add_parser(
        "property",
        help="molecular property models: train, predict, evaluate",
        description="Predict a molecular property from SMILES with a random forest on Morgan "
        "fingerprints (rf) or a fine-tuned kiban language model (lm).",
    )
    commands = parser.add_subparsers(dest="property_command", required=True, metavar="SUBCOMMAND")
    train = commands.add_parser(
        "train",
        help="train on all of DATA and save a model directory",
        description="Cross-validate (R², MAE, RMSE, Spearman per fold; --cv-folds, --cv-split), "
        "then train on every usable row of DATA and save the model in --out (a "
        "manifest.json naming the task, columns, featurisation, the SHA-256 of "
        "the training file and the cross-validation scores, plus the forest or the "
        "fine-tuned model). Rows whose SMILES does not parse are skipped and listed; a "
        "bad target is an error naming every bad row (file:line).",
    )
    _add_data_options(train)
    train.add_argument("--out", required=True, metavar="DIR", help="model directory to write")
    train.add_argument("--method", choices=("rf", "lm"), default="rf", help="default rf")
    train.add_argument("--seed", type=int, default=0, help="forest / fine-tuning seed")
    train.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    train.add_argument(
        "--cv-folds",
        "--cv",
        dest="cv_folds",
        type=int,
        default=5,
        metavar="K",
        help="K-fold cross-validation before the final fit, scores printed and saved in "
        "manifest.json (default 5; 0 skips it; with --method lm it fine-tunes K more times)",
    )
    train.add_argument(
        "--cv-split",
        choices=("scaffold", "random"),
        default="scaffold",
        help="scaffold: no Bemis-Murcko scaffold in both parts of a fold (sklearn GroupKFold; "
        "default); random: sklearn KFold shuffled by --seed",
    )
    train.set_defaults(handler=run_train)

    predict = commands.add_parser(
        "predict",
        help="predict for every row of a file",
        description="Predict for every row of INPUT (CSV/TSV with a SMILES column, or .smi/.txt "
        "with one SMILES a line): writes every input column, then a column named after "
        "the model's target (e.g. pIC50; P(class 1) for a classifier; TARGET_predicted "
        "if INPUT already has TARGET), TARGET_std (random forest: the standard deviation "
        "of its trees; an LM gives none) and error. A row that cannot be predicted keeps "
        "its place with an empty prediction and the reason, and is reported as "
        "file:line. The model's train-time cross-validation scores are printed with the "
        "summary.",
    )
    predict.add_argument("model", metavar="MODEL_DIR")
    predict.add_argument("input", metavar="INPUT")
    predict.add_argument(
        "--out",
        default=None,
        metavar="CSV",
        help="write the predictions here (default: standard output)",
    )
    predict.add_argument(
        "--smiles-column",
        default=None,
        metavar="NAME",
        help="SMILES column of INPUT (default: the model's, else as corpus build finds it)",
    )
    predict.add_argument(
        "--id-column",
        default=None,
        metavar="NAME",
        help="names rows in messages (default: the model's ID column if INPUT has it); every "
        "input column is written anyway",
    )
    predict.add_argument(
        "--json",
        action="store_true",
        help="print JSON (with every prediction unless --out is given)",
    )
    predict.set_defaults(handler=run_predict)

    evaluate = commands.add_parser(
        "evaluate",
        help="scaffold-split scores per seed, mean ± sd",
        description="For each seed: chemprop's scaffold_balanced split of DATA (80/10/10), "
        "each method trained on the training part and scored on the test part "
        "(RMSE for regression, ROC-AUC for classification); then mean ± sample "
        "standard deviation over the seeds.",
    )
    _add_data_options(evaluate)
    evaluate.add_argument("--method", choices=("rf", "lm", "both"), default="rf", help="default rf")
    evaluate.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[0, 1, 2],
        metavar="SEED",
        help="split seeds (default 0 1 2)",
    )
    evaluate.add_argument(
        "--work",
        default=None,
        metavar="DIR",
        help="keep the LM fine-tuning runs here (default: a temporary directory, removed)",
    )
    evaluate.set_defaults(handler=run_evaluate)
    return parser


def _options(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "data": args.data,
        "task": args.task,
        "smiles_column": args.smiles_column,
        "target_column": args.target_column,
        "id_column": args.id_column,
        "base": args.base,
        "trees": args.trees,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "n_jobs": args.jobs,
        "device": args.device,
    }


def _rows(count: int) -> str:
    return f"{count:,} row" + ("" if count == 1 else "s")


def _report_bad_rows(examples: list[dict[str, str]], count: int) -> None:
    for example in examples:
        print(f"  skipped {example['where']}: {example['reason']}", file=sys.stderr)
    if count > len(examples):
        print(f"  … and {count - len(examples):,} more skipped rows", file=sys.stderr)


def run_train(args: argparse.Namespace) -> int:
    from kiban.tasks.molecules.properties.saved_models import (
        TrainOptions,
        train_property_model,
    )

    options = TrainOptions(
        **_options(args),
        method=args.method,
        seed=args.seed,
        cv_folds=args.cv_folds,
        cv_split=args.cv_split,
        progress=args.method == "lm",
    )

    def on_fold(fold: int, folds: int) -> None:
        if args.method == "lm":  # a forest's fold takes seconds; an LM's, minutes
            print(f"cross-validation fold {fold}/{folds}", file=sys.stderr)

    manifest = train_property_model(options, args.out, overwrite=args.overwrite, on_fold=on_fold)
    data = manifest["training_data"]
    _report_bad_rows(manifest.pop("bad_examples"), data["bad_rows"])
    if args.json:
        print(json.dumps(manifest, indent=1))
        return 0
    print(
        f"trained {manifest['method']} ({manifest['task']}, target {manifest['target_column']!r}) "
        f"on {data['molecules']:,} molecules of {data['source']} "
        f"({_rows(data['bad_rows'])} skipped) in {manifest['train_seconds']:.1f} s"
    )
    if manifest["cross_validation"]:
        print(cv_table(manifest["cross_validation"]))
    print(f"model in {args.out}")
    return 0


_METRIC_NAMES = {
    "r2": "R²",
    "mae": "MAE",
    "rmse": "RMSE",
    "spearman": "Spearman",
    "roc_auc": "ROC-AUC",
}


def cv_summary(validation: dict[str, Any]) -> str:
    """One line: ``5-fold scaffold CV: R² 0.512 ± 0.041, MAE ...``."""
    return f"{validation['folds']}-fold {validation['split']} CV: " + ", ".join(
        f"{_METRIC_NAMES[m]} {_format(validation['summary'][m]['mean'])} ± "
        f"{_format(validation['summary'][m]['std'])}"
        for m in validation["metrics"]
    )


def cv_table(validation: dict[str, Any]) -> str:
    """The folds' sizes and scores, then mean ± sample sd over the folds."""
    metrics = validation["metrics"]
    seed = f", seed {validation['seed']}" if validation["split"] == "random" else ""
    lines = [
        f"cross-validation: {validation['folds']}-fold {validation['split']} split "
        f"({validation['splitter']}{seed}), {validation['seconds']:.1f} s",
        f"  {'fold':>9}  {'train':>6}  {'test':>5}  "
        + "  ".join(f"{_METRIC_NAMES[m]:>15}" for m in metrics),
    ]
    for record in validation["per_fold"]:
        lines.append(
            f"  {record['fold']:>9}  {record['train']:>6}  {record['test']:>5}  "
            + "  ".join(f"{_format(record[m]):>15}" for m in metrics)
        )
    summary = validation["summary"]
    lines.append(
        f"  {'mean ± sd':>9}  {'':>6}  {'':>5}  "
        + "  ".join(
            f"{_format(summary[m]['mean']) + ' ± ' + _format(summary[m]['std']):>15}"
            for m in metrics
        )
    )
    return "\n".join(lines)


def run_predict(args: argparse.Namespace) -> int:
    from kiban.io import atomic_write_text
    from kiban.tasks.molecules.properties.saved_models import predict_file

    predictions = predict_file(
        args.model, args.input, smiles_column=args.smiles_column, id_column=args.id_column
    )
    for row in predictions.failed:
        print(
            f"kiban property predict: {predictions.label(row)}: no prediction: {row.error}",
            file=sys.stderr,
        )
    if args.out:
        atomic_write_text(args.out, predictions.to_csv())
    validation = predictions.cross_validation
    if args.json:
        payload = predictions.as_dict(rows=not args.out)
        payload["cross_validation"] = validation
        print(json.dumps(payload, indent=1, allow_nan=False))
        return 0
    value, std, _ = predictions.output_columns
    note = f"model {args.model}: {predictions.method} predicting {value!r}" + (
        f" with {std!r} (spread of its trees)" if std else " (no uncertainty column)"
    )
    note += f"; {cv_summary(validation)}" if validation else "; no cross-validation recorded"
    if args.out:
        print(note)
        print(
            f"{len(predictions.rows):,} rows, {len(predictions.failed):,} without a "
            f"prediction; wrote {args.out}"
        )
    else:
        print(note, file=sys.stderr)
        sys.stdout.write(predictions.to_csv())
    return 0


def _format(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.3f}"


def _render_evaluation(result: dict[str, Any]) -> None:
    data = result["data"]
    better = "lower" if result["metric"] == "rmse" else "higher"
    print(
        f"{result['source']}: {result['task']}, {data['molecules']:,} molecules "
        f"({_rows(data['bad_records'])} skipped); scaffold split 80/10/10; test "
        f"{result['metric']} ({better} is better)"
    )
    columns = list(result["methods"]) + (
        ["train_mean_baseline"] if result["task"] == "regression" else []
    )
    names = {"rf": "rf", "lm": "lm", "train_mean_baseline": "train mean"}
    print(
        f"  {'seed':>4}  {'train':>6}  {'test':>5}  "
        + "  ".join(f"{names[c]:>13}" for c in columns)
    )
    for run in result["runs"]:
        split = run["split"]
        print(
            f"  {run['seed']:>4}  {split['train']:>6}  {split['test']:>5}  "
            + "  ".join(f"{_format(run.get(c)):>13}" for c in columns)
        )
    summary = result["summary"]
    print(
        f"  {'mean ± sd':>17}  {'':>5}  "
        + "  ".join(
            f"{_format(summary[c]['mean']) + ' ± ' + _format(summary[c]['std']):>13}"
            if c in summary
            else f"{'n/a':>13}"
            for c in columns
        )
    )
    nan = [
        run["seed"]
        for run in result["runs"]
        if any(run.get(m) != run.get(m) for m in result["methods"])
    ]
    if nan:
        print(f"  n/a: the test part of seed(s) {nan} holds one class only (no ROC-AUC)")
    print(f"  {result['seconds']:.1f} s")


def run_evaluate(args: argparse.Namespace) -> int:
    from kiban.tasks.molecules.properties.saved_models import (
        EvaluateOptions,
        evaluate_property_data,
    )

    methods = ("rf", "lm") if args.method == "both" else (args.method,)
    options = EvaluateOptions(
        **_options(args), methods=methods, seeds=tuple(args.seeds), work=args.work
    )
    result = evaluate_property_data(options)
    _report_bad_rows(result["data"]["bad_examples"], result["data"]["bad_records"])
    if args.json:
        from kiban.io import json_ready

        print(json.dumps(json_ready(result), indent=1, allow_nan=False))
    else:
        _render_evaluation(result)
    return 0
