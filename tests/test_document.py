"""Document, the tagged-text grammar, and the JSON forms."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kiban.document import (
    FORMAT_NAME,
    FORMAT_VERSION,
    MODALITY_TAGS,
    Document,
    DocumentError,
    Segment,
    Span,
    content_id,
    join_segments,
    spans_of,
    split_tagged,
)

TEXT = "Ethanol <mol>CCO</mol> boils at <num>78.37</num> C."
TAG_SHAPED = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9_-]*)>")  # the grammar's definition, restated


# --- construction ---------------------------------------------------------------------------
def test_document_fields_spans_and_id():
    d = Document(TEXT, source="demo", license="CC0-1.0", meta={"k": 1})
    assert d.text == TEXT
    assert d.spans == (Span("mol", 13, 16), Span("num", 37, 42))
    assert [d.span_text(s) for s in d.spans] == ["CCO", "78.37"]
    assert d.id == hashlib.sha256(TEXT.encode("utf-8")).hexdigest()[:16] == content_id(TEXT)
    assert len(d.id) == 16
    assert d.sha256 == hashlib.sha256(TEXT.encode("utf-8")).hexdigest()
    assert d.source == "demo" and d.license == "CC0-1.0" and dict(d.meta) == {"k": 1}
    assert d.modality_counts() == {"mol": 1, "num": 1}
    assert d.segments == [
        Segment(None, "Ethanol "),
        Segment("mol", "CCO"),
        Segment(None, " boils at "),
        Segment("num", "78.37"),
        Segment(None, " C."),
    ]


def test_content_id_of_unicode_is_sha256_of_utf8():
    text = "Wasser 水 <num>1.0</num> 🧪"
    assert Document(text).id == hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
    assert content_id("") == "e3b0c44298fc1c14"  # sha256 of nothing


def test_explicit_id_is_kept_and_empty_id_means_content_id():
    assert Document("abc", id="doc-7").id == "doc-7"
    assert Document("abc", id="").id == content_id("abc")


def test_plain_prose_and_empty_text():
    d = Document("no spans here")
    assert d.spans == () and d.modality_counts() == {} and d.source is None and d.license is None
    assert dict(d.meta) == {}
    assert Document("").spans == () and Document("").segments == []


def test_span_offsets_point_at_the_content_for_every_modality():
    text = "a<mol>c1ccccc1</mol>b<crystal>X\nP1\n</crystal><num></num><protein>MKV</protein>"
    d = Document(text)
    assert d.spans == (
        Span("mol", 6, 14),
        Span("crystal", 30, 35),
        Span("num", 50, 50),
        Span("protein", 65, 68),
    )
    for span in d.spans:
        assert text[span.start - len(span.modality) - 2 : span.start] == f"<{span.modality}>"
        assert text[span.end : span.end + len(span.modality) + 3] == f"</{span.modality}>"
    assert [d.span_text(s) for s in d.spans] == ["c1ccccc1", "X\nP1\n", "", "MKV"]
    assert d.modality_counts() == {"mol": 1, "crystal": 1, "num": 1, "protein": 1}


def test_documents_are_immutable():
    d = Document(TEXT, meta={"tags": ["a", "b"], "nested": {"x": [1, {"y": 2}]}})
    with pytest.raises(dataclasses.FrozenInstanceError):
        d.text = "other"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        d.id = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        d.meta["new"] = 1  # type: ignore[index]
    with pytest.raises(TypeError):
        d.meta["nested"]["x"] = 0  # type: ignore[index]
    assert d.meta["tags"] == ("a", "b")  # lists are frozen to tuples
    assert d.meta["nested"]["x"][1]["y"] == 2


def test_meta_is_copied_not_aliased():
    meta = {"k": [1]}
    d = Document("t", meta=meta)
    meta["k"].append(2)
    meta["j"] = 0
    assert d.to_dict()["meta"] == {"k": [1]}


def test_equality_and_hash_ignore_meta():
    a = Document(TEXT, source="s", meta={"x": 1})
    b = Document(TEXT, source="s", meta={"x": 2})
    assert a == b and hash(a) == hash(b)
    assert a != Document(TEXT, source="t")
    assert a != Document(TEXT, source="s", id="other")


def test_replace_keeps_the_id_unless_given():
    d = Document(TEXT, source="s")
    changed = d.replace(text="new <num>1</num>")
    assert changed.id == d.id and changed.spans == (Span("num", 9, 10),) and changed.source == "s"
    assert d.replace(id="x").id == "x"
    assert d.text == TEXT  # the original is untouched


# --- JSON ----------------------------------------------------------------------------------
def test_to_dict_omits_absent_fields():
    assert Document("t").to_dict() == {"id": content_id("t"), "text": "t"}
    assert Document("t", id="i", source="s", license="l", meta={"a": [1]}).to_dict() == {
        "id": "i",
        "text": "t",
        "source": "s",
        "license": "l",
        "meta": {"a": [1]},
    }


def test_as_dict_has_format_name_and_version():
    d = Document(TEXT, source="s")
    assert d.as_dict() == {
        "@format": "kiban.document",
        "@version": 1,
        "id": d.id,
        "text": TEXT,
        "source": "s",
    }
    assert (FORMAT_NAME, FORMAT_VERSION) == ("kiban.document", 1)
    back = Document.from_dict(d.as_dict())
    assert back == d and back.to_dict() == d.to_dict()


def test_json_round_trip_exact():
    d = Document(
        'Ünïcödé 水 🧪 <mol>OCC</mol>\n\t"quotes" \\ back',
        source="src",
        license="MIT",
        meta={
            "year": 2024,
            "tags": ["x", "y"],
            "f": 1.5,
            "n": None,
            "deep": {"a": {"b": [True, False]}},
        },
    )
    line = d.to_json()
    assert "\n" not in line and "水" in line and "🧪" in line  # one line, not ASCII-escaped
    assert json.loads(line) == d.to_dict()
    back = Document.from_json(line)
    assert back == d and back.to_dict() == d.to_dict() and back.to_json() == line
    assert back.spans == d.spans


def test_from_json_without_id_computes_it():
    assert Document.from_json('{"text": "abc"}').id == content_id("abc")


BAD_TEXTS = [
    (
        "a <mool>C</mool>",
        [
            "unknown tag '<mool>' at character 2",
            "known tags: <mol>, <crystal>, <num>, <protein>",
            "&lt;",
        ],
    ),
    ("<MOL>C</MOL>", ["unknown tag '<MOL>' at character 0"]),
    ("x </b>", ["unknown tag '</b>' at character 2"]),
    ("<mol>CCO", ["unclosed tag <mol> opened at character 0"]),
    ("ok <num>1</num> <protein>MK", ["unclosed tag <protein> opened at character 16"]),
    ("CCO</mol>", ["closing tag </mol> at character 3 but expected no closing tag"]),
    ("<mol>C</num>", ["closing tag </num> at character 6 but expected </mol>"]),
    (
        "<mol>C<num>1</num></mol>",
        ["tag <num> at character 6 opens inside <mol> opened at character 0; spans do not nest"],
    ),
    ("<mol>C<mol>C</mol></mol>", ["tag <mol> at character 6 opens inside <mol>", "do not nest"]),
]


@pytest.mark.parametrize(("text", "fragments"), BAD_TEXTS)
def test_bad_tagged_text(text, fragments):
    for call in (split_tagged, spans_of, Document):
        with pytest.raises(DocumentError) as info:
            call(text)
        for fragment in fragments:
            assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("record", "fragments"),
    [
        ({"id": "x"}, ["missing required field 'text'"]),
        ({"text": 5}, ["'text' must be a string, got int"]),
        ({"text": None}, ["'text' must be a string, got NoneType"]),
        ({"text": "a", "id": 5}, ["'id' must be a string or absent, got 5"]),
        ({"text": "a", "source": ["s"]}, ["'source' must be a string or absent"]),
        ({"text": "a", "license": 1}, ["'license' must be a string or absent"]),
        ({"text": "a", "meta": [1]}, ["'meta' must be an object, got list"]),
        (
            {"text": "a", "foo": 1, "bar": 2},
            ["unknown field(s) ['bar', 'foo']; expected id, text, source, license, meta"],
        ),
        ({"text": "a", "spans": []}, ["unknown field(s) ['spans']"]),
        (
            {"@format": "kiban.document", "@version": 2, "text": "a"},
            [
                "unsupported document format 'kiban.document' version 2",
                "this kiban reads 'kiban.document' version 1",
            ],
        ),
        ({"@format": "other", "@version": 1, "text": "a"}, ["unsupported document format 'other'"]),
        ({"@version": "1", "text": "a"}, ["version '1'"]),
        ({"@version": True, "text": "a"}, ["version True"]),
        ({"@version": 1.0, "text": "a"}, ["version 1.0"]),
        ({"text": "<mol>C"}, ["unclosed tag <mol> opened at character 0"]),
        (
            {"text": "a\ud800b"},
            ["'text' is not valid Unicode: lone surrogate '\\ud800' at character 1"],
        ),
        ({"text": "a", "id": "\udc00"}, ["'id' is not valid Unicode"]),
        ([1, 2], ["expected a JSON object with a 'text' field, got list"]),
        ("text", ["expected a JSON object with a 'text' field, got str"]),
    ],
)
def test_bad_records(record, fragments):
    with pytest.raises(DocumentError) as info:
        Document.from_dict(record, where="data.jsonl:7")
    message = str(info.value)
    assert message.startswith("data.jsonl:7: ")
    assert info.value.where == "data.jsonl:7"
    assert not info.value.reason.startswith("data.jsonl:7")
    for fragment in fragments:
        assert fragment in message
    assert isinstance(info.value, ValueError)


def test_version_1_is_accepted_with_or_without_format_keys():
    assert Document.from_dict({"@format": "kiban.document", "@version": 1, "text": "a"}).text == "a"
    assert Document.from_dict({"@version": 1, "text": "a"}).text == "a"
    assert Document.from_dict({"text": "a"}).text == "a"


def test_constructor_errors_have_no_where():
    with pytest.raises(DocumentError) as info:
        Document(b"bytes")  # type: ignore[arg-type]
    assert str(info.value) == "'text' must be a string, got bytes"
    assert info.value.where is None


@pytest.mark.parametrize(
    ("line", "fragments"),
    [
        ("{", ["malformed JSON: Expecting property name enclosed in double quotes: column 2"]),
        ("", ["malformed JSON: Expecting value: column 1"]),
        ('{"text": "a"} x', ["malformed JSON: Extra data: column 15"]),
        ('{"text": "a\\ud800"}', ["lone surrogate"]),
        ("[]", ["expected a JSON object"]),
        ('{"text": "x <bad>"}', ["unknown tag '<bad>' at character 2"]),
    ],
)
def test_bad_json_lines(line, fragments):
    with pytest.raises(DocumentError) as info:
        Document.from_json(line, where="f.jsonl:3")
    assert str(info.value).startswith("f.jsonl:3: ")
    for fragment in fragments:
        assert fragment in str(info.value)


# --- literal '<' in prose ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "text",
    [
        "x < 5",
        "a<->b",
        "&lt;mol>C&lt;/mol>",
        "if a<b and c>d",
        "<1>",
        "< mol>",
        "<mol >",
        "<>",
        "</>",
        "<<",
        "x <= y",
        "<-mol>",
        "<_mol>",
        "&lt;b> bold",
        "</ mol>",
        "a < b > c",
    ],
)
def test_literal_angle_brackets_are_prose(text):
    assert split_tagged(text) == [Segment(None, text)]
    d = Document(text)
    assert d.spans == () and d.text == text


def test_literal_angle_brackets_around_spans():
    text = "<<mol>C</mol>> x<5 <num>1</num><"
    assert split_tagged(text) == [
        Segment(None, "<"),
        Segment("mol", "C"),
        Segment(None, "> x<5 "),
        Segment("num", "1"),
        Segment(None, "<"),
    ]
    assert Document(text).spans == (Span("mol", 6, 7), Span("num", 24, 25))


def test_angle_bracket_inside_span_content_is_content():
    assert split_tagged("<num>x < 5</num>") == [Segment("num", "x < 5")]
    assert split_tagged("<mol>C<</mol>") == [Segment("mol", "C<")]


def test_empty_spans_are_kept_and_empty_prose_dropped():
    assert split_tagged("<mol></mol><num></num>") == [Segment("mol", ""), Segment("num", "")]
    assert join_segments([Segment(None, ""), Segment("mol", "")]) == "<mol></mol>"


@given(name=st.from_regex(r"\A[A-Za-z][A-Za-z0-9_-]{0,8}\Z", fullmatch=True), closing=st.booleans())
@settings(max_examples=100, deadline=None)
def test_any_other_tag_shaped_sequence_is_an_error(name, closing):
    tag = f"<{'/' if closing else ''}{name}>"
    text = f"ab {tag} cd"
    if name in MODALITY_TAGS:
        with pytest.raises(DocumentError, match="unclosed tag" if not closing else "closing tag"):
            split_tagged(text)
    else:
        with pytest.raises(DocumentError, match=re.escape(f"unknown tag {tag!r} at character 3")):
            split_tagged(text)


# --- split/join property ----------------------------------------------------------------------
NO_LT = st.characters(exclude_categories=("Cs",), exclude_characters="<")
WITH_LT = st.sampled_from(list("<</>ab m-_1é水😀\n\t&;lt")) | NO_LT


def _normalise(segments: list[Segment]) -> list[Segment]:
    """What split_tagged returns: adjacent prose merged, empty prose dropped, spans kept."""
    out: list[Segment] = []
    for segment in segments:
        if segment.modality is None:
            if not segment.text:
                continue
            if out and out[-1].modality is None:
                out[-1] = Segment(None, out[-1].text + segment.text)
                continue
        out.append(segment)
    return out


def _segments(alphabet):
    prose = st.builds(lambda t: Segment(None, t), st.text(alphabet, max_size=12))
    span = st.builds(Segment, st.sampled_from(MODALITY_TAGS), st.text(alphabet, max_size=12))
    return st.lists(prose | span, max_size=8)


def _check_round_trip(segments: list[Segment]) -> None:
    text = join_segments(segments)
    expected = _normalise(segments)
    assert split_tagged(text) == expected
    assert join_segments(split_tagged(text)) == text
    spans = spans_of(text)
    assert [(s.modality, text[s.start : s.end]) for s in spans] == [
        (s.modality, s.text) for s in expected if s.modality is not None
    ]
    for span in spans:
        assert text[span.start - len(span.modality) - 2 : span.start] == f"<{span.modality}>"
        assert text[span.end : span.end + len(span.modality) + 3] == f"</{span.modality}>"
    assert Document(text).spans == spans


@given(_segments(NO_LT))
@settings(max_examples=200, deadline=None)
def test_split_join_round_trip(segments):
    _check_round_trip(segments)


@given(_segments(WITH_LT))
@settings(max_examples=200, deadline=None)
def test_split_join_round_trip_with_literal_angle_brackets(segments):
    # '<' anywhere, as long as no merged prose or span content holds a tag-shaped sequence
    segments = [s for s in segments if not TAG_SHAPED.search(s.text)]
    if any(TAG_SHAPED.search(s.text) for s in _normalise(segments)):
        segments = [s for s in segments if s.modality is not None]
    _check_round_trip(segments)
