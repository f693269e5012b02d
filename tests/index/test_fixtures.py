"""Corpora and indexes written by earlier kiban versions stay readable (the committed fixtures in
``tests/fixtures/``; see its README)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from kiban.corpus import Corpus
from kiban.index import TokenIndex, build_index
from kiban.index.search import CorpusSearch

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


@pytest.mark.parametrize("name", ["corpus-v1", "corpus-v2"])
def test_a_committed_corpus_and_index_are_read(name, fast_tmp):
    corpus = Corpus(FIXTURES / name)
    assert corpus.manifest["format"] == "kiban.corpus"
    assert corpus.manifest["version"] == 2  # version 1 upgraded in memory
    assert (corpus.shard_count, corpus.eos_id, str(corpus.token_dtype)) == (2, 0, "uint16")
    assert corpus.info()["documents"] == 4 and corpus.info()["tokens"] == 123
    assert len(corpus.checksums) == (0 if name == "corpus-v1" else 5)
    assert corpus.verify(values=True) == {
        "files": len(corpus.checksums),
        "shards": 2,
        "values": True,
    }
    assert corpus.documents_table(["id"]).column("id").to_pylist() == ["eth", "ben", "wat", "ace"]
    assert (
        corpus.document("wat").text
        == "Water boils at <num>100</num> C and ethanol <mol>CCO</mol> mixes with it."
    )

    search = CorpusSearch(FIXTURES / name)
    assert search.count("<mol>OCC</mol>") == 2  # ethanol, spelled twice, stored canonical
    assert search.count(" boils at") == 4
    # suffix-array order: shard 1 (wat, ace) sorts "CCO</mol> mixes" ... then shard 0's
    assert [h.id for h in search.docs("<mol>CCO</mol>")] == ["wat", "eth"]
    assert TokenIndex(FIXTURES / name).documents == 4

    copy = fast_tmp / name  # checked out by git: other times, the same contents
    shutil.copytree(FIXTURES / name, copy)
    manifest = build_index(copy, verify=True)
    assert manifest["built_now"] == [] and manifest["rebuilt_because"] == {}
