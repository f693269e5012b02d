"""Damaged files are errors, never wrong answers (issue 15, fault 4): flipped bytes in a token
shard, a suffix array or ``documents.parquet`` used to give wrong counts, documents at negative
positions and missing documents, with exit status 0."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from kiban.corpus import Corpus, CorpusError
from kiban.index import IndexFormatError, TokenIndex, build_index
from kiban.index.search import CorpusSearch
from kiban.io import file_sha256

from .helpers import PHRASE


@pytest.fixture
def corpus(small_corpus, fast_tmp) -> Path:
    """A private copy of the small corpus (built by this kiban: a version-2 manifest), indexed."""
    copy = fast_tmp / "corpus"
    shutil.copytree(small_corpus, copy)
    return copy


def flip(path: Path, count: int, *, at: float = 0.5) -> None:
    """Invert ``count`` bytes of ``path`` starting at fraction ``at`` of its length."""
    data = bytearray(path.read_bytes())
    start = int(len(data) * at)
    for i in range(start, start + count):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def test_the_corpus_records_a_checksum_of_every_file_it_maps(corpus):
    checksums = Corpus(corpus).checksums
    assert sorted(checksums) == [
        "documents.parquet",
        "shards/offsets-000000.npy",
        "shards/offsets-000001.npy",
        "shards/offsets-000002.npy",
        "shards/tokens-000000.bin",
        "shards/tokens-000001.bin",
        "shards/tokens-000002.bin",
    ]
    for relative, entry in checksums.items():
        assert entry == {
            "bytes": (corpus / relative).stat().st_size,
            "sha256": file_sha256(corpus / relative),
        }


def test_8_flipped_bytes_in_a_token_shard(corpus, kiban):
    flip(corpus / "shards" / "tokens-000001.bin", 8)
    code, out, err = kiban("search", "count", corpus, " " + PHRASE)
    assert (code, out) == (2, "")
    assert err.startswith(f"kiban search count: error: {corpus}/shards/tokens-000001.bin: sha256 ")
    assert err.endswith(
        "in the corpus manifest: the file is damaged or changed; the corpus is "
        "damaged: rebuild it\n"
    )
    # the index build does not call it up to date, nor index the damaged tokens
    before = (corpus / "index" / "manifest.json").read_bytes()
    code, out, err = kiban("index", "build", corpus)
    assert (code, out) == (2, "")
    assert (
        "tokens-000001.bin: sha256" in err
        and "in the corpus manifest: the file is damaged; rebuild the corpus" in err
    )
    assert (corpus / "index" / "manifest.json").read_bytes() == before
    code, _, err = kiban("corpus", "verify", corpus)
    assert code == 2 and "tokens-000001.bin: sha256" in err
    with pytest.raises(IndexFormatError, match="tokens-000001.bin: sha256"):
        TokenIndex(corpus)
    with pytest.raises(CorpusError, match="tokens-000001.bin: sha256"):
        Corpus(corpus).tokens(1)  # what training reads


def test_8_flipped_bytes_in_a_suffix_array_are_found_and_rebuilt(corpus, kiban):
    expected = CorpusSearch(corpus).count(" " + PHRASE)
    good = (corpus / "index" / "sa-000000.npy").read_bytes()
    flip(corpus / "index" / "sa-000000.npy", 8)
    code, out, err = kiban("search", "docs", corpus, " " + PHRASE)
    assert (code, out) == (2, "")
    assert (
        "sa-000000.npy: sha256 " in err
        and "in the index manifest: the file is damaged or "
        f"changed; run `kiban index build {corpus}` to rebuild it"
        in err
    )
    code, out, err = kiban("index", "build", corpus, "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["built_now"] == [0]
    assert report["rebuilt_because"] == {
        "0": "sa-000000.npy differs from its recorded sha256 (damaged)"
    }
    assert (corpus / "index" / "sa-000000.npy").read_bytes() == good
    assert CorpusSearch(corpus).count(" " + PHRASE) == expected


def test_64_flipped_bytes_in_the_documents_table(corpus, kiban):
    flip(corpus / "documents.parquet", 64, at=0.3)
    code, out, err = kiban("search", "docs", corpus, " " + PHRASE)
    assert (code, out) == (2, "")
    assert (
        f"{corpus}/documents.parquet: sha256 " in err
        and "the file is damaged; rebuild the corpus" in err
    )
    code, out, err = kiban("corpus", "show", corpus, "paper-1")
    assert (code, out) == (2, "") and "documents.parquet: sha256 " in err
    code, out, err = kiban("index", "build", corpus, "--verify")
    assert (code, out) == (2, "") and "documents.parquet: sha256 " in err
    # counts need no documents table: they still answer, from files that check out
    code, out, err = kiban("search", "count", corpus, " " + PHRASE)
    assert code == 0, err


def _write_consistent_tokens(corpus: Path, shard: int, tokens: np.ndarray) -> None:
    """Replace a shard's tokens and record their checksum, as a faulty writer would: the file
    checks out, its values do not."""
    relative = f"shards/tokens-{shard:06d}.bin"
    (corpus / relative).write_bytes(tokens.tobytes())
    manifest = json.loads((corpus / "manifest.json").read_text())
    manifest["checksums"][relative] = {
        "bytes": (corpus / relative).stat().st_size,
        "sha256": file_sha256(corpus / relative),
    }
    (corpus / "manifest.json").write_text(json.dumps(manifest))


def test_verify_rejects_token_ids_outside_the_vocabulary(corpus, kiban):
    vocab = Corpus(corpus).vocab_size
    tokens = np.array(Corpus(corpus).tokens(2))
    tokens[5] = vocab + 3
    _write_consistent_tokens(corpus, 2, tokens)
    code, out, err = kiban("index", "build", corpus, "--verify")
    assert (code, out) == (2, "")
    assert err == (
        f"kiban index build: error: {corpus}/shards/tokens-000002.bin: token id "
        f"{vocab + 3} at position 5 is outside the vocabulary (0 … {vocab - 1}): "
        "the shard is damaged; rebuild the corpus\n"
    )
    # without --verify the changed shard is rebuilt, and indexing looks at every id
    with pytest.raises(IndexFormatError, match=f"token id {vocab + 3} at position 5 is outside"):
        build_index(corpus)
    code, _, err = kiban("corpus", "verify", corpus)
    assert code == 2 and "outside the vocabulary" in err


def test_a_document_not_ending_with_end_of_text_fails_verify(corpus, kiban):
    corpus_ = Corpus(corpus)
    tokens = np.array(corpus_.tokens(0))
    end = int(corpus_.offsets(0)[1]) - 1
    tokens[end] = (corpus_.eos_id + 1) % corpus_.vocab_size
    _write_consistent_tokens(corpus, 0, tokens)
    code, _, err = kiban("index", "build", corpus, "--verify")
    assert code == 2 and "document 0 does not end with the end-of-text id" in err


def test_verify_of_a_sound_corpus(corpus, kiban):
    code, out, err = kiban("corpus", "verify", corpus)
    assert (code, err) == (0, "")
    assert (
        out == f"corpus {corpus}: 7 file(s) match their checksums, the values of 3 shard(s) "
        "are valid\n"
    )
    code, out, err = kiban("index", "build", corpus, "--verify")
    assert (code, err) == (0, "")
    assert "built now: 0 shard(s), the others were checked (with --verify) and up to date" in out
