"""Continued pre-training of a local Hugging Face model and fine-tuning through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from corpus.helpers import prose_documents, write_jsonl

from .conftest import run_kiban, write_config

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def base_model(tmp_path_factory) -> Path:
    """A small randomly initialised Llama with its own byte-level BPE tokenizer (no science
    tokens), saved as a plain Hugging Face directory."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    directory = tmp_path_factory.mktemp("base")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    texts = [
        d["text"]
        .replace("<mol>", "")
        .replace("</mol>", "")
        .replace("<num>", "")
        .replace("</num>", "")
        for d in prose_documents(300, seed=9)
    ]
    tokenizer.train_from_iterator(texts, trainer=trainer)
    tokenizer.save(str(directory / "tokenizer.json"))
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=tokenizer.get_vocab_size(),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        eos_token_id=0,
    )
    transformers.LlamaForCausalLM(config).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def base_corpus(base_model, tmp_path_factory) -> Path:
    from kiban.corpus import BuildConfig, SourceSpec, build_corpus

    root = tmp_path_factory.mktemp("base-corpus")
    source = write_jsonl(root / "docs.jsonl", prose_documents(400, seed=4))
    build_corpus(
        BuildConfig(sources=(SourceSpec(path=str(source)),), base_tokenizer=str(base_model)),
        root / "corpus",
    )
    return root / "corpus"


def test_extension_keeps_base_rows_and_initialises_new_ones_from_pieces(base_model, base_corpus):
    from tokenizers import Tokenizer

    from kiban.corpus.store import Corpus
    from kiban.train.config import ModelConfig
    from kiban.train.models import load_base

    tokenizer = Corpus(base_corpus).tokenizer
    base = transformers.AutoModelForCausalLM.from_pretrained(base_model)
    old = base.get_input_embeddings().weight.detach()
    lm = load_base(ModelConfig(base=str(base_model)), tokenizer)
    new = lm.get_input_embeddings().weight.detach()
    assert new.shape[0] >= tokenizer.vocab_size > old.shape[0]
    assert new.shape[0] % 64 == 0
    torch.testing.assert_close(new[: old.shape[0]], old, rtol=0, atol=0)
    base_tokenizer = Tokenizer.from_file(str(base_model / "tokenizer.json"))
    mol = tokenizer.tag_ids["<mol>"]
    pieces = base_tokenizer.encode("<mol>").ids
    assert len(pieces) > 1
    torch.testing.assert_close(new[mol], old[pieces].mean(0))
    out = lm.get_output_embeddings().weight.detach()  # untied: grown and initialised too
    torch.testing.assert_close(
        out[mol], base.get_output_embeddings().weight.detach()[pieces].mean(0)
    )


def test_continued_pretraining_runs_and_saves_a_loadable_model(base_model, base_corpus, tmp_path):
    config = write_config(
        tmp_path / "run.toml",
        base_corpus,
        tmp_path / "run",
        model={
            "preset": None,
            "base": str(base_model),
            "hidden_size": None,
            "num_layers": None,
            "num_heads": None,
            "intermediate_size": None,
        },
        train={"max_steps": 6, "eval_every": 0, "checkpoint_every": 0},
    )
    result = run_kiban("train", str(config), "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["kind"] == "continued-pretraining"
    model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "model")
    tokenizer = transformers.PreTrainedTokenizerFast.from_pretrained(tmp_path / "run" / "model")
    assert model.config.vocab_size >= len(tokenizer)
    # a base whose tokenizer the corpus does not extend is refused, naming the moved token
    other = tmp_path / "other"
    other.mkdir()
    for name in ("config.json", "model.safetensors"):
        (other / name).write_bytes((base_model / name).read_bytes())
    vocab = json.loads((base_model / "tokenizer.json").read_text())
    swapped = dict(vocab["model"]["vocab"])
    a, b = list(swapped)[100:102]
    swapped[a], swapped[b] = swapped[b], swapped[a]
    vocab["model"]["vocab"] = swapped
    (other / "tokenizer.json").write_text(json.dumps(vocab))
    result = run_kiban(
        "train", str(config), "--out", str(tmp_path / "run2"), "--set", f"model.base={other}"
    )
    assert result.returncode == 2 and "is not an extension of" in result.stderr
    (other / "model.safetensors").unlink()
    result = run_kiban(
        "train", str(config), "--out", str(tmp_path / "run3"), "--set", f"model.base={other}"
    )
    assert result.returncode == 2 and "has no weights" in result.stderr


def _sft_file(path: Path) -> Path:
    smiles = ["CCO", "c1ccccc1", "CC(=O)O", "CCN", "CCCC", "O=C=O", "NCC(=O)O", "CC(C)O"]
    records = [
        {"prompt": f"Weigh <mol>{s}</mol> number {i}:", "completion": f" <num>{i % 7}</num>"}
        for i, s in enumerate(smiles * 12)
    ]
    return write_jsonl(path, [*records[:10], "{not json", *records[10:]])


@pytest.mark.parametrize("lora", [False, True])
def test_finetune_full_and_lora(base_model, tmp_path, lora):
    data = _sft_file(tmp_path / "sft.jsonl")
    config = write_config(
        tmp_path / "ft.toml",
        tmp_path,
        tmp_path / "ft",
        model={
            "preset": None,
            "base": str(base_model),
            "hidden_size": None,
            "num_layers": None,
            "num_heads": None,
            "intermediate_size": None,
        },
        data={"corpus": None, "seq_len": 40, "validation_fraction": 0.2},
        optim={"lr": 3e-2 if lora else 1e-2},
        train={"max_steps": 10, "eval_every": 10, "checkpoint_every": 5},
        finetune={"data": str(data)},
    )
    result = run_kiban("finetune", str(config), *(["--lora"] if lora else []), "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["rejected"] == 1 and summary["kind"] == ("finetune-lora" if lora else "finetune")
    rejects = (tmp_path / "ft" / "rejects.jsonl").read_text()
    assert "sft.jsonl:11" in rejects and "malformed JSON" in rejects
    records = [json.loads(x) for x in (tmp_path / "ft" / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["loss"] < records[0]["loss"]
    assert np.isfinite(records[-1]["val_loss"])
    model_dir = tmp_path / "ft" / "model"
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir)
    assert model.config.vocab_size % 64 == 0  # extended with science tokens
    assert (model_dir / "kiban_tokenizer.json").is_file()
    if lora:
        assert summary["trainable_parameters"] < summary["parameters"]["total"] / 5
        assert (model_dir / "adapter" / "adapter_config.json").is_file()
    result = run_kiban(
        "finetune",
        str(config),
        "--out",
        str(tmp_path / "x"),
        "--set",
        'finetune.lora_target_modules=["qq_proj"]',
        "--lora",
    )
    assert (
        result.returncode == 2
        and "finetune.lora_target_modules" in result.stderr
        and "q_proj" in result.stderr
    )
