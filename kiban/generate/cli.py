"""``kiban generate MODEL_DIR|RUN_DIR --prompt TEXT --n N ...``: parse, call
`Generator.generate`, print.

The handler raises; `kiban._cli.run_command` turns a bad parameter or model directory
(`GenerationError`, a ValueError) into exit status 2 and a runtime failure into 1. torch and
transformers are imported inside `run`, so building the parser stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "generate",
        help="generate from a trained kiban (or Hugging Face) model",
        description="Sample completions of a prompt. Inside <mol>/<crystal>/<num>/<protein> "
        "spans only that modality's tokens are allowed (unless --no-constrain); "
        "a prompt that ends inside an open span stops when the span closes.",
    )
    parser.add_argument(
        "model_dir",
        metavar="MODEL_DIR|RUN_DIR",
        help="a model directory (config.json + weights + tokenizer; kiban or "
        "Hugging Face), or a `kiban train`/`kiban finetune` run directory "
        "(its final model, RUN_DIR/model)",
    )
    parser.add_argument(
        "--prompt",
        required=True,
        action="append",
        help="prompt text (tagged); repeat for several prompts",
    )
    parser.add_argument(
        "--n",
        type=int,
        default=1,
        help="completions per prompt (default 1); with --n > 1 they are sampled "
        "(temperature 1 unless --temperature says otherwise)",
    )
    parser.add_argument("--max-new-tokens", type=int, default=64, help="default 64")
    parser.add_argument(
        "--temperature",
        type=float,
        default=None,
        help="a finite number >= 0; 0 = greedy. Default: 0 for --n 1, 1 for "
        "--n > 1 (--temperature 0 with --n > 1 gives N identical copies)",
    )
    parser.add_argument(
        "--top-p", type=float, default=1.0, help="nucleus sampling, in (0, 1] (default 1)"
    )
    parser.add_argument("--seed", type=int, default=None, help="makes sampling reproducible")
    parser.add_argument(
        "--no-constrain",
        dest="constrain",
        action="store_false",
        help="do not mask tokens outside the current modality",
    )
    parser.add_argument(
        "--valid-only",
        action="store_true",
        help="resample completions whose spans do not parse (RDKit, ...)",
    )
    parser.add_argument(
        "--max-tries",
        type=int,
        default=8,
        help="generations per completion with --valid-only (default 8)",
    )
    parser.add_argument(
        "--engine",
        choices=("auto", "fast", "hf"),
        default="auto",
        help="decoder: fast Llama path, the model's own forward, or auto",
    )
    parser.add_argument(
        "--device", default="cpu", help="where the model runs: cpu (default), cuda, cuda:1, ..."
    )
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(handler=run)  # kiban.cli dispatches on args.handler
    return parser


def run(args: argparse.Namespace) -> int:
    """0 on success; 1 when --valid-only could not make every completion valid. Bad input
    raises `GenerationError` (exit 2 under `kiban._cli.run_command`)."""
    from pathlib import Path

    from kiban.generate import load_generator
    from kiban.generate.generator import check_parameters, resolve_model_dir

    sampling = check_parameters(
        n=args.n,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        seed=args.seed,
        max_tries=args.max_tries,
    )
    model_dir = resolve_model_dir(args.model_dir)
    if model_dir != Path(args.model_dir):
        print(
            f"kiban generate: {args.model_dir} is a training run: using its final model "
            f"{model_dir}",
            file=sys.stderr,
        )
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # no loading bars around our output
    generator = load_generator(model_dir, engine=args.engine, device=args.device)
    start = time.perf_counter()
    completions = generator.generate(
        args.prompt,
        n=args.n,
        max_new_tokens=args.max_new_tokens,
        temperature=sampling.temperature,
        top_p=args.top_p,
        seed=args.seed,
        constrain=args.constrain,
        valid_only=args.valid_only,
        max_tries=args.max_tries,
    )
    seconds = time.perf_counter() - start
    payload = {
        "model": str(model_dir),
        "engine": generator.last_engine,
        "temperature": sampling.temperature,
        "seconds": round(seconds, 4),
        "completion_tokens": sum(c.completion_tokens for c in completions),
        "completions": [c.as_dict() for c in completions],
    }
    if args.json:
        print(json.dumps(payload, indent=1, ensure_ascii=False))
    else:
        for k, completion in enumerate(completions):
            status = "valid" if completion.valid else "INVALID"
            print(
                f"--- {k} ({completion.completion_tokens} tokens, {completion.stop_reason}, "
                f"{status}, tries {completion.tries})"
            )
            print(completion.text)
            for span in completion.spans:
                detail = span.canonical if span.valid else f"error: {span.error}"
                print(f"  <{span.modality}> {span.text!r} -> {detail}")
        print(
            f"{payload['completion_tokens']} tokens in {seconds:.2f} s "
            f"({generator.last_engine}, temperature {sampling.temperature:g})",
            file=sys.stderr,
        )
    if args.valid_only and not all(c.valid for c in completions):
        return 1
    return 0
