"""What a run trained on, recorded in every checkpoint and in ``run.json`` so that ``--resume``
refuses data that changed under it (a corpus rebuilt with another tokenizer reads as other
token ids; a corpus with other documents is another stream at the same step numbers).

A fingerprint is a small JSON object:

* ``kind``: ``"corpus"`` (``kiban train``) or ``"examples"`` (``kiban finetune``);
* ``tokenizer``: ``{file name: sha256}`` of the tokenizer the token ids come from;
* ``contents``: counts that change when the data does: documents and tokens in total and per
  shard (a corpus), examples and the SHA-256 of each data file (fine-tuning); plus every
  ``*sha256*`` / ``*checksum*`` value the corpus manifest records (the tokenizer's excepted),
  so per-shard checksums are compared as soon as the corpus writes them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from kiban.io import file_sha256


def tokenizer_files(directory: str | Path) -> dict[str, str]:
    """``{name: sha256}`` of the files of a saved tokenizer directory (not recursive)."""
    directory = Path(directory)
    return {p.name: file_sha256(p) for p in sorted(directory.iterdir()) if p.is_file()}


def _manifest_checksums(value: Any, path: str = "") -> dict[str, Any]:
    """Every value under a key naming a checksum, by its path in the manifest."""
    found: dict[str, Any] = {}
    items: Iterable[tuple[Any, Any]] = ()
    if isinstance(value, Mapping):
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    for key, inner in items:
        where = f"{path}.{key}" if path else str(key)
        if where in ("tokenizer_sha256", "config"):  # compared as files / not contents
            continue
        if isinstance(key, str) and ("sha256" in key or "checksum" in key):
            found[where] = inner
        else:
            found.update(_manifest_checksums(inner, where))
    return found


def corpus_fingerprint(
    corpus: Any, *, shard_documents: Sequence[int], shard_tokens: Sequence[int]
) -> dict[str, Any]:
    """The fingerprint of a `kiban.corpus.store.Corpus` (per-shard counts as the caller read
    them from its documents table and token shards)."""
    return {
        "kind": "corpus",
        "path": str(corpus.directory),
        "tokenizer": tokenizer_files(corpus.directory / "tokenizer"),
        "contents": {
            "documents": int(corpus.manifest["documents"]),
            "tokens": int(corpus.manifest["tokens"]),
            "shards": [
                {"documents": int(d), "tokens": int(t)}
                for d, t in zip(shard_documents, shard_tokens)
            ],
            "checksums": _manifest_checksums(corpus.manifest),
        },
    }


def examples_fingerprint(
    files: Sequence[str | Path],
    *,
    examples: int,
    tokenizer_directory: str | Path | None,
    tokenizer_fingerprint: str,
) -> dict[str, Any]:
    """The fingerprint of fine-tuning data: its files, the examples kept, the tokenizer."""
    tokenizer = tokenizer_files(tokenizer_directory) if tokenizer_directory else {}
    return {
        "kind": "examples",
        "path": ", ".join(str(f) for f in files),
        "tokenizer": {**tokenizer, "fingerprint": tokenizer_fingerprint},
        # by position, not path: finetune.data may move between a run and its resumption
        "contents": {"examples": int(examples), "files_sha256": [file_sha256(f) for f in files]},
    }


def _first_difference(saved: Any, current: Any, path: str = "") -> str | None:
    """Where two JSON values first differ, in words (``None`` when equal). Keys only one side
    has are skipped: an older checkpoint that recorded less is compared on what it has."""
    if isinstance(saved, Mapping) and isinstance(current, Mapping):
        for key in saved:
            if key in current:
                where = f"{path}.{key}" if path else str(key)
                difference = _first_difference(saved[key], current[key], where)
                if difference:
                    return difference
        return None
    if isinstance(saved, list) and isinstance(current, list) and len(saved) == len(current):
        for index, (a, b) in enumerate(zip(saved, current)):
            difference = _first_difference(a, b, f"{path}[{index}]")
            if difference:
                return difference
        return None
    if saved != current:
        return f"{path}: {_short(saved)} then, {_short(current)} now"
    return None


def _short(value: Any) -> str:
    if isinstance(value, str) and len(value) == 64:  # a hex digest
        return value[:12] + "…"
    if isinstance(value, list):
        return f"{len(value)} entries"
    return repr(value)


def data_change(
    saved: Mapping[str, Any] | None, current: Mapping[str, Any], *, checkpoint: str
) -> str | None:
    """Why the data ``current`` is not what checkpoint ``checkpoint`` trained on (``saved``),
    with what to do; ``None`` when they match (or the checkpoint recorded nothing)."""
    if not saved:
        return None
    where = current.get("path", "the data")
    if saved.get("kind") != current.get("kind"):
        return (
            f"checkpoint {checkpoint} trained on {saved.get('kind')} {saved.get('path')}, "
            f"this run reads {current.get('kind')} {where}: start a new run (another --out)"
        )
    tokenizer = _first_difference(saved.get("tokenizer"), current.get("tokenizer"), "tokenizer")
    if tokenizer:
        return (
            f"the tokenizer of {where} changed since checkpoint {checkpoint} ({tokenizer}): "
            "its token ids are not the ones the model learned. Rebuild the data with the "
            "run's tokenizer, or start a new run (another --out) on the new data"
        )
    contents = _first_difference(saved.get("contents"), current.get("contents"), "contents")
    if contents:
        return (
            f"the contents of {where} changed since checkpoint {checkpoint} ({contents}), "
            "with the same tokenizer: resuming would continue on other data than the run "
            "trained on. Restore the data the run used, or start a new run (another --out)"
        )
    return None
