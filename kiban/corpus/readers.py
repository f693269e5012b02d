"""Readers: one per file format, each turning a source into a stream of raw records.

A reader does the cheap part (split a file into records, keep file:line) in the main process;
parsing JSON, filling templates, computing properties and canonicalising spans happen in worker
processes (`kiban.corpus.clean`). A record that cannot even be read (bad UTF-8, a truncated gzip,
an empty file) becomes a `Reject` naming file and line; reading goes on.
"""

from __future__ import annotations

import csv
import gzip
import io
import itertools
import json
import lzma
import math
import string
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from kiban.corpus.records import PROPERTY_NAMES, RawRecord, Reject
from kiban.errors import did_you_mean

__all__ = ["FORMATS", "RawRecord", "Reject", "SourceSpec", "check_source", "read_source"]

FORMATS = ("jsonl", "csv", "sdf", "structures", "cif", "text")


@dataclass(frozen=True, kw_only=True)
class SourceSpec:
    """One input of a corpus: a file (or a file inside an installed package) and how to read it.

    ``template`` is a `str.format` template over the record's fields (CSV columns, SD properties,
    structure-table columns, computed ``properties``) producing tagged text, e.g.
    ``"<mol>{smiles}</mol> has logS <num>{target}</num>."``. ``smiles_column`` is a shorthand
    for ``columns = {COLUMN = "mol"}``; ``id_column`` names the column whose value becomes the
    document's source id (kept in its ``meta`` as ``source_id``, never rendered into the text).
    """

    path: str
    format: str = "auto"
    name: str | None = None
    license: str | None = None
    package: str | None = None  # resolve ``path`` inside this installed package
    template: str | None = None
    columns: dict[str, str] = field(default_factory=dict)  # column -> modality
    properties: tuple[str, ...] = ()  # RDKit properties computed from the first mol column
    limit: int | None = None  # read only the first N records
    smiles_column: str | None = None
    id_column: str | None = None

    def __post_init__(self):
        if self.smiles_column is not None:
            modality = self.columns.get(self.smiles_column, "mol")
            if modality != "mol":
                raise ValueError(
                    f"source {self.path!r}: smiles_column {self.smiles_column!r} is given "
                    f"modality {modality!r} in columns; a SMILES column is 'mol'"
                )
            object.__setattr__(self, "columns", {**self.columns, self.smiles_column: "mol"})
        if self.format not in ("auto", *FORMATS):
            raise ValueError(
                f"source {self.path!r}: format must be one of auto, "
                f"{', '.join(FORMATS)}; got {self.format!r}"
            )
        unknown = [p for p in self.properties if p not in PROPERTY_NAMES]
        if unknown:
            raise ValueError(
                f"source {self.path!r}: unknown properties {unknown}; "
                f"known: {', '.join(PROPERTY_NAMES)}"
            )
        if self.limit is not None and self.limit < 0:
            raise ValueError(f"source {self.path!r}: limit must be >= 0, got {self.limit}")

    @property
    def resolved_path(self) -> Path:
        if self.package is None:
            return Path(self.path)
        from kiban.data import package_file

        return package_file(self.package, self.path)

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        name = Path(self.path).name
        for suffix in (".gz", ".xz", ".jsonl", ".json", ".csv", ".sdf", ".cif", ".txt"):
            name = name.removesuffix(suffix)
        return name

    @property
    def file_format(self) -> str:
        if self.format != "auto":
            return self.format
        name = self.path.lower().removesuffix(".gz").removesuffix(".xz")
        for ext, fmt in (
            (".jsonl", "jsonl"),
            (".ndjson", "jsonl"),
            (".csv", "csv"),
            (".sdf", "sdf"),
            (".cif", "cif"),
            (".json", "structures"),
            (".txt", "text"),
        ):
            if name.endswith(ext):
                return fmt
        raise ValueError(
            f"cannot tell the format of {self.path!r} from its name; "
            f"give format = one of {', '.join(FORMATS)}"
        )


def _open_binary(path: Path) -> io.BufferedIOBase:
    if path.suffix == ".gz":
        return gzip.open(path, "rb")
    if path.suffix == ".xz":
        return lzma.open(path, "rb")
    return open(path, "rb")


#: The longest line a reader takes (bytes, line end included). A longer one is a reject naming
#: its file:line, read past in blocks of this size: a 50 MB single-line JSON document used to
#: take 6.6 GB (the tokenizer's working memory grows ~100x the text) and now costs at most this.
MAX_LINE_BYTES = 4 * 2**20


def _lines(path: Path, source: str) -> Iterator[tuple[int, str] | Reject]:
    """Numbered text lines; bad UTF-8, lines over `MAX_LINE_BYTES` and truncated compressed
    files become rejects."""
    number = 0
    limit = MAX_LINE_BYTES
    try:
        with _open_binary(path) as handle:
            while raw := handle.readline(limit + 1):
                number += 1
                if len(raw) > limit and not raw.endswith(b"\n"):
                    length = len(raw)
                    while (rest := handle.readline(limit)) and not rest.endswith(b"\n"):
                        length += len(rest)
                    length += len(rest)
                    yield Reject(
                        f"{path}:{number}",
                        source,
                        f"line of {length:,} bytes is longer than the limit of "
                        f"{limit:,} bytes (kiban.corpus.readers.MAX_LINE_BYTES); split "
                        "the record",
                    )
                    continue
                if number == 1:
                    raw = raw.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte-order mark (Excel)
                try:
                    yield number, raw.decode("utf-8").rstrip("\r\n")
                except UnicodeDecodeError as error:
                    yield Reject(
                        f"{path}:{number}",
                        source,
                        f"not valid UTF-8: byte 0x{raw[error.start]:02x} at column "
                        f"{error.start + 1}",
                    )
    except (EOFError, gzip.BadGzipFile, lzma.LZMAError, zlib.error) as error:
        yield Reject(
            f"{path}:{number + 1}",
            source,
            f"compressed file is truncated or corrupt after line {number} ({error}); "
            "records before it were read",
        )
        return  # one reject for the file, not a second one calling it empty
    if number == 0:
        yield Reject(f"{path}", source, "empty file: no records")


def read_source(spec: SourceSpec) -> Iterator[RawRecord | Reject]:
    """All records of one source, in file order, up to ``spec.limit``."""
    path = spec.resolved_path
    if path.is_dir():
        raise IsADirectoryError(
            f"source {path} is a directory, not a file: name the files in it (e.g. {path}/*.jsonl)"
        )
    if not path.is_file():
        raise FileNotFoundError(f"source file {path} does not exist")
    reader = {
        "jsonl": _read_jsonl,
        "csv": _read_csv,
        "sdf": _read_sdf,
        "structures": _read_structures,
        "cif": _read_cif,
        "text": _read_text,
    }[spec.file_format]
    count = 0
    for item in reader(spec, path):
        if spec.limit is not None and isinstance(item, RawRecord) and count >= spec.limit:
            return
        if isinstance(item, RawRecord):
            count += 1
        yield item


def _read_jsonl(spec: SourceSpec, path: Path) -> Iterator[RawRecord | Reject]:
    for item in _lines(path, spec.label):
        if isinstance(item, Reject):
            yield item
            continue
        number, line = item
        if line.strip():
            yield RawRecord(f"{path}:{number}", spec.label, spec.license, line=line)


def _read_text(spec: SourceSpec, path: Path) -> Iterator[RawRecord | Reject]:
    """Plain text: one document per non-empty line (already tagged text)."""
    for item in _lines(path, spec.label):
        if isinstance(item, Reject):
            yield item
        elif item[1].strip():
            yield RawRecord(
                f"{path}:{item[0]}",
                spec.label,
                spec.license,
                fields={"text": item[1]},
                template="{text}",
            )


#: Columns kept as metadata whatever their values hold (case-insensitive names).
META_COLUMN_NAMES = ("split", "id", "index", "name")
#: Rows the default rendering reads before it tells numeric columns from text ones.
SAMPLE_ROWS = 1000
_SMILES_NAMES = ("smiles", "canonical_smiles")


def _is_number(value: str) -> bool:
    try:
        return math.isfinite(float(value))
    except ValueError:
        return False


@dataclass(frozen=True)
class _Rendering:
    """How a CSV source becomes documents: a template (None: the default rendering, one part per
    span and number column), the fields kept as metadata, the molecule column."""

    template: str | None
    spans: dict[str, str]  # column -> modality
    numbers: tuple[str, ...]  # columns rendered as ``NAME <num>VALUE</num>`` by default
    meta_columns: tuple[str, ...]
    mol_column: str | None

    def row_template(self, fields: dict[str, str], header: list[str]) -> str:
        if self.template is not None:
            return self.template
        parts = []
        for column in header:
            if column in self.spans:
                modality = self.spans[column]
                parts.append(f"<{modality}>{{{column}}}</{modality}>")
            elif column in self.numbers and fields[column].strip():  # an empty cell is left out
                parts.append(f"{column} <num>{{{column}}}</num>")
        return " ".join(parts)


def _rendering(spec: SourceSpec, header: list[str], sample: list[list[str]]) -> _Rendering:
    """Decide the rendering of a CSV source from its header and its first rows: with a template,
    as written; without, molecule (and other span) columns as spans, columns whose values are all
    numbers as ``NAME <num>VALUE</num>``, and ID-like and text columns kept as metadata."""
    spans = dict(spec.columns) or {c: "mol" for c in header if c.lower() in _SMILES_NAMES}
    mol_columns = [c for c, m in spans.items() if m == "mol"]
    if spec.properties and not mol_columns:
        raise ValueError(
            f"source {spec.path!r}: properties {list(spec.properties)} need a "
            'molecule column (smiles_column = "COLUMN", or columns = {COLUMN = "mol"})'
        )
    mol_column = mol_columns[0] if mol_columns else None
    if spec.template is not None:
        return _Rendering(spec.template, spans, (), (), mol_column)
    numbers, meta = [], []
    for position, column in enumerate(header):
        if column in spans or column == spec.id_column:
            continue
        values = [row[position] for row in sample if row[position].strip()]
        if column.lower() not in META_COLUMN_NAMES and values and all(map(_is_number, values)):
            numbers.append(column)
        else:
            meta.append(column)
    return _Rendering(None, spans, tuple(numbers), tuple(meta), mol_column)


def _template_fields(template: str) -> list[str]:
    """The field names a `str.format` template uses (``{mw:.3g}`` -> ``mw``)."""
    names = []
    for _, name, _, _ in string.Formatter().parse(template):
        if name is not None and name not in names:
            names.append(name)
    return names


def _check_columns(spec: SourceSpec, where: str, available: list[str], computed=()) -> None:
    """A template, id column or span column naming a field the source lacks is an error that
    lists the fields it has."""
    known = [*available, *computed]
    named = [(f"columns key {c!r}", c) for c in spec.columns]
    if spec.id_column is not None:
        named.append((f"id_column {spec.id_column!r}", spec.id_column))
    for name in _template_fields(spec.template or ""):
        # as the renderer looks fields up: whole, else up to an attribute or index
        if name not in known:
            named.append((f"template field {{{name}}}", name.split(".")[0].split("[")[0]))
    for what, name in named:
        if name not in known:
            raise ValueError(
                f"{where}: {what} is not a column of the source{did_you_mean(name, known)}; "
                f"columns: {', '.join(available)}"
                + (f" (computed: {', '.join(computed)})" if computed else "")
                + (
                    f"; add properties = [{name!r}] to compute it with RDKit"
                    if name in PROPERTY_NAMES and name not in computed
                    else ""
                )
            )


def check_source(spec: SourceSpec) -> None:
    """Check, before anything is built, that the columns a CSV or SDF source names (template
    fields, ``id_column``, ``columns``/``smiles_column``) exist: the header of a CSV, the data
    fields of the first `SAMPLE_ROWS` records of an SD file."""
    fmt = spec.file_format
    if fmt == "csv":
        header = _csv_header(spec)
        if header is not None:
            _check_columns(spec, f"{spec.resolved_path}:1", header, spec.properties)
    elif fmt == "sdf":
        names: list[str] = []
        for count, record in enumerate(_read_sdf(spec, spec.resolved_path)):
            if count == SAMPLE_ROWS:
                break
            if isinstance(record, RawRecord):
                names += [n for n in record.fields if n not in names and n != "molblock"]
        _check_columns(
            spec, str(spec.resolved_path), names, ("smiles", "molblock", *spec.properties)
        )


def _csv_header(spec: SourceSpec) -> list[str] | None:
    path = spec.resolved_path
    for item in _csv_rows(spec, path):
        if isinstance(item, tuple):
            return item[1]
    return None


def _csv_rows(spec: SourceSpec, path: Path) -> Iterator[tuple[int, list[str]] | Reject]:
    """Non-empty CSV rows with the line each starts on, as the csv module reads them (a quoted
    field may hold line breaks); unreadable lines and malformed rows become rejects."""
    pending: list[Reject] = []  # lines that could not be read, reported in file order
    numbers: list[int] = []  # the lines of the record being parsed

    def lines() -> Iterator[str]:
        for item in _lines(path, spec.label):
            if isinstance(item, Reject):
                pending.append(item)
            else:
                numbers.append(item[0])
                yield item[1] + "\n"  # the line end, so that csv keeps it inside quotes

    reader = csv.reader(lines())
    while True:
        numbers.clear()
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as error:  # e.g. a field past csv's size limit
            yield from pending
            pending.clear()
            yield Reject(
                f"{path}:{numbers[0] if numbers else '?'}", spec.label, f"malformed CSV: {error}"
            )
            continue
        yield from pending
        pending.clear()
        if any(field.strip() for field in row):
            yield numbers[0], row
    yield from pending


def _read_csv(spec: SourceSpec, path: Path) -> Iterator[RawRecord | Reject]:
    """CSV rows rendered by the source's template, or by the default rendering decided from the
    first `SAMPLE_ROWS` rows; a record's place is the line it starts on."""
    rows = _csv_rows(spec, path)
    header: list[str] | None = None
    for item in rows:
        if isinstance(item, Reject):
            yield item
        else:
            header = item[1]
            # the template is checked by `check_source` before a build; a reader of its own
            # (SFT data) checks it with its own hints
            _check_columns(
                replace(spec, template=None), f"{path}:{item[0]}", header, spec.properties
            )
            break
    if header is None:
        return
    buffered: list[tuple[int, list[str]] | Reject] = []
    sample: list[list[str]] = []
    if spec.template is None:
        for item in rows:
            buffered.append(item)
            if isinstance(item, tuple) and len(item[1]) == len(header):
                sample.append(item[1])
                if len(sample) == SAMPLE_ROWS:
                    break
    rendering = _rendering(spec, header, sample)
    for item in itertools.chain(buffered, rows):
        if isinstance(item, Reject):
            yield item
            continue
        number, row = item
        where = f"{path}:{number}"
        if len(row) != len(header):
            yield Reject(
                where,
                spec.label,
                f"expected {len(header)} fields ({', '.join(header)}), got {len(row)}",
            )
            continue
        fields = dict(zip(header, row))
        yield RawRecord(
            where,
            spec.label,
            spec.license,
            fields=fields,
            template=rendering.row_template(fields, header),
            properties=spec.properties,
            mol_column=rendering.mol_column,
            meta_columns=rendering.meta_columns,
            id_column=spec.id_column,
        )


def _read_sdf(spec: SourceSpec, path: Path) -> Iterator[RawRecord | Reject]:
    """SD files: each molecule block's MOL text plus its ``> <name>`` data fields."""
    block: list[str] = []
    start = 1
    for item in _lines(path, spec.label):
        if isinstance(item, Reject):
            yield item
            continue
        number, line = item
        if line.strip() == "$$$$":
            yield _sdf_record(spec, path, start, block)
            block, start = [], number + 1
        else:
            block.append(line)
    if any(line.strip() for line in block):
        yield Reject(f"{path}:{start}", spec.label, "SD record not terminated by '$$$$'")


def _sdf_record(spec: SourceSpec, path: Path, start: int, block: list[str]) -> RawRecord:
    molblock, fields, name = [], {}, None
    lines = iter(block)
    for line in lines:
        if line.startswith(">"):
            name = line.split("<", 1)[1].split(">", 1)[0] if "<" in line else line[1:].strip()
            break
        molblock.append(line)
    for line in lines:
        if line.startswith(">") and "<" in line:
            name = line.split("<", 1)[1].split(">", 1)[0]
        elif line.strip() and name is not None:
            fields[name] = (fields[name] + "\n" + line) if name in fields else line
    data_fields = [name for name in fields if name != spec.id_column]
    fields["molblock"] = "\n".join(molblock)
    template = spec.template or "<mol>{smiles}</mol>"
    return RawRecord(
        f"{path}:{start}",
        spec.label,
        spec.license,
        fields=fields,
        template=template,
        properties=spec.properties,
        mol_column="smiles",
        # without a template the data fields are kept as metadata, not dropped
        meta_columns=() if spec.template else tuple(data_fields),
        id_column=spec.id_column,
    )


def _read_cif(spec: SourceSpec, path: Path) -> Iterator[RawRecord | Reject]:
    text_lines = []
    for item in _lines(path, spec.label):
        if isinstance(item, Reject):
            yield item
            return
        text_lines.append(item[1])
    yield RawRecord(
        f"{path}:1",
        spec.label,
        spec.license,
        fields={"cif": "\n".join(text_lines)},
        template=spec.template or "<crystal>{cif}</crystal>",
    )


def _read_structures(spec: SourceSpec, path: Path) -> Iterator[RawRecord | Reject]:
    """A JSON table of pymatgen structures: a list of records, or pandas' column-oriented dict
    (``{"structure": {"0": {...}}, "n": {"0": 1.75}}``, as in matbench files)."""
    try:
        with _open_binary(path) as handle:
            data = json.loads(handle.read().decode("utf-8"))
    except (
        EOFError,
        gzip.BadGzipFile,
        zlib.error,
        UnicodeDecodeError,
        json.JSONDecodeError,
    ) as error:
        yield Reject(f"{path}", spec.label, f"unreadable structure table: {error}")
        return
    if isinstance(data, dict) and "structure" in data and isinstance(data["structure"], dict):
        keys = list(data["structure"])
        rows = ({column: values.get(key) for column, values in data.items()} for key in keys)
    elif isinstance(data, list):
        keys = [str(i) for i in range(len(data))]
        rows = (
            row if isinstance(row, dict) and "structure" in row else {"structure": row}
            for row in data
        )
    else:
        yield Reject(
            f"{path}",
            spec.label,
            "expected a list of records or a column-oriented table with a 'structure' column",
        )
        return
    template = spec.template or "<crystal>{structure}</crystal>"
    for key, row in zip(keys, rows):
        fields = {k: (json.dumps(v) if k == "structure" else v) for k, v in row.items()}
        yield RawRecord(f"{path}#{key}", spec.label, spec.license, fields=fields, template=template)
