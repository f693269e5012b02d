"""Reading a built corpus (`Corpus`) and corpus recipes (TOML).

`Corpus` is the one owner of a corpus directory's layout: the manifest, the token shards and
their document offsets, ``documents.parquet``, the tokenizer, and where the index lives. The
builder writes to the paths it names and the index reads through it.

Integrity: a version-2 manifest records the size and sha256 of every shard file and of
``documents.parquet``; `Corpus.tokens`, `Corpus.offsets` and `Corpus.documents_table` check them
before handing out data (once per process while the file is unchanged), so a damaged file is an
error naming it, never a wrong answer. Version-1 corpora (no checksums) stay readable; their
files are checked by size only (and by the index's own checksums, see `kiban.index.build`).
"""

from __future__ import annotations

import json
import os
import tomllib
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kiban.corpus.readers import SourceSpec
from kiban.document import Document
from kiban.errors import InputError
from kiban.formats import FormatError, check, register
from kiban.io import cached_file_sha256

if TYPE_CHECKING:
    from kiban.corpus.build import BuildConfig


#: The binary files a manifest describes, each a registered format of its own (stamped in the
#: manifest's ``layout``, checked on opening), so that a change to either is a new version.
TOKEN_SHARDS = register(
    "kiban.corpus.shards",
    1,
    description="shards/tokens-NNNNNN.bin: token ids (the manifest's token_dtype, native order), "
    "each document followed by end-of-text; shards/offsets-NNNNNN.npy: int64 "
    "document starts plus the token count",
)
DOCUMENTS_TABLE = register(
    "kiban.corpus.documents",
    1,
    description="documents.parquet: one row per kept document, in shard order (id, source, "
    "license, where, sha256, n_tokens, n_<modality>, shard, token_offset, text, meta)",
)


def _from_v1(manifest: dict[str, Any]) -> dict[str, Any]:
    """Version 1 had no file checksums and no source fingerprints (both read as unknown); its
    shards and documents table are version 1 of theirs."""
    return {
        **manifest,
        "checksums": {},
        "source_files": None,
        "layout": {"shards": TOKEN_SHARDS.stamp(), "documents": DOCUMENTS_TABLE.stamp()},
    }


def layout_stamp() -> dict[str, dict[str, Any]]:
    """The ``layout`` a build writes into the manifest."""
    return {"shards": TOKEN_SHARDS.stamp(), "documents": DOCUMENTS_TABLE.stamp()}


#: The corpus manifest. v2 added ``checksums`` (shard files and documents.parquet: size and
#: sha256) and ``source_files`` (each source's path, size, mtime and sha256 when built).
CORPUS_FORMAT = register(
    "kiban.corpus", 2, description="a built kiban corpus (manifest.json)", upgrades={1: _from_v1}
)
MANIFEST = "manifest.json"
DOCUMENTS = "documents.parquet"
INDEX_DIR = "index"


def tokens_file(shard: int) -> str:
    """The path of shard ``shard``'s tokens, relative to the corpus directory."""
    return f"shards/tokens-{shard:06d}.bin"


def offsets_file(shard: int) -> str:
    """The path of shard ``shard``'s document offsets, relative to the corpus directory."""
    return f"shards/offsets-{shard:06d}.npy"


class CorpusError(InputError):
    """A corpus directory that is missing, incomplete, damaged, or of another format."""


class Corpus:
    """A built corpus directory: manifest, token shards, documents table, tokenizer."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        path = self.directory / MANIFEST
        if not path.is_file():
            hint = (
                " (a build is unfinished: run it again to resume)"
                if (self.directory / ".work").is_dir()
                else ""
            )
            if self.directory.exists() and not self.directory.is_dir():
                raise CorpusError(f"{self.directory} is not a built kiban corpus: it is a file")
            raise CorpusError(
                f"{path} is missing: {self.directory} is not a built kiban corpus{hint}"
            )
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise CorpusError(f"{path}: corrupt manifest ({error}); rebuild the corpus") from None
        try:
            self.manifest: dict[str, Any] = check(raw, CORPUS_FORMAT, where=path)
        except FormatError as error:
            raise CorpusError(str(error)) from None
        layout = self.manifest.get("layout") or {}
        try:
            for key, fmt in (("shards", TOKEN_SHARDS), ("documents", DOCUMENTS_TABLE)):
                check(layout.get(key, {}), fmt, where=f"{path} (layout.{key})")
        except FormatError as error:
            raise CorpusError(str(error)) from None
        try:
            self._shards = int(self.manifest["shards"])
            self._dtype = np.dtype(self.manifest["token_dtype"])
            self._eos_id = int(self.manifest["eos_id"])
            self._vocab_size = int(self.manifest["vocab_size"])
        except (KeyError, TypeError, ValueError) as error:
            raise CorpusError(
                f"{path}: corrupt manifest (shards, token_dtype, eos_id, "
                f"vocab_size: {error!r}); rebuild the corpus"
            ) from None

    # --- layout -------------------------------------------------------------------------------
    @property
    def shard_count(self) -> int:
        return self._shards

    @property
    def token_dtype(self) -> np.dtype:
        return self._dtype

    @property
    def eos_id(self) -> int:
        return self._eos_id

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    @property
    def tokenizer_sha256(self) -> str | None:
        return self.manifest.get("tokenizer_sha256")

    def tokens_path(self, shard: int) -> Path:
        return self.directory / tokens_file(shard)

    def offsets_path(self, shard: int) -> Path:
        return self.directory / offsets_file(shard)

    @property
    def documents_path(self) -> Path:
        return self.directory / DOCUMENTS

    @property
    def index_directory(self) -> Path:
        """Where `kiban.index` keeps this corpus's suffix arrays."""
        return self.directory / INDEX_DIR

    # --- integrity ----------------------------------------------------------------------------
    @property
    def checksums(self) -> dict[str, dict[str, Any]]:
        """Relative path -> {"bytes", "sha256"} of the files the manifest vouches for ({} for a
        version-1 corpus)."""
        return self.manifest.get("checksums") or {}

    def check_file(self, relative: str, *, digest: bool = True) -> Path:
        """``relative``'s path, once its size (and with ``digest`` its sha256) is what the
        manifest records; a file the manifest does not record is only checked to exist."""
        path = self.directory / relative
        if not path.is_file():
            raise CorpusError(f"{path} is missing: the corpus is incomplete; rebuild it")
        expected = self.checksums.get(relative)
        if expected is None:
            return path
        size = path.stat().st_size
        if size != expected["bytes"]:
            raise CorpusError(
                f"{path} has {size:,} bytes, the corpus manifest records "
                f"{expected['bytes']:,}: the file is damaged or was replaced; "
                "rebuild the corpus"
            )
        if digest:
            actual = cached_file_sha256(path)
            if actual != expected["sha256"]:
                raise CorpusError(
                    f"{path}: sha256 {actual[:16]}… differs from the "
                    f"{expected['sha256'][:16]}… in the corpus manifest: the file "
                    "is damaged; rebuild the corpus"
                )
        return path

    def verify(self, *, values: bool = True) -> dict[str, Any]:
        """Check every file the manifest vouches for (sizes and sha256), and with ``values`` the
        shards' contents: token ids inside the vocabulary, offsets that split the tokens into
        documents each ending with the end-of-text id. Raises `CorpusError` naming the first
        problem; returns what was checked."""
        from kiban.io import files_sha256

        paths = [self.check_file(r, digest=False) for r in sorted(self.checksums)]
        for relative, path, actual in zip(sorted(self.checksums), paths, files_sha256(paths)):
            if actual != self.checksums[relative]["sha256"]:
                raise CorpusError(
                    f"{path}: sha256 {actual[:16]}… differs from the "
                    f"{self.checksums[relative]['sha256'][:16]}… in the corpus "
                    "manifest: the file is damaged; rebuild the corpus"
                )
        if values:
            for shard in range(self.shard_count):
                self._check_values(shard)
        return {"files": len(paths), "shards": self.shard_count, "values": values}

    def _check_values(self, shard: int) -> None:
        tokens, offsets = self.tokens(shard), self.offsets(shard)
        if len(tokens):
            largest = int(tokens.max())
            if largest >= self.vocab_size:
                position = int(np.argmax(tokens >= self.vocab_size))
                raise CorpusError(
                    f"{self.tokens_path(shard)}: token id {int(tokens[position])} "
                    f"at position {position:,} is outside the vocabulary "
                    f"(0 … {self.vocab_size - 1}): the shard is damaged; rebuild "
                    "the corpus"
                )
        ends = np.asarray(offsets[1:], dtype=np.int64) - 1
        if len(ends) and np.any(tokens[ends] != self.eos_id):
            document = int(np.flatnonzero(tokens[ends] != self.eos_id)[0])
            raise CorpusError(
                f"{self.tokens_path(shard)}: document {document} does not end with "
                f"the end-of-text id {self.eos_id}: the shard or its offsets are "
                "damaged; rebuild the corpus"
            )

    # --- data ---------------------------------------------------------------------------------
    def tokens(self, shard: int, *, verify: bool = True) -> np.ndarray:
        """The shard's tokens, memory-mapped (read-only), checked against the manifest."""
        path = self.check_file(tokens_file(shard), digest=verify)
        size = path.stat().st_size
        if size % self.token_dtype.itemsize:
            raise CorpusError(
                f"{path}: {size} bytes is not a whole number of {self.token_dtype} "
                "tokens: the corpus is damaged; rebuild it"
            )
        if size == 0:
            return np.zeros(0, dtype=self.token_dtype)
        return np.memmap(path, dtype=self.token_dtype, mode="r")

    def offsets(self, shard: int, *, verify: bool = True) -> np.ndarray:
        """Document starts of the shard plus its token count (int64), checked: document *i* is
        ``tokens[offsets[i]:offsets[i+1]]``, its end-of-text token included."""
        path = self.check_file(offsets_file(shard), digest=verify)
        try:
            offsets = np.load(path, mmap_mode="r")
        except (ValueError, OSError, EOFError) as error:
            raise CorpusError(
                f"{path}: unreadable ({error}); the corpus is damaged: rebuild it"
            ) from None
        tokens = self.tokens_path(shard).stat().st_size // self.token_dtype.itemsize
        if (
            offsets.ndim != 1
            or len(offsets) == 0
            or offsets.dtype.kind not in "iu"
            or int(offsets[0]) != 0
            or int(offsets[-1]) != tokens
            or np.any(np.diff(offsets) < 1)
        ):
            raise CorpusError(
                f"{path}: document offsets do not fit the {tokens} tokens of "
                f"{tokens_file(shard)}; the corpus is damaged: rebuild it"
            )
        return offsets

    @cached_property
    def tokenizer(self):
        from kiban.tokenizer import ScienceTokenizer

        tokenizer = ScienceTokenizer.load(self.directory / "tokenizer")
        if tokenizer.fingerprint != self.manifest["tokenizer_sha256"]:
            raise CorpusError(
                f"{self.directory / 'tokenizer'} is not the tokenizer this corpus "
                "was built with (its sha256 differs from the manifest's)"
            )
        return tokenizer

    def documents_table(self, columns: list[str] | None = None, *, verify: bool = True):
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = self.check_file(DOCUMENTS, digest=verify)
        try:
            return pq.read_table(path, columns=columns)
        except (pa.ArrowException, OSError) as error:
            raise CorpusError(
                f"{path}: unreadable ({error}); the corpus is damaged: rebuild it"
            ) from None

    def document_row(self, document_id: str) -> dict[str, Any]:
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        path = self.check_file(DOCUMENTS)
        try:
            table = pq.read_table(path, filters=pc.field("id") == document_id)
        except (pa.ArrowException, OSError) as error:
            raise CorpusError(
                f"{path}: unreadable ({error}); the corpus is damaged: rebuild it"
            ) from None
        if table.num_rows == 0:
            raise CorpusError(f"no document with id {document_id!r} in {self.directory}")
        return table.to_pylist()[0]

    def find_document_row(
        self,
        *,
        row: int | None = None,
        where: str | None = None,
        source_id: str | None = None,
    ) -> dict[str, Any]:
        """The document at position ``row`` (from 0, in corpus order, as `head` numbers them),
        read from ``where`` (``FILE:LINE``, the file as given to the build or its tail), or whose
        source id (the build's ``id_column``) is ``source_id``; exactly one of them."""
        selectors = (("row", row), ("where", where), ("id", source_id))
        given = [(name, value) for name, value in selectors if value is not None]
        if len(given) != 1:
            raise CorpusError(
                "give exactly one of a document id, --row N, --where FILE:LINE, --id SOURCE_ID; "
                f"got {', '.join(name for name, _ in given) or 'none'}"
            )
        table = self.documents_table()
        if row is not None:
            if not 0 <= row < table.num_rows:
                raise CorpusError(
                    f"--row {row}: {self.directory} holds {table.num_rows:,} documents "
                    f"(rows 0 to {table.num_rows - 1:,})"
                )
            return table.slice(row, 1).to_pylist()[0]
        if where is not None:
            places = table.column("where").to_pylist()
            matches = [i for i, p in enumerate(places) if p == where or p.endswith("/" + where)]
            if not matches:
                raise CorpusError(self._not_built_reason(where))
            return table.slice(matches[0], 1).to_pylist()[0]
        metas = table.column("meta").to_pylist()
        for position, meta in enumerate(metas):
            if meta and json.loads(meta).get("source_id") == source_id:
                return table.slice(position, 1).to_pylist()[0]
        raise CorpusError(
            f"no document with source id {source_id!r} in {self.directory} (source ids are the "
            "values of the column given as --id-column / id_column when it was built)"
        )

    def _not_built_reason(self, where: str) -> str:
        """Why no document comes from ``where``: rejected or dropped (with the reason), or not
        a place any record was read from."""
        for name in ("rejects.jsonl", "dropped.jsonl"):
            path = self.directory / name
            if not path.is_file():
                continue
            with open(path, encoding="utf-8") as handle:
                for line in handle:
                    entry = json.loads(line)
                    if entry["where"] == where or entry["where"].endswith("/" + where):
                        if name == "rejects.jsonl":
                            return f"{entry['where']} was rejected: {entry['reason']}"
                        return f"{entry['where']} was dropped: {entry['reason']} of {entry['of']}"
        return (
            f"no document was read from {where!r} in {self.directory} (give FILE:LINE as the "
            "build named the file, e.g. data.csv:2 for the first row after the header)"
        )

    def head(self, count: int = 10) -> list[dict[str, Any]]:
        """The first ``count`` documents: row, id, where, source id and text."""
        if count < 0:
            raise CorpusError(f"-n must be >= 0, got {count}")
        table = self.documents_table(["id", "where", "text", "meta"]).slice(0, count)
        return [
            {
                "row": position,
                "id": record["id"],
                "where": record["where"],
                "source_id": json.loads(record["meta"]).get("source_id")
                if record["meta"]
                else None,
                "text": record["text"],
            }
            for position, record in enumerate(table.to_pylist())
        ]

    def document(self, document_id: str) -> Document:
        row = self.document_row(document_id)
        return Document(
            row["text"],
            id=row["id"],
            source=row["source"],
            license=row["license"],
            meta=json.loads(row["meta"]) if row["meta"] else None,
        )

    def info(self) -> dict[str, Any]:
        keys = (
            "documents",
            "tokens",
            "shards",
            "rejected",
            "exact_duplicates",
            "near_duplicates",
            "duplicate_ids",
            "decontaminated",
            "modalities",
            "sources",
            "rejected_by_source",
            "vocab_size",
            "token_dtype",
            "tokenizer_sha256",
        )
        return {"directory": str(self.directory), **{k: self.manifest[k] for k in keys}}


def as_corpus(corpus: Corpus | str | os.PathLike) -> Corpus:
    """``corpus`` itself, or the `Corpus` in that directory."""
    return corpus if isinstance(corpus, Corpus) else Corpus(corpus)


def documents_sha256(corpus: Corpus | str | os.PathLike) -> str:
    """The sha256 of a corpus's documents table: the corpus's identity, which ``kiban train``
    records in the model it trains and ``kiban report molecules`` / ``eval moses
    --train-corpus`` compare against."""
    return cached_file_sha256(as_corpus(corpus).documents_path)


def load_recipe(path: str | os.PathLike, **overrides: Any) -> BuildConfig:
    """A `BuildConfig` from a TOML recipe: ``[build]`` options and ``[[source]]`` tables."""
    from kiban.corpus.build import BuildConfig

    path = Path(path)
    try:
        recipe = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise CorpusError(f"{path}: not valid TOML: {error}") from None
    unknown = set(recipe) - {"build", "source"}
    if unknown:
        raise CorpusError(
            f"{path}: unknown top-level keys {sorted(unknown)}; expected [build] and [[source]]"
        )
    fields = {f for f in BuildConfig.__dataclass_fields__ if f != "sources"}
    options = dict(recipe.get("build", {}))
    bad = set(options) - fields
    if bad:
        raise CorpusError(f"{path}: unknown [build] keys {sorted(bad)}; known: {sorted(fields)}")
    source_fields = set(SourceSpec.__dataclass_fields__)
    sources = []
    for number, table in enumerate(recipe.get("source", []), start=1):
        bad = set(table) - source_fields
        if bad:
            raise CorpusError(
                f"{path}: [[source]] number {number}: unknown keys {sorted(bad)}; "
                f"known: {sorted(source_fields)}"
            )
        table = dict(table)
        if "properties" in table:
            table["properties"] = tuple(table["properties"])
        if table.get("package") is None and not Path(table["path"]).is_absolute():
            table["path"] = (
                str((path.parent / table["path"]).resolve())
                if (path.parent / table["path"]).exists()
                else table["path"]
            )
        try:
            sources.append(SourceSpec(**table))
        except (TypeError, ValueError) as error:
            raise CorpusError(f"{path}: [[source]] number {number}: {error}") from None
    options.update({k: v for k, v in overrides.items() if v is not None})
    return BuildConfig(sources=tuple(sources), **options)
