"""An instrument from a Python function: ``target = "package.module:function"``.

The function takes the proposal's params (a flat dict) plus the config's ``options`` as keyword
arguments and returns ``{measurement: number}`` (or ``(values, meta)``). It runs in ``workers``
persistent processes (``0``: in this process, without timeouts), so it must be importable by
name; ``path`` (a folder) is put in front of ``sys.path`` here and in the workers, for a module
that sits next to a campaign rather than in an installed package.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kiban.lab.instruments.base import (
    Instrument,
    InstrumentError,
    InstrumentOptions,
    Outcome,
    ProcessRunner,
    resolve_target,
)
from kiban.lab.options import require
from kiban.lab.space import Space


@dataclass(frozen=True, kw_only=True)
class FunctionOptions(InstrumentOptions):
    """``target``: ``"package.module:function"``; ``options``: keyword arguments it is given;
    ``workers`` processes (0: this process, no timeout); ``timeout_s`` per experiment;
    ``path``: a folder put in front of ``sys.path``; ``measures``: what it returns (default:
    the objectives)."""

    example = {"target": "package.module:function"}
    target: str
    options: Mapping[str, object] = field(default_factory=dict)
    workers: int = 1
    timeout_s: float | None = None
    path: str | None = None
    measures: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        require(self.workers >= 0, f"workers must be an integer >= 0, got {self.workers!r}")
        require(
            self.timeout_s is None or self.timeout_s > 0,
            f"timeout_s must be a number > 0, got {self.timeout_s!r}",
        )


class FunctionInstrument(Instrument):
    kind = "function"
    Options = FunctionOptions

    @classmethod
    def from_options(cls, options: FunctionOptions, space: Space) -> FunctionInstrument:
        measures = options.measures or tuple(o.name for o in space.objectives)
        return cls(
            options.target,
            list(measures),
            options=options.options,
            workers=options.workers,
            timeout_s=options.timeout_s,
            path=options.path,
        )

    def __init__(
        self,
        target: str,
        measures: Sequence[str],
        *,
        options: Mapping[str, Any] | None = None,
        workers: int = 1,
        timeout_s: float | None = None,
        path: str | Path | None = None,
    ) -> None:
        if not measures:
            raise InstrumentError(
                "[instrument] a function instrument needs `measures` (or objectives in the space)"
            )
        if options is not None and not isinstance(options, Mapping):
            raise InstrumentError(
                f"[instrument] options must be a table of keyword arguments, got {options!r}"
            )
        sys_path: list[str] = []
        if path is not None:
            folder = Path(path).resolve()
            if not folder.is_dir():
                raise InstrumentError(f"[instrument] path {str(path)!r} is not a folder")
            sys_path.append(str(folder))
        import sys

        for p in reversed(sys_path):  # also here: check the target now, not in a worker
            if p not in sys.path:
                sys.path.insert(0, p)
        resolve_target(target)
        self.target = target
        self._measures = tuple(measures)
        self.options = dict(options or {})
        self.runner = ProcessRunner(
            target,
            self.options,
            workers=workers,
            timeout_s=timeout_s,
            sys_path=sys_path,
            measures=self._measures,
            meta={"instrument": "function", "target": target},
            name=f"function {target}",
        )

    def measures(self) -> tuple[str, ...]:
        return self._measures

    def run_batch(
        self, jobs: list[tuple[int, dict]], timeout_s: float | None = None
    ) -> Iterator[Outcome]:
        return self.runner.run(jobs, timeout_s)

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "target": self.target,
            "options": self.options,
            "workers": self.runner.workers,
            "timeout_s": self.runner.timeout_s,
            "path": self.runner.sys_path[0] if self.runner.sys_path else None,
        }

    def close(self) -> None:
        self.runner.close()
