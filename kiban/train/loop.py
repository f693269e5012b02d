"""The training loop: one file, read in one sitting (nanoGPT's shape, torchtitan's wrapping).

The model file stays a plain Hugging Face causal LM; everything that scales it is applied here
from outside: activation checkpointing, ``torch.compile`` per block, then DDP or FSDP2
(``fully_shard`` per block, then the root) when launched by ``torchrun``. Each optimizer step
takes the global batch of its step number from the data (so resuming and distributing need no
data state), each rank its own rows, in micro-batches; the loss is the sum of token
cross-entropies divided by the number of target tokens in the global batch, so accumulation and
process count leave it — and the gradients — unchanged.

A step whose loss or gradient norm is not finite stops the run (`TrainingDiverged`, exit 1)
before the optimizer applies it, and no checkpoint or model is saved from parameters that are
not finite: the error names the step and the last good checkpoint.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kiban.errors import RunFailure
from kiban.formats import register as register_format
from kiban.formats import write_json
from kiban.io import atomic_write_text
from kiban.train import checkpoint
from kiban.train.batches import IGNORE, Batch, TrainData
from kiban.train.config import ConfigError, RunConfig, accumulation_steps, config_from_dict

# dense bf16 peak FLOP/s per device, for MFU (vendor datasheets, no sparsity)
PEAK_BF16 = {
    "H200": 989e12,
    "H100": 989e12,
    "GH200": 989e12,
    "A100": 312e12,
    "L40S": 362e12,
    "L4": 121e12,
    "A10G": 70e12,
    "RTX 4090": 165e12,
    "V100": 125e12,
}


# run metadata: OUT/run.json (what the run is: parameters, data and its fingerprint) and
# OUT/summary.json (how it ended); version 1 is what kiban wrote before formats were recorded
RUN = register_format(
    "kiban.train.run",
    2,
    upgrades={1: lambda m: {**m, "data_fingerprint": None}},
    description="OUT/run.json: parameters, world, data, data_fingerprint",
)
SUMMARY = register_format(
    "kiban.train.summary",
    2,
    upgrades={1: dict},
    description="OUT/summary.json and MODEL/kiban_run.json: steps, final loss, tokens/s, run info",
)


class TrainingDiverged(RunFailure):
    """The loss or the gradient norm stopped being finite: the run stops before the step is
    applied and saves nothing from it (exit status 1)."""


@dataclass
class Env:
    rank: int
    world: int
    local_rank: int
    device: Any
    autocast: Any  # torch dtype or None

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def local(cls, device: Any = "cpu") -> Env:
        """One process on ``device``, no autocast: what a caller outside ``torchrun`` uses."""
        import torch

        return cls(0, 1, 0, torch.device(device), None)


def setup(config: RunConfig) -> Env:
    import warnings

    import torch

    # single-process checkpoints go through torch.distributed.checkpoint on purpose
    warnings.filterwarnings("ignore", message="torch.distributed is disabled")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:
        pass

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    want = config.train.device
    if want == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device = 'cuda' but no CUDA device is available")
    use_cuda = want == "cuda" or (want == "auto" and torch.cuda.is_available())
    device = torch.device(f"cuda:{local_rank}" if use_cuda else "cpu")
    if use_cuda:
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if world > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("nccl" if use_cuda else "gloo")
    dtype = config.train.dtype
    autocast = torch.bfloat16 if dtype == "bf16" or (dtype == "auto" and use_cuda) else None
    return Env(rank, world, local_rank, device, autocast)


def _blocks(lm: Any) -> list[Any]:
    """The repeated transformer blocks of a Hugging Face causal LM."""
    import torch

    n = getattr(lm.config, "num_hidden_layers", None)
    for module in lm.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == n:
            return list(module)
    raise ConfigError(f"cannot find the {n} transformer blocks of {type(lm).__name__}")


def parallelize(lm: Any, config: RunConfig, env: Env) -> Any:
    """Activation checkpointing, compile, then DDP or FSDP2 — applied outside the model file."""
    t = config.train
    if t.activation_checkpointing:
        lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    lm.config.use_cache = False
    if t.compile:
        for block in _blocks(lm):
            block.compile()
    if env.world == 1:
        return lm
    mode = "ddp" if t.parallel == "auto" else t.parallel
    if mode == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(
            lm, device_ids=[env.local_rank] if env.device.type == "cuda" else None
        )
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mesh = init_device_mesh(env.device.type, (env.world,))
    import torch

    policy = (
        MixedPrecisionPolicy(param_dtype=env.autocast, reduce_dtype=torch.float32)
        if env.autocast is not None
        else MixedPrecisionPolicy()
    )
    for block in _blocks(lm):
        fully_shard(block, mesh=mesh, mp_policy=policy)
    fully_shard(lm, mesh=mesh, mp_policy=policy)
    return lm


def _unwrap(model: Any) -> Any:
    return model.module if hasattr(model, "no_sync") and hasattr(model, "module") else model


def make_optimizer(model: Any, config: RunConfig, env: Env) -> tuple[Any, Any]:
    import torch

    o, t = config.optim, config.train
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (decay if param.ndim >= 2 and "embed" not in name else no_decay).append(param)
    groups = [
        {"params": decay, "weight_decay": o.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    kwargs = {"fused": True} if env.device.type == "cuda" else {"foreach": True}
    optimizer = torch.optim.AdamW(groups, lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps, **kwargs)

    def factor(step: int) -> float:
        if step < o.warmup_steps:
            return (step + 1) / (o.warmup_steps + 1)
        progress = (step - o.warmup_steps) / max(1, t.max_steps - o.warmup_steps)
        cosine = 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        return o.min_lr_ratio + (1.0 - o.min_lr_ratio) * cosine

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def batch_tensors(batch: Batch, device: Any) -> dict[str, Any]:
    """A `Batch` as the tensors `loss_sum` takes, on ``device``."""
    import torch

    out = {
        "input_ids": torch.from_numpy(batch.input_ids).to(device, non_blocking=True),
        "labels": torch.from_numpy(batch.labels).to(device, non_blocking=True),
    }
    if batch.attention_mask is not None:
        out["attention_mask"] = torch.from_numpy(batch.attention_mask).to(device)
    return out


_tensors = batch_tensors  # the name before the public step API (kiban.train.steps)


def loss_sum(model: Any, batch: dict[str, Any], env: Env) -> Any:
    """Summed token cross-entropy of one micro-batch (float32)."""
    import torch
    import torch.nn.functional as F

    with torch.autocast(env.device.type, dtype=env.autocast, enabled=env.autocast is not None):
        logits = model(
            input_ids=batch["input_ids"],
            attention_mask=batch.get("attention_mask"),
            use_cache=False,
        ).logits
    return F.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]),
        batch["labels"].reshape(-1),
        ignore_index=IGNORE,
        reduction="sum",
    )


def _all_sum(values: list[float], env: Env) -> list[float]:
    if env.world == 1:
        return values
    import torch
    import torch.distributed as dist

    tensor = torch.tensor(values, dtype=torch.float64, device=env.device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def evaluate(model: Any, data: TrainData, config: RunConfig, env: Env) -> dict[str, float]:
    """Validation loss over ``eval_batches`` global batches (all held-out rows when 0); the rows
    are the same whatever the process count."""
    import numpy as np
    import torch

    total = count = 0.0
    t = config.train
    model.eval()
    with torch.no_grad():
        for batch in data.validation_batches(t.batch_size, t.eval_batches or None):
            if batch.rows % env.world:  # a short last batch: pad with rows that take no loss
                extra = env.world - batch.rows % env.world
                pad = np.full((extra, batch.input_ids.shape[1]), IGNORE, dtype=np.int64)
                batch = Batch(
                    np.concatenate([batch.input_ids, np.zeros_like(pad)]),
                    np.concatenate([batch.labels, pad]),
                    None
                    if batch.attention_mask is None
                    else np.concatenate([batch.attention_mask, np.ones_like(pad)]),
                )
            for part in batch.shard(env.rank, env.world).micro_batches(t.micro_batch_size):
                total += float(loss_sum(model, _tensors(part, env.device), env))
                count += part.n_targets
    model.train()
    total, count = _all_sum([total, count], env)
    if count == 0:
        return {}
    return {"val_loss": total / count, "val_tokens": int(count)}


def peak_flops(config: RunConfig, env: Env) -> float | None:
    if config.train.peak_tflops:
        return config.train.peak_tflops * 1e12
    if env.device.type == "cuda" and env.autocast is not None:
        import torch

        name = torch.cuda.get_device_name(env.device)
        for key, value in PEAK_BF16.items():
            if key in name:
                return value
    return None


class Metrics:
    """``OUT/metrics.jsonl``: one JSON object per logged step, flushed line by line."""

    def __init__(self, path: Path, resume_step: int | None):
        self.path = path
        if resume_step is not None and path.is_file():
            kept = [
                line
                for line in path.read_text().splitlines()
                if line.strip() and json.loads(line)["step"] <= resume_step
            ]
            atomic_write_text(path, "".join(line + "\n" for line in kept))
        elif path.exists():
            path.unlink()
        self.handle = open(path, "a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        self.handle.write(json.dumps(record) + "\n")
        self.handle.flush()

    def close(self) -> None:
        self.handle.close()


def prepare_out(config: RunConfig, out: Path, resume: bool) -> Path | None:
    """Check the run directory; returns the checkpoint to resume from (or None)."""
    found = checkpoint.latest(out) if (out / "checkpoints").is_dir() else None
    if not resume:
        if found is not None:
            raise ConfigError(
                f"{out} already holds a run (checkpoint {found.name}); pass "
                "--resume to continue it or choose another --out"
            )
        return None
    if found is None:
        raise ConfigError(f"--resume: {out} has no checkpoint to resume from")
    saved_path = out / "config.json"
    if saved_path.is_file():
        saved = config_from_dict(json.loads(saved_path.read_text()), str(saved_path))
        changed = config.changed_fields(saved)
        if changed:
            listing = "; ".join(f"{k} = {new!r} (the run used {old!r})" for k, new, old in changed)
            raise ConfigError(
                f"--resume with a changed config: {listing}. Start a new run "
                "(another --out) to change these"
            )
    return found


def _jsonable(value: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(value, default=str))


def resume_checkpoint(
    found: Path, env: Env, data_fingerprint: dict[str, Any] | None
) -> dict[str, Any]:
    """The verified metadata of checkpoint ``found``, after checking that the data is the data
    it trained on (a `ConfigError` saying what changed and what to do otherwise)."""
    from kiban.train.fingerprint import data_change

    meta = checkpoint.verify(found, env.world)
    if data_fingerprint is not None:
        change = data_change(meta["data"], data_fingerprint, checkpoint=str(found))
        if change:
            raise ConfigError(f"--resume: {change}")
        if not meta["data"] and env.main:
            print(
                f"kiban train: warning: {found} was written before checkpoints recorded their "
                "data; resuming without checking that the data is unchanged",
                file=sys.stderr,
            )
    return meta


def _parameters_finite(model: Any, env: Env) -> bool:
    """Every parameter (this rank's shard under FSDP2) finite, on every rank."""
    import torch

    local = [p.to_local() if hasattr(p, "to_local") else p for p in model.parameters()]
    bad = sum(float((~torch.isfinite(t.detach())).any()) for t in local if t.numel())
    return _all_sum([bad], env)[0] == 0


def _last_good(found: Path | None) -> str:
    return (
        f"the last good checkpoint is {found}"
        if found is not None
        else "no checkpoint was saved before it"
    )


def diverged(step: int, what: str, last_good: Path | None, config: RunConfig) -> TrainingDiverged:
    """The error for a run that stopped at ``step`` (nothing from that step was saved)."""
    advice = "lower optim.lr (or raise optim.warmup_steps) and start a new run (another --out)"
    if last_good is not None:  # training is deterministic: the same config diverges again
        advice = f"--resume from it replays the same steps; {advice}"
    return TrainingDiverged(
        f"training diverged at step {step}: {what}; nothing from this step "
        f"was saved and no model was written; {_last_good(last_good)} "
        f"(optim.lr = {config.optim.lr}). {advice}"
    )


def train(
    config: RunConfig,
    data: TrainData,
    tokenizer: Any,
    lm: Any,
    *,
    resume: bool = False,
    env: Env | None = None,
    save_model=None,
    extra_info: dict[str, Any] | None = None,
    data_fingerprint: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train ``lm`` on ``data`` as ``config`` says; returns the run summary.

    ``data_fingerprint`` (`kiban.train.fingerprint`) is recorded in every checkpoint and in
    ``run.json``; ``--resume`` refuses data whose fingerprint differs from the checkpoint's.
    Raises `TrainingDiverged` when the loss or the gradient norm is not finite."""
    import torch

    env = env or setup(config)
    t = config.train
    out = Path(config.out)
    rows = getattr(lm.get_input_embeddings(), "num_embeddings", None)
    if rows is not None and tokenizer.vocab_size > rows:
        raise ConfigError(
            f"the tokenizer has {tokenizer.vocab_size} tokens but the model's "
            f"embedding has {rows} rows: the model cannot read this data"
        )
    if env.main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "checkpoints").mkdir(exist_ok=True)
        checkpoint.clean_partial(out)
    checkpoint._barrier(env.world)
    found = prepare_out(config, out, resume)
    verified = resume_checkpoint(found, env, data_fingerprint) if found is not None else None
    accumulate = accumulation_steps(config, env.world)
    micro = t.batch_size // env.world // accumulate
    lm.to(env.device)
    model = parallelize(lm, config, env)
    optimizer, scheduler = make_optimizer(model, config, env)
    start = 0
    if found is not None:
        state = checkpoint.load(
            found, model, optimizer, rank=env.rank, world=env.world, verified=verified
        )
        scheduler.load_state_dict(state["scheduler"])
        start = state["step"]
    if env.main:
        atomic_write_text(out / "config.toml", config.to_toml())
        atomic_write_text(out / "config.json", json.dumps(config.to_dict(), indent=1))
    from kiban.train.models import count_parameters, flops_per_token

    params = count_parameters(_unwrap(lm) if env.world == 1 else lm)
    flops = flops_per_token(lm, data.seq_len)
    peak = peak_flops(config, env)
    metrics = Metrics(out / "metrics.jsonl", start if found else None) if env.main else None
    info = {
        "parameters": params,
        "world": env.world,
        "device": str(env.device),
        "accumulation": accumulate,
        "micro_batch_size": micro,
        "data": data.describe(),
        **(extra_info or {}),
    }
    if env.main:
        write_json(out / "run.json", RUN, _jsonable({**info, "data_fingerprint": data_fingerprint}))
    bar = None
    if env.main and t.progress and start < t.max_steps:
        from tqdm import tqdm

        bar = tqdm(
            total=t.max_steps,
            initial=start,
            desc="train",
            unit="step",
            file=sys.stderr,
            dynamic_ncols=True,
        )
    model.train()
    stop = _StopRequest()
    run_start = time.perf_counter()
    window_time = window_tokens = 0.0
    last: dict[str, Any] = {}
    last_good = found  # the newest checkpoint whose parameters are finite
    try:
        for step in range(start, t.max_steps):
            began = time.perf_counter()
            batch = data.global_batch(step, t.batch_size)
            n_targets = batch.n_targets
            if n_targets == 0:
                raise ConfigError(f"step {step}: the global batch has no target tokens")
            mine = batch.shard(env.rank, env.world)
            local_loss = torch.zeros((), dtype=torch.float32, device=env.device)
            parts = mine.micro_batches(micro)
            for index, part in enumerate(parts):
                sync = index == len(parts) - 1
                tensors = _tensors(part, env.device)
                context = _no_sync(model, sync)
                with context:
                    loss = loss_sum(model, tensors, env)
                    # DDP and FSDP2 average gradients over ranks: scale so the mean is of the sum
                    (loss * (env.world / n_targets)).backward()
                local_loss += loss.detach()  # no host sync inside the step
            norm = None
            if config.optim.grad_clip > 0:
                norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.optim.grad_clip)
                norm = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
            # the loss is summed over ranks before the update (a sync clipping already makes), so
            # a non-finite one stops every rank before it reaches the weights
            (total_loss,) = _all_sum([float(local_loss)], env)
            if not math.isfinite(total_loss) or (norm is not None and not math.isfinite(norm)):
                clipped = "" if norm is None else f" and the gradient norm {norm}"
                raise diverged(
                    step + 1, f"the loss is {total_loss / n_targets}{clipped}", last_good, config
                )
            lr = scheduler.get_last_lr()[0]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            if env.device.type == "cuda":
                torch.cuda.synchronize(env.device)
            window_time += time.perf_counter() - began
            tokens = (
                int(batch.attention_mask.sum())
                if batch.attention_mask is not None
                else batch.input_ids.size
            )
            window_tokens += tokens
            done = step + 1
            if bar is not None:
                bar.update(1)
            record = None
            if done % t.log_every == 0 or done == t.max_steps:
                rate = window_tokens / window_time if window_time else 0.0
                record = {
                    "step": done,
                    "loss": total_loss / n_targets,
                    "lr": lr,
                    "grad_norm": norm,
                    "tokens": tokens * done if batch.attention_mask is None else None,
                    "tokens_per_s": rate,
                    "elapsed_s": time.perf_counter() - run_start,
                }
                if peak:
                    record["mfu"] = rate * flops / (peak * env.world)
                window_time = window_tokens = 0.0
                if bar is not None:
                    bar.set_postfix(loss=f"{record['loss']:.4f}", tok_s=f"{rate:,.0f}")
            if (t.eval_every and done % t.eval_every == 0) or done == t.max_steps:
                scores = evaluate(model, data, config, env)
                record = {**(record or {"step": done}), **scores}
            if record is not None:
                last = record
                if metrics:
                    metrics.write(record)
            stopping = stop.requested(env)
            if stopping and record is None:  # log the step stopped at
                record = {"step": done, "loss": total_loss / n_targets, "lr": lr, "grad_norm": norm}
                if metrics:
                    metrics.write(record)
                last = record
            if (
                (t.checkpoint_every and done % t.checkpoint_every == 0)
                or done == t.max_steps
                or stopping
            ):
                if not _parameters_finite(model, env):
                    raise diverged(
                        done,
                        "the parameters are not finite after the update (loss "
                        f"{total_loss / n_targets})",
                        last_good,
                        config,
                    )
                last_good = checkpoint.save(
                    out,
                    done,
                    model,
                    optimizer,
                    {"step": done, "scheduler": scheduler.state_dict()},
                    rank=env.rank,
                    world=env.world,
                    keep=t.keep_checkpoints,
                    data=data_fingerprint,
                )
            if stopping:
                break
    finally:
        stop.restore()
        if bar is not None:
            bar.close()
        if metrics:
            metrics.close()
    steps_done = max(start, int(last.get("step", start)))
    summary = {
        "out": str(out),
        "steps": steps_done,
        "max_steps": t.max_steps,
        "stopped_early": steps_done < t.max_steps,
        "resumed_from": start if found else None,
        **{k: v for k, v in last.items() if k != "step"},
        **info,
    }
    model_dir = out / "model"
    (save_model or save_full_model)(model, lm, tokenizer, model_dir, env, summary)
    if env.main:
        summary["model"] = str(model_dir)
        write_json(out / "summary.json", SUMMARY, _jsonable(summary))
    return summary


class _StopRequest:
    """SIGINT / SIGTERM during training: finish the step, checkpoint, save the model, exit
    (``--resume`` continues later). Under torchrun the ranks agree on the step to stop at."""

    def __init__(self):
        import signal

        self.flag = False
        self._previous = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass

    def _handle(self, signum, frame) -> None:
        if self.flag:  # a second signal: stop now
            raise KeyboardInterrupt
        self.flag = True
        print(
            f"\nkiban train: signal {signum}: stopping after this step (checkpoint and model "
            "are saved; --resume continues)",
            file=sys.stderr,
            flush=True,
        )

    def requested(self, env: Env) -> bool:
        if env.world == 1:
            return self.flag
        return bool(_all_sum([1.0 if self.flag else 0.0], env)[0] > 0)

    def restore(self) -> None:
        import signal

        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _no_sync(model: Any, sync: bool):
    import contextlib

    if sync:
        return contextlib.nullcontext()
    if hasattr(model, "no_sync"):  # DDP
        return model.no_sync()
    if hasattr(model, "set_requires_gradient_sync"):  # FSDP2
        model.set_requires_gradient_sync(False)

        @contextlib.contextmanager
        def restore():
            try:
                yield
            finally:
                model.set_requires_gradient_sync(True)

        return restore()
    return contextlib.nullcontext()


def full_state_dict(model: Any, env: Env) -> dict[str, Any] | None:
    """The unsharded model weights on CPU (a collective under FSDP2: every rank calls it)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(
        _unwrap(model), options=StateDictOptions(full_state_dict=True, cpu_offload=True)
    )
    return state if env.main else None


def save_full_model(
    model: Any, lm: Any, tokenizer: Any, directory: Path, env: Env, summary: dict[str, Any]
) -> None:
    from kiban.train.models import save_hf

    state = full_state_dict(model, env)
    if env.main:
        save_hf(lm, state, tokenizer, directory, extra=summary)
    checkpoint._barrier(env.world)
