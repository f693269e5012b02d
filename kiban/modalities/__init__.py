"""Modality codecs: one per modality, in a registry keyed by modality name.

Each codec turns the text inside a span into the community's object for that modality
(`rdkit.Chem.Mol`, `pymatgen.core.Structure`, `Quantity`, `ProteinSequence`, `str`) and back into
*canonical* text, so that two spellings of one object become one string.

>>> get_codec("mol").canonical("OCC")
'CCO'
"""

from kiban.modalities._base import Codec, CodecError, UnknownModalityError
from kiban.modalities._registry import codec_names, get_codec, register

__all__ = ["Codec", "CodecError", "UnknownModalityError", "codec_names", "get_codec", "register"]
