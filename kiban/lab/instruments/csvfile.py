"""The human-in-the-loop instrument: proposals go out as rows of a CSV that a person (or a lab's
own software) fills in; ``kiban lab record`` reads the filled rows back.

The export has ``proposal_id``, one column per parameter key (composition components spelled
out) and one empty column per objective. Each export merges into the existing file: rows already
there are kept as they are (a person may have typed results into them, or added columns such as
notes), rows for new proposal ids are added, and the file is rewritten atomically (a temporary
file in the same folder, fsync, ``os.replace``) so that a crash or a full disk never leaves half
a file.
"""

from __future__ import annotations

import csv
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kiban.lab.instruments.base import Instrument, InstrumentError, InstrumentOptions, Outcome
from kiban.lab.space import Space

ID_COLUMN = "proposal_id"


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return repr(value)  # shortest text that reads back as the same float
    return "" if value is None else str(value)


def read_export(path: str | Path) -> tuple[list[str], list[dict[str, str]]]:
    """Header and rows of an export (``[], []`` when the file does not exist)."""
    path = Path(path)
    if not path.exists():
        return [], []
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = list(reader.fieldnames or [])
        if header and ID_COLUMN not in header:
            raise InstrumentError(
                f"{path}: an export needs a {ID_COLUMN!r} column, the header "
                f"is {header}; move the file away or fix its header"
            )
        rows = []
        for line, row in enumerate(reader, start=2):
            if None in row:
                raise InstrumentError(
                    f"{path}, line {line}: more cells than the header has columns ({len(header)})"
                )
            rows.append({k: (v or "") for k, v in row.items()})
    return header, rows


def atomic_write_csv(path: str | Path, header: Sequence[str], rows: list[dict[str, str]]) -> None:
    """Write a CSV all at once or not at all."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(header), extrasaction="raise")
            writer.writeheader()
            writer.writerows(rows)
            f.flush()
            os.fsync(f.fileno())
        if path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o777)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _order(value: str) -> tuple[int, Any]:
    try:
        return 0, int(value)
    except ValueError:
        return 1, value


def export_proposals(
    path: str | Path,
    jobs: list[tuple[int, dict]],
    keys: Sequence[str],
    objectives: Sequence[str],
    *,
    extra: dict[int, dict[str, str]] | None = None,
) -> int:
    """Merge ``jobs`` into the export at ``path``; returns the number of rows added.
    ``extra``: more cells per job id (e.g. the model's prediction), after the objectives."""
    header, rows = read_export(path)
    known = {r[ID_COLUMN] for r in rows}
    extra = extra or {}
    columns = [ID_COLUMN, *keys, *objectives]
    for cells in extra.values():
        columns += [c for c in cells if c not in columns]
    for _, params in jobs:  # keys outside the space still get a column, not lost
        for key in params:
            if key not in columns:
                columns.append(key)
    header = columns + [c for c in header if c not in columns]
    added = 0
    for job_id, params in jobs:
        pid = str(int(job_id))
        if pid in known:
            continue  # already exported: keep that row (it may hold results)
        row = {c: "" for c in header}
        row[ID_COLUMN] = pid
        row.update({k: _cell(v) for k, v in params.items()})
        row.update(extra.get(job_id, {}))
        rows.append(row)
        known.add(pid)
        added += 1
    rows = [{c: r.get(c, "") for c in header} for r in rows]
    rows.sort(key=lambda r: _order(r[ID_COLUMN]))
    atomic_write_csv(path, header, rows)
    return added


@dataclass(frozen=True, kw_only=True)
class CsvOptions(InstrumentOptions):
    """``path``: the CSV the proposals are exported to (relative: beside the campaign
    config)."""

    example = {"path": "todo.csv"}
    path: str


class CsvInstrument(Instrument):
    """Exports proposals to ``path`` for a person to run; yields no outcomes."""

    kind = "csv"
    Options = CsvOptions
    asynchronous = True

    @classmethod
    def from_options(cls, options: CsvOptions, space: Space) -> CsvInstrument:
        return cls(options.path, space.keys, [o.name for o in space.objectives])

    def __init__(self, path: str | Path, keys: Sequence[str], objectives: Sequence[str]) -> None:
        self.path = Path(path)
        if self.path.exists() and not self.path.is_file():
            raise InstrumentError(f"[instrument] path {str(self.path)!r} is not a file")
        self.keys = tuple(keys)
        self.objectives = tuple(objectives)
        self.last_added = 0

    def measures(self) -> tuple[str, ...]:
        return self.objectives

    def run_batch(
        self,
        jobs: list[tuple[int, dict]],
        timeout_s: float | None = None,
        *,
        extra: dict[int, dict[str, str]] | None = None,
    ) -> Iterator[Outcome]:
        """``extra``: per job id the cells after the objectives (candidate IDs, the model's
        prediction), as `lab propose --out` writes them."""
        # eager on purpose: the export must happen even if nobody iterates the result
        self.last_added = export_proposals(self.path, jobs, self.keys, self.objectives, extra=extra)
        return iter(())

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "path": str(self.path),
            "columns": [ID_COLUMN, *self.keys, *self.objectives],
        }
