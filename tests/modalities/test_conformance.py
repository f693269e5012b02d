"""The contract every registered codec keeps, checked on the examples it declares (so a new
codec is tested by registering it): canonical text is a fixed point, parsing the canonical text
gives the object back, refusals are `CodecError`s naming the modality and a reason, codecs
survive pickling (corpus workers are spawned processes), and no canonical text can close its
span."""

from __future__ import annotations

import pickle

import pytest

from kiban.modalities import Codec, CodecError, codec_names, get_codec

pytestmark = pytest.mark.filterwarnings("ignore:Set OLD_ERROR_HANDLING:DeprecationWarning")


@pytest.fixture(params=codec_names())
def codec(request) -> Codec:
    return get_codec(request.param)


def test_registered_under_its_own_name_and_declares_examples(codec):
    assert isinstance(codec, Codec)
    assert get_codec(codec.name) is codec
    assert codec.examples, f"codec {codec.name!r} declares no examples to check"


def test_canonical_text_is_a_fixed_point_and_parses_back(codec):
    for text in codec.examples:
        canonical = codec.canonical(text)
        assert isinstance(canonical, str) and canonical
        assert codec.canonical(canonical) == canonical
        assert codec.to_text(codec.decode(canonical)) == canonical
        codec.validate(canonical)
        assert f"</{codec.name}>" not in canonical


def test_refusals_are_codec_errors_with_a_reason(codec):
    for text in codec.invalid_examples:
        with pytest.raises(CodecError) as info:
            codec.canonical(text)
        assert isinstance(info.value, ValueError)
        assert info.value.modality == codec.name
        assert info.value.reason


def test_codecs_pickle_for_worker_processes(codec):
    copy = pickle.loads(pickle.dumps(codec))
    assert type(copy) is type(codec)
    for text in codec.examples:
        assert copy.canonical(text) == codec.canonical(text)
