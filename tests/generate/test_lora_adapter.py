"""`kiban generate` on a LoRA adapter directory: the base it names + the adapter, merged."""

from __future__ import annotations

import json

import pytest


def test_adapter_directory_generates_like_the_merged_model(
    kiban_model_dir, science_tokenizer, tmp_path
):
    import torch
    from transformers import AutoModelForCausalLM

    from kiban.generate.generator import load_generator
    from kiban.train.sft import apply_lora, save_lora

    model = AutoModelForCausalLM.from_pretrained(kiban_model_dir)
    lora, _ = apply_lora(model, r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"])
    torch.manual_seed(0)
    with torch.no_grad():  # LoRA B starts at zero: make the adapter change something
        for name, param in lora.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    save_lora(lora, tmp_path / "ft")
    science_tokenizer.save(tmp_path / "ft")
    options = dict(n=2, max_new_tokens=12, temperature=0.0, seed=0)
    adapted = load_generator(tmp_path / "ft" / "adapter").generate("<mol>", **options)
    merged = load_generator(tmp_path / "ft").generate("<mol>", **options)
    base = load_generator(kiban_model_dir).generate("<mol>", **options)
    assert [s.text for s in adapted] == [s.text for s in merged]
    assert [s.text for s in adapted] != [s.text for s in base]


def test_adapter_with_a_missing_base_is_a_clear_error(tmp_path):
    from kiban.generate.generator import GenerationError, load_generator

    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "adapter_config.json").write_text(
        json.dumps({"base_model_name_or_path": str(tmp_path / "gone")})
    )
    with pytest.raises(GenerationError, match="is a LoRA adapter whose base model"):
        load_generator(tmp_path / "adapter")
