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
import json
import lzma
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from kiban.corpus.records import PROPERTY_NAMES, RawRecord, Reject

__all__ = ["FORMATS", "RawRecord", "Reject", "SourceSpec", "read_source"]

FORMATS = ("jsonl", "csv", "sdf", "structures", "cif", "text")


@dataclass(frozen=True, kw_only=True)
class SourceSpec:
    """One input of a corpus: a file (or a file inside an installed package) and how to read it.

    ``template`` is a `str.format` template over the record's fields (CSV columns, SD properties,
    structure-table columns, computed ``properties``) producing tagged text, e.g.
    ``"<mol>{smiles}</mol> has logS <num>{target}</num>."``.
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

    def __post_init__(self):
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


def _default_template(columns: list[str], modalities: dict[str, str]) -> tuple[str, dict]:
    if not modalities:
        modalities = {c: "mol" for c in columns if c.lower() in ("smiles", "canonical_smiles")}
    parts = []
    for column in columns:
        modality = modalities.get(column)
        if modality:
            parts.append(f"<{modality}>{{{column}}}</{modality}>")
        elif column.lower() not in ("split", "id", "index", "name"):
            parts.append(f"{column} <num>{{{column}}}</num>")
    return " ".join(parts), modalities


def _template_and_mol_column(spec: SourceSpec, columns: list[str]) -> tuple[str, str | None]:
    template, modalities = (
        (spec.template, spec.columns) if spec.template else _default_template(columns, spec.columns)
    )
    mol_columns = [c for c, m in modalities.items() if m == "mol"]
    if not mol_columns:
        mol_columns = [c for c in columns if c.lower() in ("smiles", "canonical_smiles")]
    if spec.properties and not mol_columns:
        raise ValueError(
            f"source {spec.path!r}: properties {list(spec.properties)} need a "
            'molecule column (columns = {{COLUMN = "mol"}})'
        )
    return template, (mol_columns[0] if mol_columns else None)


def _read_csv(spec: SourceSpec, path: Path) -> Iterator[RawRecord | Reject]:
    """CSV read as the csv module reads it (a quoted field may hold line breaks); a record's
    place is the line it starts on."""
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
    header: list[str] | None = None
    template, mol_column = "", None
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
        if not any(field.strip() for field in row):
            continue
        if header is None:
            header = row
            template, mol_column = _template_and_mol_column(spec, header)
            missing = [c for c in spec.columns if c not in header]
            if missing:
                raise ValueError(
                    f"{path}:{numbers[0]}: columns {missing} named in the source "
                    f"spec are not in the header {header}"
                )
            continue
        where = f"{path}:{numbers[0]}"
        if len(row) != len(header):
            yield Reject(
                where,
                spec.label,
                f"expected {len(header)} fields ({', '.join(header)}), got {len(row)}",
            )
            continue
        yield RawRecord(
            where,
            spec.label,
            spec.license,
            fields=dict(zip(header, row)),
            template=template,
            properties=spec.properties,
            mol_column=mol_column,
        )
    yield from pending


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
