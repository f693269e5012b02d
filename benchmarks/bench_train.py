"""Training throughput: kiban's loop vs Hugging Face `Trainer` vs a plain PyTorch loop.

Same model (a Llama built from the same config and seed), same batches (random token rows, so
the data path costs nothing for anyone), same optimizer (AdamW, foreach on CPU / fused on GPU),
same gradient clipping; each runner trains ``--steps`` steps and its tokens/s is the median over
the steps after ``--warmup``. Runners are interleaved and the order rotates every repeat; the
reported ratio is the median of per-repeat ratios.

* ``kiban``    `kiban.train.loop.train` (the loop behind ``kiban train``; checkpoints and
               evaluation off the timed path);
* ``plain``    forward, summed cross-entropy, backward, clip, step — nothing else;
* ``trainer``  `transformers.Trainer` (logging and saving off).

MFU = tokens/s x (6 x matmul parameters + 12 x layers x hidden x seq) / peak FLOP/s; the peak
is measured here for the CPU (fp32 2048³ matmul) and taken from the datasheet for known GPUs.

    .venv/bin/python benchmarks/bench_train.py                      # 4.46M Llama, CPU
    .venv/bin/python benchmarks/bench_train.py --quick              # a smoke run
    python benchmarks/bench_train.py --device cuda --preset llama-1b --seq 2048 --batch 16 \\
        --micro 4 --compile --runners kiban,plain                   # on a GPU: MFU of a 1B model

Before / after a change: ``--compare-with OLD`` runs the ``kiban`` runner with this checkout's
kiban and with the one in ``OLD`` (e.g. ``git archive 531e3f1 kiban | tar -x -C /tmp/old``),
each in its own process, alternately (the order flips every repeat), and reports tokens/s of
each (median over repeats) and the median of the per-repeat ratios new/old::

    .venv/bin/python benchmarks/bench_train.py --compare-with /tmp/old --repeats 5
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def _kiban_root() -> Path:
    """This checkout, or the one ``--kiban-root DIR`` names (read before kiban is imported)."""
    if "--kiban-root" in sys.argv[:-1]:
        return Path(sys.argv[sys.argv.index("--kiban-root") + 1]).resolve()
    return HERE.parent


sys.path.insert(0, str(_kiban_root()))


def before_after(command: list[str], old_root: Path, repeats: int) -> dict:
    """Run ``command`` (a script and its options; its last stdout line is a JSON object of
    tokens/s by case) with this checkout's kiban and with ``old_root``'s, one process each,
    alternately (the order flips every repeat). Median tokens/s per case and version, and the
    median of per-repeat ratios new/old per case."""
    import os
    import subprocess

    roots = {"new": HERE.parent, "old": Path(old_root).resolve()}
    runs: dict[str, list[dict[str, float]]] = {"new": [], "old": []}
    for repeat in range(repeats):
        for version in ("new", "old") if repeat % 2 == 0 else ("old", "new"):
            result = subprocess.run(
                [sys.executable, *command, "--kiban-root", str(roots[version])],
                capture_output=True,
                text=True,
                check=False,
                env={**os.environ, "PYTHONPATH": str(roots[version])},
            )
            if result.returncode != 0:
                raise SystemExit(f"{version} ({roots[version]}) failed:\n{result.stderr[-3000:]}")
            runs[version].append(json.loads(result.stdout.strip().splitlines()[-1]))
            print(f"repeat {repeat} {version}: {runs[version][-1]}", flush=True)
    cases = list(runs["new"][0])
    return {
        "roots": {k: str(v) for k, v in roots.items()},
        "repeats": repeats,
        "tokens_per_s": {
            v: {c: statistics.median(r[c] for r in runs[v]) for c in cases} for v in runs
        },
        "new_over_old": {
            c: statistics.median(n[c] / o[c] for n, o in zip(runs["new"], runs["old"]))
            for c in cases
        },
        "runs": runs,
    }


def model_config(args):
    from transformers import LlamaConfig

    if args.preset:
        from kiban.train.config import ModelConfig
        from kiban.train.models import llama_config

        return llama_config(
            ModelConfig(preset=args.preset), args.vocab, eos_id=0, pad_id=1, seq_len=args.seq
        )
    return LlamaConfig(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        intermediate_size=4 * args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.heads,
        max_position_embeddings=max(512, args.seq),
    )


def build(args):
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    lm = LlamaForCausalLM(model_config(args))
    return lm


def rows(args) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, args.vocab, size=(args.steps * args.batch, args.seq + 1), dtype=np.int64)


class ArrayData:
    """`TrainData` over an in-memory array: step k takes rows [k*B, (k+1)*B)."""

    def __init__(self, array: np.ndarray):
        self.array, self.seq_len = array, array.shape[1] - 1

    def global_batch(self, step, batch_size):
        from kiban.train.batches import Batch

        block = self.array[step * batch_size : (step + 1) * batch_size]
        return Batch(block[:, :-1], block[:, 1:])

    def validation_batches(self, batch_size, max_batches=None):
        return iter(())

    def describe(self):
        return {"rows": len(self.array)}


class Vocab:
    def __init__(self, size):
        self.vocab_size = size


def autocast(args):
    import torch

    return torch.autocast(args.device, dtype=torch.bfloat16, enabled=args.device == "cuda")


def step_rates(times: list[float], tokens: int, warmup: int) -> float:
    return tokens / statistics.median(times[warmup:])


def run_kiban(args, data) -> float:
    from kiban.train.config import config_from_dict
    from kiban.train.loop import train

    with tempfile.TemporaryDirectory() as tmp:
        config = config_from_dict(
            {
                "out": tmp,
                "model": {"preset": "llama-1m"},
                "optim": {"lr": 1e-3, "warmup_steps": 0},
                "train": {
                    "max_steps": args.steps,
                    "batch_size": args.batch,
                    "micro_batch_size": args.micro,
                    "eval_every": 0,
                    "checkpoint_every": 0,
                    "progress": False,
                    "device": args.device,
                    "compile": args.compile,
                    "log_every": 1,
                },
            }
        )
        train(config, ArrayData(data), Vocab(args.vocab), build(args), save_model=lambda *a: None)
        records = [json.loads(x) for x in Path(tmp, "metrics.jsonl").read_text().splitlines()]
    return statistics.median(r["tokens_per_s"] for r in records[args.warmup :])


def run_plain(args, data) -> float:
    import torch
    import torch.nn.functional as F

    device = torch.device(args.device)
    lm = build(args).to(device)
    lm.config.use_cache = False
    if args.compile:
        for block in lm.model.layers:
            block.compile()
    kwargs = {"fused": True} if args.device == "cuda" else {"foreach": True}
    optimizer = torch.optim.AdamW(lm.parameters(), lr=1e-3, **kwargs)
    times = []
    accumulate = args.batch // args.micro
    for step in range(args.steps):
        began = time.perf_counter()
        block = torch.from_numpy(data[step * args.batch : (step + 1) * args.batch]).to(device)
        for part in block.chunk(accumulate):
            with autocast(args):
                logits = lm(input_ids=part[:, :-1], use_cache=False).logits
            loss = (
                F.cross_entropy(
                    logits.float().reshape(-1, logits.shape[-1]),
                    part[:, 1:].reshape(-1),
                    reduction="sum",
                )
                / part[:, 1:].numel()
            )
            (loss / accumulate).backward()
        torch.nn.utils.clip_grad_norm_(lm.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        float(loss)
        if args.device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - began)
    return step_rates(times, args.batch * args.seq, args.warmup)


def run_trainer(args, data) -> float:
    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments

    class Clock(TrainerCallback):
        def __init__(self):
            self.times, self.began = [], None

        def on_step_begin(self, *a, **k):
            self.began = time.perf_counter()

        def on_step_end(self, *a, **k):
            if args.device == "cuda":
                torch.cuda.synchronize()
            self.times.append(time.perf_counter() - self.began)

    dataset = [
        {"input_ids": torch.from_numpy(row[:-1]), "labels": torch.from_numpy(row[:-1])}
        for row in data
    ]
    clock = Clock()
    with tempfile.TemporaryDirectory() as tmp:
        training = TrainingArguments(
            output_dir=tmp,
            per_device_train_batch_size=args.micro,
            gradient_accumulation_steps=args.batch // args.micro,
            max_steps=args.steps,
            learning_rate=1e-3,
            lr_scheduler_type="constant",
            max_grad_norm=1.0,
            logging_strategy="no",
            save_strategy="no",
            report_to=[],
            disable_tqdm=True,
            dataloader_num_workers=0,
            use_cpu=args.device == "cpu",
            bf16=args.device == "cuda",
            optim="adamw_torch_fused" if args.device == "cuda" else "adamw_torch",
            torch_compile=args.compile,
            seed=0,
        )
        Trainer(model=build(args), args=training, train_dataset=dataset, callbacks=[clock]).train()
    return step_rates(clock.times, args.batch * args.seq, args.warmup)


def cpu_peak() -> float:
    import torch

    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    for _ in range(2):
        a @ b
    times = []
    for _ in range(5):
        began = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - began)
    return 2 * 2048**3 / min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--preset", help="a kiban preset instead of --hidden/--layers/--heads")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=512)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--micro", type=int, default=None)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--runners", default="kiban,plain,trainer")
    parser.add_argument("--quick", action="store_true", help="tiny model, few steps")
    parser.add_argument(
        "--out",
        default=None,
        help="results file (default results/train.json, or "
        "results/train-before-after.json with --compare-with)",
    )
    parser.add_argument(
        "--compare-with",
        metavar="OLD_ROOT",
        help="a checkout (or `git archive` of kiban/) to compare the kiban "
        "runner with, before / after",
    )
    parser.add_argument("--kiban-root", help=argparse.SUPPRESS)  # read by _kiban_root
    parser.add_argument("--measure-kiban", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.hidden, args.layers, args.heads, args.seq, args.batch = 32, 2, 2, 32, 4
        args.steps, args.warmup, args.repeats = 4, 1, 1
    args.micro = args.micro or args.batch
    if args.measure_kiban:  # one run of the kiban runner, for --compare-with
        print(json.dumps({"train": run_kiban(args, rows(args))}))
        return
    if args.compare_with:
        options = [
            f"--{k}={getattr(args, k)}"
            for k in (
                "device",
                "hidden",
                "layers",
                "heads",
                "vocab",
                "seq",
                "batch",
                "micro",
                "steps",
                "warmup",
            )
        ]
        options += [f"--preset={args.preset}"] if args.preset else []
        options += ["--compile"] if args.compile else []
        result = {
            "date": datetime.date.today().isoformat(),
            "machine": platform.processor() or platform.machine(),
            "config": {
                k: getattr(args, k)
                for k in (
                    "preset",
                    "hidden",
                    "layers",
                    "heads",
                    "vocab",
                    "seq",
                    "batch",
                    "micro",
                    "steps",
                    "warmup",
                    "compile",
                )
            },
            **before_after(
                [__file__, "--measure-kiban", *options], args.compare_with, args.repeats
            ),
        }
        out = Path(args.out or HERE / "results" / "train-before-after.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1))
        print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=1))
        return
    args.out = args.out or str(HERE / "results" / "train.json")
    import torch
    from transformers import LlamaForCausalLM

    from kiban.train.models import count_parameters

    data = rows(args)
    probe = LlamaForCausalLM(model_config(args))
    flops = (
        6.0 * count_parameters(probe)["matmul"]
        + 12.0 * probe.config.num_hidden_layers * probe.config.hidden_size * args.seq
    )
    parameters = count_parameters(probe)["total"]
    del probe
    if args.device == "cuda":
        from kiban.train.loop import PEAK_BF16

        name = torch.cuda.get_device_name()
        peak = next((v for k, v in PEAK_BF16.items() if k in name), None)
    else:
        name, peak = platform.processor() or platform.machine(), cpu_peak()
    runners = {"kiban": run_kiban, "plain": run_plain, "trainer": run_trainer}
    chosen = args.runners.split(",")
    rates: dict[str, list[float]] = {name: [] for name in chosen}
    for repeat in range(args.repeats):
        order = chosen[repeat % len(chosen) :] + chosen[: repeat % len(chosen)]
        for runner in order:
            rates[runner].append(runners[runner](args, data))
            print(f"repeat {repeat} {runner}: {rates[runner][-1]:,.0f} tokens/s", flush=True)
    result = {
        "date": datetime.date.today().isoformat(),
        "device": name,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "parameters": parameters,
        "flops_per_token": flops,
        "peak_flops": peak,
        "config": {
            k: getattr(args, k)
            for k in (
                "preset",
                "hidden",
                "layers",
                "heads",
                "vocab",
                "seq",
                "batch",
                "micro",
                "steps",
                "warmup",
                "repeats",
                "compile",
            )
        },
        "tokens_per_s": {k: statistics.median(v) for k, v in rates.items()},
        "runs": rates,
    }
    if peak:
        result["mfu"] = {k: v * flops / peak for k, v in result["tokens_per_s"].items()}
    for other in chosen:
        if other != "kiban" and "kiban" in rates:
            result[f"kiban_over_{other}"] = statistics.median(
                a / b for a, b in zip(rates["kiban"], rates[other])
            )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=1))


if __name__ == "__main__":
    main()
