"""Helpers shared by the corpus tests: small deterministic inputs and output comparisons."""

from __future__ import annotations

import gzip
import json
import random
import sys
from pathlib import Path

from kiban.corpus import BuildConfig, Corpus, SourceSpec, build_corpus

#: The ``kiban`` console command (or ``python -m kiban`` where it is not installed beside python)
KIBAN = (
    [str(Path(sys.executable).with_name("kiban"))]
    if Path(sys.executable).with_name("kiban").is_file()
    else [sys.executable, "-m", "kiban"]
)

WORDS = (
    "the a molecule crystal solvent binds reacts with strongly weakly under heat pressure "
    "and slowly quickly forms salt water acid base ring chain bond"
).split()
SMILES = (
    "CCO",
    "OCC",
    "c1ccccc1",
    "CC(=O)O",
    "CCN",
    "CCCC",
    "O=C=O",
    "NCC(=O)O",
    "CC(C)O",
    "Cn1cnc2c1c(=O)n(C)c(=O)n2C",
)


def prose_documents(count: int, seed: int = 0, *, with_ids: bool = False) -> list[dict]:
    """Deterministic, mostly distinct documents with a molecule and a number span each."""
    rng = random.Random(seed)
    documents = []
    for i in range(count):
        words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 14)))
        text = (
            f"{words} <mol>{rng.choice(SMILES)}</mol> measured <num>{rng.randint(0, 9999) / 100}"
            f"</num> number {i}."
        )
        documents.append({"id": f"doc{i}", "text": text} if with_ids else {"text": text})
    return documents


def write_jsonl(path: Path, records: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        for record in records:
            handle.write((record if isinstance(record, str) else json.dumps(record)) + "\n")
    return path


def write_gzip(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data, mtime=0))
    return path


def tree_bytes(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory`` (hidden ones included), by relative path."""
    directory = Path(directory)
    return {
        str(p.relative_to(directory)): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]


def build(out: Path, *sources: SourceSpec | str, workers: int = 1, **options) -> Corpus:
    options.setdefault("vocab_size", 400)
    specs = tuple(s if isinstance(s, SourceSpec) else SourceSpec(path=str(s)) for s in sources)
    build_corpus(BuildConfig(sources=specs, **options), out, workers=workers)
    return Corpus(out)
