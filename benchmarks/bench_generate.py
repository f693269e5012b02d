"""Decoding throughput of kiban's fast Llama decoder as a ratio to Hugging Face ``model.generate``.

One model for both: a random-init Llama of 4.46M parameters (hidden 256, intermediate 1024,
4 layers, 4 heads, vocab 512, fp32, untied lm_head; seed 0). Greedy decoding of 128 new tokens
(no stop token, so every row runs the full length) at batch 1 and batch 32 (prompts of random
lengths 8-24, left-padded), timed interleaved (the order alternates every repeat) so machine load
hits both alike. Reported: tokens/s (new tokens per wall second, prefill included) of each and
the median over repeats of the per-repeat ratio kiban/HF. Every repeat checks that the greedy
tokens are identical.

* ``hf``     ``model.generate(input_ids, attention_mask, do_sample=False, max_new_tokens=128)``
             (sdpa attention, its default dynamic cache);
* ``kiban``  `kiban.generate.engine.decode` with `LlamaEngine` built once from the same model
             (building it is loading, not decoding; it takes milliseconds).

Also measured (``--no-constraints`` skips it): the cost of the modality constraints. A kiban
tokenizer is trained on a few tagged sentences, the same Llama shape gets its vocabulary, and
kiban decodes 32 rows x 128 tokens (sampling, no stop) from ``The compound <mol>`` and from a
prose prompt, with and without the constraint mask: tokens/s of each and their ratio.

    .venv/bin/python benchmarks/bench_generate.py            # 7 repeats, ~1 min on 2 cores
    .venv/bin/python benchmarks/bench_generate.py --quick    # 1 repeat, 16 tokens: a smoke run
    python benchmarks/bench_generate.py --device cuda --batches 1 32 256   # on a GPU machine

``--device cuda`` runs both on the GPU (the results file says so; the greedy-identity check
stays: with ``--dtype bfloat16`` the two may part on near-tied logits, which it reports).

Before / after a change: ``--compare-with OLD`` times `Generator.generate` (the path behind
``kiban generate``: encoding, constraints, decoding, checking spans) with this checkout's kiban
and with the one in ``OLD``, one process each, alternately; the same model and tokenizer (seed
0) in both. Cases: batch 1 greedy, and 32 rows sampled at temperature 1 with the constraint
mask; ``--new-tokens`` tokens each; a process's tokens/s is its best of 5 timed calls (the one
least disturbed by other load on a shared machine), reported as the median over repeats::

    .venv/bin/python benchmarks/bench_generate.py --compare-with /tmp/old --new-tokens 32
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE))
# bench_train puts the kiban to measure first on sys.path (this checkout, or --kiban-root's)
from bench_train import before_after  # noqa: E402


def build_model(device: str = "cpu", dtype: str = "float32"):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=256,
        intermediate_size=1024,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        vocab_size=512,
        max_position_embeddings=512,
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=0,
    )
    return LlamaForCausalLM(config).eval().to(device=device, dtype=getattr(torch, dtype))


def prompts(batch: int, seed: int):
    """Left-padded random prompts: (input_ids, attention_mask) of shape (batch, T)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    lengths = [16] if batch == 1 else torch.randint(8, 25, (batch,), generator=generator).tolist()
    width = max(lengths)
    input_ids = torch.zeros(batch, width, dtype=torch.long)
    attention_mask = torch.zeros(batch, width, dtype=torch.long)
    for row, length in enumerate(lengths):
        input_ids[row, width - length :] = torch.randint(1, 512, (length,), generator=generator)
        attention_mask[row, width - length :] = 1
    return input_ids, attention_mask


def run_hf(model, input_ids, attention_mask, new_tokens: int):
    import torch

    device = model.get_input_embeddings().weight.device
    with torch.inference_mode():
        out = model.generate(
            input_ids=input_ids.to(device),
            attention_mask=attention_mask.to(device),
            do_sample=False,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            pad_token_id=0,
        )
    return out[:, input_ids.shape[1] :].cpu()  # .cpu(): waits for the GPU, as decode does


def run_kiban(engine, input_ids, attention_mask, new_tokens: int):
    from kiban.generate.engine import decode

    return decode(engine, input_ids, attention_mask.bool(), max_new_tokens=new_tokens).tokens


def constraint_cost(repeats: int, new_tokens: int, device: str = "cpu") -> dict:
    """kiban tokens/s with and without the modality-constraint mask, batch 32."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from kiban.generate.constraints import ModalityConstraints, PromptState
    from kiban.generate.engine import LlamaEngine, SamplingConfig, decode
    from kiban.tokenizer import train_tokenizer

    smiles = ["CCO", "c1ccccc1", "CC(=O)Oc1ccccc1C(=O)O", "CC(C)Cc1ccc(cc1)C(C)C(=O)O", "C1CCCCC1"]
    texts = [
        f"The compound <mol>{s}</mol> has a gap of <num>{i}.5 eV</num>."
        for i, s in enumerate(smiles * 20)
    ]
    tokenizer = train_tokenizer(texts, vocab_size=400)
    torch.manual_seed(0)
    model = (
        LlamaForCausalLM(
            LlamaConfig(
                hidden_size=256,
                intermediate_size=1024,
                num_hidden_layers=4,
                num_attention_heads=4,
                num_key_value_heads=4,
                vocab_size=tokenizer.vocab_size,
                max_position_embeddings=512,
                bos_token_id=None,
                eos_token_id=None,
                pad_token_id=tokenizer.pad_id,
            )
        )
        .eval()
        .to(device)
    )
    engine = LlamaEngine(model)
    tables = ModalityConstraints(tokenizer, tokenizer.vocab_size)
    prompts = ["The compound <mol>", "The compound"] * 16
    ids = [
        tokenizer.encode(p + ("</mol>" if p.endswith("<mol>") else ""))[
            : -1 if p.endswith("<mol>") else None
        ]
        for p in prompts
    ]
    width = max(map(len, ids))
    input_ids = torch.tensor([[tokenizer.pad_id] * (width - len(i)) + i for i in ids])
    mask = torch.tensor([[False] * (width - len(i)) + [True] * len(i) for i in ids])
    sampling = SamplingConfig(temperature=1.0)
    times: dict[str, list[float]] = {"constrained": [], "unconstrained": []}
    for repeat in range(repeats):
        order = list(times) if repeat % 2 == 0 else list(times)[::-1]
        for method in order:
            constraint = (
                tables.track([PromptState.of(p) for p in prompts])
                if method == "constrained"
                else None
            )
            start = time.perf_counter()
            decode(
                engine,
                input_ids,
                mask,
                max_new_tokens=new_tokens,
                sampling=sampling,
                generator=torch.Generator(device=device).manual_seed(repeat),
                constraint=constraint,
            )
            times[method].append(time.perf_counter() - start)
    tokens = len(prompts) * new_tokens
    out = {m: round(tokens / statistics.median(t), 1) for m, t in times.items()}
    out["ratio_constrained_over_unconstrained"] = round(
        statistics.median([u / c for c, u in zip(times["constrained"], times["unconstrained"])]), 3
    )
    out.update(batch=len(prompts), new_tokens=new_tokens, vocab_size=tokenizer.vocab_size)
    print(
        f"constraints, batch 32: {out['constrained']:.0f} tok/s constrained, "
        f"{out['unconstrained']:.0f} unconstrained (ratio "
        f"{out['ratio_constrained_over_unconstrained']:.2f})",
        flush=True,
    )
    return out


def measure_generator(new_tokens: int) -> dict[str, float]:
    """tokens/s of `Generator.generate` (the best of 5 calls after a warm-up), by case."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from kiban.generate.generator import Generator
    from kiban.tokenizer import train_tokenizer

    smiles = ["CCO", "c1ccccc1", "CC(=O)Oc1ccccc1C(=O)O", "CC(C)Cc1ccc(cc1)C(C)C(=O)O", "C1CCCCC1"]
    tokenizer = train_tokenizer(
        [
            f"The compound <mol>{s}</mol> has a gap of <num>{i}.5 eV</num>."
            for i, s in enumerate(smiles * 20)
        ],
        vocab_size=400,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(
        LlamaConfig(
            hidden_size=256,
            intermediate_size=1024,
            num_hidden_layers=4,
            num_attention_heads=4,
            num_key_value_heads=4,
            vocab_size=tokenizer.vocab_size,
            max_position_embeddings=512,
            bos_token_id=None,
            eos_token_id=None,
            pad_token_id=tokenizer.pad_id,
        )
    ).eval()
    generator = Generator(
        model,
        tokenizer.hf,
        science=tokenizer,
        eos_ids=[-1],  # no stop
        pad_id=tokenizer.pad_id,
        model_dir=Path("."),
    )
    cases = {
        "batch1_greedy": (["The compound <mol>"], 0.0),
        "batch32_sampled": (["The compound <mol>", "The compound"] * 16, 1.0),
    }
    rates = {}
    for name, (prompts, temperature) in cases.items():
        times, tokens = [], 0
        for repeat in range(6):
            start = time.perf_counter()
            completions = generator.generate(
                prompts, max_new_tokens=new_tokens, temperature=temperature, seed=repeat
            )
            if repeat:  # the first call builds the engine and the constraint tables
                times.append(time.perf_counter() - start)
                tokens = sum(c.completion_tokens for c in completions)
        rates[name] = tokens / min(times)
    return rates


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads for both (default: torch's default)",
    )
    parser.add_argument("--quick", action="store_true", help="1 repeat of 16 tokens")
    parser.add_argument(
        "--no-constraints",
        dest="constraints",
        action="store_false",
        help="skip the constraint-cost measurement",
    )
    parser.add_argument(
        "--blas",
        choices=["auto", "torch", "numpy"],
        default="auto",
        help="kiban's library for small matrix products (default: measured)",
    )
    parser.add_argument(
        "--large",
        choices=["auto", "torch", "onednn"],
        default="auto",
        help="kiban's library for larger matrix products (default: measured)",
    )
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--compare-with",
        metavar="OLD_ROOT",
        help="time Generator.generate with this kiban and OLD_ROOT's, "
        "before / after (see the module docstring)",
    )
    parser.add_argument("--kiban-root", help=argparse.SUPPRESS)  # read by bench_train
    parser.add_argument("--measure-generator", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.new_tokens = 1, 16
    if args.measure_generator:  # one process of --compare-with
        print(json.dumps(measure_generator(args.new_tokens)))
        return 0
    if args.compare_with:
        result = {
            "benchmark": "generate-before-after",
            "date": datetime.datetime.now(datetime.UTC).isoformat(),
            "new_tokens": args.new_tokens,
            "loadavg_at_start": os.getloadavg(),
            **before_after(
                [__file__, "--measure-generator", f"--new-tokens={args.new_tokens}"],
                args.compare_with,
                args.repeats,
            ),
        }
        result["loadavg_at_end"] = os.getloadavg()
        out = args.out or RESULTS / "generate-before-after.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1))
        print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=1))
        return 0
    import torch
    import transformers

    from kiban.generate.engine import LlamaEngine

    if args.threads:
        torch.set_num_threads(args.threads)
    model = build_model(args.device, args.dtype)
    engine = LlamaEngine(model, blas=args.blas, large=args.large)
    print(
        f"kiban's small products (<= 4 rows) through {engine.linear.library}, larger ones "
        f"through {engine.linear.large_library}",
        flush=True,
    )
    parameters = sum(p.numel() for p in model.parameters())
    load_start = os.getloadavg()
    rows = []
    for batch in args.batches:
        input_ids, attention_mask = prompts(batch, seed=batch)
        run_hf(model, input_ids, attention_mask, 4)  # warm up both
        run_kiban(engine, input_ids, attention_mask, 4)
        times = {"hf": [], "kiban": []}
        identical = True
        for repeat in range(args.repeats):
            order = ("hf", "kiban") if repeat % 2 == 0 else ("kiban", "hf")
            outputs = {}
            for method in order:
                start = time.perf_counter()
                if method == "hf":
                    outputs[method] = run_hf(model, input_ids, attention_mask, args.new_tokens)
                else:
                    outputs[method] = run_kiban(engine, input_ids, attention_mask, args.new_tokens)
                times[method].append(time.perf_counter() - start)
            identical &= torch.equal(outputs["hf"], outputs["kiban"])
        tokens = batch * args.new_tokens
        ratios = [h / k for h, k in zip(times["hf"], times["kiban"])]
        row = {
            "batch": batch,
            "new_tokens": args.new_tokens,
            "hf_tokens_per_s": round(tokens / statistics.median(times["hf"]), 1),
            "kiban_tokens_per_s": round(tokens / statistics.median(times["kiban"]), 1),
            "speedup_median": round(statistics.median(ratios), 3),
            "speedup_min": round(min(ratios), 3),
            "greedy_identical": identical,
            "seconds": {m: [round(t, 4) for t in ts] for m, ts in times.items()},
        }
        rows.append(row)
        print(
            f"batch {batch:>3}: HF {row['hf_tokens_per_s']:>8.1f} tok/s   kiban "
            f"{row['kiban_tokens_per_s']:>8.1f} tok/s   speedup {row['speedup_median']:.2f}x "
            f"(min {row['speedup_min']:.2f}x)   identical {identical}",
            flush=True,
        )
    constraints = (
        constraint_cost(args.repeats, args.new_tokens, args.device) if args.constraints else None
    )
    result = {
        "benchmark": "generate",
        "date": datetime.datetime.now(datetime.UTC).isoformat(),
        "command": " ".join([".venv/bin/python", "benchmarks/bench_generate.py", *sys.argv[1:]]),
        "model": {
            "class": "LlamaForCausalLM",
            "parameters": parameters,
            "hidden_size": 256,
            "intermediate_size": 1024,
            "layers": 4,
            "heads": 4,
            "vocab_size": 512,
            "dtype": args.dtype,
            "init": "random, torch.manual_seed(0)",
        },
        "device": args.device if args.device == "cpu" else torch.cuda.get_device_name(),
        "engine": LlamaEngine.name,
        "small_products": engine.linear.library,
        "large_products": engine.linear.large_library,
        "repeats": args.repeats,
        "machine": {
            "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "loadavg_at_start": load_start,
            "loadavg_at_end": os.getloadavg(),
        },
        "results": rows,
        "constraints": constraints,
    }
    name = "generate" + ("" if args.device == "cpu" else f"-{args.device}-{args.dtype}")
    out = args.out or RESULTS / (f"{name}-quick.json" if args.quick else f"{name}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=1))
    tmp.replace(out)
    print("\n| batch | HF generate tok/s | kiban tok/s | speedup (median of ratios) | identical |")
    print("|---:|---:|---:|---:|:---:|")
    for row in rows:
        print(
            f"| {row['batch']} | {row['hf_tokens_per_s']:,.0f} | {row['kiban_tokens_per_s']:,.0f}"
            f" | {row['speedup_median']:.2f}x | {'yes' if row['greedy_identical'] else 'NO'} |"
        )
    print(f"\nwrote {out}")
    return 0 if all(r["greedy_identical"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
