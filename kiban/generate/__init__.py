"""Generation from kiban models: a fast static-KV-cache decoder for Llama-family models,
modality constraints as vectorised logit masks, RDKit-validity-guided resampling.

>>> generator = load_generator("out/model")                      # doctest: +SKIP
>>> [c.text for c in generator.generate("Ethanol is <mol>", n=2, temperature=0.8, seed=0)]
... # doctest: +SKIP

Attributes are imported on first use, so ``kiban.generate.cli`` (and ``kiban --help``) does not
import torch.
"""

from __future__ import annotations

from typing import Any

from kiban.generate._errors import GenerationError

_EXPORTS = {
    "Completion": "kiban.generate.generator",
    "GeneratedSpan": "kiban.generate.generator",
    "Generator": "kiban.generate.generator",
    "load_generator": "kiban.generate.generator",
    "check_spans": "kiban.generate.generator",
    "ModalityConstraints": "kiban.generate.constraints",
    "DecodeEngine": "kiban.generate.engine",
    "LlamaEngine": "kiban.generate.engine",
    "HFLoopEngine": "kiban.generate.engine",
    "SamplingConfig": "kiban.generate.engine",
    "build_engine": "kiban.generate.engine",
    "choose_engine": "kiban.generate.engine",
    "decode": "kiban.generate.engine",
}

__all__ = ["GenerationError", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'kiban.generate' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_EXPORTS[name]), name)
