"""`Document`: the one object the kiban pipeline carries, and kiban's tagged-text format.

A document's ``text`` is *tagged text*: prose with modality spans written inline as tags,

    The dielectric <crystal>...</crystal> has refractive index <num>1.31</num>.

``spans`` records, for every tagged span, its modality and the character offsets of its *content*
(between the opening and the closing tag) in ``text``. Spans are derived from the text, so a
document can never disagree with itself.

Tag grammar (exact): ``<mol>``, ``<crystal>``, ``<num>``, ``<protein>`` and their closers
``</mol>`` … . Spans do not nest. Any other ``<`` is literal prose (``x < 5``, ``a<->b``), except a
*tag-shaped* sequence ``<name>`` / ``</name>`` (``name`` = a letter followed by letters, digits,
``_`` or ``-``) that is not one of the tags above: that is an error, so that a typo such as
``<mool>`` never silently becomes prose. To write such a sequence literally in prose, write
``&lt;`` for its ``<`` (``&lt;b>``): kiban keeps ``&lt;`` as it is, the model sees those characters.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

FORMAT_NAME = "kiban.document"
FORMAT_VERSION = 1

#: The modality tags, in a fixed order (their ids in the tokenizer follow this order).
MODALITY_TAGS: tuple[str, ...] = ("mol", "crystal", "num", "protein")

_TAG_SHAPED = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9_-]*)>")


class DocumentError(ValueError):
    """A document, or its tagged text, is malformed. ``where`` names the record (file:line)."""

    def __init__(self, message: str, *, where: str | None = None):
        self.reason = message
        self.where = where
        super().__init__(f"{where}: {message}" if where else message)


@dataclass(frozen=True, slots=True)
class Span:
    """A modality span: ``text[start:end]`` is the span's content (tags excluded)."""

    modality: str
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Segment:
    """A piece of tagged text: prose (``modality is None``) or the content of one span."""

    modality: str | None
    text: str


def split_tagged(text: str) -> list[Segment]:
    """Split tagged text into prose and span segments, checking the tag grammar.

    Empty prose segments are dropped; empty span contents are kept (a codec decides if they are
    valid). Raises `DocumentError` naming the character offset of an unknown, unclosed, stray or
    nested tag.
    """
    segments: list[Segment] = []
    open_modality: str | None = None
    open_at = 0
    cursor = 0
    for match in _TAG_SHAPED.finditer(text):
        closing, name = match.group(1) == "/", match.group(2)
        if name not in MODALITY_TAGS:
            raise DocumentError(
                f"unknown tag {match.group(0)!r} at character {match.start()}; known tags: "
                + ", ".join(f"<{t}>" for t in MODALITY_TAGS)
                + " (write a literal '<' in prose as '&lt;')"
            )
        if not closing:
            if open_modality is not None:
                raise DocumentError(
                    f"tag <{name}> at character {match.start()} opens inside <{open_modality}> "
                    f"opened at character {open_at}; spans do not nest"
                )
            if match.start() > cursor:
                segments.append(Segment(None, text[cursor : match.start()]))
            open_modality, open_at, cursor = name, match.start(), match.end()
        else:
            if open_modality != name:
                expected = f"</{open_modality}>" if open_modality else "no closing tag"
                raise DocumentError(
                    f"closing tag </{name}> at character {match.start()} but expected {expected}"
                )
            segments.append(Segment(name, text[cursor : match.start()]))
            open_modality, cursor = None, match.end()
    if open_modality is not None:
        raise DocumentError(f"unclosed tag <{open_modality}> opened at character {open_at}")
    if cursor < len(text):
        segments.append(Segment(None, text[cursor:]))
    return segments


def join_segments(segments: list[Segment] | tuple[Segment, ...]) -> str:
    """Inverse of `split_tagged`: write segments back as tagged text."""
    return "".join(
        s.text if s.modality is None else f"<{s.modality}>{s.text}</{s.modality}>" for s in segments
    )


def spans_of(text: str) -> tuple[Span, ...]:
    """The spans of tagged text, with offsets of their content in ``text``."""
    spans = []
    position = 0
    for segment in split_tagged(text):
        if segment.modality is None:
            position += len(segment.text)
        else:
            position += len(segment.modality) + 2
            spans.append(Span(segment.modality, position, position + len(segment.text)))
            position += len(segment.text) + len(segment.modality) + 3
    return tuple(spans)


def content_id(text: str) -> str:
    """The id a document gets when none is given: the first 16 hex digits of sha256(text)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _check_encodable(name: str, value: str | None) -> None:
    """Strings must be encodable as UTF-8 (JSON's ``"\\ud800"`` decodes to a lone surrogate)."""
    if value is None:
        return
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        raise DocumentError(
            f"'{name}' is not valid Unicode: lone surrogate {value[error.start]!r} at character "
            f"{error.start}"
        ) from None


def _freeze(value: Any) -> Any:
    if isinstance(value, Mapping):
        return MappingProxyType({str(k): _freeze(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    return value


def _thaw(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    return value


@dataclass(frozen=True, slots=True, init=False)
class Document:
    """An immutable document: id, tagged text, spans, provenance and metadata.

    >>> d = Document("Ethanol <mol>CCO</mol> boils at <num>78.37</num> C.", source="demo")
    >>> [(s.modality, d.text[s.start:s.end]) for s in d.spans]
    [('mol', 'CCO'), ('num', '78.37')]
    """

    id: str
    text: str
    spans: tuple[Span, ...]
    source: str | None
    license: str | None
    meta: Mapping[str, Any] = field(compare=False)

    def __init__(
        self,
        text: str,
        *,
        id: str | None = None,
        source: str | None = None,
        license: str | None = None,
        meta: Mapping[str, Any] | None = None,
    ):
        if not isinstance(text, str):
            raise DocumentError(f"'text' must be a string, got {type(text).__name__}")
        for name, value in (("id", id), ("source", source), ("license", license)):
            if value is not None and not isinstance(value, str):
                raise DocumentError(f"'{name}' must be a string or absent, got {value!r}")
        if meta is not None and not isinstance(meta, Mapping):
            raise DocumentError(f"'meta' must be an object, got {type(meta).__name__}")
        for name, value in (("text", text), ("id", id), ("source", source), ("license", license)):
            _check_encodable(name, value)
        object.__setattr__(self, "text", text)
        object.__setattr__(self, "spans", spans_of(text))
        object.__setattr__(self, "id", id if id else content_id(text))
        object.__setattr__(self, "source", source)
        object.__setattr__(self, "license", license)
        object.__setattr__(self, "meta", _freeze(meta or {}))

    def __hash__(self) -> int:
        return hash((self.id, self.text, self.source, self.license))

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()

    @property
    def segments(self) -> list[Segment]:
        return split_tagged(self.text)

    def span_text(self, span: Span) -> str:
        return self.text[span.start : span.end]

    def modality_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for span in self.spans:
            counts[span.modality] = counts.get(span.modality, 0) + 1
        return counts

    def replace(self, **changes: Any) -> Document:
        """A new document with some fields changed (the id is kept unless given)."""
        fields = {
            "text": self.text,
            "id": self.id,
            "source": self.source,
            "license": self.license,
            "meta": self.meta,
        }
        fields.update(changes)
        return Document(fields.pop("text"), **fields)

    # --- JSON -------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The JSON Lines interchange form (spans are derived from the text, so not written)."""
        record: dict[str, Any] = {"id": self.id, "text": self.text}
        if self.source is not None:
            record["source"] = self.source
        if self.license is not None:
            record["license"] = self.license
        if self.meta:
            record["meta"] = _thaw(self.meta)
        return record

    def as_dict(self) -> dict[str, Any]:
        """A typed, versioned dict (pymatgen style), for storing a document on its own."""
        return {"@format": FORMAT_NAME, "@version": FORMAT_VERSION, **self.to_dict()}

    @classmethod
    def from_dict(cls, record: Any, *, where: str | None = None) -> Document:
        """Read either form; unknown keys and missing ``text`` are errors naming ``where``."""
        if not isinstance(record, dict):
            raise DocumentError(
                f"expected a JSON object with a 'text' field, got {type(record).__name__}",
                where=where,
            )
        record = dict(record)
        fmt = record.pop("@format", FORMAT_NAME)
        version = record.pop("@version", FORMAT_VERSION)
        # type check: JSON ``true`` and ``1.0`` compare equal to 1 but are not version 1
        if fmt != FORMAT_NAME or type(version) is not int or version != FORMAT_VERSION:
            raise DocumentError(
                f"unsupported document format {fmt!r} version {version!r}; "
                f"this kiban reads {FORMAT_NAME!r} version {FORMAT_VERSION}",
                where=where,
            )
        if "text" not in record:
            raise DocumentError("missing required field 'text'", where=where)
        unknown = set(record) - {"id", "text", "source", "license", "meta"}
        if unknown:
            raise DocumentError(
                f"unknown field(s) {sorted(unknown)}; expected id, text, source, license, meta",
                where=where,
            )
        try:
            return cls(
                record["text"],
                id=record.get("id"),
                source=record.get("source"),
                license=record.get("license"),
                meta=record.get("meta"),
            )
        except DocumentError as error:
            raise DocumentError(error.reason, where=where) from None

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, line: str, *, where: str | None = None) -> Document:
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise DocumentError(
                f"malformed JSON: {error.msg}: column {error.colno}", where=where
            ) from None
        return cls.from_dict(record, where=where)
