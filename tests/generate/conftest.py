"""Fixtures for the generation tests: a kiban tokenizer trained on a few tagged texts, tiny
random-init Hugging Face models saved with it, one briefly trained model, a plain HF directory.
All built once per session (a few seconds)."""

from __future__ import annotations

from pathlib import Path

import pytest

from .helpers import PROSE, corpus, llama_config, random_model


@pytest.fixture(scope="session")
def science_tokenizer():
    from kiban.tokenizer import train_tokenizer

    return train_tokenizer(corpus(), vocab_size=400)


@pytest.fixture(scope="session")
def kiban_model_dir(tmp_path_factory, science_tokenizer) -> Path:
    """A random-init GQA Llama with an embedding a little larger than the tokenizer."""
    tok = science_tokenizer
    directory = tmp_path_factory.mktemp("kiban-model")
    config = llama_config(tok.vocab_size + 12, eos_token_id=tok.eos_id, pad_token_id=tok.pad_id)
    random_model(config).save_pretrained(directory)
    tok.save(directory)
    return directory


@pytest.fixture(scope="session")
def trained_model_dir(tmp_path_factory, science_tokenizer) -> Path:
    """The same architecture after 150 Adam steps on the corpus: it writes SMILES-like spans
    that RDKit sometimes accepts and sometimes rejects (what valid_only needs)."""
    import torch

    tok = science_tokenizer
    model = random_model(
        llama_config(tok.vocab_size, eos_token_id=tok.eos_id, pad_token_id=tok.pad_id), seed=1
    )
    stream = torch.tensor([i for text in corpus() for i in [*tok.encode(text), tok.eos_id]])
    generator = torch.Generator().manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(150):
        starts = torch.randint(0, len(stream) - 49, (16,), generator=generator)
        batch = torch.stack([stream[s : s + 49] for s in starts.tolist()])
        logits = model(input_ids=batch[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1)
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    directory = tmp_path_factory.mktemp("trained-model")
    model.save_pretrained(directory)
    tok.save(directory)
    return directory


@pytest.fixture(scope="session")
def plain_model_dir(tmp_path_factory) -> Path:
    """A plain Hugging Face directory: byte-level BPE tokenizer.json, no kiban files."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["</s>"],
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(PROSE * 5, trainer=trainer)
    directory = tmp_path_factory.mktemp("plain-model")
    tokenizer.save(str(directory / "tokenizer.json"))
    config = llama_config(tokenizer.get_vocab_size() + 4, eos_token_id=0, pad_token_id=0)
    random_model(config, seed=2).save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def kiban_generator(kiban_model_dir):
    from kiban.generate import load_generator

    return load_generator(kiban_model_dir)


@pytest.fixture(scope="session")
def trained_generator(trained_model_dir):
    from kiban.generate import load_generator

    return load_generator(trained_model_dir)
