"""`build_index`: one suffix array per corpus shard, built by `pydivsufsort` (native
libdivsufsort), each shard independently. Any vocabulary size works: pydivsufsort sorts the
shard's tokens as big-endian bytes (1, 2 or 4 per token, as the id range needs) and keeps the
suffixes that start on a token, which is the order of the token sequences themselves.

Layout, beside the corpus's own ``shards/``::

    CORPUS/index/manifest.json        format "kiban.index" v1, tokenizer sha256, per shard:
                                      tokens and suffix-array sizes and sha256 checksums
    CORPUS/index/sa-NNNNNN.npy        int32 suffix array (int64 once those bytes reach 2**31)
    CORPUS/index/first-NNNNNN.npy     int64 start row of every first token's block (vocab + 1)

Building again builds only shards whose suffix array is missing, unreadable or damaged (its
sha256 differs from the manifest's) or whose tokens changed; adding a shard never rebuilds the
others. Every file is hashed on every build (in parallel threads): "up to date" is checked, never
assumed. The corpus's paths come from its `Corpus` (the one owner of that layout).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from kiban.corpus.store import Corpus, CorpusError, as_corpus, offsets_file, tokens_file
from kiban.errors import InputError
from kiban.formats import FormatError, check, register, write_json
from kiban.io import atomic_open, cached_file_sha256, file_sha256

#: The index manifest: per shard, the tokens it was built from and the sha256 of its files.
INDEX_FORMAT = register(
    "kiban.index", 1, description="a corpus's suffix-array index (index/manifest.json)"
)
#: The suffix arrays and block tables, stamped in the index manifest's ``layout`` (an index
#: manifest without one, as version 1 wrote them, holds version 1 of these).
SUFFIX_ARRAYS = register(
    "kiban.index.suffix-arrays",
    1,
    description="index/sa-NNNNNN.npy: the shard's token suffix array (int32, int64 past 2**31 "
    "bytes); index/first-NNNNNN.npy: int64 first suffix-array row of each token "
    "(vocabulary size + 1 entries)",
)
MANIFEST = "manifest.json"


class IndexFormatError(InputError):
    """An index or the corpus under it is missing, corrupt, or of another version."""


def suffix_array_path(corpus: Corpus, shard: int) -> Path:
    return corpus.index_directory / f"sa-{shard:06d}.npy"


def first_rows_path(corpus: Corpus, shard: int) -> Path:
    """int64, vocabulary size + 1 entries: token t's suffix-array rows are
    ``first_rows[t]:first_rows[t+1]``."""
    return corpus.index_directory / f"first-{shard:06d}.npy"


def open_corpus(corpus: Corpus | str | os.PathLike) -> Corpus:
    """The `Corpus` to index, its errors as `IndexFormatError`."""
    try:
        return as_corpus(corpus)
    except CorpusError as error:
        raise IndexFormatError(str(error)) from None


def _build_shard(task: tuple[str, int, str, str, str, int]) -> dict[str, Any]:
    tokens_path, shard, dtype, out_path, first_rows_path, vocab_size = task
    mtime_ns = os.stat(tokens_path).st_mtime_ns
    tokens = np.fromfile(tokens_path, dtype=np.dtype(dtype))
    if len(tokens) and int(tokens.max()) >= vocab_size:  # an index of such ids would answer wrongly
        position = int(np.argmax(tokens >= vocab_size))
        raise IndexFormatError(
            f"{tokens_path}: token id {int(tokens[position])} at position "
            f"{position:,} is outside the vocabulary (0 … {vocab_size - 1}): "
            "the shard is damaged; rebuild the corpus"
        )
    # the suffix array is sorted by first token, so token t's rows are one block whose length is
    # t's frequency: block starts are the cumulative counts (a count of one token needs no search)
    counts = (
        np.bincount(tokens, minlength=vocab_size) if len(tokens) else np.zeros(vocab_size, np.int64)
    )
    first_rows = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    if len(tokens):
        suffix_array = _suffix_array(tokens)
    else:
        suffix_array = np.zeros(0, dtype=np.int32)
    with atomic_open(out_path, "wb") as handle:
        np.save(handle, suffix_array)
    with atomic_open(first_rows_path, "wb") as handle:
        np.save(handle, first_rows)
    return {
        "shard": shard,
        "tokens": len(tokens),
        "tokens_sha256": file_sha256(Path(tokens_path)),
        "tokens_mtime_ns": mtime_ns,
        "suffix_array_dtype": str(suffix_array.dtype),
        "suffix_array_sha256": file_sha256(Path(out_path)),
        "first_rows_sha256": file_sha256(Path(first_rows_path)),
    }


def _suffix_array(tokens: np.ndarray) -> np.ndarray:
    """The token suffix array, as `pydivsufsort.divsufsort(tokens)` computes it (libdivsufsort
    over the big-endian byte string, suffixes starting on a token kept), with about half its
    peak memory: the private token copy is byte-swapped in place, libdivsufsort writes into one
    preallocated int32 array, and the token-aligned entries are compacted in place (numba).
    Falls back to the public call when the shard needs 64-bit positions or pydivsufsort's
    internals differ."""
    import ctypes

    import pydivsufsort

    try:
        from pydivsufsort.divsufsort import _get_bytes_pointer, libdivsufsort
    except ImportError:
        return pydivsufsort.divsufsort(tokens)
    if tokens.dtype.itemsize > 2 and len(tokens) and int(tokens.max()) <= 0xFFFF:
        tokens = tokens.astype(np.uint16)  # what pydivsufsort does too: narrower bytes
    big_endian = tokens.byteswap(inplace=True).view(np.uint8)  # byte order == token order
    n = len(big_endian)
    if n > np.iinfo(np.int32).max:
        tokens.byteswap(inplace=True)
        return pydivsufsort.divsufsort(tokens)
    from kiban.index._kernels import compact_aligned

    byte_suffix_array = np.empty(n, dtype=np.int32)
    status = libdivsufsort.divsufsort(
        _get_bytes_pointer(big_endian),
        byte_suffix_array.ctypes.data_as(ctypes.POINTER(ctypes.c_int32)),
        ctypes.c_int32(n),
    )
    if status:
        raise RuntimeError(f"libdivsufsort failed with status {status}")
    kept = compact_aligned(byte_suffix_array, tokens.dtype.itemsize)
    return byte_suffix_array[:kept]


def read_index_manifest(corpus: Corpus) -> dict[str, Any] | None:
    """The index manifest of ``corpus``, checked; None when it has no index yet."""
    import json

    path = corpus.index_directory / MANIFEST
    if not path.is_file():
        return None
    rebuild = f"run `kiban index build {corpus.directory}` to rebuild it"
    try:
        manifest = check(json.loads(path.read_text(encoding="utf-8")), INDEX_FORMAT, where=path)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise IndexFormatError(f"{path}: corrupt index manifest ({error}); {rebuild}") from None
    except FormatError as error:
        raise IndexFormatError(f"{error}; {rebuild}") from None
    try:
        layout = manifest.get("layout") or {"suffix_arrays": SUFFIX_ARRAYS.stamp()}
        check(
            layout.get("suffix_arrays", {}), SUFFIX_ARRAYS, where=f"{path} (layout.suffix_arrays)"
        )
    except FormatError as error:
        raise IndexFormatError(f"{error}; {rebuild}") from None
    shards = manifest.get("shards")
    if (
        not isinstance(shards, list)
        or not all(isinstance(e, dict) and _ENTRY_KEYS <= e.keys() for e in shards)
        or [e["shard"] for e in shards] != list(range(len(shards)))
        or "tokenizer_sha256" not in manifest
    ):
        raise IndexFormatError(f"{path}: corrupt index manifest (shard entries); {rebuild}")
    return manifest


_ENTRY_KEYS = {"shard", "tokens", "tokens_sha256", "suffix_array_sha256"}


def build_index(
    corpus: Corpus | str | os.PathLike,
    *,
    workers: int = 1,
    verify: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Build the suffix arrays a corpus lacks; returns the index manifest, whose ``built_now``
    lists the shards built by this call and ``rebuilt_because`` why each existing one was.

    The corpus's shard files are checked against its manifest's checksums first: a damaged
    corpus is an error (an index built over it would answer wrongly), never "up to date". A
    shard's index is (re)built when its suffix array or block table is missing, unreadable or
    differs from its recorded sha256 (every file is hashed: a damaged index is rebuilt, not
    reported up to date), or its tokens changed. With ``verify``, the corpus's values are
    checked too (token ids inside the vocabulary, documents ending with end-of-text) and
    ``documents.parquet`` against its checksum. An index manifest that is unreadable, of another
    version or for another tokenizer is replaced: every shard is built again."""
    corpus = open_corpus(corpus)
    if workers < 1:
        raise IndexFormatError(f"workers must be >= 1, got {workers}")
    for shard in range(corpus.shard_count):
        tokens_path = corpus.tokens_path(shard)
        if not tokens_path.is_file():
            raise IndexFormatError(f"{tokens_path} is missing: the corpus is incomplete")
        if tokens_path.stat().st_size % corpus.token_dtype.itemsize:
            raise IndexFormatError(
                f"{tokens_path}: {tokens_path.stat().st_size} bytes is not a "
                f"whole number of {corpus.token_dtype} tokens: the corpus is "
                "damaged; rebuild it"
            )
    try:
        if verify:
            corpus.verify(values=True)
        else:
            from kiban.io import files_sha256

            # hash the shard files in parallel threads; check_file then finds them cached
            files_sha256(
                [
                    corpus.directory / f(s)
                    for s in range(corpus.shard_count)
                    for f in (tokens_file, offsets_file)
                ]
            )
            for shard in range(corpus.shard_count):
                corpus.check_file(tokens_file(shard))
                corpus.check_file(offsets_file(shard))
    except CorpusError as error:
        raise IndexFormatError(str(error)) from None
    try:
        manifest = read_index_manifest(corpus)
    except IndexFormatError:
        manifest = None  # unreadable or of another version: build the whole index again
    if manifest and manifest.get("tokenizer_sha256") != corpus.tokenizer_sha256:
        manifest = None  # the corpus was rebuilt with another tokenizer: nothing can be reused
    entries = {e["shard"]: e for e in (manifest or {}).get("shards", [])}
    todo, reasons = [], {}
    for shard in range(corpus.shard_count):
        tokens_path = corpus.tokens_path(shard)
        n_tokens = tokens_path.stat().st_size // corpus.token_dtype.itemsize
        reason = _stale_reason(corpus, shard, entries.get(shard), n_tokens)
        if reason:
            if shard in entries:
                reasons[shard] = reason
            todo.append(
                (
                    str(tokens_path),
                    shard,
                    str(corpus.token_dtype),
                    str(suffix_array_path(corpus, shard)),
                    str(first_rows_path(corpus, shard)),
                    corpus.vocab_size,
                )
            )
        elif entries[shard].get("tokens_mtime_ns") != tokens_path.stat().st_mtime_ns:
            entries[shard] = {**entries[shard], "tokens_mtime_ns": tokens_path.stat().st_mtime_ns}
    corpus.index_directory.mkdir(exist_ok=True)
    from tqdm import tqdm

    with tqdm(
        total=len(todo), desc="index", unit="shard", disable=not progress, leave=False
    ) as bar:
        for entry in _map(_build_shard, todo, workers):
            entries[entry["shard"]] = entry
            bar.update(1)
    return write_json(
        corpus.index_directory / MANIFEST,
        INDEX_FORMAT,
        {
            "tokenizer_sha256": corpus.tokenizer_sha256,
            "token_dtype": str(corpus.token_dtype),
            "eos_id": corpus.eos_id,
            "vocab_size": corpus.vocab_size,
            "layout": {"suffix_arrays": SUFFIX_ARRAYS.stamp()},
            "shards": [entries[s] for s in range(corpus.shard_count)],
            "built_now": sorted(t[1] for t in todo),
            "rebuilt_because": {str(s): r for s, r in sorted(reasons.items())},
        },
    )


def _stale_reason(corpus: Corpus, shard: int, entry: dict | None, n_tokens: int) -> str | None:
    """Why shard ``shard``'s index must be built again, or None when it is up to date. Every
    file is hashed (cached within the process): up to date means checked, not assumed."""
    if entry is None:
        return "not indexed"
    if entry["tokens"] != n_tokens:
        return f"the shard has {n_tokens:,} tokens, the index {entry['tokens']:,}"
    tokens_path = corpus.tokens_path(shard)
    if cached_file_sha256(tokens_path) != entry["tokens_sha256"]:
        # the corpus's own checksum (checked above where it has one) vouches for the tokens: they
        # were rewritten by a rebuild of the corpus, and the index follows them. A version-1
        # corpus has none: its manifest, written last by a build, tells a rebuild (newer than the
        # index) from tokens changed under an unchanged corpus (damage)
        if tokens_file(shard) not in corpus.checksums and (
            (corpus.directory / "manifest.json").stat().st_mtime_ns
            <= (corpus.index_directory / MANIFEST).stat().st_mtime_ns
        ):
            raise IndexFormatError(
                f"{tokens_path}: sha256 differs from the one indexed, and the "
                "corpus was not rebuilt since: the shard is damaged (a "
                "version-1 corpus records no checksums of its own); rebuild "
                "the corpus"
            )
        return "the shard's tokens changed"
    sa_path, rows_path = suffix_array_path(corpus, shard), first_rows_path(corpus, shard)
    if not _suffix_array_readable(sa_path, n_tokens):
        return f"{sa_path.name} is missing or unreadable"
    if cached_file_sha256(sa_path) != entry["suffix_array_sha256"]:
        return f"{sa_path.name} differs from its recorded sha256 (damaged)"
    if not rows_path.is_file():
        return f"{rows_path.name} is missing"
    if "first_rows_sha256" in entry and cached_file_sha256(rows_path) != entry["first_rows_sha256"]:
        return f"{rows_path.name} differs from its recorded sha256 (damaged)"
    return None


def _suffix_array_readable(path: Path, n_tokens: int) -> bool:
    """Whether ``path`` is a suffix array file of the right length (its header and size only:
    a truncated or overwritten file is rebuilt without ``verify``)."""
    try:
        array = np.load(path, mmap_mode="r")
    except (ValueError, OSError, EOFError):
        return False
    return array.shape == (n_tokens,) and array.dtype.kind == "i"


def _map(function, tasks: list, workers: int):
    if workers <= 1 or len(tasks) <= 1:
        for task in tasks:
            yield function(task)
        return
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(min(workers, len(tasks))) as pool:
        yield from pool.imap(function, tasks)
