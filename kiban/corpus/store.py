"""Reading a built corpus (`Corpus`) and corpus recipes (TOML)."""

from __future__ import annotations

import json
import os
import tomllib
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from kiban.corpus.build import FORMAT_NAME, FORMAT_VERSION, MANIFEST, BuildConfig
from kiban.corpus.readers import SourceSpec
from kiban.document import Document


class CorpusError(ValueError):
    pass


class Corpus:
    """A built corpus directory: manifest, token shards, documents table, tokenizer."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        path = self.directory / MANIFEST
        if not path.is_file():
            hint = " (a build is unfinished: run it again to resume)" \
                if (self.directory / ".work").is_dir() else ""
            raise CorpusError(f"{path} is missing: {self.directory} is not a built kiban "
                              f"corpus{hint}")
        try:
            self.manifest: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise CorpusError(f"{path}: corrupt manifest ({error.msg})") from None
        if self.manifest.get("format") != FORMAT_NAME or self.manifest.get("version") != FORMAT_VERSION:
            raise CorpusError(f"{path}: format {self.manifest.get('format')!r} version "
                              f"{self.manifest.get('version')!r}; this kiban reads "
                              f"{FORMAT_NAME!r} version {FORMAT_VERSION}")

    @property
    def shard_count(self) -> int:
        return int(self.manifest["shards"])

    @property
    def token_dtype(self) -> np.dtype:
        return np.dtype(self.manifest["token_dtype"])

    def tokens(self, shard: int) -> np.ndarray:
        """The shard's tokens, memory-mapped (read-only)."""
        path = self.directory / "shards" / f"tokens-{shard:06d}.bin"
        if path.stat().st_size == 0:
            return np.zeros(0, dtype=self.token_dtype)
        return np.memmap(path, dtype=self.token_dtype, mode="r")

    def offsets(self, shard: int) -> np.ndarray:
        return np.load(self.directory / "shards" / f"offsets-{shard:06d}.npy", mmap_mode="r")

    @cached_property
    def tokenizer(self):
        from kiban.tokenizer import ScienceTokenizer

        tokenizer = ScienceTokenizer.load(self.directory / "tokenizer")
        if tokenizer.fingerprint != self.manifest["tokenizer_sha256"]:
            raise CorpusError(f"{self.directory / 'tokenizer'} is not the tokenizer this corpus "
                              "was built with (its sha256 differs from the manifest's)")
        return tokenizer

    def documents_table(self, columns: list[str] | None = None):
        import pyarrow.parquet as pq

        return pq.read_table(self.directory / "documents.parquet", columns=columns)

    def document_row(self, document_id: str) -> dict[str, Any]:
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        table = pq.read_table(self.directory / "documents.parquet",
                              filters=pc.field("id") == document_id)
        if table.num_rows == 0:
            raise CorpusError(f"no document with id {document_id!r} in {self.directory}")
        return table.to_pylist()[0]

    def document(self, document_id: str) -> Document:
        row = self.document_row(document_id)
        return Document(row["text"], id=row["id"], source=row["source"], license=row["license"],
                        meta=json.loads(row["meta"]) if row["meta"] else None)

    def info(self) -> dict[str, Any]:
        keys = ("documents", "tokens", "shards", "rejected", "exact_duplicates",
                "near_duplicates", "duplicate_ids", "decontaminated", "modalities", "sources",
                "rejected_by_source", "vocab_size", "token_dtype", "tokenizer_sha256")
        return {"directory": str(self.directory), **{k: self.manifest[k] for k in keys}}


def load_recipe(path: str | os.PathLike, **overrides: Any) -> BuildConfig:
    """A `BuildConfig` from a TOML recipe: ``[build]`` options and ``[[source]]`` tables."""
    path = Path(path)
    try:
        recipe = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise CorpusError(f"{path}: not valid TOML: {error}") from None
    unknown = set(recipe) - {"build", "source"}
    if unknown:
        raise CorpusError(f"{path}: unknown top-level keys {sorted(unknown)}; expected [build] "
                          "and [[source]]")
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
            raise CorpusError(f"{path}: [[source]] number {number}: unknown keys {sorted(bad)}; "
                              f"known: {sorted(source_fields)}")
        table = dict(table)
        if "properties" in table:
            table["properties"] = tuple(table["properties"])
        if table.get("package") is None and not Path(table["path"]).is_absolute():
            table["path"] = str((path.parent / table["path"]).resolve()) \
                if (path.parent / table["path"]).exists() else table["path"]
        try:
            sources.append(SourceSpec(**table))
        except (TypeError, ValueError) as error:
            raise CorpusError(f"{path}: [[source]] number {number}: {error}") from None
    options.update({k: v for k, v in overrides.items() if v is not None})
    return BuildConfig(sources=tuple(sources), **options)
