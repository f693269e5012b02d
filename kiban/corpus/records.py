"""The record types every corpus stage passes along: what a reader yields (`RawRecord`, or a
`Reject` naming file and line) and the names of the properties a source may ask for.

They live here, apart from the readers and the cleaner, so that both import them and neither
imports the other (the readers validate property names; the cleaner computes them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: Properties a CSV/SDF source can ask to compute from its molecule column (the functions are
#: `kiban.chem.DESCRIPTORS`, keyed by exactly these names).
PROPERTY_NAMES = ("qed", "logp", "mw", "tpsa", "sa")


@dataclass(frozen=True, slots=True)
class RawRecord:
    """One record as read: either a JSON line or fields to render with a template."""

    where: str
    source: str
    license: str | None
    line: str | None = None  # a JSON line (jsonl sources)
    fields: dict[str, Any] | None = None
    template: str | None = None
    properties: tuple[str, ...] = ()
    mol_column: str | None = None
    meta_columns: tuple[str, ...] = ()  # fields kept in the document's meta, not rendered
    id_column: str | None = None  # the field kept in meta as ``source_id``


@dataclass(frozen=True, slots=True)
class Reject:
    where: str
    source: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"where": self.where, "source": self.source, "reason": self.reason}
