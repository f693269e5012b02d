"""`CorpusSearch` on real built corpora: text queries, documents with provenance and filters,
∞-gram next tokens and probabilities, traces, contamination reports; and counts over 2,000 real
SMILES (MOSES) against brute force."""

from __future__ import annotations

import json
import math
import random
import re
from pathlib import Path

import numpy as np
import pytest

from kiban.corpus import BuildConfig, SourceSpec, build_corpus
from kiban.index import QueryError, build_index
from kiban.index.search import ContaminationError, CorpusSearch

from .helpers import PHRASE, Brute, moses_smiles


@pytest.fixture(scope="module")
def search(small_corpus) -> CorpusSearch:
    return CorpusSearch(small_corpus)


@pytest.fixture(scope="module")
def brute(search) -> Brute:
    return Brute.of_corpus(search.directory, search.index.eos_id, len(search.index.shards))


@pytest.fixture(scope="module")
def rows(search) -> list[dict]:
    """documents.parquet, in its order (shard by shard, document by document)."""
    return search.corpus.documents_table().to_pylist()


def row_of(rows, shard: int, document: int) -> dict:
    in_shard = [r for r in rows if r["shard"] == shard]
    return sorted(in_shard, key=lambda r: r["token_offset"])[document]


def test_documents_table_and_shards_agree(search, brute, rows):
    """The premise of every document lookup: row order is shard order, and each row's text is
    exactly its decoded tokens."""
    decoded = [search.tokenizer.decode(d) for docs in brute.shards for d in docs]
    assert [r["text"] for r in rows] == decoded
    assert [(r["shard"], r["token_offset"]) for r in rows] == [
        (s, int(start)) for s, starts in enumerate(brute.starts) for start in starts
    ]


def test_docs_returns_each_document_once_with_provenance(search, brute, rows):
    query = " " + PHRASE
    ids = search.encode(query)
    occurrences = brute.occurrences(ids)
    expected = {row_of(rows, s, d)["id"] for s, _, d in occurrences}
    # the same documents by their text
    assert expected == {r["id"] for r in rows if query in r["text"]}
    assert len(occurrences) > len(expected) >= 5  # some documents have it twice
    assert search.count(query) == len(occurrences)
    hits = search.docs(query, limit=100)
    assert len(hits) == len(expected) and {h.id for h in hits} == expected
    by_id = {r["id"]: r for r in rows}
    for hit in hits:
        row = by_id[hit.id]
        assert (hit.source, hit.license, hit.where) == (row["source"], row["license"], row["where"])
        assert row["where"].endswith(f"papers.jsonl:{int(hit.id.split('-')[1]) + 1}")
        assert hit.shard == row["shard"]
        assert row["token_offset"] <= hit.position < row["token_offset"] + row["n_tokens"]
        assert PHRASE in hit.snippet and hit.snippet in row["text"]
    # the first documents in the index's order; `limit` cuts that list
    order = []
    for s, _, d in brute.suffix_order(occurrences):
        if row_of(rows, s, d)["id"] not in order:
            order.append(row_of(rows, s, d)["id"])
    assert [h.id for h in hits] == order
    assert [h.id for h in search.docs(query, limit=3)] == order[:3]
    assert [h.to_dict()["id"] for h in search.docs(ids.tolist(), limit=2)] == order[:2]


@pytest.mark.parametrize(
    "filters",
    [
        {"source": "arxiv"},
        {"source": "chemrxiv"},
        {"license": "cc0-1.0"},
        {"source": "arxiv", "license": "cc-by-4.0"},
        {"modality": "mol"},
        {"source": "nowhere"},
    ],
)
def test_docs_filters(search, rows, filters):
    query = " " + PHRASE
    modality = filters.get("modality")
    expected = [
        r["id"]
        for r in rows
        if query in r["text"]
        and r["source"] == filters.get("source", r["source"])
        and r["license"] == filters.get("license", r["license"])
        and (modality is None or r[f"n_{modality}"] > 0)
    ]
    hits = search.docs(query, limit=100, **filters)
    assert sorted(h.id for h in hits) == sorted(expected)
    unfiltered = [h.id for h in search.docs(query, limit=100)]
    assert [h.id for h in hits] == [i for i in unfiltered if i in expected]  # same order


def test_docs_by_molecule(search, rows):
    # the CSV's OCC is stored canonical, as CCO; a tagged query is canonicalised alike
    hits = search.docs("<mol>OCC</mol> logS", limit=100)
    assert [(h.id, h.source, h.license) for h in hits] == [
        (r["id"], "solubility", "cc0-1.0") for r in rows if r["text"].startswith("<mol>CCO<")
    ]
    assert (
        search.count("<mol>OCC</mol>")
        == search.count("<mol>CCO</mol>")
        == sum(r["text"].count("<mol>CCO</mol>") for r in rows)
    )
    # a bare molecule query is searched as written, inside any span
    inner = search.encode("CCO", modality="mol")
    assert search.tokenizer.decode(inner) == "CCO"
    brute = Brute.of_corpus(search.directory, search.index.eos_id, len(search.index.shards))
    expected = {row_of(rows, s, d)["id"] for s, _, d in brute.occurrences(inner)}
    assert {h.id for h in search.docs("CCO", query_modality="mol", limit=100)} == expected
    assert len(expected) > 1 and all("CCO" in r["text"] for r in rows if r["id"] in expected)
    assert search.count("OCC", modality="mol") == brute.count(search.encode("OCC", modality="mol"))
    assert search.docs("c1ccccc1", query_modality="mol", modality="mol", source="nowhere") == []


def test_next_decodes_tokens_with_probabilities(search, brute):
    query = " " + PHRASE.split()[0]
    ids = search.encode(query)
    result = search.next(query, top=None)
    length, count, following = brute.next_tokens(ids)
    assert (
        (result["suffix_length"], result["count"], result["total"])
        == (length, count, count)
        == (len(ids), count, count)
    )
    assert {t["id"]: t["count"] for t in result["tokens"]} == following
    assert math.isclose(sum(t["prob"] for t in result["tokens"]), 1.0)
    for token in result["tokens"]:
        assert token["token"] == search.tokenizer.decode([token["id"]])
        assert token["prob"] == token["count"] / count
    assert [t["count"] for t in result["tokens"]] == sorted(following.values(), reverse=True)
    assert " " + PHRASE.split()[1] in [t["token"] for t in result["tokens"]]
    assert search.next(query, top=1)["tokens"] == result["tokens"][:1]
    # an unseen start backs off to the longest seen suffix; the end of a document is a token
    backed_off = search.next("qqq zzz number 7.", top=None)
    ids = search.encode("qqq zzz number 7.")
    length, count, following = brute.next_tokens(ids)
    assert 0 < backed_off["suffix_length"] == length < len(ids)
    assert {t["id"]: t["count"] for t in backed_off["tokens"]} == following
    assert search.index.eos_id in following
    assert math.isclose(sum(t["prob"] for t in backed_off["tokens"]), 1.0)


@pytest.mark.parametrize(
    "text",
    [" in the zeolite framework and again", "Paper 3: with", "unseen qqq words <mol>CCO</mol>"],
)
def test_prob_is_the_sum_of_infgram_logs(search, brute, text):
    result = search.prob(text)
    ids = search.encode(text)
    probabilities, log_prob = brute.sequence_prob(ids)
    assert result["probs"] == probabilities
    assert (
        result["log_prob"]
        == log_prob
        == sum(math.log(p) if p > 0 else -math.inf for p in result["probs"])
    )
    assert "".join(result["tokens"]) == search.tokenizer.decode(ids)
    assert len(result["tokens"]) == len(ids)


def test_trace_finds_the_pieces_of_two_documents(search, brute, rows):
    a, b = rows[6]["text"], rows[11]["text"]  # paper-6 and paper-11
    piece_a, piece_b = a[: a.index(" measured")], b[b.index(" measured") :]
    text = piece_a + " xylophone quixotic vellum" + piece_b
    ids = search.encode(text)
    spans = search.trace(text, documents_per_span=50)
    assert [(s.start, s.end) for s in sorted(spans, key=lambda s: s.start)] == brute.maximal_spans(
        ids
    )
    for span in spans:
        assert span.count == brute.count(ids[span.start : span.end])
        assert span.text == search.tokenizer.decode(ids[span.start : span.end])
        assert len(span.documents) == min(50, span.count)
        for document in span.documents:
            assert span.text in next(r["text"] for r in rows if r["id"] == document.id)
    longest = sorted(spans, key=lambda s: s.start)
    first, last = longest[0], longest[-1]
    assert [d.id for d in first.documents] == ["paper-6"] and first.start == 0
    assert [d.id for d in last.documents] == ["paper-11"] and last.end == len(ids)
    assert first.text in piece_a and len(first.text) > len(piece_a) - 3
    assert last.text in piece_b and len(last.text) > len(piece_b) - 3
    assert spans == sorted(spans, key=lambda s: (s.start - s.end, s.start))  # longest first
    assert [s.to_dict()["text"] for s in search.trace(text, max_spans=2)] == [
        s.text for s in spans[:2]
    ]
    assert all(s.end - s.start >= 4 for s in search.trace(text, min_length=4))
    assert all(s.count <= 1 for s in search.trace(text, max_count=1))


def test_contamination_marks_the_copied_item(search, brute, rows, fast_tmp):
    copied = rows[9]["text"]
    new = (
        "Quokkas juggle fluorescent marmalade beneath seventeen turquoise umbrellas while "
        "philosophers debate zeppelins"
    )
    eval_path = fast_tmp / "eval.jsonl"
    eval_path.write_text(
        json.dumps({"text": copied})
        + "\n"
        + json.dumps({"text": new})
        + "\n{broken json\n"
        + json.dumps({"text": "<mol>C1CC</mol>"})
        + "\n",
        encoding="utf-8",
    )
    with pytest.raises(
        ContaminationError,
        match=r"eval.jsonl:3: unreadable evaluation item: "
        r"malformed JSON: .*--skip-unreadable",
    ):
        search.contamination(eval_path, n=8)
    report = search.contamination(eval_path, n=8, skip_unreadable=True)
    assert [i["contaminated"] for i in report["items"]] == [True, False]
    for item, text in zip(report["items"], (copied, new)):
        ids = search.tokenizer.encode(text)
        assert item["tokens"] == len(ids)
        assert item["longest_match"] == brute.longest_match(ids)
        windows = [ids[i : i + 8] for i in range(len(ids) - 7)]
        assert item["ngram_overlap"] == np.mean([brute.count(w) > 0 for w in windows])
    assert report["items"][0]["longest_match"] == report["items"][0]["tokens"]
    assert report["items"][0]["ngram_overlap"] == 1.0
    assert report["items"][0]["where"].endswith("eval.jsonl:1")
    assert report["items"][1]["longest_match"] < 8
    assert [u["where"].rsplit(":", 1)[1] for u in report["unreadable"]] == ["3", "4"]
    assert report["unreadable"][1]["reason"] == (
        "span 1 <mol>: invalid mol 'C1CC': unclosed ring for input: 'C1CC'"
    )
    assert report["summary"] == {
        "items": 2,
        "unreadable": 2,
        "contaminated": 1,
        "contaminated_fraction": 0.5,
        "mean_ngram_overlap": report["items"][1]["ngram_overlap"] / 2 + 0.5,
    }
    with pytest.raises(QueryError, match="the n-gram length must be an integer >= 1, got 0"):
        search.contamination(eval_path, n=0)


def test_contamination_of_nothing_readable_is_an_error(search, fast_tmp):
    # before: "0 of 0 items (0.0 %)" and exit 0, a check of nothing reported as a pass
    binary = fast_tmp / "eval.jsonl"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(128, 256)))
    with pytest.raises(
        ContaminationError,
        match=r"eval.jsonl:1: unreadable evaluation item: not "
        r"valid UTF-8: byte 0x89 at column 1",
    ):
        search.contamination(binary)
    with pytest.raises(
        ContaminationError,
        match=r"eval.jsonl: no readable evaluation item \(3 "
        r"unreadable; the first: .*eval.jsonl:1: not "
        r"valid UTF-8.*\): nothing was checked",
    ):
        search.contamination(binary, skip_unreadable=True)
    empty = fast_tmp / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(
        ContaminationError, match="empty.jsonl: unreadable evaluation item: empty file: no records"
    ):
        search.contamination(empty)
    with pytest.raises(
        ContaminationError,
        match=r"empty.jsonl: no readable evaluation item \(1 "
        r"unreadable",
    ):
        search.contamination(empty, skip_unreadable=True)


def test_a_span_that_is_not_a_molecule_is_an_error_unless_asked_as_text(search):
    # before: count 0, silently (no canonical span in the corpus can equal an invalid SMILES)
    reason = "unclosed ring for input: 'C1CC'"
    for call in (
        lambda: search.count("<mol>C1CC</mol>"),
        lambda: search.count("C1CC", modality="mol"),
        lambda: search.docs("solvent <mol>C1CC</mol>"),
        lambda: search.count_batch(["<mol>CCO</mol>", "<mol>C1CC</mol>"]),
    ):
        with pytest.raises(
            QueryError,
            match=re.escape(
                f"'C1CC' is not a molecule ({reason}): a <mol> query is matched against "
                "canonical spans and would count 0; pass --as-text (as_text=True) to search for "
                "it as the text written"
            ),
        ):
            call()
    # as text: the tokens written, which a fragment of a larger SMILES may well match
    fragment = "c1ccc"
    with pytest.raises(QueryError, match="'c1ccc' is not a molecule"):
        search.count(fragment, modality="mol")
    assert search.count(fragment, modality="mol", as_text=True) == search.index.count(
        search.tokenizer.encode(f"<mol>{fragment}</mol>")[1:-1]
    )
    assert search.count("<mol>C1CC</mol>", as_text=True) == search.index.count(
        search.tokenizer.encode("<mol>C1CC</mol>")
    )
    with pytest.raises(QueryError, match=r"'1\.2\.3' is not a number"):
        search.count("<num>1.2.3</num>")
    # valid spans are unaffected: canonicalised as before
    assert search.count("<mol>OCC</mol>") == search.count("<mol>CCO</mol>")


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s: s.count(""), "tokenizes to nothing"),
        (lambda s: s.count("", modality="mol"), "tokenizes to nothing"),
        (lambda s: s.count("CCO", modality="dna"), "unknown modality 'dna'"),
        (lambda s: s.count("C</mol>", modality="mol"), "'C</mol>' is not a molecule"),
        (
            lambda s: s.count("C</mol>", modality="mol", as_text=True),
            "cannot tokenize the query as <mol>",
        ),
        (lambda s: s.count("<mool>x</mool>"), "cannot tokenize the query"),
        (lambda s: s.count("<mol>CCO"), "cannot tokenize the query"),
        (lambda s: s.count([]), "empty query"),
        (lambda s: s.count([10**6]), "outside the vocabulary"),
        (lambda s: s.count([5, 1.5]), "must be integers"),
        (lambda s: s.count([[5, 6]]), "flat list"),
        (lambda s: s.count([0]), "document separator"),
        (lambda s: s.count_batch(["CCO", ""]), "tokenizes to nothing"),
        (lambda s: s.docs("salt", limit=0), "limit must be >= 1"),
        (lambda s: s.docs("salt", modality="dna"), "unknown modality filter 'dna'"),
        (lambda s: s.next(""), "tokenizes to nothing"),
        (lambda s: s.prob([1, "x"]), "must be integers"),
        (lambda s: s.trace(None), "flat list"),
    ],
)
def test_bad_queries(search, call, message):
    with pytest.raises(QueryError, match=message):
        call(search)


def test_a_query_text_that_is_a_fragment_is_searched_as_written_when_asked(search, rows):
    # <mol>CC(</mol> does not parse: an error (it used to count 0 silently); as text, it is
    # tokenized as written (and found nowhere: every stored span is a whole canonical SMILES)
    with pytest.raises(QueryError, match=r"'CC\(' is not a molecule \(syntax error"):
        search.count("<mol>CC(</mol>")
    assert search.count("<mol>CC(</mol>", as_text=True) == 0
    assert search.count("CC(", modality="mol", as_text=True) == sum(
        1 for r in rows for _ in range(r["text"].count("CC("))
    )
    assert search.count_batch(["salt", " salt", [5]]) == [
        search.count("salt"),
        search.count(" salt"),
        search.count([5]),
    ]


# --- real SMILES ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def moses_corpus(moses_smiles_2000, module_tmp) -> Path:
    directory = module_tmp
    csv = directory / "moses.csv"
    # a few molecules twice (no deduplication): whole-molecule counts of 2
    smiles = moses_smiles_2000 + moses_smiles_2000[:5]
    csv.write_text("SMILES\n" + "\n".join(smiles) + "\n", encoding="utf-8")
    out = directory / "corpus"
    build_corpus(
        BuildConfig(
            sources=(SourceSpec(path=str(csv)),), chunk_size=700, dedup="none", vocab_size=300
        ),
        out,
    )
    build_index(out)
    return out


@pytest.fixture(scope="module")
def moses_smiles_2000() -> list[str]:
    smiles = moses_smiles(2000)
    if not smiles:
        pytest.skip("the MOSES test set (molsets) is not installed")
    return smiles


def test_real_smiles_counts(moses_corpus):
    search = CorpusSearch(moses_corpus)
    assert len(search.index.shards) == 3
    brute = Brute.of_corpus(moses_corpus, search.index.eos_id, 3)
    rows = search.corpus.documents_table(["text"]).column("text").to_pylist()
    assert len(rows) == 2005
    rng = random.Random(0)
    # random token windows, 1 to 12 tokens, cut from random documents
    documents = [d for docs in brute.shards for d in docs]
    windows = []
    for _ in range(300):
        doc = rng.choice(documents)
        n = rng.randint(1, min(12, len(doc)))
        start = rng.randrange(len(doc) - n + 1)
        windows.append(doc[start : start + n])
    expected = [brute.count(w) for w in windows]
    assert search.index.count_batch(windows) == expected
    assert [search.count(w) for w in windows[:50]] == expected[:50]
    assert all(e >= 1 for e in expected)
    # whole molecules: with tags, exactly the documents that are that molecule
    for text in rng.sample(rows, 60) + rows[:5]:
        smiles = text[len("<mol>") : -len("</mol>")]
        assert search.count(text) == rows.count(text)
        assert search.count(f"<mol>{smiles}</mol>") == rows.count(text)
        # without tags (modality="mol"): the molecule's tokens inside any span
        inner = search.encode(smiles, modality="mol")
        assert search.count(smiles, modality="mol") == brute.count(inner) >= rows.count(text)
        assert search.tokenizer.decode(inner) == smiles
    assert [search.count(t) for t in rows[:5]] == [2] * 5
