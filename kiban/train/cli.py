"""``kiban train`` and ``kiban finetune`` (argparse only; torch is imported when they run)."""

from __future__ import annotations

import argparse
import json
import tomllib
from typing import Any

from kiban.errors import InputError
from kiban.train.config import load_config


def _setting(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--set {text!r}: expected SECTION.KEY=VALUE")
    key, value = text.split("=", 1)
    try:
        parsed = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value  # a bare string
    return key.strip(), parsed


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", metavar="CONFIG.toml")
    parser.add_argument("--out", help="run directory (config: out)")
    parser.add_argument("--max-steps", type=int, help="optimizer steps (config: train.max_steps)")
    parser.add_argument(
        "--checkpoint-every",
        type=int,
        help="steps between checkpoints (config: train.checkpoint_every)",
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its last checkpoint"
    )
    parser.add_argument(
        "--set",
        type=_setting,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any config field, e.g. --set train.batch_size=32",
    )
    parser.add_argument("--json", action="store_true", help="print the run summary as JSON")


def add_parsers(commands: argparse._SubParsersAction) -> None:
    train = commands.add_parser(
        "train",
        help="pre-train or continue pre-training a language model on a kiban corpus",
        description="Train a Hugging Face causal LM (a Llama-style preset, or continue a local "
        "model directory with model.base) on a built kiban corpus. Under torchrun "
        "(`torchrun --nproc_per_node=N -m kiban train ...`) it runs DDP or FSDP2 "
        "(train.parallel). Writes OUT/metrics.jsonl, OUT/checkpoints/, OUT/model/.",
    )
    _common(train)
    train.add_argument("--corpus", help="built corpus directory (config: data.corpus)")
    train.set_defaults(handler=run_train)

    finetune = commands.add_parser(
        "finetune",
        help="fine-tune a model on your own prompt/completion data (full or LoRA)",
        description="Supervised fine-tuning with loss on completions only. Data: JSONL "
        "{prompt, completion} or CSV rendered by finetune.prompt_template / "
        "completion_template. Writes OUT/model/ (and OUT/model/adapter with --lora).",
    )
    _common(finetune)
    finetune.add_argument("--data", help="JSONL or CSV file (config: finetune.data)")
    finetune.add_argument("--base", help="model directory to tune (config: model.base)")
    finetune.add_argument("--lora", action="store_true", help="train LoRA adapters (peft)")
    finetune.set_defaults(handler=run_finetune)


def _config(args: argparse.Namespace, **extra: Any):
    overrides = {
        "out": args.out,
        "train.max_steps": args.max_steps,
        "train.checkpoint_every": args.checkpoint_every,
        **extra,
    }
    overrides.update(dict(args.set))
    return load_config(args.config, **overrides)


def _report(summary: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(summary, indent=1, default=str))
        return
    val = f", validation loss {summary['val_loss']:.4f}" if "val_loss" in summary else ""
    steps = (
        f"stopped at step {summary['steps']} of {summary['max_steps']} (--resume continues)"
        if summary.get("stopped_early")
        else f"{summary['steps']} steps"
    )
    print(
        f"{steps}: loss {summary.get('loss', float('nan')):.4f}{val}, "
        f"{summary.get('tokens_per_s', 0):,.0f} tokens/s; model in {summary.get('model')}"
    )


def _run(handler, args: argparse.Namespace, **extra: Any) -> int:
    """Run ``handler`` on the config. Errors propagate to `kiban._cli.run_command`: bad config,
    data or checkpoint (ValueError family) exit 2; a run that fails (`TrainingDiverged`, a full
    disk) exits 1."""
    import importlib.util

    missing = [m for m in ("torch", "transformers") if importlib.util.find_spec(m) is None]
    if missing:
        raise InputError(
            f"kiban {args.command} needs {' and '.join(missing)}: install the ml "
            "extra (pip install 'kiban[ml]')"
        )
    summary = handler(_config(args, **extra), resume=args.resume)
    if summary.get("model") is not None:
        _report(summary, args.json)
    return 0


def run_train(args: argparse.Namespace) -> int:
    from kiban.train.run import pretrain

    return _run(pretrain, args, **{"data.corpus": args.corpus})


def run_finetune(args: argparse.Namespace) -> int:
    from kiban.train.run import finetune

    return _run(
        finetune,
        args,
        **{
            "finetune.data": args.data,
            "model.base": args.base,
            "finetune.lora": True if args.lora else None,
        },
    )
