"""Helpers for the generation tests: the small tagged corpus and tiny random-init models."""

from __future__ import annotations

SMILES = [
    "CCO",
    "c1ccccc1",
    "Cc1ccccc1",
    "CC(=O)Oc1ccccc1C(=O)O",
    "CC(=O)Nc1ccc(O)cc1",
    "C[C@H](N)C(=O)O",
    "Brc1ccc(Br)cc1",
    "C%10CCCCC%10",
    "[nH]1cccc1",
    "CC(C)CO",
    "O=C(O)CCC(=O)O",
    "N#CC(=O)[O-]",
    "C1CC2CCC1C2",
    "CCN(CC)CC",
    "OC1CCCCC1",
]
NUMBERS = ["1.31 eV", "78.37", "-2.50e-3", "298.15 K", "0.5 eV", "42"]
PROTEINS = ["MKTAYIAKQRQISFVKSHFSRQ", "GSHMSLFDFFKNKGSAA"]
PROSE = [
    "The quick brown fox jumps over the lazy dog.",
    "Benzene is aromatic and flat.",
    "Measured at room temperature, the sample was stable.",
    "Solubility matters in water.",
]


def corpus() -> list[str]:
    texts = []
    for i in range(90):
        smiles, number = SMILES[i % len(SMILES)], NUMBERS[i % len(NUMBERS)]
        texts.append(
            f"{PROSE[i % len(PROSE)]} The compound <mol>{smiles}</mol> has a gap of "
            f"<num>{number}</num>."
        )
        if i % 9 == 0:
            texts.append(f"The protein <protein>{PROTEINS[i % 2]}</protein> binds it.")
    return texts


def llama_config(vocab_size: int, **overrides):
    from transformers import LlamaConfig

    settings = dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=vocab_size,
        max_position_embeddings=256,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=0,
        tie_word_embeddings=False,
    )
    settings.update(overrides)
    return LlamaConfig(**settings)


def random_model(config, seed: int = 0):
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").eval()
