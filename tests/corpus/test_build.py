"""The built corpus: format, consistency, resuming after kill -9, determinism."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from kiban.corpus import BuildConfig, BuildError, Corpus, CorpusError, SourceSpec, build_corpus
from kiban.document import MODALITY_TAGS
from kiban.io import file_sha256

from .helpers import KIBAN, build, prose_documents, read_jsonl, tree_bytes, write_jsonl

EXPECTED_FILES = {
    "manifest.json",
    "documents.parquet",
    "rejects.jsonl",
    "dropped.jsonl",
    "tokenizer/tokenizer.json",
    "tokenizer/kiban_tokenizer.json",
    "tokenizer/tokenizer_config.json",
    "tokenizer/special_tokens_map.json",
}


@pytest.fixture
def mixed(in_tmp) -> list[dict]:
    """40 documents, two spelled-differently duplicates, one protein document, two bad lines."""
    documents = prose_documents(40)
    lines = [
        *documents[:10],
        "{not json",
        {"text": documents[3]["text"].replace("CCO", "OCC")},
        *documents[10:],
        {"text": "Insulin chain <protein>GIVEQCCTSICSLYQLENYCN</protein>."},
        {"text": "bad <mol>C1CC</mol>"},
        documents[20],
    ]
    write_jsonl(in_tmp / "docs.jsonl", lines)
    return lines


def test_output_format(in_tmp, mixed):
    corpus = build(in_tmp / "out", "docs.jsonl", chunk_size=7)
    m = corpus.manifest
    table = corpus.documents_table().to_pylist()
    texts = [row["text"] for row in table]

    # which documents are duplicates depends on canonical spelling; count them independently
    from kiban.corpus.clean import canonical_text

    good = [
        canonical_text(line["text"])
        for line in mixed
        if isinstance(line, dict) and "C1CC" not in line["text"]
    ]
    unique = list(dict.fromkeys(good))
    assert texts == unique
    assert len(good) - len(unique) == 2  # "OCC" spelled line 12 and the repeated document 20

    assert (m["format"], m["version"]) == ("kiban.corpus", 2)
    assert sorted(m["checksums"]) == sorted(
        [
            f"shards/{kind}-{i:06d}.{ext}"
            for i in range(7)
            for kind, ext in (("tokens", "bin"), ("offsets", "npy"))
        ]
        + ["documents.parquet"]
    )
    assert m["checksums"]["documents.parquet"] == {
        "bytes": (in_tmp / "out" / "documents.parquet").stat().st_size,
        "sha256": file_sha256(in_tmp / "out" / "documents.parquet"),
    }
    source = in_tmp / "docs.jsonl"
    assert m["source_files"] == [
        {
            "path": "docs.jsonl",
            "bytes": source.stat().st_size,
            "mtime_ns": source.stat().st_mtime_ns,
            "sha256": file_sha256(source),
        }
    ]
    assert m["documents"] == len(unique) == 41
    assert m["shards"] == math.ceil(len(mixed) / 7) == 7
    assert (
        m["rejected"],
        m["exact_duplicates"],
        m["near_duplicates"],
        m["duplicate_ids"],
        m["decontaminated"],
    ) == (2, 2, 0, 0, 0)
    assert m["modalities"] == {
        t: sum(text.count(f"</{t}>") for text in unique) for t in MODALITY_TAGS
    }
    assert m["modalities"] == {"mol": 40, "crystal": 0, "num": 40, "protein": 1}
    assert m["sources"] == {"docs": 41} and m["rejected_by_source"] == {"docs": 2}
    assert m["token_dtype"] == "uint16" and m["vocab_size"] == corpus.tokenizer.vocab_size
    assert m["eos_id"] == corpus.tokenizer.eos_id
    assert m["tokenizer_sha256"] == corpus.tokenizer.fingerprint
    assert m["config"]["sources"][0]["path"] == "docs.jsonl" and m["config"]["chunk_size"] == 7
    assert "strict" not in m["config"]

    files = set(tree_bytes(in_tmp / "out"))
    shard_files = {
        f"shards/{kind}-{i:06d}.{ext}"
        for i in range(7)
        for kind, ext in (("tokens", "bin"), ("offsets", "npy"))
    }
    assert files == EXPECTED_FILES | shard_files  # no .work, no temporary files

    assert [
        (r["where"], r["reason"][:30]) for r in read_jsonl(in_tmp / "out" / "rejects.jsonl")
    ] == [
        ("docs.jsonl:11", "malformed JSON: Expecting prop"),
        ("docs.jsonl:44", "span 1 <mol>: invalid mol 'C1C"),
    ]

    # shards: memory-mapped, consistent offsets, every document ends with end-of-text
    eos = corpus.tokenizer.eos_id
    row = 0
    total = 0
    for shard in range(corpus.shard_count):
        tokens, offsets = corpus.tokens(shard), corpus.offsets(shard)
        assert isinstance(tokens, np.memmap) and tokens.dtype == np.uint16
        assert isinstance(offsets, np.memmap) and offsets.dtype == np.int64
        assert offsets[0] == 0 and offsets[-1] == len(tokens)
        assert np.all(np.diff(offsets) >= 2)
        assert np.all(tokens[offsets[1:] - 1] == eos)
        assert int(np.sum(tokens == eos)) == len(offsets) - 1  # none inside a document
        for i in range(len(offsets) - 1):
            record = table[row]
            assert (record["shard"], record["token_offset"]) == (shard, offsets[i])
            assert record["n_tokens"] == offsets[i + 1] - offsets[i]
            ids = tokens[offsets[i] : offsets[i + 1] - 1]
            assert corpus.tokenizer.decode(ids) == record["text"]
            assert corpus.tokenizer.encode(record["text"]) == ids.tolist()
            assert record["sha256"] == hashlib.sha256(record["text"].encode()).hexdigest()
            assert record["n_mol"] == record["text"].count("</mol>")
            row += 1
        total += len(tokens)
    assert row == len(table) and total == m["tokens"] == sum(r["n_tokens"] for r in table)
    assert len({r["id"] for r in table}) == len(table)

    first = corpus.document(table[0]["id"])
    assert (first.text, first.source, first.license) == (texts[0], "docs", None)
    with pytest.raises(CorpusError, match="no document with id 'nope'"):
        corpus.document("nope")
    assert corpus.info()["documents"] == 41


def test_empty_shard_when_a_chunk_keeps_nothing(in_tmp):
    write_jsonl(
        in_tmp / "docs.jsonl",
        [{"text": "one"}, {"text": "two"}, {"text": "one"}, {"text": "two"}, {"text": "three"}],
    )
    corpus = build(in_tmp / "out", "docs.jsonl", chunk_size=2)
    assert corpus.shard_count == 3
    assert len(corpus.tokens(1)) == 0 and corpus.offsets(1).tolist() == [0]
    assert [r["shard"] for r in corpus.documents_table(["shard"]).to_pylist()] == [0, 0, 2]


def test_finished_directory_same_config_returns_manifest_other_config_errors(in_tmp, mixed):
    config = BuildConfig(sources=(SourceSpec(path="docs.jsonl"),), chunk_size=9, vocab_size=400)
    manifest = build_corpus(config, in_tmp / "out")
    before = tree_bytes(in_tmp / "out")
    mtimes = {p: p.stat().st_mtime_ns for p in (in_tmp / "out").rglob("*")}
    assert build_corpus(config, in_tmp / "out", workers=2) == manifest
    assert tree_bytes(in_tmp / "out") == before
    assert {p: p.stat().st_mtime_ns for p in (in_tmp / "out").rglob("*")} == mtimes
    # strict is not part of the configuration
    strict = BuildConfig(
        sources=(SourceSpec(path="docs.jsonl"),), chunk_size=9, vocab_size=400, strict=True
    )
    assert build_corpus(strict, in_tmp / "out") == manifest
    other = BuildConfig(
        sources=(SourceSpec(path="docs.jsonl"),), chunk_size=9, vocab_size=400, dedup="none"
    )
    with pytest.raises(BuildError, match="already holds a corpus built with another configuration"):
        build_corpus(other, in_tmp / "out")
    assert tree_bytes(in_tmp / "out") == before


def test_a_changed_source_is_refused_and_rebuilt_on_request(in_tmp, mixed):
    # before: the second build returned the old corpus, without the new document, exit 0
    config = BuildConfig(sources=(SourceSpec(path="docs.jsonl"),), chunk_size=9, vocab_size=400)
    manifest = build_corpus(config, in_tmp / "out")
    source = in_tmp / "docs.jsonl"
    os.utime(source, ns=(source.stat().st_atime_ns, source.stat().st_mtime_ns + 10**9))
    assert build_corpus(config, in_tmp / "out") == manifest  # touched, same contents: up to date
    before = tree_bytes(in_tmp / "out")
    old_size, old_sha = source.stat().st_size, file_sha256(source)
    with open(source, "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"text": "A new document about <mol>CCCl</mol>."}) + "\n")
    with pytest.raises(
        BuildError,
        match=re.escape(
            f"{in_tmp / 'out'} was built from other contents of docs.jsonl (now "
            f"{source.stat().st_size:,} bytes, sha256 {file_sha256(source)[:12]}…; built from "
            f"{old_size:,} bytes, sha256 {old_sha[:12]}…): the corpus is out of date; build it "
            "again with --rebuild (which replaces it) or choose a new --out"
        ),
    ):
        build_corpus(config, in_tmp / "out")
    assert tree_bytes(in_tmp / "out") == before
    (in_tmp / "out" / "index").mkdir()  # an index of the old corpus goes with it
    rebuilt = build_corpus(config, in_tmp / "out", rebuild=True)
    assert rebuilt["documents"] == manifest["documents"] + 1
    assert rebuilt["source_files"][0]["sha256"] == file_sha256(source)
    assert not (in_tmp / "out" / "index").exists()
    assert (
        "A new document about <mol>CCCl</mol>."
        in Corpus(in_tmp / "out").documents_table(["text"]).column("text").to_pylist()
    )


def test_a_source_changed_during_an_unfinished_build_is_refused(in_tmp, mixed, monkeypatch):
    import kiban.corpus.build

    config = BuildConfig(sources=(SourceSpec(path="docs.jsonl"),), chunk_size=9, vocab_size=400)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch, pytest.raises(KeyboardInterrupt):
        patch.setattr(kiban.corpus.build, "_dedup_stage", interrupted)
        build_corpus(config, in_tmp / "out")  # stops with an unfinished build in out/.work
    assert (in_tmp / "out" / ".work" / "clean" / "chunk-000000.jsonl").is_file()
    with open(in_tmp / "docs.jsonl", "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"text": "one more"}) + "\n")
    with pytest.raises(
        BuildError,
        match=r"out holds an unfinished build of other contents of "
        r"docs.jsonl \(now .*\); start it again with --rebuild",
    ):
        build_corpus(config, in_tmp / "out")
    assert build_corpus(config, in_tmp / "out", rebuild=True)["documents"] == 42


def test_a_version_1_corpus_is_read_and_its_changed_sources_are_noticed(in_tmp, mixed):
    config = BuildConfig(sources=(SourceSpec(path="docs.jsonl"),), chunk_size=9, vocab_size=400)
    build_corpus(config, in_tmp / "out")
    path = in_tmp / "out" / "manifest.json"
    old = json.loads(path.read_text())
    for key in ("checksums", "source_files"):
        del old[key]
    path.write_text(json.dumps({**old, "version": 1}))
    corpus = Corpus(in_tmp / "out")
    assert corpus.manifest["version"] == 2 and corpus.checksums == {}  # upgraded in memory
    assert len(corpus.tokens(0)) > 0
    assert build_corpus(config, in_tmp / "out")["documents"] == 41
    source = in_tmp / "docs.jsonl"  # no fingerprints: a source newer than the manifest changed
    os.utime(source, ns=(source.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    with pytest.raises(
        BuildError,
        match=r"other contents of docs.jsonl \(modified after the "
        r"corpus was built\)",
    ):
        build_corpus(config, in_tmp / "out")


def test_a_directory_or_a_file_where_a_directory_belongs(in_tmp, mixed):
    (in_tmp / "data").mkdir()
    config = BuildConfig(sources=(SourceSpec(path="data", format="jsonl"),), vocab_size=400)
    with pytest.raises(
        BuildError,
        match=re.escape(
            "source data is a directory, not a file: name the files in it (e.g. data/*.jsonl)"
        ),
    ):
        build_corpus(config, in_tmp / "out")  # before: "source file data does not exist"
    config = BuildConfig(sources=(SourceSpec(path="docs.jsonl"),), vocab_size=400)
    with pytest.raises(BuildError, match="--out docs.jsonl is a file, not a directory"):
        build_corpus(config, "docs.jsonl")


def test_unfinished_directory_with_other_config_errors(in_tmp, mixed):
    config = BuildConfig(sources=(SourceSpec(path="docs.jsonl"),), chunk_size=9, vocab_size=400)
    (in_tmp / "out" / ".work").mkdir(parents=True)
    (in_tmp / "out" / ".work" / "config.json").write_text('{"something": "else"}')
    with pytest.raises(BuildError, match="holds an unfinished build with another configuration"):
        build_corpus(config, in_tmp / "out")
    with pytest.raises(CorpusError, match="a build is unfinished: run it again to resume"):
        Corpus(in_tmp / "out")


def test_config_validation(in_tmp):
    spec = SourceSpec(path="docs.jsonl")
    for options, message in (
        ({"sources": ()}, "no sources given"),
        ({"dedup": "fuzzy"}, "dedup must be one of none, exact, near"),
        ({"near_threshold": 0.0}, "near_threshold must be in"),
        ({"chunk_size": 0}, "chunk_size must be >= 1"),
        ({"decontaminate_n": 0}, "decontaminate_n must be >= 1"),
        ({"tokenizer": "a", "base_tokenizer": "b"}, "either tokenizer"),
    ):
        with pytest.raises(BuildError, match=message):
            BuildConfig(**{"sources": (spec,), **options})
    with pytest.raises(BuildError, match="evaluation file eval.jsonl does not exist"):
        write_jsonl(in_tmp / "docs.jsonl", [{"text": "x"}])
        build_corpus(BuildConfig(sources=(spec,), decontaminate=("eval.jsonl",)), in_tmp / "o")


def test_given_tokenizer_is_used_as_is(in_tmp, mixed):
    first = build(in_tmp / "first", "docs.jsonl", chunk_size=50)
    write_jsonl(in_tmp / "more.jsonl", prose_documents(5, seed=7))
    second = build(in_tmp / "second", "more.jsonl", tokenizer=str(in_tmp / "first" / "tokenizer"))
    assert second.manifest["tokenizer_sha256"] == first.manifest["tokenizer_sha256"]
    assert tree_bytes(in_tmp / "second" / "tokenizer") == tree_bytes(in_tmp / "first" / "tokenizer")


def test_workers_do_not_change_the_output(in_tmp):
    write_jsonl(
        in_tmp / "docs.jsonl", prose_documents(120, seed=3) + ["{bad"] + prose_documents(10, seed=3)
    )
    (in_tmp / "a").mkdir()
    (in_tmp / "b").mkdir()
    common = {"chunk_size": 9, "dedup": "near"}
    build(in_tmp / "a" / "out", "docs.jsonl", workers=1, **common)
    build(in_tmp / "b" / "out", "docs.jsonl", workers=2, **common)
    one, two = tree_bytes(in_tmp / "a" / "out"), tree_bytes(in_tmp / "b" / "out")
    assert sorted(one) == sorted(two)
    assert one == two
    assert json.loads(one["manifest.json"])["exact_duplicates"] == 10


# --- kill -9 and resume ------------------------------------------------------------------------
def test_stale_temporary_files_of_a_killed_build_are_removed(in_tmp, mixed):
    options = {"chunk_size": 5}
    build(in_tmp / "ref", "docs.jsonl", **options)
    out = in_tmp / "out"
    # what a build killed in the middle of atomic writes leaves behind
    (out / ".work").mkdir(parents=True)
    for name in (
        "shards/.tokens-000002.bin.x1y2z3.tmp",
        ".documents.parquet.abc.tmp",
        "tokenizer/.tokenizer.json.k9.tmp",
        ".manifest.json.q.tmp",
    ):
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(b"half written")
    build(out, "docs.jsonl", **options)
    assert tree_bytes(out) == tree_bytes(in_tmp / "ref")
    # a build killed while removing .work after writing the manifest
    (out / ".work" / "clean").mkdir(parents=True)
    (out / ".work" / "clean" / "chunk-000003.jsonl").write_text("{}\n")
    build(out, "docs.jsonl", **options)
    assert tree_bytes(out) == tree_bytes(in_tmp / "ref")


BUILD_ARGS = [
    "corpus",
    "build",
    "docs.jsonl",
    "extra.csv",
    "--out",
    "out",
    "--chunk-size",
    "5",
    "--vocab-size",
    "400",
    "--dedup",
    "near",
    "--decontaminate",
    "eval.jsonl",
    "--decontaminate-n",
    "6",
    "--json",
]


def _run_until(cwd: Path, marker: str | None, *, timeout: float = 60) -> int | None:
    """Start the build; SIGKILL it as soon as ``marker`` (a path under cwd/out) exists. Returns
    the exit status (-9 when killed) or None if it finished before the marker appeared."""
    process = subprocess.Popen(
        [*KIBAN, *BUILD_ARGS], cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + timeout
    target = cwd / "out" / marker if marker else None
    try:
        while process.poll() is None:
            if target is not None and target.exists():
                process.send_signal(signal.SIGKILL)
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"build did not reach {marker} in {timeout} s")
            time.sleep(0.001)
        process.wait(timeout=timeout)
        if process.returncode not in (0, -signal.SIGKILL):
            raise AssertionError(
                f"build failed ({process.returncode}): {process.stderr.read().decode()}"
            )
        return process.returncode
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stderr.close()


def _write_resume_inputs(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    documents = prose_documents(240, seed=11)
    documents[7]["text"] += " " + EVAL[0]
    documents[201]["text"] = EVAL[1] + " " + documents[201]["text"]
    lines = (
        documents[:150]
        + ["{truncated", {"text": "<mol>C1CC</mol>"}]
        + documents[150:]
        + documents[40:60]
    )
    write_jsonl(directory / "docs.jsonl", lines)
    (directory / "extra.csv").write_text("smiles,logS\nOCC,-0.77\nc1ccccc1,-1.64\nCCN,1,2\n")
    write_jsonl(directory / "eval.jsonl", [{"text": t} for t in EVAL])


EVAL = (
    "Question: which noble gas glows orange red in discharge tubes used for signs?",
    "Zinc oxide nanoparticles scatter ultraviolet light in mineral sunscreen lotions.",
)


def test_kill_and_resume_gives_byte_identical_output(fast_tmp):
    reference, resumed = fast_tmp / "reference", fast_tmp / "resumed"
    _write_resume_inputs(reference)
    _write_resume_inputs(resumed)
    for name in ("docs.jsonl", "extra.csv", "eval.jsonl"):  # the manifest records source times
        stat = (reference / name).stat()
        os.utime(resumed / name, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert _run_until(reference, None) == 0
    expected = tree_bytes(reference / "out")
    manifest = json.loads(expected["manifest.json"])
    assert manifest["shards"] == math.ceil((240 + 2 + 20 + 3) / 5)
    assert (manifest["rejected"], manifest["exact_duplicates"], manifest["decontaminated"]) == (
        3,
        20,
        2,
    )

    killed = []
    for marker in (
        ".work/clean/chunk-000012.jsonl",
        ".work/dedup/keep-000030.npy",
        ".work/tokenizer.done",
        ".work/documents/part-000025.parquet",
        "documents.parquet",
    ):
        status = _run_until(resumed, marker)
        if status == 0:  # finished before the marker was seen: nothing left to interrupt
            break
        killed.append(marker)
        assert not (resumed / "out" / "manifest.json").exists()
        with pytest.raises(CorpusError, match="a build is unfinished"):
            Corpus(resumed / "out")
    # the early stages are slow enough (53 chunks) that these kills always land mid-build
    assert killed[:3] == [
        ".work/clean/chunk-000012.jsonl",
        ".work/dedup/keep-000030.npy",
        ".work/tokenizer.done",
    ]
    if status != 0:
        assert _run_until(resumed, None) == 0
    got = tree_bytes(resumed / "out")
    assert sorted(got) == sorted(expected)
    for name in expected:
        assert got[name] == expected[name], name
