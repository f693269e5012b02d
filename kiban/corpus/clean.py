"""Worker-side cleaning: raw records -> canonical `Document`s (or rejects naming file:line).

Canonicalisation is what makes deduplication meaningful: every span is rewritten by its codec
(``<mol>OCC</mol>`` -> ``<mol>CCO</mol>``, a CIF -> kiban crystal text) and prose is put in Unicode
NFC, so two spellings of the same content become the same text.
"""

from __future__ import annotations

import json
import string
import unicodedata
from dataclasses import dataclass, field

from kiban.corpus.records import RawRecord, Reject
from kiban.document import Document, DocumentError, Segment, join_segments, split_tagged
from kiban.modalities import CodecError, get_codec


@dataclass
class CleanResult:
    """What a worker returns for one chunk of records, in record order."""

    documents: list[tuple[str, Document]] = field(default_factory=list)  # (where, document)
    rejects: list[Reject] = field(default_factory=list)


def canonical_text(text: str) -> str:
    """Tagged text with every span canonicalised by its codec and prose in NFC.

    Raises `DocumentError` for bad tags or invalid span content; the message names the span
    (its number and modality) and the codec's reason.
    """
    segments = []
    span_number = 0
    for segment in split_tagged(text):
        if segment.modality is None:
            segments.append(Segment(None, unicodedata.normalize("NFC", segment.text)))
            continue
        span_number += 1
        try:
            canonical = get_codec(segment.modality).canonical(segment.text)
        except CodecError as error:
            raise DocumentError(f"span {span_number} <{segment.modality}>: {error}") from None
        segments.append(Segment(segment.modality, canonical))
    return join_segments(segments)


def _render(record: RawRecord) -> str:
    fields = dict(record.fields or {})
    if "molblock" in fields and "smiles" not in fields:
        fields["smiles"] = _molblock_smiles(fields["molblock"])
    if record.properties:
        smiles = fields.get(record.mol_column or "", "")
        mol = get_codec("mol").parse(str(smiles))
        from kiban.chem import DESCRIPTORS  # RDKit only when a record computes properties
        from kiban.modalities.number import Quantity

        for name in record.properties:
            fields[name] = Quantity.from_float(DESCRIPTORS[name](mol)).text
    for name, value in fields.items():
        if value is None or (isinstance(value, str) and not value.strip()):
            if "{" + name + "}" in (record.template or ""):
                raise DocumentError(f"field {name!r} is empty")
    try:
        return _TEMPLATE_FORMATTER.vformat(record.template, (), fields)
    except KeyError as error:
        raise DocumentError(
            f"template names field {error.args[0]!r}, which the record lacks; "
            f"fields: {', '.join(fields)}"
        ) from None
    except (AttributeError, IndexError, TypeError) as error:  # e.g. "{mw.err}" on a str
        raise DocumentError(
            f"cannot fill the template {record.template!r}: {type(error).__name__}: {error}"
        ) from None


class _TemplateFormatter(string.Formatter):
    """`str.format_map`, except that a field name that is a key as written is looked up whole, so
    that columns named like ``mw.err`` or ``y[1]`` (which format would read as attribute and item
    access) fill the default template."""

    def get_field(self, field_name, args, kwargs):
        if field_name in kwargs:
            return kwargs[field_name], field_name
        return super().get_field(field_name, args, kwargs)


_TEMPLATE_FORMATTER = _TemplateFormatter()


def _molblock_smiles(molblock: str) -> str:
    from rdkit import Chem, rdBase

    from kiban.chem import canonical_smiles

    with rdBase.CaptureErrorLog() as capture:
        mol = Chem.MolFromMolBlock(molblock)
    if mol is None:
        reason = capture.messages.strip().splitlines()
        raise CodecError(
            "mol",
            molblock.splitlines()[0] if molblock else "",
            "RDKit could not read the MOL block"
            + (f": {reason[-1].split('] ', 1)[-1]}" if reason else ""),
        )
    return canonical_smiles(mol)


def clean_record(record: RawRecord) -> Document:
    """One raw record -> a canonical document (raises DocumentError / CodecError)."""
    if record.line is not None:
        try:
            obj = json.loads(record.line)
        except json.JSONDecodeError as error:
            # json's messages end where a position goes ("... starting at"), as in str(error)
            raise DocumentError(f"malformed JSON: {error.msg}: column {error.colno}") from None
        raw = Document.from_dict(obj)
        source = raw.source or record.source
        license_ = raw.license or record.license
        text, given_id, meta = raw.text, obj.get("id"), raw.meta
    else:
        text, given_id, meta = _render(record), None, _record_meta(record)
        source, license_ = record.source, record.license
    return Document(canonical_text(text), id=given_id, source=source, license=license_, meta=meta)


def _record_meta(record: RawRecord) -> dict[str, str] | None:
    """The fields a record keeps as metadata (ID and text columns, SD properties) and its source
    id; None when it keeps none."""
    fields = record.fields or {}
    meta = {
        name: fields[name]
        for name in record.meta_columns
        if fields.get(name) is not None and str(fields[name]).strip()
    }
    if record.id_column is not None:
        source_id = fields.get(record.id_column)
        if source_id is None or not str(source_id).strip():
            raise DocumentError(f"id column {record.id_column!r} is empty")
        meta["source_id"] = str(source_id).strip()
    return meta or None


def clean_records(records: list[RawRecord | Reject]) -> CleanResult:
    """Clean a chunk; every failure becomes a reject with file:line and the reason."""
    result = CleanResult()
    for record in records:
        if isinstance(record, Reject):
            result.rejects.append(record)
            continue
        try:
            result.documents.append((record.where, clean_record(record)))
        except (DocumentError, CodecError) as error:
            reason = error.reason if isinstance(error, DocumentError) else str(error)
            result.rejects.append(Reject(record.where, record.source, reason))
        except ValueError as error:  # e.g. a number the template put in a <num> span
            result.rejects.append(Reject(record.where, record.source, str(error)))
    return result
