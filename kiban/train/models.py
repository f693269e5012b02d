"""Models: Llama-style presets from ~1M to ~1B parameters, or a local Hugging Face checkpoint.

Every model is a plain `transformers` causal LM, so a trained one saves as a Hugging Face
directory that `AutoModelForCausalLM.from_pretrained` loads. Continued pre-training starts from a
local base directory: the corpus must have been built with that base's tokenizer extended by
kiban's science tokens (``base_tokenizer`` in the corpus recipe), which keeps every base id; the
embeddings grow to the new vocabulary and each new row starts as the mean of the base embeddings
of the pieces the base tokenizer splits that token into (``"pieces"``), or as the mean of all base
rows (``"mean"``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kiban.train.config import ConfigError, ModelConfig


@dataclass(frozen=True)
class Preset:
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    intermediate_size: int


# non-embedding parameter counts in the names (Llama 3.2 1B's layout for the largest)
PRESETS: dict[str, Preset] = {
    "llama-1m": Preset(128, 4, 4, 4, 512),
    "llama-4m": Preset(256, 4, 4, 4, 1024),
    "llama-25m": Preset(512, 8, 8, 8, 1408),
    "llama-85m": Preset(768, 12, 12, 12, 2048),
    "llama-300m": Preset(1024, 24, 16, 16, 2816),
    "llama-1b": Preset(2048, 16, 32, 8, 8192),
}

WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def padded(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def llama_config(
    model: ModelConfig, vocab_size: int, *, eos_id: int, pad_id: int, seq_len: int
) -> Any:
    from transformers import LlamaConfig

    preset = PRESETS[model.preset]
    heads = model.num_heads or preset.num_heads
    hidden = model.hidden_size or preset.hidden_size
    kv_heads = model.num_kv_heads or (heads if model.num_heads else preset.num_kv_heads)
    if hidden % heads:
        raise ConfigError(
            f"model.hidden_size = {hidden} is not a multiple of model.num_heads = {heads}"
        )
    if heads % kv_heads:
        raise ConfigError(
            f"model.num_heads = {heads} is not a multiple of model.num_kv_heads = {kv_heads}"
        )
    return LlamaConfig(
        vocab_size=padded(vocab_size, model.vocab_multiple),
        hidden_size=hidden,
        intermediate_size=model.intermediate_size or preset.intermediate_size,
        num_hidden_layers=model.num_layers or preset.num_layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=model.max_position_embeddings or max(seq_len, 2048),
        rope_theta=model.rope_theta or 10000.0,
        tie_word_embeddings=model.tie_embeddings,
        bos_token_id=None,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
    )


def model_dir_problem(directory: Path) -> str | None:
    """What makes ``directory`` not a loadable Hugging Face model directory, or None."""
    if not directory.is_dir():
        return f"{directory}: no such directory"
    if not (directory / "config.json").is_file():
        return f"{directory / 'config.json'} is missing (not a Hugging Face model directory)"
    if not any((directory / name).is_file() for name in WEIGHT_FILES):
        return f"{directory} has no weights (expected one of {', '.join(WEIGHT_FILES)})"
    return None


def check_base_dir(base: str | Path) -> Path:
    base = Path(base)
    problem = model_dir_problem(base)
    if problem:
        raise ConfigError(f"model.base = {str(base)!r}: {problem}")
    return base


def build_model(model: ModelConfig, tokenizer: Any, *, seq_len: int, seed: int) -> Any:
    """A freshly initialised preset model (weights fixed by ``seed``) or the base checkpoint with
    its vocabulary extended to the tokenizer's."""
    import torch

    torch.manual_seed(seed)  # identical on every rank: FSDP2 shards each rank's own copy
    if model.base is None:
        from transformers import LlamaForCausalLM

        config = llama_config(
            model,
            tokenizer.vocab_size,
            eos_id=tokenizer.eos_id,
            pad_id=tokenizer.pad_id,
            seq_len=seq_len,
        )
        return LlamaForCausalLM(config)
    return load_base(model, tokenizer)


def _base_vocab(base: Path) -> dict[str, int]:
    path = base / "tokenizer.json"
    if not path.is_file():
        raise ConfigError(
            f"model.base: {path} is missing; continued pre-training needs the base "
            "model's tokenizer to check that the corpus tokenizer extends it"
        )
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(path)).get_vocab(with_added_tokens=True)


def check_extends(base: Path, tokenizer: Any) -> dict[str, int]:
    """The base vocabulary, after checking that ``tokenizer`` keeps every base id."""
    base_vocab = _base_vocab(base)
    vocab = tokenizer.hf.get_vocab(with_added_tokens=True)
    moved = [(tok, i, vocab.get(tok)) for tok, i in base_vocab.items() if vocab.get(tok) != i]
    if moved:
        tok, i, j = moved[0]
        raise ConfigError(
            f"the corpus tokenizer is not an extension of {base}'s: {len(moved)} base tokens "
            f"have other ids (e.g. {tok!r}: base {i}, corpus {j}); build the corpus with "
            f"base_tokenizer = {str(base)!r}"
        )
    return base_vocab


def load_base(model: ModelConfig, tokenizer: Any) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    base = check_base_dir(model.base)
    base_vocab = check_extends(base, tokenizer)
    try:
        lm = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    except (OSError, ValueError) as error:
        raise ConfigError(f"model.base: {base} could not be loaded: {error}") from None
    old_rows = lm.get_input_embeddings().weight.shape[0]
    new_size = max(padded(tokenizer.vocab_size, model.vocab_multiple), old_rows)
    if new_size > old_rows:
        extend_embeddings(lm, tokenizer, base, base_vocab, new_size, model.new_token_init)
    return lm


def extend_embeddings(
    lm: Any, tokenizer: Any, base: Path, base_vocab: dict[str, int], new_size: int, how: str
) -> None:
    """Grow input (and untied output) embeddings to ``new_size`` rows; initialise new rows."""
    import torch
    from tokenizers import Tokenizer

    old_in = lm.get_input_embeddings().weight.detach().clone()
    out_layer = lm.get_output_embeddings()
    tied = out_layer is None or out_layer.weight is lm.get_input_embeddings().weight
    old_out = None if tied else out_layer.weight.detach().clone()
    old_rows = old_in.shape[0]
    lm.resize_token_embeddings(new_size, mean_resizing=False)
    base_tok = Tokenizer.from_file(str(base / "tokenizer.json"))
    base_ids = set(base_vocab.values())
    vocab = tokenizer.hf.get_vocab(with_added_tokens=True)
    by_id = {i: t for t, i in vocab.items()}
    with torch.no_grad():
        for matrix, old in (
            (lm.get_input_embeddings().weight, old_in),
            (None if tied else lm.get_output_embeddings().weight, old_out),
        ):
            if matrix is None:
                continue
            mean = old.mean(0)
            matrix[old_rows:] = mean
            if how != "pieces":
                continue
            for row in range(old_rows, new_size):
                token = by_id.get(row)
                if token is None or row in base_ids:
                    continue
                pieces = [
                    i
                    for i in base_tok.encode(tokenizer.decode([row]), add_special_tokens=False).ids
                    if i < old_rows
                ]
                if pieces:
                    matrix[row] = old[pieces].mean(0)


def count_parameters(lm: Any) -> dict[str, int]:
    total = sum(p.numel() for p in lm.parameters())
    embedding = lm.get_input_embeddings().weight.numel()
    out = lm.get_output_embeddings()
    tied = out is not None and out.weight is lm.get_input_embeddings().weight
    return {
        "total": total,
        "embedding": embedding,
        "non_embedding": total - embedding,
        # FLOP count basis: every weight that is multiplied (the output projection counts
        # even when tied to the input embedding, which is a lookup)
        "matmul": total - embedding + (embedding if tied else 0),
    }


def flops_per_token(lm: Any, seq_len: int) -> float:
    """Training FLOPs per token: 6 x matmul parameters + 12 x layers x hidden x context
    (attention scores and values; the PaLM appendix B count)."""
    config = lm.config
    return (
        6.0 * count_parameters(lm)["matmul"]
        + 12.0 * config.num_hidden_layers * config.hidden_size * seq_len
    )


def save_hf(
    lm: Any,
    state_dict: dict | None,
    tokenizer: Any,
    directory: Path,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a Hugging Face model directory (config, safetensors, generation config, tokenizer)
    through a temporary directory renamed into place."""
    import shutil

    directory = Path(directory)
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    lm.save_pretrained(tmp, state_dict=state_dict, safe_serialization=True)
    tokenizer.save(tmp)
    if extra:
        from kiban.formats import write_json
        from kiban.train.loop import SUMMARY

        write_json(tmp / "kiban_run.json", SUMMARY, json.loads(json.dumps(extra, default=str)))
    if directory.exists():
        old = directory.with_name(directory.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        directory.rename(old)
        tmp.rename(directory)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(directory)
    return directory
