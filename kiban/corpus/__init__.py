"""Corpora: sources -> canonical, deduplicated, decontaminated documents -> token shards.

>>> from kiban.corpus import BuildConfig, SourceSpec, build_corpus   # doctest: +SKIP
>>> build_corpus(BuildConfig(sources=[SourceSpec(path="docs.jsonl")]), "out/corpus")
"""

from kiban.corpus.build import BuildConfig, BuildError, build_corpus
from kiban.corpus.readers import RawRecord, Reject, SourceSpec, read_source
from kiban.corpus.store import Corpus, CorpusError, load_recipe

__all__ = [
    "BuildConfig",
    "BuildError",
    "Corpus",
    "CorpusError",
    "RawRecord",
    "Reject",
    "SourceSpec",
    "build_corpus",
    "load_recipe",
    "read_source",
]
