"""`build_index`: one suffix array per corpus shard, built by `pydivsufsort` (native
libdivsufsort), each shard independently. Any vocabulary size works: pydivsufsort sorts the
shard's tokens as big-endian bytes (1, 2 or 4 per token, as the id range needs) and keeps the
suffixes that start on a token, which is the order of the token sequences themselves.

Layout, beside the corpus's own ``shards/``::

    CORPUS/index/manifest.json        format "kiban.index" v1, tokenizer sha256, per shard:
                                      tokens and suffix-array sizes and sha256 checksums
    CORPUS/index/sa-NNNNNN.npy        int32 suffix array (int64 once those bytes reach 2**31)
    CORPUS/index/first-NNNNNN.npy     int64 start row of every first token's block (vocab + 1)

Building again builds only shards whose suffix array is missing or unreadable or whose tokens
changed; adding a shard never rebuilds the others.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kiban.io import atomic_open, atomic_write_text, file_sha256

FORMAT_NAME = "kiban.index"
FORMAT_VERSION = 1
INDEX_DIR = "index"


class IndexFormatError(ValueError):
    """An index or the corpus under it is missing, corrupt, or of another version."""


@dataclass(frozen=True)
class CorpusLayout:
    """What the index needs to know of a corpus: its manifest's token facts and shard paths."""

    directory: Path
    shards: int
    token_dtype: np.dtype
    eos_id: int
    vocab_size: int
    tokenizer_sha256: str | None

    @classmethod
    def read(cls, directory: str | os.PathLike) -> CorpusLayout:
        directory = Path(directory)
        path = directory / "manifest.json"
        if not path.is_file():
            raise IndexFormatError(f"{path} is missing: {directory} is not a built kiban corpus")
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
            return cls(directory, int(manifest["shards"]), np.dtype(manifest["token_dtype"]),
                       int(manifest["eos_id"]), int(manifest["vocab_size"]),
                       manifest.get("tokenizer_sha256"))
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise IndexFormatError(f"{path}: corrupt corpus manifest ({error})") from None

    def tokens_path(self, shard: int) -> Path:
        return self.directory / "shards" / f"tokens-{shard:06d}.bin"

    def offsets_path(self, shard: int) -> Path:
        return self.directory / "shards" / f"offsets-{shard:06d}.npy"

    def suffix_array_path(self, shard: int) -> Path:
        return self.directory / INDEX_DIR / f"sa-{shard:06d}.npy"

    def first_rows_path(self, shard: int) -> Path:
        """int64, vocabulary size + 1 entries: token t's suffix-array rows are
        ``first_rows[t]:first_rows[t+1]``."""
        return self.directory / INDEX_DIR / f"first-{shard:06d}.npy"


def _build_shard(task: tuple[str, int, str, str, str, int]) -> dict[str, Any]:
    tokens_path, shard, dtype, out_path, first_rows_path, vocab_size = task
    mtime_ns = os.stat(tokens_path).st_mtime_ns
    tokens = np.fromfile(tokens_path, dtype=np.dtype(dtype))
    # the suffix array is sorted by first token, so token t's rows are one block whose length is
    # t's frequency: block starts are the cumulative counts (a count of one token needs no search)
    counts = np.bincount(tokens, minlength=vocab_size) if len(tokens) else np.zeros(vocab_size,
                                                                                     np.int64)
    first_rows = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    if len(tokens):
        suffix_array = _suffix_array(tokens)
    else:
        suffix_array = np.zeros(0, dtype=np.int32)
    with atomic_open(out_path, "wb") as handle:
        np.save(handle, suffix_array)
    with atomic_open(first_rows_path, "wb") as handle:
        np.save(handle, first_rows)
    return {"shard": shard, "tokens": int(len(tokens)), "tokens_sha256": file_sha256(Path(tokens_path)),
            "tokens_mtime_ns": mtime_ns,
            "suffix_array_dtype": str(suffix_array.dtype),
            "suffix_array_sha256": file_sha256(Path(out_path)),
            "first_rows_sha256": file_sha256(Path(first_rows_path))}


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
    status = libdivsufsort.divsufsort(_get_bytes_pointer(big_endian),
                                      byte_suffix_array.ctypes.data_as(
                                          ctypes.POINTER(ctypes.c_int32)), ctypes.c_int32(n))
    if status:
        raise RuntimeError(f"libdivsufsort failed with status {status}")
    kept = compact_aligned(byte_suffix_array, tokens.dtype.itemsize)
    return byte_suffix_array[:kept]


def read_index_manifest(layout: CorpusLayout) -> dict[str, Any] | None:
    path = layout.directory / INDEX_DIR / "manifest.json"
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise IndexFormatError(f"{path}: corrupt index manifest ({error}); run "
                               f"`kiban index build {layout.directory}` to rebuild it") from None
    if not isinstance(manifest, dict):
        raise IndexFormatError(f"{path}: corrupt index manifest (not a JSON object); run "
                               f"`kiban index build {layout.directory}` to rebuild it")
    if manifest.get("format") != FORMAT_NAME or manifest.get("version") != FORMAT_VERSION:
        raise IndexFormatError(f"{path}: format {manifest.get('format')!r} version "
                               f"{manifest.get('version')!r}; this kiban reads {FORMAT_NAME!r} "
                               f"version {FORMAT_VERSION}: run `kiban index build "
                               f"{layout.directory}` to rebuild the index")
    shards = manifest.get("shards")
    if not isinstance(shards, list) or not all(
            isinstance(e, dict) and _ENTRY_KEYS <= e.keys() for e in shards) \
            or [e["shard"] for e in shards] != list(range(len(shards))) \
            or "tokenizer_sha256" not in manifest:
        raise IndexFormatError(f"{path}: corrupt index manifest (shard entries); run "
                               f"`kiban index build {layout.directory}` to rebuild it")
    return manifest


_ENTRY_KEYS = {"shard", "tokens", "tokens_sha256", "suffix_array_sha256"}


def build_index(corpus_dir: str | os.PathLike, *, workers: int = 1, verify: bool = False,
                progress: bool = False) -> dict[str, Any]:
    """Build the suffix arrays a corpus lacks; returns the index manifest.

    A shard is (re)built when its suffix array is missing or unreadable, its recorded size
    differs from the tokens file, the tokens file was rewritten (modification time) with other
    contents, or (with ``verify``) a checksum differs. An index manifest that is unreadable, of
    another version or for another tokenizer is replaced: every shard is built again."""
    layout = CorpusLayout.read(corpus_dir)
    try:
        manifest = read_index_manifest(layout)
    except IndexFormatError:
        manifest = None  # unreadable or of another version: build the whole index again
    if manifest and manifest.get("tokenizer_sha256") != layout.tokenizer_sha256:
        manifest = None  # the corpus was rebuilt with another tokenizer: nothing can be reused
    entries = {e["shard"]: e for e in (manifest or {}).get("shards", [])}
    todo = []
    for shard in range(layout.shards):
        tokens_path = layout.tokens_path(shard)
        if not tokens_path.is_file():
            raise IndexFormatError(f"{tokens_path} is missing: the corpus is incomplete")
        entry = entries.get(shard)
        sa_path = layout.suffix_array_path(shard)
        stat = tokens_path.stat()
        n_tokens, extra = divmod(stat.st_size, layout.token_dtype.itemsize)
        if extra:
            raise IndexFormatError(f"{tokens_path}: {stat.st_size} bytes is not a whole number "
                                   f"of {layout.token_dtype} tokens: the corpus is corrupt; "
                                   "rebuild it")
        stale = (entry is None or entry["tokens"] != n_tokens
                 or not _suffix_array_readable(sa_path, n_tokens)
                 or not layout.first_rows_path(shard).is_file()
                 or (verify and (file_sha256(tokens_path) != entry["tokens_sha256"]
                                 or file_sha256(sa_path) != entry["suffix_array_sha256"])))
        if not stale and entry.get("tokens_mtime_ns") != stat.st_mtime_ns:
            # rewritten since (same size: a corpus rebuilt with the same tokenizer): rebuild
            # only if the tokens differ, else just remember the new time
            stale = file_sha256(tokens_path) != entry["tokens_sha256"]
            if not stale:
                entries[shard] = {**entry, "tokens_mtime_ns": stat.st_mtime_ns}
        if stale:
            todo.append((str(tokens_path), shard, str(layout.token_dtype), str(sa_path),
                         str(layout.first_rows_path(shard)), layout.vocab_size))
    (layout.directory / INDEX_DIR).mkdir(exist_ok=True)
    from tqdm import tqdm

    with tqdm(total=len(todo), desc="index", unit="shard", disable=not progress, leave=False) as bar:
        for entry in _map(_build_shard, todo, workers):
            entries[entry["shard"]] = entry
            bar.update(1)
    manifest = {"format": FORMAT_NAME, "version": FORMAT_VERSION,
                "tokenizer_sha256": layout.tokenizer_sha256, "token_dtype": str(layout.token_dtype),
                "eos_id": layout.eos_id, "vocab_size": layout.vocab_size,
                "shards": [entries[s] for s in range(layout.shards)],
                "built_now": sorted(t[1] for t in todo)}
    atomic_write_text(layout.directory / INDEX_DIR / "manifest.json",
                      json.dumps(manifest, indent=1))
    return manifest


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
