"""Adapter for `kiban.index.TokenIndex` in the peer harness (``harness/bench.py --engine
kiban_adapter:KibanAdapter --index KIBAN_CORPUS_DIR``; put this folder and the kiban checkout on
PYTHONPATH). The index directory is a kiban corpus made by ``prepare_kiban.py``.

Mapping onto the harness protocol (``harness/bench.py`` docstring):

* ``count([])`` is the harness/infini-gram convention "tokens incl. one separator per doc" =
  ``TokenIndex.total_tokens`` (kiban raises `QueryError` on an empty query, so it is mapped here).
* ``find`` = the per-shard suffix-array ranges (``TokenIndex._ranges``, what infini-gram's ``find``
  returns: segments, no positions); returns their total size.
* ``prob`` = ``ngram_prob`` (-1 if the prompt is unseen; empty prompt -> / total_tokens).
* ``ntd(prompt)`` = the exact next-token distribution of the prompt itself: {} when ``count`` says
  the prompt is unseen (``next_tokens`` would back off to a shorter suffix), else ``next_tokens``.
  Exact (all continuations), where infini-gram samples max_support=1000.
* ``infgram_prob`` / ``infgram_ntd`` = ``infgram_prob`` / ``next_tokens``.
* ``search_docs(ids, maxnum, disp)`` = documents of the first ``maxnum`` matches
  (``matches(limit=maxnum)``, distinct occurrences in suffix-array order; infini-gram samples
  ``maxnum`` with replacement, so it always returns ``maxnum`` docs when count > 0) and a
  ``disp``-token snippet of each, clipped to the document, copied out of the token map.
* ``trace(ids)`` = OLMoTrace defaults: ``TokenIndex.trace(min_length=1, max_count=10,
  max_spans=ceil(0.05 * len(ids)), matches_per_span=10)`` (kiban keeps the longest spans, ties:
  earlier first, i.e. the harness's stable sort by -length), then for every match a context of
  250 tokens each side, clipped to its document, is copied out (as ``get_docs_by_ptrs_2``).

Document numbers are global (shard-local document + documents of earlier shards), as infini-gram's
``doc_ix``.
"""

from __future__ import annotations

import hashlib
import math
import time
from pathlib import Path

import numpy as np


def _sources_fingerprint() -> str:
    import kiban.index

    root = Path(kiban.index.__file__).resolve().parent
    digest = hashlib.sha256()
    for name in ("build.py", "engine.py", "_kernels.py"):
        digest.update((root / name).read_bytes())
    return digest.hexdigest()[:12]


class KibanAdapter:
    name = "kiban TokenIndex"

    def __init__(self, index, load_to_ram=False, **kw):
        t = time.perf_counter()
        from kiban.index import TokenIndex

        self.ix = TokenIndex(index)
        self.load_s = time.perf_counter() - t
        self.version = f"kiban {_sources_fingerprint()} ({len(self.ix.shards)} shards)"
        if load_to_ram:  # not the default anywhere in the harness runs; kept for the flag
            for s in self.ix.shards:
                np.asarray(s.tokens).sum()
                np.asarray(s.suffix_array).sum()
        self.doc_base = np.cumsum([0] + [len(s.offsets) - 1 for s in self.ix.shards])
        # compile (or load from numba's cache) every kernel once, outside the timed region
        t = time.perf_counter()
        probe = [int(self.ix.shards[0].tokens[0])]
        self.ix.count(probe)
        self.ix.count_batch([probe])
        self.ix.matches(probe, limit=1)
        self.ix.infgram_prob(probe, probe[0])
        self.ix.next_tokens(probe)
        self.ix.trace(probe * 2)
        self.jit_s = time.perf_counter() - t

    # --- protocol -------------------------------------------------------------------------------
    def count(self, ids):
        return self.ix.total_tokens if not ids else self.ix.count(ids)

    def find(self, ids):
        if not ids:
            return self.ix.total_tokens
        return sum(hi - lo for _, lo, hi in self.ix._ranges(self.ix.as_ids(ids)))

    def prob(self, p, c):
        return self.ix.ngram_prob(p, c)

    def ntd(self, p):
        if p and self.ix.count(p) == 0:  # prompt unseen: the exact n-gram ntd is empty
            return {}  # (next_tokens would back off to a shorter suffix)
        return self.ix.next_tokens(p).probabilities()

    def infgram_prob(self, p, c):
        return self.ix.infgram_prob(p, c)

    def infgram_ntd(self, p):
        nt = self.ix.next_tokens(p)
        return nt.probabilities(), nt.suffix_length

    def _doc_ix(self, m):
        return int(self.doc_base[m.shard] + m.document)

    def _window(self, m, before, after):
        shard = self.ix.shards[m.shard]
        lo = max(int(shard.offsets[m.document]), m.position - before)
        hi = min(int(shard.offsets[m.document + 1]), m.position + after)
        return np.array(shard.tokens[lo:hi])  # materialise, as the peers do

    def search_docs(self, ids, maxnum, max_disp_len):
        if not ids:
            return []
        out = []
        for m in self.ix.matches(ids, limit=maxnum):
            self._window(m, max_disp_len // 2, max_disp_len - max_disp_len // 2)
            out.append(self._doc_ix(m))
        return out

    def trace(self, ids, max_cnt=10, min_len=1, density=0.05, docs_per_span=10, ctx=250):
        spans = self.ix.trace(
            ids,
            min_length=min_len,
            max_count=max_cnt,
            max_spans=int(math.ceil(len(ids) * density)),
            matches_per_span=docs_per_span,
        )
        out = []
        for s in spans:
            docs = []
            for m in s.matches:
                self._window(m, ctx, s.length + ctx)
                docs.append(self._doc_ix(m))
            out.append([s.start, s.end, s.count, docs])
        return out
