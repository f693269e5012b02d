"""Deduplication (exact, near, ids) and decontamination against evaluation files."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kiban.corpus.dedup import ContaminationIndex, MinHasher, window_hashes
from kiban.document import content_id

from .helpers import build, read_jsonl, write_jsonl

ETHANOL = "Ethanol <mol>CCO</mol> is a polar solvent."


def kept(corpus) -> list[tuple[str, str, str]]:
    return [
        (r["id"], r["where"], r["text"])
        for r in corpus.documents_table(["id", "where", "text"]).to_pylist()
    ]


# --- exact ---------------------------------------------------------------------------------------
@pytest.fixture
def spelled_twice(in_tmp):
    return write_jsonl(
        in_tmp / "docs.jsonl",
        [
            {"text": "Ethanol <mol>OCC</mol> is a polar solvent."},
            {"text": "Benzene <mol>c1ccccc1</mol> is aromatic."},
            {"text": "Ethanol <mol>CCO</mol> is a polar solvent."},
            {"text": "Ethanol <mol>C(C)O</mol> is a polar solvent."},
        ],
    )


def test_two_spellings_of_one_molecule_are_exact_duplicates(in_tmp, spelled_twice):
    corpus = build(in_tmp / "out", "docs.jsonl", dedup="exact", chunk_size=3)
    eth, benz = content_id(ETHANOL), content_id("Benzene <mol>c1ccccc1</mol> is aromatic.")
    assert kept(corpus) == [
        (eth, "docs.jsonl:1", ETHANOL),
        (benz, "docs.jsonl:2", "Benzene <mol>c1ccccc1</mol> is aromatic."),
    ]
    assert read_jsonl(in_tmp / "out" / "dropped.jsonl") == [
        {"id": eth, "where": "docs.jsonl:3", "reason": "exact_duplicate", "of": eth},
        {"id": eth, "where": "docs.jsonl:4", "reason": "exact_duplicate", "of": eth},
    ]
    info = corpus.info()
    assert (
        info["documents"],
        info["exact_duplicates"],
        info["near_duplicates"],
        info["duplicate_ids"],
    ) == (2, 2, 0, 0)


def test_dedup_none_keeps_copies_with_unique_ids(in_tmp, spelled_twice):
    corpus = build(in_tmp / "out", "docs.jsonl", dedup="none", chunk_size=3)
    eth = content_id(ETHANOL)
    assert [(i, w) for i, w, _ in kept(corpus)] == [
        (eth, "docs.jsonl:1"),
        (content_id("Benzene <mol>c1ccccc1</mol> is aromatic."), "docs.jsonl:2"),
        (f"{eth}-1", "docs.jsonl:3"),
        (f"{eth}-2", "docs.jsonl:4"),
    ]
    assert [t for _, _, t in kept(corpus)].count(ETHANOL) == 3
    assert (in_tmp / "out" / "dropped.jsonl").read_text() == ""
    assert corpus.info()["exact_duplicates"] == 0
    assert corpus.document(f"{eth}-2").text == ETHANOL


def test_given_ids_duplicate_ids_and_copies(in_tmp):
    write_jsonl(
        in_tmp / "docs.jsonl",
        [
            {"id": "a", "text": "alpha text"},
            {"id": "b", "text": "alpha text"},  # same text, other id: exact duplicate of a
            {"id": "a", "text": "another text"},  # same id, other text: duplicate id
            {"id": "a", "text": "alpha text"},  # same id, same text: exact duplicate
            {"id": "c", "text": "gamma text"},
        ],
    )
    corpus = build(in_tmp / "out", "docs.jsonl")
    assert [i for i, _, _ in kept(corpus)] == ["a", "c"]
    assert read_jsonl(in_tmp / "out" / "dropped.jsonl") == [
        {"id": "b", "where": "docs.jsonl:2", "reason": "exact_duplicate", "of": "a"},
        {"id": "a", "where": "docs.jsonl:3", "reason": "duplicate_id", "of": "docs.jsonl:1"},
        {"id": "a", "where": "docs.jsonl:4", "reason": "exact_duplicate", "of": "a"},
    ]
    assert (corpus.info()["exact_duplicates"], corpus.info()["duplicate_ids"]) == (2, 1)

    corpus = build(in_tmp / "none", "docs.jsonl", dedup="none")
    assert [(i, t) for i, _, t in kept(corpus)] == [
        ("a", "alpha text"),
        ("b", "alpha text"),
        ("a-1", "alpha text"),
        ("c", "gamma text"),
    ]
    assert read_jsonl(in_tmp / "none" / "dropped.jsonl") == [
        {"id": "a", "where": "docs.jsonl:3", "reason": "duplicate_id", "of": "docs.jsonl:1"}
    ]


# --- near ----------------------------------------------------------------------------------------
LONG = (
    "Perovskite solar cells convert sunlight into electricity with an efficiency that has "
    "risen quickly over the past decade, although their long term stability under heat, "
    "moisture and ultraviolet light remains the main obstacle to commercial deployment in "
    "large modules that must last for twenty five years on a roof."
)


def test_near_duplicates(in_tmp):
    other = LONG.replace("quickly", "rapidly")
    unrelated = (
        "Zeolites are microporous aluminosilicates used as catalysts and adsorbents in "
        "the petrochemical industry, where their pore size selects molecules by shape."
    )
    write_jsonl(
        in_tmp / "docs.jsonl",
        [
            {"id": "first", "text": LONG},
            {"id": "z", "text": unrelated},
            {"id": "second", "text": other},
        ],
    )
    hasher = MinHasher(128)
    similarity = hasher.lean(hasher.signature(LONG)).jaccard(hasher.lean(hasher.signature(other)))
    assert 0.85 < similarity < 1.0
    corpus = build(in_tmp / "near", "docs.jsonl", dedup="near", near_threshold=0.8, chunk_size=1)
    assert [i for i, _, _ in kept(corpus)] == ["first", "z"]
    assert read_jsonl(in_tmp / "near" / "dropped.jsonl") == [
        {"id": "second", "where": "docs.jsonl:3", "reason": "near_duplicate", "of": "first"}
    ]
    assert (corpus.info()["near_duplicates"], corpus.info()["exact_duplicates"]) == (1, 0)

    corpus = build(in_tmp / "exact", "docs.jsonl", dedup="exact")
    assert [i for i, _, _ in kept(corpus)] == ["first", "z", "second"]
    assert corpus.info()["near_duplicates"] == 0


def test_minhash_signature_equals_datasketch():
    """`MinHasher` is datasketch's MinHash over 32-bit hashes of the text's 5-byte shingles."""
    from datasketch import MinHash

    from kiban.corpus.dedup import _legacy_scheme

    text = "Ethanol <mol>CCO</mol> is a polar solvent, é ü."
    data = text.encode("utf-8")
    mask = (1 << 64) - 1
    shingle_hashes = set()
    for start in range(len(data) - 4):
        h = 0
        for byte in data[start : start + 5]:
            h = (h * 0x9E3779B97F4A7C15 + byte + 1) & mask
        shingle_hashes.add((h ^ (h >> 29)) & 0xFFFFFFFF)
    reference = MinHash(
        num_perm=64, seed=1, hashfunc=lambda b: int.from_bytes(b, "little"), **_legacy_scheme()
    )
    for h in sorted(shingle_hashes):
        reference.update(h.to_bytes(4, "little"))
    assert np.array_equal(MinHasher(64).signature(text), reference.hashvalues)
    short = MinHasher(64).signature("ab")  # shorter than a shingle: padded, still a signature
    assert short.shape == (64,) and short.dtype == np.uint64


# --- decontamination -----------------------------------------------------------------------------
PASSAGE = (
    "the reaction of sodium metal with cold water releases hydrogen gas and leaves a "
    "strongly alkaline solution of sodium hydroxide behind in the beaker"
)


def longest_common_run(a: list[int], b: list[int]) -> int:
    best = 0
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0] * (len(b) + 1)
        for j, y in enumerate(b, start=1):
            if x == y:
                current[j] = previous[j - 1] + 1
                best = max(best, current[j])
        previous = current
    return best


def test_decontamination_drops_exactly_the_overlapping_document(in_tmp):
    n = 8
    words = PASSAGE.split()
    corpus_docs = [
        {"id": "leak", "text": f"Lab notes. {PASSAGE}. Then we cleaned up."},
        {"id": "short", "text": f"Remember: {' '.join(words[:3])} is dangerous."},
        {"id": "other", "text": "Copper sulfate crystals are blue and dissolve in water."},
        {"id": "tail", "text": f"Also {' '.join(words[-4:])}, and more."},
        {"id": "mol", "text": "Water <mol>O</mol> boils at <num>100</num> C."},
    ]
    write_jsonl(in_tmp / "docs.jsonl", corpus_docs)
    write_jsonl(
        in_tmp / "eval.jsonl",
        [
            {"text": "An unrelated question about photosynthesis in green plants and algae."},
            {"text": PASSAGE},
            "not json",  # an evaluation line kiban cannot read is skipped
        ],
    )
    corpus = build(
        in_tmp / "out", "docs.jsonl", decontaminate=["eval.jsonl"], decontaminate_n=n, chunk_size=2
    )
    assert [i for i, _, _ in kept(corpus)] == ["short", "other", "tail", "mol"]
    assert read_jsonl(in_tmp / "out" / "dropped.jsonl") == [
        {"id": "leak", "where": "docs.jsonl:1", "reason": "decontaminated", "of": "eval.jsonl:2"}
    ]
    assert corpus.info()["decontaminated"] == 1

    # the decision agrees with a brute-force longest common token run, with the built tokenizer
    tokenizer = corpus.tokenizer
    evals = [
        tokenizer.encode(t)
        for t in ("An unrelated question about photosynthesis in green plants and algae.", PASSAGE)
    ]
    assert all(len(e) >= n for e in evals)
    runs = {
        d["id"]: max(longest_common_run(tokenizer.encode(d["text"]), e) for e in evals)
        for d in corpus_docs
    }
    assert runs["leak"] >= n
    assert all(runs[i] < n for i in ("short", "other", "tail", "mol"))
    assert runs["short"] >= 2  # it does share a few tokens


def brute_force(items: list[list[int]], n: int, document: list[int]) -> set[int]:
    """Indices of the evaluation items that share an n-token span with the document (items
    shorter than n must appear whole)."""

    def contains(haystack, needle):
        return any(
            haystack[i : i + len(needle)] == needle for i in range(len(haystack) - len(needle) + 1)
        )

    found = set()
    for index, item in enumerate(items):
        if not item:
            continue
        needles = [item] if len(item) < n else [item[i : i + n] for i in range(len(item) - n + 1)]
        if any(contains(document, needle) for needle in needles):
            found.add(index)
    return found


token_lists = st.lists(st.integers(0, 3), max_size=14)


@settings(max_examples=150, deadline=None)
@given(
    items=st.lists(token_lists, max_size=5),
    documents=st.lists(token_lists, max_size=6),
    n=st.integers(1, 5),
)
def test_contamination_index_matches_brute_force(items, documents, n):
    index = ContaminationIndex(
        [(f"eval:{i}", np.array(t, dtype=np.int64)) for i, t in enumerate(items)], n
    )
    result = index.match([np.array(d, dtype=np.int64) for d in documents])
    assert len(result) == len(documents)
    for document, match in zip(documents, result):
        expected = brute_force(items, n, document)
        if expected:
            assert match in expected
        else:
            assert match is None


def test_contamination_index_basics():
    index = ContaminationIndex([("e:1", np.array([5, 6, 7, 8])), ("e:2", np.array([9]))], 3)
    assert len(index) == 2 and index.items == ["e:1", "e:2"]
    docs = [
        np.array([1, 6, 7, 8, 2]),
        np.array([5, 6, 2, 7, 8]),
        np.array([3, 9, 3]),
        np.array([], dtype=np.int64),
        np.array([7, 8]),
    ]
    assert index.match(docs) == [0, None, 1, None, None]
    assert ContaminationIndex([], 3).match(docs) == [None] * 5
    with pytest.raises(ValueError, match=">= 1"):
        ContaminationIndex([], 0)


def test_window_hashes():
    tokens = np.array([1, 2, 3, 1, 2, 3])
    hashes = window_hashes(tokens, 3)
    assert len(hashes) == 4 and hashes[0] == hashes[3] and len(set(hashes.tolist())) == 3
    assert len(window_hashes(tokens, 7)) == 0
    # the span length is part of the hash: [1, 2] as a 2-window differs from any 3-window
    assert window_hashes(np.array([1, 2]), 2)[0] not in set(hashes.tolist())


def test_renamed_copies_never_take_an_id_in_use(in_tmp):
    write_jsonl(
        in_tmp / "docs.jsonl",
        [
            {"id": "x-1", "text": "first text"},
            {"id": "x", "text": "second text"},
            {"id": "x", "text": "second text"},  # a kept copy: not "x-1", which is taken
            {"id": "x", "text": "second text"},
        ],
    )
    corpus = build(in_tmp / "out", "docs.jsonl", dedup="none")
    assert [(i, t) for i, _, t in kept(corpus)] == [
        ("x-1", "first text"),
        ("x", "second text"),
        ("x-2", "second text"),
        ("x-3", "second text"),
    ]
    assert corpus.document("x-1").text == "first text"


def test_lsh_candidates_below_the_threshold_are_kept(in_tmp):
    """Two analogues (one methoxy group apart) with different values: MinHash LSH makes them
    candidates, but their estimated Jaccard similarity (0.75) is below the threshold (0.8)."""
    from datasketch import MinHashLSH

    first = "<mol>COc1ccc(OC)c(NC(=O)c2cc3ccccc3oc2=O)c1</mol> logS <num>-1.05</num>"
    second = "<mol>COc1cccc(NC(=O)c2cc3ccccc3oc2=O)c1</mol> logS <num>-1.04</num>"
    hasher = MinHasher(128)
    a, b = hasher.lean(hasher.signature(first)), hasher.lean(hasher.signature(second))
    assert a.jaccard(b) == 0.75
    lsh = MinHashLSH(threshold=0.8, num_perm=128)
    lsh.insert("first", a)
    assert lsh.query(b) == ["first"]  # a candidate all the same

    write_jsonl(
        in_tmp / "docs.jsonl", [{"id": "first", "text": first}, {"id": "second", "text": second}]
    )
    corpus = build(in_tmp / "near", "docs.jsonl", dedup="near", near_threshold=0.8)
    assert [i for i, _, _ in kept(corpus)] == ["first", "second"]
    assert corpus.info()["near_duplicates"] == 0
    corpus = build(in_tmp / "lower", "docs.jsonl", dedup="near", near_threshold=0.7)
    assert [i for i, _, _ in kept(corpus)] == ["first"]
    assert read_jsonl(in_tmp / "lower" / "dropped.jsonl") == [
        {"id": "second", "where": "docs.jsonl:2", "reason": "near_duplicate", "of": "first"}
    ]
