from __future__ import annotations

import importlib

from kiban.modalities._base import Codec, UnknownModalityError

# Codecs are imported on first use: RDKit and pymatgen take seconds to import.
_BUILTIN: dict[str, str] = {
    "mol": "kiban.modalities.molecule:MoleculeCodec",
    "crystal": "kiban.modalities.crystal:CrystalCodec",
    "num": "kiban.modalities.number:NumberCodec",
    "protein": "kiban.modalities.protein:ProteinCodec",
    "text": "kiban.modalities.text:TextCodec",
}
_LOADED: dict[str, Codec] = {}


def codec_names() -> list[str]:
    return sorted(set(_BUILTIN) | set(_LOADED))


def get_codec(name: str) -> Codec:
    """The codec for modality ``name``; an unknown name raises an error listing the known ones."""
    codec = _LOADED.get(name)
    if codec is not None:
        return codec
    target = _BUILTIN.get(name)
    if target is None:
        raise UnknownModalityError(name, codec_names())
    module_name, class_name = target.split(":")
    codec = getattr(importlib.import_module(module_name), class_name)()
    _LOADED[name] = codec
    return codec


def register(codec: Codec, *, replace: bool = False) -> None:
    """Add a codec under ``codec.name``; replacing an existing one must be asked for."""
    if not replace and codec.name in codec_names():
        raise ValueError(
            f"a codec for modality {codec.name!r} is already registered; "
            "pass replace=True to replace it"
        )
    _LOADED[codec.name] = codec
