"""`kiban index build` and `kiban search ...`: the command line gives the library's answers, and
clear errors with exit code 2 (bad input)."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kiban.index.search import CorpusSearch

from .helpers import PHRASE

KIBAN = (
    [str(Path(sys.executable).with_name("kiban"))]
    if Path(sys.executable).with_name("kiban").is_file()
    else [sys.executable, "-m", "kiban"]
)


@pytest.fixture(scope="module")
def corpus(small_corpus, module_tmp) -> Path:
    """A copy of the small corpus without its index."""
    copy = module_tmp / "corpus"
    shutil.copytree(small_corpus, copy)
    shutil.rmtree(copy / "index")
    return copy


@pytest.fixture(scope="module")
def indexed(corpus) -> Path:
    from kiban.index import build_index

    build_index(corpus)
    return corpus


@pytest.fixture(scope="module")
def search(indexed) -> CorpusSearch:
    return CorpusSearch(indexed)


def results(out: str) -> list[dict]:
    return json.loads(out)["results"]


def test_index_build(kiban, corpus):
    code, out, err = kiban("index", "build", corpus, "--json")
    assert (code, err) == (0, "")
    tokens = sum((corpus / "shards" / f"tokens-{s:06d}.bin").stat().st_size // 2 for s in range(3))
    assert json.loads(out) == {
        "corpus": str(corpus),
        "shards": 3,
        "tokens": tokens,
        "built_now": [0, 1, 2],
        "rebuilt_because": {},
        "verified": False,
        "chem": None,
    }
    code, out, _ = kiban("index", "build", corpus, "--workers", "2")
    assert code == 0
    assert (
        out.strip() == f"index of {corpus}: 3 shards, {tokens:,} tokens; built now: 0 "
        "shard(s), the others were checked and up to date"
    )


def test_count_text_ids_and_modality(kiban, indexed, search):
    code, out, err = kiban("search", "count", indexed, " " + PHRASE, "--json")
    assert (code, err) == (0, "")
    assert results(out) == [
        {"query": " " + PHRASE, "count": 30, "variants": [
            {"text": " " + PHRASE, "count": 30}, {"text": PHRASE, "count": 0}]}
    ]  # fmt: skip
    assert results(out)[0]["count"] >= 7
    code, out, _ = kiban("search", "count", indexed, "--ids", "5,17,9", "12 13", "--json")
    assert code == 0
    assert results(out) == [
        {"query": [5, 17, 9], "count": search.index.count([5, 17, 9])},
        {"query": [12, 13], "count": search.index.count([12, 13])},
    ]
    # queries after the options
    code, out, _ = kiban(
        "search", "count", indexed, "--modality", "mol", "CCO", "c1ccccc1", "--json"
    )
    assert code == 0
    assert [(r["query"], r["count"]) for r in results(out)] == [
        (q, search.count(q, modality="mol")) for q in ("CCO", "c1ccccc1")
    ]
    assert results(out)[0]["count"] > 0
    assert all("kiban search substructure" in r["note"] for r in results(out))
    # a molecule is searched as the corpus stores it: OCC is ethanol, stored as CCO
    code, out, _ = kiban("search", "count", indexed, "--modality", "mol", "OCC", "--json")
    assert results(out)[0]["count"] == search.count("CCO", modality="mol") > 0
    code, out, _ = kiban(
        "search", "count", indexed, " salt", "--modality", "num", "1", "--as-text"
    )  # " salt" is no number: searched as the text written
    assert code == 0
    assert out == (
        f"{search.count(' salt', modality='num', as_text=True):>10,}  ' salt'\n"
        f"{search.count('1', modality='num'):>10,}  '1'\n"
    )


def test_batch_from_arguments_and_a_file(kiban, indexed, search, fast_tmp):
    queries = fast_tmp / "queries.txt"
    queries.write_text(" salt water\n\n molecule\n zeolite\n", encoding="utf-8")
    code, out, _ = kiban("search", "count", indexed, " acid", "--file", queries, "--json")
    assert code == 0
    texts = [" acid", " salt water", " molecule", " zeolite"]
    assert results(out) == [{"query": q, **r} for q, r in zip(texts, search.count_details(texts))]
    ids = fast_tmp / "ids.txt"
    ids.write_text("5,6\n7 8 9\n", encoding="utf-8")
    code, out, _ = kiban("search", "count", indexed, "--ids", "--file", ids, "--json")
    assert code == 0
    assert [r["query"] for r in results(out)] == [[5, 6], [7, 8, 9]]


def test_docs_next_prob_trace(kiban, indexed, search):
    code, out, _ = kiban(
        "search", "docs", indexed, " " + PHRASE, "--source", "arxiv", "--limit", "3", "--json"
    )
    assert code == 0
    documents = results(out)[0]["documents"]
    assert documents == [h.to_dict() for h in search.docs(" " + PHRASE, source="arxiv", limit=3)]
    assert len(documents) == 3 and {d["source"] for d in documents} == {"arxiv"}
    code, out, _ = kiban(
        "search",
        "docs",
        indexed,
        "CCO",
        "--modality",
        "mol",
        "--has-modality",
        "mol",
        "--license",
        "cc0-1.0",
        "--json",
    )
    assert code == 0
    assert results(out)[0]["documents"] == [
        h.to_dict()
        for h in search.docs("CCO", query_modality="mol", modality="mol", license="cc0-1.0")
    ]
    code, out, _ = kiban("search", "next", indexed, " zeolite", "--top", "2", "--json")
    assert code == 0
    assert results(out)[0] == {"query": " zeolite", **search.next(" zeolite", top=2)}
    code, out, _ = kiban("search", "prob", indexed, " in the zeolite framework", "--json")
    assert code == 0
    assert results(out)[0] == {
        "query": " in the zeolite framework",
        **search.prob(" in the zeolite framework"),
    }
    text = "Paper 6: unheard-of words measured"
    code, out, _ = kiban(
        "search", "trace", indexed, text, "--min-length", "2", "--docs-per-span", "1", "--json"
    )
    assert code == 0
    assert results(out)[0]["spans"] == [
        s.to_dict() for s in search.trace(text, min_length=2, documents_per_span=1)
    ]
    assert results(out)[0]["spans"][0]["documents"][0]["id"] == "paper-6"
    code, out, _ = kiban("search", "trace", indexed, text)
    assert code == 0 and out.startswith(f"query {text!r}\n  spans: ")


def test_prob_of_an_unseen_token_is_minus_infinity(kiban, indexed):
    code, out, _ = kiban("search", "prob", indexed, "--ids", "990", "--json")
    assert code == 0
    # Python's json writes -Infinity (not strict JSON); null would do as well
    assert results(out)[0]["log_prob"] in (-math.inf, None)


def test_contamination(kiban, indexed, search, fast_tmp):
    rows = search.corpus.documents_table(["text"]).column("text").to_pylist()
    eval_path = fast_tmp / "eval.jsonl"
    eval_path.write_text(
        json.dumps({"text": rows[3]})
        + "\n"
        + json.dumps({"text": "Quokkas juggle fluorescent marmalade beneath turquoise umbrellas"})
        + "\n",
        encoding="utf-8",
    )
    code, out, _ = kiban("search", "contamination", indexed, eval_path, "--n", "8", "--json")
    assert code == 0
    report = json.loads(out)
    assert report == search.contamination(eval_path, n=8)
    assert [i["contaminated"] for i in report["items"]] == [True, False]
    code, out, _ = kiban("search", "contamination", indexed, eval_path, "--n", "8")
    assert code == 0
    assert out.startswith("1 of 2 items share a span of >= 8 tokens with the corpus (50.0%)")
    assert f"{eval_path}:1: longest shared span" in out


def test_contamination_ngram_option_and_unreadable_items(kiban, indexed, search, fast_tmp):
    rows = search.corpus.documents_table(["text"]).column("text").to_pylist()
    eval_path = fast_tmp / "eval.jsonl"
    eval_path.write_text(json.dumps({"text": rows[3]}) + "\n{broken\n", encoding="utf-8")
    code, out, err = kiban("search", "contamination", indexed, eval_path, "--ngram", "8")
    assert (code, out) == (2, "")
    assert err.startswith(
        f"kiban search contamination: error: {eval_path}:2: unreadable "
        "evaluation item: malformed JSON: "
    )
    code, out, err = kiban(
        "search", "contamination", indexed, eval_path, "--ngram", "8", "--skip-unreadable", "--json"
    )
    assert (code, err) == (0, "")
    report = json.loads(out)
    assert report == search.contamination(eval_path, n=8, skip_unreadable=True)
    assert report["n"] == 8 and report["summary"]["unreadable"] == 1
    # a binary file: before, "0 of 0 items (0.0%)" and exit 0
    binary = fast_tmp / "eval-binary.jsonl"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(128, 256)))
    code, out, err = kiban("search", "contamination", indexed, binary, "--skip-unreadable")
    assert (code, out) == (2, "")
    assert err == (
        f"kiban search contamination: error: {binary}: no readable evaluation item (3 "
        f"unreadable; the first: {binary}:1: not valid UTF-8: byte 0x89 at column 1): "
        "nothing was checked\n"
    )


def test_a_query_that_is_not_a_molecule(kiban, indexed, search):
    code, out, err = kiban("search", "count", indexed, "<mol>C1CC</mol>")
    assert (code, out) == (2, "")
    assert err == (
        "kiban search count: error: 'C1CC' is not a molecule (unclosed ring for "
        "input: 'C1CC'): a <mol> query is matched against canonical spans and would "
        "count 0; pass --as-text (as_text=True) to search for it as the text "
        "written\n"
    )
    code, out, err = kiban("search", "count", indexed, "--modality", "mol", "C1CC")
    assert code == 2 and "'C1CC' is not a molecule" in err
    code, out, err = kiban(
        "search", "count", indexed, "--modality", "mol", "C1CC", "--as-text", "--json"
    )
    assert (code, err) == (0, "")
    assert results(out) == [
        {"query": "C1CC", "count": search.count("C1CC", modality="mol", as_text=True)}
    ]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["count", "{corpus}", ""], "the query '' tokenizes to nothing"),
        (["count", "{corpus}"], "no query given: pass QUERY arguments or --file"),
        (
            ["count", "{corpus}", "--ids", "5,x"],
            "--ids expects comma-separated integers, got '5,x'",
        ),
        (["count", "{corpus}", "--ids", "5,999999"], "outside the vocabulary"),
        (["count", "{corpus}", "--ids", "0"], "document separator"),
        (["count", "{corpus}", "--ids", ""], "empty query"),
        (["count", "{corpus}", "<mool>x</mool>"], "cannot tokenize the query"),
        (["docs", "{corpus}", "salt", "--limit", "0"], "limit must be >= 1"),
        (["count", "{corpus}", "x", "--file", "{corpus}/no-such-file.txt"], "no-such-file.txt"),
        (["contamination", "{corpus}", "{corpus}/no-such-eval.jsonl"], "no-such-eval.jsonl"),
        (
            ["contamination", "{corpus}", "{corpus}/papers.jsonl", "--n", "0"],
            "the n-gram length must be an integer >= 1, got 0",
        ),
    ],
)
def test_bad_queries_exit_2(kiban, indexed, argv, message):
    argv = [a.replace("{corpus}", str(indexed)) for a in argv]
    code, out, err = kiban("search", *argv)
    assert (code, out) == (2, "")
    assert err.startswith(f"kiban search {argv[0]}: error: ") and message in err


def test_missing_index_and_corpus(kiban, small_corpus, fast_tmp):
    bare = fast_tmp / "corpus"
    shutil.copytree(small_corpus, bare, ignore=shutil.ignore_patterns("index"))
    code, out, err = kiban("search", "count", bare, "salt")
    assert (code, out) == (2, "")
    assert (
        err == f"kiban search count: error: {bare} has no index: run `kiban index build {bare}`\n"
    )
    code, _, err = kiban("search", "docs", fast_tmp / "nothing", "salt")
    assert code == 2 and "is not a built kiban corpus" in err
    code, _, err = kiban("index", "build", fast_tmp / "nothing")
    assert (
        code == 2
        and err.startswith("kiban index build: error: ")
        and "is not a built kiban corpus" in err
    )
    with pytest.raises(SystemExit) as exit_info:  # argparse: usage error
        kiban("search", "count", bare, "x", "--modality", "dna")
    assert exit_info.value.code == 2


def test_the_installed_command(indexed, search):
    result = subprocess.run(
        [*KIBAN, "search", "count", str(indexed), " " + PHRASE, "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert results(result.stdout) == [
        {"query": " " + PHRASE, "count": 30, "variants": [
            {"text": " " + PHRASE, "count": 30}, {"text": PHRASE, "count": 0}]}
    ]  # fmt: skip
