"""`build_index`: incremental rebuilds, checksums, and every broken index or corpus reported as an
`IndexFormatError` that names the fix."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from kiban.index import IndexFormatError, TokenIndex, build_index

from .helpers import Brute, write_bare_corpus

SHARDS = [[[1, 2, 3], [2, 3], []], [[3, 3, 1]], [[4, 1, 2, 3], [2]]]


@pytest.fixture
def corpus(fast_tmp) -> Path:
    return write_bare_corpus(fast_tmp / "corpus", SHARDS, eos_id=0, vocab_size=10)


def index_files(corpus: Path) -> dict[str, bytes]:
    """The index's files; of the manifest, all but the shards built by the last build."""
    files = {p.name: p.read_bytes() for p in sorted((corpus / "index").iterdir())}
    manifest = json.loads(files["manifest.json"])
    del manifest["built_now"], manifest["rebuilt_because"]
    return {**files, "manifest.json": manifest}


def mtimes(corpus: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted((corpus / "index").glob("sa-*.npy"))}


def assert_answers(corpus: Path):
    """The index answers like brute force after whatever was done to it."""
    index = TokenIndex(corpus)
    brute = Brute(SHARDS, 0)
    for query in ([1], [2, 3], [3, 1], [4, 1, 2, 3], [3, 3, 1, 0][:3]):
        assert index.count(query) == brute.count(query)


def test_build_writes_one_suffix_array_per_shard(corpus):
    manifest = build_index(corpus)
    assert manifest["built_now"] == [0, 1, 2]
    assert sorted(index_files(corpus)) == [
        "first-000000.npy",
        "first-000001.npy",
        "first-000002.npy",
        "manifest.json",
        "sa-000000.npy",
        "sa-000001.npy",
        "sa-000002.npy",
    ]
    on_disk = json.loads((corpus / "index" / "manifest.json").read_text())
    assert on_disk == manifest
    assert {e["shard"] for e in on_disk["shards"]} == {0, 1, 2}
    assert (on_disk["format"], on_disk["version"], on_disk["tokenizer_sha256"]) == (
        "kiban.index",
        1,
        "test-tokenizer",
    )
    for entry, docs in zip(manifest["shards"], SHARDS):
        assert entry["tokens"] == sum(len(d) + 1 for d in docs)
        tokens = np.fromfile(corpus / "shards" / f"tokens-{entry['shard']:06d}.bin", np.uint16)
        sa = np.load(corpus / "index" / f"sa-{entry['shard']:06d}.npy")
        assert sa.tolist() == sorted(range(len(tokens)), key=lambda i: tokens[i:].tolist())
        first_rows = np.load(corpus / "index" / f"first-{entry['shard']:06d}.npy")
        for token in range(len(first_rows) - 1):  # token t's block of the suffix array
            block = sa[first_rows[token] : first_rows[token + 1]]
            assert (tokens[block] == token).all() and len(block) == (tokens == token).sum()
    assert_answers(corpus)


def test_incremental_rebuild_builds_only_the_missing_shard(corpus):
    build_index(corpus)
    before, times = index_files(corpus), mtimes(corpus)
    assert build_index(corpus)["built_now"] == []  # up to date: nothing built
    assert mtimes(corpus) == times
    (corpus / "index" / "sa-000001.npy").unlink()
    manifest = build_index(corpus)
    assert manifest["built_now"] == [1]
    after = mtimes(corpus)
    assert {k: v for k, v in after.items() if k != "sa-000001.npy"} == {
        k: v for k, v in times.items() if k != "sa-000001.npy"
    }
    assert {k: v for k, v in index_files(corpus).items() if k != "manifest.json"} == {
        k: v for k, v in before.items() if k != "manifest.json"
    }
    assert_answers(corpus)


def test_a_new_shard_is_indexed_alone(corpus):
    build_index(corpus)
    times = mtimes(corpus)
    write_bare_corpus(corpus, [*SHARDS, [[5, 5]]], eos_id=0, vocab_size=10)  # shard 3 added
    with pytest.raises(
        IndexFormatError,
        match=r"covers 3 shards, the corpus has 4: run `kiban "
        r"index build .*corpus` to bring it up to date",
    ):
        TokenIndex(corpus)
    # rewriting shards 0-2 with the same tokens changes their times, not their suffix arrays
    assert build_index(corpus)["built_now"] == [3]
    assert {k: v for k, v in mtimes(corpus).items() if k != "sa-000003.npy"} == times
    assert TokenIndex(corpus).count([5, 5]) == 1


def test_changed_tokens_of_the_same_size_are_rebuilt(corpus):
    build_index(corpus)
    changed = [SHARDS[0], [[1, 3, 3]], SHARDS[2]]  # shard 1: same length, other tokens
    write_bare_corpus(corpus, changed, eos_id=0, vocab_size=10)
    assert build_index(corpus)["built_now"] == [1]
    index = TokenIndex(corpus, verify=True)
    assert index.count([1, 3, 3]) == 1 and index.count([3, 3, 1]) == 0


def test_a_flipped_byte_in_a_suffix_array_is_found_and_rebuilt(corpus):
    build_index(corpus)
    good = index_files(corpus)
    path = corpus / "index" / "sa-000002.npy"
    data = bytearray(path.read_bytes())
    data[-4] ^= 0x01  # a position inside the array: still a readable file of the right size
    path.write_bytes(bytes(data))
    with pytest.raises(
        IndexFormatError,
        match=r"sa-000002.npy: sha256 [0-9a-f]{16}… differs "
        r"from the [0-9a-f]{16}… in the index manifest: "
        r"the file is damaged or changed; run `kiban "
        r"index build .*corpus` to rebuild it",
    ):
        TokenIndex(corpus)  # checked on opening: before, only with verify=True
    TokenIndex(corpus, verify=False)  # sizes only, on request
    manifest = build_index(corpus)  # before: "up to date" (built_now [])
    assert manifest["built_now"] == [2]
    assert manifest["rebuilt_because"] == {
        "2": "sa-000002.npy differs from its recorded sha256 (damaged)"
    }
    assert index_files(corpus) == good
    assert_answers(corpus)


def test_damaged_tokens_of_a_version_1_corpus_are_an_error_not_an_index(corpus):
    build_index(corpus)
    path = corpus / "shards" / "tokens-000000.bin"
    times = path.stat()
    data = bytearray(path.read_bytes())
    data[0] ^= 0x01
    path.write_bytes(bytes(data))
    assert times.st_size == path.stat().st_size
    with pytest.raises(
        IndexFormatError,
        match=r"tokens-000000.bin: sha256 .* differs from the "
        r".* in the index manifest: .*the corpus is "
        r"damaged: rebuild it",
    ):
        TokenIndex(corpus)
    # no checksum in a version-1 corpus manifest, but it was written after the shards
    with pytest.raises(
        IndexFormatError,
        match=r"tokens-000000.bin: sha256 differs from the one "
        r"indexed, and the corpus was not rebuilt since: "
        r"the shard is damaged .*rebuild the corpus",
    ):
        build_index(corpus)
    write_bare_corpus(corpus, SHARDS, eos_id=0, vocab_size=10)  # the corpus rebuilt
    assert build_index(corpus)["built_now"] == []  # the same tokens: the index is still right
    assert_answers(corpus)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty", "wrong length"])
def test_a_broken_suffix_array_is_reported_and_rebuilt(corpus, damage):
    build_index(corpus)
    good = index_files(corpus)
    path = corpus / "index" / "sa-000000.npy"
    if damage == "garbage":
        path.write_bytes(b"not a numpy file at all" * 10)
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:-6])
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        np.save(path, np.arange(3, dtype=np.int32))
    with pytest.raises(
        IndexFormatError,
        match=r"sa-000000.npy: .*run `kiban index build "
        r".*corpus` to rebuild it",
    ):
        TokenIndex(corpus)
    assert build_index(corpus)["built_now"] == [0]  # no --verify needed for this
    assert index_files(corpus) == good
    assert_answers(corpus)


def test_a_missing_suffix_array_is_reported(corpus):
    build_index(corpus)
    (corpus / "index" / "sa-000001.npy").unlink()
    with pytest.raises(
        IndexFormatError,
        match=r"sa-000001.npy is missing: run `kiban index "
        r"build .*corpus` to rebuild it",
    ):
        TokenIndex(corpus)


def test_a_truncated_tokens_file_is_reported(corpus):
    build_index(corpus)
    path = corpus / "shards" / "tokens-000002.bin"
    path.write_bytes(path.read_bytes()[:-2])  # one token less
    with pytest.raises(
        IndexFormatError,
        match=r"tokens-000002.bin has 12 bytes, the index "
        r"expects 7 tokens: the corpus changed; run "
        r"`kiban index build .*corpus`",
    ):
        TokenIndex(corpus)
    path.write_bytes(path.read_bytes()[:-1])  # half a token: not something to index
    with pytest.raises(IndexFormatError, match="not a whole number of uint16 tokens"):
        build_index(corpus)


def test_broken_offsets_are_reported(corpus):
    build_index(corpus)
    path = corpus / "shards" / "offsets-000001.npy"
    np.save(path, np.array([0, 2], dtype=np.int64))  # the shard has 4 tokens
    with pytest.raises(IndexFormatError, match="offsets do not fit the 4 tokens"):
        TokenIndex(corpus)
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(IndexFormatError, match="offsets-000001.npy: unreadable"):
        TokenIndex(corpus)
    path.unlink()
    with pytest.raises(
        IndexFormatError, match="offsets-000001.npy is missing: the corpus is incomplete"
    ):
        TokenIndex(corpus)


@pytest.mark.parametrize(
    "manifest",
    [
        {"format": "kiban.index", "version": 99},
        {"format": "something.else", "version": 1},
        "{not json",
        "[1, 2]",
        {
            "format": "kiban.index",
            "version": 1,
            "tokenizer_sha256": "test-tokenizer",
            "shards": [{"shard": 0}],
        },
        {
            "format": "kiban.index",
            "version": 1,
            "tokenizer_sha256": "test-tokenizer",
            "shards": [
                {"shard": s, "tokens": 1, "tokens_sha256": "", "suffix_array_sha256": ""}
                for s in (0, 2, 1)
            ],
        },
    ],
)
def test_an_unreadable_or_foreign_index_manifest(corpus, manifest):
    build_index(corpus)
    path = corpus / "index" / "manifest.json"
    path.write_text(manifest if isinstance(manifest, str) else json.dumps(manifest))
    with pytest.raises(
        IndexFormatError,
        match=r"index[/\\]manifest.json: .*run `kiban index "
        r"build .*corpus` to rebuild",
    ):
        TokenIndex(corpus)
    # following the advice works: the whole index is built again
    assert build_index(corpus)["built_now"] == [0, 1, 2]
    assert_answers(corpus)


def test_an_index_built_for_another_tokenizer(corpus):
    build_index(corpus)
    path = corpus / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["tokenizer_sha256"] = "another-tokenizer"
    path.write_text(json.dumps(manifest))
    with pytest.raises(
        IndexFormatError,
        match=r"built for tokenizer test-tokeniz…, the corpus "
        r"now has another-toke…: run `kiban index build "
        r".*corpus` to rebuild it",
    ):
        TokenIndex(corpus)
    manifest = build_index(corpus)
    assert manifest["built_now"] == [0, 1, 2]
    assert manifest["tokenizer_sha256"] == "another-tokenizer"
    assert_answers(corpus)


def test_no_corpus_and_no_index(fast_tmp, corpus):
    with pytest.raises(IndexFormatError, match="is not a built kiban corpus"):
        build_index(fast_tmp / "nowhere")
    with pytest.raises(IndexFormatError, match="is not a built kiban corpus"):
        TokenIndex(fast_tmp / "nowhere")
    with pytest.raises(
        IndexFormatError,
        match=r"has no index: run `kiban index build "
        r".*corpus`",
    ):
        TokenIndex(corpus)
    (corpus / "manifest.json").write_text("{}")
    with pytest.raises(IndexFormatError, match="not a 'kiban.corpus' file"):
        build_index(corpus)
    write_bare_corpus(corpus, SHARDS, eos_id=0, vocab_size=10)
    (corpus / "shards" / "tokens-000001.bin").unlink()
    with pytest.raises(
        IndexFormatError, match="tokens-000001.bin is missing: the corpus is incomplete"
    ):
        build_index(corpus)


def test_two_workers_write_the_same_files(corpus):
    build_index(corpus, workers=1)
    one = index_files(corpus)
    shutil.rmtree(corpus / "index")
    assert build_index(corpus, workers=2)["built_now"] == [0, 1, 2]
    assert index_files(corpus) == one
