"""Entry points behind ``kiban train`` and ``kiban finetune`` (also under torchrun)."""

from __future__ import annotations

from typing import Any

from kiban.train.config import ConfigError, RunConfig


def pretrain(config: RunConfig, *, resume: bool = False) -> dict[str, Any]:
    """Train (from scratch or continuing ``model.base``) on the corpus in ``data.corpus``."""
    from kiban.train.data import PackedCorpusData
    from kiban.train.loop import setup, train
    from kiban.train.models import build_model

    if not config.data.corpus:
        raise ConfigError("data.corpus is not set: give --corpus DIR or [data] corpus = ...")
    env = setup(config)
    data = PackedCorpusData(config.data.corpus, config.data)
    tokenizer = data.corpus.tokenizer
    lm = build_model(config.model, tokenizer, seq_len=config.data.seq_len, seed=config.train.seed)
    from kiban.corpus.store import documents_sha256

    info = {
        "kind": "continued-pretraining" if config.model.base else "pretraining",
        "corpus": config.data.corpus,
        # the corpus's identity, so a report on another corpus can say so (kiban report)
        "corpus_sha256": documents_sha256(data.corpus),
        "base": config.model.base,
    }
    return train(
        config,
        data,
        tokenizer,
        lm,
        resume=resume,
        env=env,
        extra_info=info,
        data_fingerprint=data.fingerprint(),
    )


def _model_tokenizer(config: RunConfig, texts: list[str]) -> Any:
    """The tokenizer of ``model.base``: its kiban tokenizer, or its own extended with kiban's
    science tokens over ``texts`` (ids of the base unchanged)."""
    from pathlib import Path

    from kiban.tokenizer import ScienceTokenizer, extend_tokenizer
    from kiban.train.models import check_base_dir

    base = check_base_dir(config.model.base)
    if (Path(base) / "kiban_tokenizer.json").is_file():
        return ScienceTokenizer.load(base)
    if not (Path(base) / "tokenizer.json").is_file():
        raise ConfigError(f"model.base: {Path(base) / 'tokenizer.json'} is missing")
    return extend_tokenizer(base, corpus_texts=texts)


def finetune(config: RunConfig, *, resume: bool = False) -> dict[str, Any]:
    """Supervised fine-tuning of ``model.base`` on ``finetune.data`` (loss on completions)."""
    from pathlib import Path

    from kiban.train.loop import save_full_model, setup, train
    from kiban.train.models import load_base
    from kiban.train.sft import (
        SFTSource,
        SupervisedData,
        apply_lora,
        read_examples,
        save_lora,
        write_rejects,
    )

    f = config.finetune
    if not config.model.base:
        raise ConfigError(
            "model.base is not set: fine-tuning needs a model directory "
            "(--base DIR or [model] base = ...)"
        )
    if not f.data:
        raise ConfigError("finetune.data is not set: give --data FILE or [finetune] data = ...")
    if not Path(f.data).is_file():
        raise ConfigError(f"finetune.data = {f.data!r}: no such file")
    try:
        source = SFTSource(
            path=f.data,
            prompt_field=f.prompt_field,
            completion_field=f.completion_field,
            prompt_template=f.prompt_template,
            completion_template=f.completion_template,
            properties=tuple(f.properties),
            mol_column=f.mol_column,
        )
    except ValueError as error:
        raise ConfigError(f"finetune: {error}") from None
    env = setup(config)
    if f.lora and config.train.parallel == "fsdp2" and env.world > 1:
        raise ConfigError("finetune.lora with train.parallel = 'fsdp2' is not supported; use ddp")
    examples, rejects = read_examples(source)
    tokenizer = _model_tokenizer(config, [e.prompt + e.completion for e in examples])
    data = SupervisedData(
        examples,
        tokenizer,
        seq_len=config.data.seq_len,
        seed=config.data.seed,
        validation_fraction=config.data.validation_fraction,
        split_seed=config.data.seed,
        rejects=rejects,
    )
    if env.main and data.rejects:
        Path(config.out).mkdir(parents=True, exist_ok=True)
        write_rejects(data.rejects, Path(config.out) / "rejects.jsonl")
    import torch

    torch.manual_seed(config.train.seed)
    lm = load_base(config.model, tokenizer)
    info = {
        "kind": "finetune-lora" if f.lora else "finetune",
        "base": config.model.base,
        "data": f.data,
        "rejected": len(data.rejects),
    }
    save = None
    if f.lora:
        try:
            lm, counts = apply_lora(
                lm,
                r=f.lora_r,
                alpha=f.lora_alpha,
                dropout=f.lora_dropout,
                target_modules=f.lora_target_modules or None,
            )
        except ValueError as error:
            raise ConfigError(f"finetune.lora_target_modules: {error}") from None
        info["trainable_parameters"] = counts.trainable

        def save(model, inner, tok, directory, env_, summary):
            from kiban.train.loop import _unwrap

            if env_.main:
                save_lora(_unwrap(model), directory)
                tok.save(directory)
    else:
        save = save_full_model
    from kiban.train.fingerprint import examples_fingerprint

    fingerprint = examples_fingerprint(
        [f.data],
        examples=len(data.examples),
        tokenizer_directory=None,
        tokenizer_fingerprint=tokenizer.fingerprint,
    )
    return train(
        config,
        data,
        tokenizer,
        lm,
        resume=resume,
        env=env,
        save_model=save,
        extra_info=info,
        data_fingerprint=fingerprint,
    )
