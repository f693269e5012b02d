"""`build_corpus`: sources -> canonical documents -> dedup -> tokenizer -> token shards.

The build runs in stages, each writing its results atomically under ``OUT/.work`` so that a build
killed at any moment (even ``kill -9``) and started again redoes only unfinished work and ends
with output byte-identical to an uninterrupted build:

1. clean (parallel, per chunk of ``chunk_size`` records): read, render, canonicalise; rejects
   are logged with file:line and the reason;
2. dedup (sequential, in record order): exact duplicates of canonical text, then near duplicates
   (MinHash LSH); the first occurrence is kept;
3. tokenizer: trained on the prose of the kept documents (or a given one, or a base model's
   extended with science tokens);
4. shards (per chunk): tokenize, drop documents sharing an N-token span with an evaluation file,
   write ``shards/tokens-NNNNNN.bin`` (uint16, or uint32 past 65,536 ids; each document followed
   by ``<|endoftext|>``) and ``shards/offsets-NNNNNN.npy`` (int64, one more than documents:
   document *i* is ``tokens[offsets[i]:offsets[i+1]]``, its end-of-text token included);
5. finish: ``documents.parquet``, ``rejects.jsonl``, ``dropped.jsonl``, and last ``manifest.json``.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import multiprocessing
import os
import re
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kiban.corpus.clean import CleanResult, clean_records
from kiban.corpus.readers import RawRecord, Reject, SourceSpec, check_source, read_source
from kiban.corpus.store import (
    CORPUS_FORMAT,
    DOCUMENTS,
    INDEX_DIR,
    MANIFEST,
    layout_stamp,
    offsets_file,
    tokens_file,
)
from kiban.document import MODALITY_TAGS
from kiban.errors import InputError
from kiban.io import (
    atomic_open,
    atomic_write_bytes,
    atomic_write_text,
    file_sha256,
    files_sha256,
)

DEDUP_MODES = ("none", "exact", "near")
#: What a finished build leaves in its output directory (removed by a ``rebuild``).
OUTPUTS = (
    MANIFEST,
    DOCUMENTS,
    "rejects.jsonl",
    "dropped.jsonl",
    "shards",
    "tokenizer",
    INDEX_DIR,
    ".work",
)


class BuildError(InputError):
    """A build that cannot be done as asked (bad options, missing or changed sources, nothing
    left to build); exit status 2 at the CLI."""


@dataclass(kw_only=True)
class BuildConfig:
    """Everything that determines a corpus; saved in its manifest."""

    sources: tuple[SourceSpec, ...]
    dedup: str = "exact"
    near_threshold: float = 0.8
    num_perm: int = 128
    decontaminate: tuple[str, ...] = ()
    decontaminate_n: int = 13
    chunk_size: int = 50_000
    vocab_size: int = 8000
    min_frequency: int = 2
    tokenizer: str | None = None  # a kiban tokenizer directory to use as is
    base_tokenizer: str | None = None  # a Hugging Face model directory to extend
    strict: bool = False

    def __post_init__(self):
        self.sources = tuple(self.sources)
        self.decontaminate = tuple(str(p) for p in self.decontaminate)
        if not self.sources:
            raise BuildError("no sources given: name at least one file or a recipe")
        if self.dedup not in DEDUP_MODES:
            raise BuildError(f"dedup must be one of {', '.join(DEDUP_MODES)}, got {self.dedup!r}")
        if not 0.0 < self.near_threshold <= 1.0:
            raise BuildError(f"near_threshold must be in (0, 1], got {self.near_threshold}")
        if self.chunk_size < 1:
            raise BuildError(f"chunk_size must be >= 1, got {self.chunk_size}")
        if self.decontaminate_n < 1:
            raise BuildError(f"decontaminate_n must be >= 1, got {self.decontaminate_n}")
        if self.tokenizer and self.base_tokenizer:
            raise BuildError("give either tokenizer or base_tokenizer, not both")

    def to_dict(self) -> dict[str, Any]:
        record = dataclasses.asdict(self)
        record.pop("strict")
        for source in record["sources"]:
            for key in ("smiles_column", "id_column"):  # unset: a corpus built before they
                if source[key] is None:  # existed has the same configuration
                    del source[key]
        return record


def build_corpus(
    config: BuildConfig,
    out: str | os.PathLike,
    *,
    workers: int = 1,
    progress: bool = False,
    rebuild: bool = False,
) -> dict[str, Any]:
    """Build (or resume building) a corpus in ``out``; returns the manifest.

    A finished corpus built with the same configuration from unchanged sources is returned as
    it is. A source (or evaluation file) that changed since the corpus was built, or since an
    unfinished build started, is an error naming it, unless ``rebuild``: then what ``out`` holds
    is removed and the corpus built afresh."""
    out = Path(out)
    work = out / ".work"
    if workers < 1:
        raise BuildError(f"workers must be >= 1, got {workers}")
    if out.exists() and not out.is_dir():
        raise BuildError(f"--out {out} is a file, not a directory")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise BuildError(f"--out {out}: {parent} is a file, not a directory")
            break
    for spec in config.sources:
        _check_input_file(spec.resolved_path, "source")
        try:  # an unknown format or a missing column is an error before anything is written
            check_source(spec)
        except ValueError as error:
            raise BuildError(str(error)) from None
    for path in config.decontaminate:
        _check_input_file(Path(path), "evaluation")
    if config.dedup == "near":
        from datasketch import MinHashLSH

        try:  # datasketch cannot band every (threshold, num_perm): fail before anything is written
            MinHashLSH(threshold=config.near_threshold, num_perm=config.num_perm)
        except ValueError as error:
            raise BuildError(
                f"near_threshold {config.near_threshold} with num_perm "
                f"{config.num_perm} cannot be used for near-duplicate search "
                f"({error}); lower the threshold"
            ) from None
    config_json = json.dumps(config.to_dict(), sort_keys=True, default=str)
    manifest_path = out / MANIFEST
    if rebuild:
        _remove_outputs(out)
    if manifest_path.is_file():
        from kiban.corpus.store import Corpus

        manifest = Corpus(out).manifest
        if json.dumps(manifest["config"], sort_keys=True, default=str) != config_json:
            raise BuildError(
                f"{out} already holds a corpus built with another configuration; "
                "choose a new --out, or --overwrite to replace it"
            )
        changed = _changed_inputs(
            config, manifest.get("source_files"), built_ns=manifest_path.stat().st_mtime_ns
        )
        if changed:
            raise BuildError(
                f"{out} was built from other contents of {changed}: the corpus is "
                "out of date; build it again with --rebuild (which replaces it) or "
                "choose a new --out"
            )
        shutil.rmtree(work, ignore_errors=True)  # a build killed while removing it
        return manifest
    work.mkdir(parents=True, exist_ok=True)
    saved_config = work / "config.json"
    saved_sources = work / "sources.json"
    if saved_config.is_file() and saved_config.read_text() != config_json:
        raise BuildError(
            f"{out} holds an unfinished build with another configuration; resume it "
            f"with the same options, or start it afresh with --overwrite"
        )
    if saved_config.is_file():
        recorded = json.loads(saved_sources.read_text()) if saved_sources.is_file() else None
        changed = _changed_inputs(config, recorded, built_ns=saved_config.stat().st_mtime_ns)
        if changed:
            raise BuildError(
                f"{out} holds an unfinished build of other contents of {changed}; "
                "start it again with --rebuild, or remove it"
            )
    if not saved_sources.is_file():  # a new build (or one begun by a kiban without them)
        atomic_write_text(saved_sources, json.dumps(_fingerprints(config), indent=1))
    atomic_write_text(saved_config, config_json)
    _remove_stale_temporaries(out)

    try:
        chunks = _clean_stage(config, work, workers=workers, progress=progress)
        _dedup_stage(config, work, chunks, progress=progress)
        tokenizer = _tokenizer_stage(config, out, work, chunks)
        _shard_stage(config, out, work, chunks, tokenizer, progress=progress)
        manifest = _finish(config, out, work, chunks, tokenizer)
    except BuildError:
        # A build that failed on its input (--strict, nothing left) is not resumed: its work
        # would block the retry after the input is fixed. An interrupted one (a kill, a full
        # disk) raises something else and keeps its work for the resume.
        _discard_failed_build(out, work)
        raise
    shutil.rmtree(work)
    return manifest


def _discard_failed_build(out: Path, work: Path) -> None:
    """Keep ``rejects.jsonl`` and ``dropped.jsonl`` (why the build failed), remove everything
    else it wrote."""
    rejects = out / "rejects.jsonl"
    if not rejects.is_file():
        with atomic_open(rejects, "w", encoding="utf-8") as handle:
            for path in sorted((work / "clean").glob("rejects-*.jsonl")):
                handle.write(path.read_text(encoding="utf-8"))
    for name in OUTPUTS:
        path = out / name
        if name in ("rejects.jsonl", "dropped.jsonl"):
            continue
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def reject_summary(out: str | os.PathLike, *, top: int = 5) -> dict[str, Any] | None:
    """The ``top`` most common reasons in ``OUT/rejects.jsonl`` (quoted values and numbers
    generalised, so that ``invalid num 'A1'`` and ``invalid num 'A2'`` count as one), each with
    its count and one example; None when the file is absent or empty."""
    path = Path(out) / "rejects.jsonl"
    if not path.is_file():
        return None
    counts: collections.Counter = collections.Counter()
    examples: dict[str, dict] = {}
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            reject = json.loads(line)
            reason = _general_reason(reject["reason"])
            counts[reason] += 1
            examples.setdefault(reason, reject)
    if not counts:
        return None
    return {
        "rejected": sum(counts.values()),
        "reasons": [
            {
                "reason": reason,
                "count": count,
                "where": examples[reason]["where"],
                "example": examples[reason]["reason"],
            }
            for reason, count in counts.most_common(top)
        ],
    }


def _general_reason(reason: str) -> str:
    reason = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", reason)
    reason = re.sub(r"\b0x[0-9A-Fa-f]+\b", "0x…", reason)  # a byte value
    # standalone numbers only: not the 8 of UTF-8, not the digits inside a name
    return re.sub(r"(?<![\w.-])\d+(?:[.,]\d+)*(?!\w)", "N", reason)


def _check_input_file(path: Path, kind: str) -> None:
    if path.is_dir():
        raise BuildError(
            f"{kind} {path} is a directory, not a file: name the files in it (e.g. {path}/*.jsonl)"
        )
    if not path.is_file():
        raise BuildError(f"{kind} file {path} does not exist")


def _input_paths(config: BuildConfig) -> list[Path]:
    return [spec.resolved_path for spec in config.sources] + [Path(p) for p in config.decontaminate]


def _fingerprints(config: BuildConfig) -> list[dict[str, Any]]:
    """Path, size, modification time and sha256 of every source and evaluation file."""
    paths = _input_paths(config)
    return [
        {
            "path": str(path),
            "bytes": path.stat().st_size,
            "mtime_ns": path.stat().st_mtime_ns,
            "sha256": digest,
        }
        for path, digest in zip(paths, files_sha256(paths))
    ]


def _changed_inputs(
    config: BuildConfig,
    recorded: list[dict] | None,
    *,
    built_ns: int,
) -> str | None:
    """The first input whose contents differ from ``recorded`` (its fingerprint when the build
    began), described; None when all are the same. Size and time equal count as unchanged (as
    make and rsync do) without reading the file. Without fingerprints (a version-1 corpus), a
    file modified after ``built_ns`` (the manifest's time) counts as changed."""
    paths = _input_paths(config)
    if recorded is None:
        for path in paths:
            if path.stat().st_mtime_ns > built_ns:
                return f"{path} (modified after the corpus was built)"
        return None
    by_path = {entry["path"]: entry for entry in recorded}
    for path in paths:
        entry = by_path.get(str(path))
        stat = path.stat()
        if entry is None:
            return f"{path} (not among the files it was built from)"
        if (stat.st_size, stat.st_mtime_ns) == (entry["bytes"], entry["mtime_ns"]):
            continue
        digest = file_sha256(path)
        if digest != entry["sha256"]:
            return (
                f"{path} (now {stat.st_size:,} bytes, sha256 {digest[:12]}…; built from "
                f"{entry['bytes']:,} bytes, sha256 {entry['sha256'][:12]}…)"
            )
    return None


def _remove_outputs(out: Path) -> None:
    """Remove what a build wrote to ``out`` (only kiban's own files; ``out`` must hold a corpus
    or an unfinished build, so that --rebuild never empties some other directory)."""
    if not out.is_dir():
        return
    if not ((out / MANIFEST).is_file() or (out / ".work").is_dir()):
        if any(path.name not in OUTPUTS for path in out.iterdir()):  # a failed build leaves rejects
            raise BuildError(
                f"--rebuild: {out} holds no kiban corpus (no {MANIFEST}); not "
                "removing anything there"
            )
        return
    for name in OUTPUTS:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def _remove_stale_temporaries(out: Path) -> None:
    """Remove the temporary files of atomic writes that a killed build left in the output (the
    ones under ``.work`` go with it at the end), so a resumed build ends with exactly the files of
    an uninterrupted one."""
    for directory in (out, (out / tokens_file(0)).parent, out / "tokenizer"):
        if directory.is_dir():
            for path in directory.glob(".*.tmp"):
                path.unlink(missing_ok=True)


# --- stage 1: clean ----------------------------------------------------------------------------
def _records(config: BuildConfig) -> Iterator[RawRecord | Reject]:
    for spec in config.sources:
        yield from read_source(spec)


def _chunked(items: Iterable, size: int) -> Iterator[list]:
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _clean_path(work: Path, index: int) -> Path:
    return work / "clean" / f"chunk-{index:06d}.jsonl"


def _write_clean_chunk(work: Path, index: int, result: CleanResult, num_perm: int | None) -> None:
    if num_perm:
        from kiban.corpus.dedup import MinHasher

        hasher = MinHasher(num_perm)
        signatures = (
            np.stack([hasher.signature(d.text) for _, d in result.documents])
            if result.documents
            else np.zeros((0, num_perm), dtype=np.uint64)
        )
        with atomic_open(work / "clean" / f"minhash-{index:06d}.npy", "wb") as handle:
            np.save(handle, signatures)
    with atomic_open(work / "clean" / f"rejects-{index:06d}.jsonl", "w", encoding="utf-8") as h:
        for reject in result.rejects:
            h.write(json.dumps(reject.to_dict(), ensure_ascii=False) + "\n")
    with atomic_open(_clean_path(work, index), "w", encoding="utf-8") as handle:
        for where, document in result.documents:
            handle.write(
                json.dumps({"where": where, **document.to_dict()}, ensure_ascii=False) + "\n"
            )


def _clean_task(task: tuple[int, list, Path, int | None]) -> tuple[int, int, str | None]:
    index, items, work, num_perm = task
    result = clean_records(items)
    _write_clean_chunk(work, index, result, num_perm)
    first = result.rejects[0] if result.rejects else None
    return index, len(result.rejects), f"{first.where}: {first.reason}" if first else None


def _clean_stage(config: BuildConfig, work: Path, *, workers: int, progress: bool) -> int:
    """Clean every chunk not yet cleaned; returns the number of chunks."""
    (work / "clean").mkdir(exist_ok=True)
    num_perm = config.num_perm if config.dedup == "near" else None
    chunk_count = 0

    def tasks() -> Iterator[tuple[int, list, Path, int | None]]:
        nonlocal chunk_count
        for index, chunk in enumerate(_chunked(_records(config), config.chunk_size)):
            chunk_count = index + 1
            if not _clean_path(work, index).is_file():
                yield index, chunk, work, num_perm
            elif config.strict:  # cleaned by an earlier run: its rejects count as much
                with open(work / "clean" / f"rejects-{index:06d}.jsonl", encoding="utf-8") as h:
                    line = h.readline()
                if line:
                    reject = json.loads(line)
                    raise BuildError(
                        f"--strict: record rejected: {reject['where']}: {reject['reason']}"
                    )

    bar = _progress(progress, "clean", unit="chunk")
    for _index, n_rejects, first_reject in _ordered_map(_clean_task, tasks(), workers):
        if config.strict and n_rejects:
            raise BuildError(f"--strict: record rejected: {first_reject}")
        bar.update(1)
    bar.close()
    if chunk_count == 0:
        raise BuildError("the sources hold no records")
    return chunk_count


def _ordered_map(function, tasks: Iterator, workers: int) -> Iterator:
    """Like Pool.imap but with at most 2*workers tasks in flight (imap would read the whole
    corpus into its task queue)."""
    if workers <= 1:
        for task in tasks:
            yield function(task)
        return
    context = multiprocessing.get_context("spawn")  # fork + RDKit/tokenizers threads is unsafe
    with context.Pool(workers) as pool:
        pending: collections.deque = collections.deque()
        for task in tasks:
            pending.append(pool.apply_async(function, (task,)))
            if len(pending) >= 2 * workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


def _read_clean_chunk(work: Path, index: int) -> Iterator[dict]:
    with open(_clean_path(work, index), encoding="utf-8") as handle:
        for line in handle:
            yield json.loads(line)


# --- stage 2: dedup ----------------------------------------------------------------------------
def _dedup_stage(config: BuildConfig, work: Path, chunks: int, *, progress: bool) -> None:
    """Decide, in record order, which documents are kept; writes ``keep-NNNNNN.npy`` per chunk.

    Sequential by nature (first occurrence wins), so redone whole unless it finished."""
    done = work / "dedup" / "done"
    if done.is_file():
        return
    (work / "dedup").mkdir(exist_ok=True)
    seen_text: dict[bytes, str] = {}
    seen_id: dict[str, str] = {}
    copies: collections.Counter = collections.Counter()
    lsh = hasher = None
    chunk_signatures: list[np.ndarray | None] = []
    signature_of: dict[str, tuple[int, int]] = {}  # kept document id -> (chunk, position)
    if config.dedup == "near":
        from datasketch import MinHashLSH

        from kiban.corpus.dedup import MinHasher

        lsh = MinHashLSH(threshold=config.near_threshold, num_perm=config.num_perm)
        hasher = MinHasher(config.num_perm)
    bar = _progress(progress, "dedup", unit="chunk", total=chunks)
    for index in range(chunks):
        records = list(_read_clean_chunk(work, index))
        keep = np.ones(len(records), dtype=bool)
        renamed: dict[int, str] = {}
        dropped = []
        signatures = np.load(work / "clean" / f"minhash-{index:06d}.npy") if lsh else None
        chunk_signatures.append(signatures)
        for position, record in enumerate(records):
            digest = hashlib.sha256(record["text"].encode("utf-8")).digest()[:16]
            reason = of = None
            if record["id"] in seen_id:
                if digest not in seen_text:
                    reason, of = "duplicate_id", seen_id[record["id"]]
                elif config.dedup != "none":
                    reason, of = "exact_duplicate", seen_text[digest]
                else:  # kept on purpose: give the copy its own id (one no document has yet)
                    base = record["id"]
                    while record["id"] in seen_id:
                        copies[base] += 1
                        record["id"] = f"{base}-{copies[base]}"
            elif config.dedup != "none" and digest in seen_text:
                reason, of = "exact_duplicate", seen_text[digest]
            elif lsh is not None:
                lean = hasher.lean(signatures[position])
                # LSH candidates only probably reach the threshold: check their estimated Jaccard
                similar = [
                    key
                    for key in lsh.query(lean)
                    if _estimated_jaccard(signatures[position], chunk_signatures, signature_of[key])
                    >= config.near_threshold
                ]
                if similar:
                    reason, of = "near_duplicate", min(similar)
                else:
                    lsh.insert(record["id"], lean)
                    signature_of[record["id"]] = (index, position)
            if reason:
                keep[position] = False
                dropped.append(
                    {"id": record["id"], "where": record["where"], "reason": reason, "of": of}
                )
            else:
                seen_text.setdefault(digest, record["id"])
                seen_id[record["id"]] = record["where"]
                renamed[position] = record["id"]
        with atomic_open(work / "dedup" / f"keep-{index:06d}.npy", "wb") as handle:
            np.save(handle, keep)
        with atomic_open(work / "dedup" / f"ids-{index:06d}.json", "w") as handle:
            json.dump([renamed.get(i) for i in range(len(records))], handle)
        with atomic_open(
            work / "dedup" / f"dropped-{index:06d}.jsonl", "w", encoding="utf-8"
        ) as handle:
            for entry in dropped:
                handle.write(json.dumps(entry, ensure_ascii=False) + "\n")
        bar.update(1)
    bar.close()
    atomic_write_text(done, "")


def _estimated_jaccard(
    signature: np.ndarray,
    chunk_signatures: list,
    where: tuple[int, int],
) -> float:
    """Estimated Jaccard similarity of two MinHash signatures (as `LeanMinHash.jaccard`)."""
    other = chunk_signatures[where[0]][where[1]]
    return float(np.count_nonzero(signature == other)) / len(signature)


def _kept_records(work: Path, index: int) -> Iterator[dict]:
    keep = np.load(work / "dedup" / f"keep-{index:06d}.npy")
    ids = json.loads((work / "dedup" / f"ids-{index:06d}.json").read_text())
    for position, record in enumerate(_read_clean_chunk(work, index)):
        if keep[position]:
            record["id"] = ids[position]
            yield record


# --- stage 3: tokenizer ------------------------------------------------------------------------
def _tokenizer_stage(config: BuildConfig, out: Path, work: Path, chunks: int):
    from kiban.tokenizer import ScienceTokenizer, extend_tokenizer, train_tokenizer

    directory = out / "tokenizer"
    done = work / "tokenizer.done"
    if done.is_file():
        return ScienceTokenizer.load(directory)

    def texts() -> Iterator[str]:
        for index in range(chunks):
            for record in _kept_records(work, index):
                yield record["text"]

    if config.tokenizer:
        tokenizer = ScienceTokenizer.load(config.tokenizer)
    elif config.base_tokenizer:
        tokenizer = extend_tokenizer(
            config.base_tokenizer, corpus_texts=texts(), min_frequency=config.min_frequency
        )
    else:
        tokenizer = train_tokenizer(
            texts(), vocab_size=config.vocab_size, min_frequency=config.min_frequency
        )
    tokenizer.save(directory)
    atomic_write_text(done, tokenizer.fingerprint)
    return tokenizer


# --- stage 4: shards ---------------------------------------------------------------------------
def _contamination_index(config: BuildConfig, tokenizer):
    if not config.decontaminate:
        return None
    from kiban.corpus.clean import clean_record
    from kiban.corpus.dedup import ContaminationIndex

    items: list[tuple[str, np.ndarray]] = []
    for path in config.decontaminate:
        for record in read_source(SourceSpec(path=path)):
            if isinstance(record, Reject):
                continue
            try:
                text = clean_record(record).text
            except ValueError:
                continue  # an evaluation item kiban cannot read cannot be matched either
            items.append((record.where, tokenizer.encode_batch([text])[0]))
    return ContaminationIndex(items, config.decontaminate_n)


def _shard_stage(
    config: BuildConfig, out: Path, work: Path, chunks: int, tokenizer, *, progress: bool
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    (out / tokens_file(0)).parent.mkdir(parents=True, exist_ok=True)
    (work / "documents").mkdir(exist_ok=True)
    contamination = _contamination_index(config, tokenizer)
    dtype = tokenizer.token_dtype
    bar = _progress(progress, "tokenize", unit="chunk", total=chunks)
    for index in range(chunks):
        part = work / "documents" / f"part-{index:06d}.parquet"
        if part.is_file():
            bar.update(1)
            continue
        records = list(_kept_records(work, index))
        token_lists = []
        for start in range(0, len(records), 8192):
            token_lists += tokenizer.encode_batch(
                [r["text"] for r in records[start : start + 8192]]
            )
        dropped = []
        if contamination is not None and records:
            matches = contamination.match(token_lists)
            kept_records, kept_tokens = [], []
            for record, tokens, match in zip(records, token_lists, matches):
                if match is None:
                    kept_records.append(record)
                    kept_tokens.append(tokens)
                else:
                    dropped.append(
                        {
                            "id": record["id"],
                            "where": record["where"],
                            "reason": "decontaminated",
                            "of": contamination.items[match],
                        }
                    )
            records, token_lists = kept_records, kept_tokens
        lengths = np.array([len(t) + 1 for t in token_lists], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        tokens = np.full(int(offsets[-1]), tokenizer.eos_id, dtype=dtype)
        for start, ids in zip(offsets[:-1], token_lists):
            tokens[start : start + len(ids)] = ids
        atomic_write_bytes(out / tokens_file(index), tokens.tobytes())
        with atomic_open(out / offsets_file(index), "wb") as handle:
            np.save(handle, offsets)
        with atomic_open(
            work / "documents" / f"decontaminated-{index:06d}.jsonl", "w", encoding="utf-8"
        ) as handle:
            for entry in dropped:
                handle.write(json.dumps(entry, ensure_ascii=False) + "\n")
        table = pa.table(
            {
                "id": [r["id"] for r in records],
                "source": [r.get("source") for r in records],
                "license": [r.get("license") for r in records],
                "where": [r["where"] for r in records],
                "sha256": [hashlib.sha256(r["text"].encode("utf-8")).hexdigest() for r in records],
                "n_tokens": lengths,
                **{f"n_{m}": [_count_spans(r["text"], m) for r in records] for m in MODALITY_TAGS},
                "shard": np.full(len(records), index, dtype=np.int32),
                "token_offset": offsets[:-1],
                "text": [r["text"] for r in records],
                "meta": [
                    json.dumps(r["meta"], ensure_ascii=False) if r.get("meta") else None
                    for r in records
                ],
            },
            schema=_documents_schema(),
        )
        with atomic_open(part, "wb") as handle:
            pq.write_table(table, handle, compression="zstd")
        bar.update(1)
    bar.close()


def _count_spans(text: str, modality: str) -> int:
    return text.count(f"</{modality}>")


def _documents_schema():
    import pyarrow as pa

    return pa.schema(
        [
            ("id", pa.string()),
            ("source", pa.string()),
            ("license", pa.string()),
            ("where", pa.string()),
            ("sha256", pa.string()),
            ("n_tokens", pa.int64()),
            *[(f"n_{m}", pa.int64()) for m in MODALITY_TAGS],
            ("shard", pa.int32()),
            ("token_offset", pa.int64()),
            ("text", pa.string()),
            ("meta", pa.string()),
        ]
    )


# --- stage 5: finish ---------------------------------------------------------------------------
def _finish(config: BuildConfig, out: Path, work: Path, chunks: int, tokenizer) -> dict:
    import pyarrow.parquet as pq

    counts = collections.Counter()
    sources: collections.Counter = collections.Counter()
    modalities: collections.Counter = collections.Counter()
    documents = tokens = 0
    with atomic_open(out / DOCUMENTS, "wb") as handle:
        writer = pq.ParquetWriter(handle, _documents_schema(), compression="zstd")
        for index in range(chunks):
            table = pq.read_table(work / "documents" / f"part-{index:06d}.parquet")
            writer.write_table(table)
            documents += table.num_rows
            tokens += int(np.sum(table.column("n_tokens").to_numpy())) if table.num_rows else 0
            sources.update(table.column("source").to_pylist())
            for modality in MODALITY_TAGS:
                modalities[modality] += (
                    int(np.sum(table.column(f"n_{modality}").to_numpy())) if table.num_rows else 0
                )
        writer.close()
    rejected_by_source: collections.Counter = collections.Counter()
    with atomic_open(out / "rejects.jsonl", "w", encoding="utf-8") as handle:
        for index in range(chunks):
            for line in open(work / "clean" / f"rejects-{index:06d}.jsonl", encoding="utf-8"):
                handle.write(line)
                counts["rejected"] += 1
                rejected_by_source[json.loads(line)["source"]] += 1
    with atomic_open(out / "dropped.jsonl", "w", encoding="utf-8") as handle:
        for index in range(chunks):
            for name in (
                work / "dedup" / f"dropped-{index:06d}.jsonl",
                work / "documents" / f"decontaminated-{index:06d}.jsonl",
            ):
                for line in open(name, encoding="utf-8"):
                    handle.write(line)
                    counts[json.loads(line)["reason"]] += 1
    if documents == 0:
        dropped = sum(counts.values()) - counts["rejected"]
        raise BuildError(
            f"nothing could be built: all {counts['rejected'] + dropped} records were "
            f"rejected or dropped ({counts['rejected']} rejected, {dropped} dropped); "
            f"see {out / 'rejects.jsonl'} and {out / 'dropped.jsonl'} for the reasons"
        )
    # checksums of what readers map: verified by `Corpus` before it hands out data
    checked = [f(i) for i in range(chunks) for f in (tokens_file, offsets_file)] + [DOCUMENTS]
    checksums = {
        relative: {"bytes": (out / relative).stat().st_size, "sha256": digest}
        for relative, digest in zip(checked, files_sha256([out / r for r in checked]))
    }
    manifest = {
        "documents": documents,
        "tokens": tokens,
        "shards": chunks,
        "rejected": counts["rejected"],
        "exact_duplicates": counts["exact_duplicate"],
        "near_duplicates": counts["near_duplicate"],
        "duplicate_ids": counts["duplicate_id"],
        "decontaminated": counts["decontaminated"],
        "modalities": {m: modalities[m] for m in MODALITY_TAGS},
        "sources": dict(sorted(sources.items())),
        "rejected_by_source": dict(sorted(rejected_by_source.items())),
        "token_dtype": str(tokenizer.token_dtype),
        "vocab_size": tokenizer.vocab_size,
        "eos_id": tokenizer.eos_id,
        "tokenizer_sha256": tokenizer.fingerprint,
        "config": json.loads(json.dumps(config.to_dict(), default=str)),
        "layout": layout_stamp(),
        "checksums": checksums,
        "source_files": json.loads((work / "sources.json").read_text()),
    }
    from kiban.formats import write_json

    return write_json(out / MANIFEST, CORPUS_FORMAT, manifest)


def _progress(enabled: bool, description: str, **kwargs):
    from tqdm import tqdm

    return tqdm(desc=description, disable=not enabled, leave=False, **kwargs)
