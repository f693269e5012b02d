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

from kiban.errors import InputError


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
    parser.add_argument(
        "--out",
        metavar="SAMPLES.smi",
        default=None,
        help="also write the molecules of the completions' <mol> spans to this file: one "
        "canonical SMILES per line, no header (written atomically); spans that do not "
        "parse are never written. A one-line summary goes to stderr",
    )
    parser.add_argument(
        "--unique",
        action="store_true",
        help="with --out: keep only the first occurrence of each canonical SMILES",
    )
    parser.add_argument(
        "--min-heavy-atoms",
        type=int,
        default=None,
        metavar="K",
        help="with --out: drop molecules with fewer than K heavy (non-hydrogen) atoms",
    )
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
    out_path = _check_out_options(args)
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
    if out_path is not None:
        payload["out"] = write_molecules(
            completions,
            out_path,
            unique=args.unique,
            min_heavy_atoms=args.min_heavy_atoms,
        )
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
    if out_path is not None:
        print(_summary(payload["out"], args.min_heavy_atoms), file=sys.stderr)
    if args.valid_only and not all(c.valid for c in completions):
        return 1
    return 0


def _check_out_options(args: argparse.Namespace):
    """The --out path, checked before the model loads so a typo costs no generation time."""
    from pathlib import Path

    if args.out is None:
        for flag, given in (
            ("--unique", args.unique),
            ("--min-heavy-atoms", args.min_heavy_atoms is not None),
        ):
            if given:
                raise InputError(f"{flag} filters the molecules --out writes; add --out FILE.smi")
        return None
    if args.min_heavy_atoms is not None and args.min_heavy_atoms < 1:
        raise InputError(f"--min-heavy-atoms must be an integer >= 1. Got {args.min_heavy_atoms}.")
    out_path = Path(args.out)
    if out_path.is_dir():
        raise InputError(f"--out must be a file to write, but {out_path} is a directory")
    if not out_path.parent.is_dir():
        raise InputError(f"--out {out_path}: the directory {out_path.parent} does not exist")
    return out_path


def write_molecules(
    completions, out_path, *, unique: bool, min_heavy_atoms: int | None
) -> dict[str, object]:
    """Write the canonical SMILES of the completions' valid <mol> spans to ``out_path`` (one a
    line, atomically), in completion order, after the filters; return the counts.

    Filters run in this order: invalid spans dropped, then fewer than ``min_heavy_atoms``
    heavy atoms, then repeats of a canonical SMILES already written (``unique``). A span is
    valid when the codec accepted the closed span and RDKit parses it: a span cut off by
    --max-new-tokens is a prefix, not a molecule."""
    from kiban.chem import canonical_smiles, mol_or_none
    from kiban.io import atomic_write_text

    spans = [span for c in completions for span in c.spans if span.modality == "mol"]
    if not spans:
        prompts = sorted({c.prompt for c in completions})
        raise InputError(
            f"--out writes the molecules of the completions' <mol> spans, but none of the "
            f"{len(completions)} completions of prompt(s) {prompts} has a <mol> span; "
            f"use a molecule prompt such as '<mol>' or 'The compound <mol>'"
        )
    written: list[str] = []
    seen: set[str] = set()
    valid = too_small = duplicates = 0
    for span in spans:
        mol = mol_or_none(span.text) if span.valid else None
        if mol is None:
            continue
        valid += 1
        if min_heavy_atoms is not None and mol.GetNumHeavyAtoms() < min_heavy_atoms:
            too_small += 1
            continue
        smiles = canonical_smiles(mol)
        if unique and smiles in seen:
            duplicates += 1
            continue
        seen.add(smiles)
        written.append(smiles)
    atomic_write_text(out_path, "".join(f"{smiles}\n" for smiles in written))
    dropped: dict[str, int] = {"invalid": len(spans) - valid}
    if min_heavy_atoms is not None:
        dropped["fewer_heavy_atoms"] = too_small
    if unique:
        dropped["duplicate"] = duplicates
    return {
        "path": str(out_path),
        "completions": len(completions),
        "generated": len(spans),
        "valid": valid,
        "written": len(written),
        "dropped": dropped,
    }


def _summary(counts: dict, min_heavy_atoms: int | None) -> str:
    labels = {
        "invalid": "invalid",
        "fewer_heavy_atoms": f"under {min_heavy_atoms} heavy atoms",
        "duplicate": "duplicates",
    }
    dropped = ", ".join(f"{n} {labels[name]}" for name, n in counts["dropped"].items())
    return (
        f"kiban generate: generated {counts['generated']} <mol> spans in "
        f"{counts['completions']} completions, valid {counts['valid']}, written "
        f"{counts['written']} to {counts['path']} (dropped: {dropped})"
    )
