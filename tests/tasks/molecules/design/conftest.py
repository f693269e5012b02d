"""A tiny kiban model for the design tests that sample from one."""

from __future__ import annotations

import pytest

from kiban.tasks.molecules.design.optimize import CELECOXIB, finetune_steps

from ._molecules import ASPIRIN, START


@pytest.fixture(scope="package")
def tiny_model_dir(tmp_path_factory):
    """A 2-layer Llama with a kiban tokenizer trained on a few molecule documents, given 20
    fine-tuning steps on small molecules so that it writes some valid SMILES."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    from kiban.tokenizer import train_tokenizer

    texts = [f"<mol>{s}</mol>" for s in START + [CELECOXIB, ASPIRIN]] * 3
    tokenizer = train_tokenizer(texts, vocab_size=300)
    config = LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        vocab_size=tokenizer.vocab_size,
        max_position_embeddings=128,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_id,
        pad_token_id=tokenizer.pad_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").eval()
    finetune_steps(model, tokenizer, START, steps=20, batch_size=20, lr=2e-2, seed=0)
    directory = tmp_path_factory.mktemp("molopt-model")
    model.save_pretrained(directory)
    tokenizer.save(directory)
    return directory
