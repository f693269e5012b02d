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
        help="for a file: the SMILES column (default: the one named 'smiles')",
    )
    parser.add_argument(
        "--target-column",
        default=None,
        metavar="NAME",
        help="for a file: the target column (default: the only other column)",
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
        description="Train on every usable row of DATA and save the model in --out (a "
        "manifest.json naming the task, columns, featurisation and the SHA-256 of "
        "the training file, plus the forest or the fine-tuned model). Rows whose "
        "SMILES does not parse are skipped and listed; a bad target is an error.",
    )
    _add_data_options(train)
    train.add_argument("--out", required=True, metavar="DIR", help="model directory to write")
    train.add_argument("--method", choices=("rf", "lm"), default="rf", help="default rf")
    train.add_argument("--seed", type=int, default=0, help="forest / fine-tuning seed")
    train.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    train.set_defaults(handler=run_train)

    predict = commands.add_parser(
        "predict",
        help="predict for every row of a file",
        description="Predict for every row of INPUT (CSV/TSV with a SMILES column, or .smi/.txt "
        "with one SMILES a line): writes smiles,prediction,error (prediction is "
        "P(class 1) for a classifier). A row that cannot be predicted keeps its "
        "place with an empty prediction and the reason, and is reported as "
        "file:line.",
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
        help="SMILES column of INPUT (default: the model's, else 'smiles')",
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

    options = TrainOptions(**_options(args), method=args.method, seed=args.seed)
    manifest = train_property_model(options, args.out, overwrite=args.overwrite)
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
    print(f"model in {args.out}")
    return 0


def run_predict(args: argparse.Namespace) -> int:
    from kiban.io import atomic_write_text
    from kiban.tasks.molecules.properties.saved_models import predict_file

    predictions = predict_file(args.model, args.input, smiles_column=args.smiles_column)
    for row in predictions.failed:
        print(f"kiban property predict: {row.where}: no prediction: {row.error}", file=sys.stderr)
    if args.out:
        atomic_write_text(args.out, predictions.to_csv())
    if args.json:
        payload = predictions.as_dict(rows=not args.out)
        print(json.dumps(payload, indent=1, allow_nan=False))
    elif args.out:
        print(
            f"{len(predictions.rows):,} rows, {len(predictions.failed):,} without a "
            f"prediction; wrote {args.out}"
        )
    else:
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
