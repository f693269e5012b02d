"""The closed loop: propose → commit → run → record → learn, resumable at every step.

``run_campaign`` runs until the campaign holds ``budget`` proposals in total (a rerun continues to
the same total). Each batch is committed as ``pending``, then ``running``, before the instrument
sees it; each outcome is committed as it arrives. ``record_csv`` imports results measured
elsewhere (the human-in-the-loop path); a file naming unknown proposals is refused whole.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kiban.lab.space import CampaignConfig, Objective, Space, load_config
from kiban.lab.store import Proposal, Store, StoreError

#: Instrument config keys the campaign itself reads, for every kind (passed on to the kinds
#: whose options have them).
CAMPAIGN_INSTRUMENT_KEYS = ("timeout_s",)


class RecordError(ValueError):
    """A results file refused whole (the campaign is unchanged)."""


# --------------------------------------------------------------------------------------------
# set-up


def init_campaign(config_path: str | Path, db: str | Path) -> Store:
    """Create the campaign database (or open it if it holds the same config), after checking
    that its instrument and proposer can be built (an unknown dataset, option or file is an
    error now, not at the first `run`)."""
    config = load_config(config_path)
    check_campaign(config, where=str(config_path))
    return Store.create(db, config)


def check_campaign(config: CampaignConfig, *, where: str = "campaign config") -> None:
    """Build the campaign's instrument and proposer once (then let them go): every option,
    dataset, file and target they need is checked; errors name ``where`` (the config file)."""
    from kiban.lab.instruments import InstrumentError
    from kiban.lab.options import OptionsError
    from kiban.lab.proposers import ProposerError, make_proposer

    try:
        _instrument(config).close()
        make_proposer(config)
    except (InstrumentError, ProposerError, OptionsError) as error:
        raise type(error)(f"{where}: {error}") from None


def _instrument(config: CampaignConfig, workers: int | None = None):
    import dataclasses

    from kiban.lab.instruments import InstrumentError, instrument_class, make_instrument
    from kiban.lab.options import check_type

    options = dict(config.instrument)
    cls = instrument_class(options)
    fields = {f.name for f in dataclasses.fields(cls.Options)}
    for key in CAMPAIGN_INSTRUMENT_KEYS:
        # read by the campaign for every kind; checked here for kinds that do not take it
        if key in options and key not in fields:
            value = check_type(options.pop(key), float, f"[instrument] {key}")
            if value <= 0:
                raise InstrumentError(f"[instrument] {key} must be a number > 0, got {value!r}")
    if workers is not None:
        if "workers" not in fields:
            raise StoreError(
                f"--workers {workers}: the {cls.kind!r} instrument runs in this "
                "process (its options have no `workers`)"
            )
        options["workers"] = workers
    if isinstance(options.get("path"), str) and not Path(options["path"]).is_absolute():
        options["path"] = str(Path(config.base) / options["path"])  # beside the config file
    return make_instrument(options, config.space)


def _batch_seed(config: CampaignConfig, batch: int) -> int:
    return (config.seed * 1_000_003 + batch * 7919) % (2**31 - 1)


# --------------------------------------------------------------------------------------------
# proposing


def observations(store: Store) -> list:
    from kiban.lab.proposers import Observation

    return [Observation(r.params, r.values) for r in store.results()]


def propose(store: Store, n: int | None = None, proposer=None) -> list[Proposal]:
    """Propose ``n`` (default: the batch size) new experiments and commit them as pending.

    The first ``initial`` proposals of a campaign come from the centre of the space (unless
    ``center = false``) and a scrambled Sobol sequence that continues across reruns; after that, and once at least one result exists, the model-based
    proposer takes over."""
    config = store.config()
    n = config.batch_size if n is None else n
    if n < 1:
        raise StoreError(f"--n must be ≥ 1, got {n}")
    with store.lease("propose"):
        return _propose(store, config, n, proposer)


def _propose(store: Store, config: CampaignConfig, n: int, proposer) -> list[Proposal]:
    from kiban.lab.proposers import initial_design, make_proposer

    counts = store.counts()
    observed = observations(store)
    # Every proposal without a result is taken: pending, running, and failed ones (interrupted
    # by a killed process, crashed, refused values). A proposer sees them as pending points, so
    # no proposer kind proposes them again, and sobol's sequence continues past them. Cancelled
    # ones are not: they were never run, so their points are as open as any other (the Sobol
    # sequence still continues past them: `already` counts every proposal).
    pending = [
        p.params
        for p in store.proposals("pending") + store.proposals("running") + store.proposals("failed")
    ]
    already = counts["proposed"]
    seed = _batch_seed(config, already)
    # random and generative proposers draw their own first points (a model-only molecule
    # parameter has no candidate list for Sobol to pick from)
    own_start = config.proposer in ("random", "generative")
    n_initial = 0 if own_start else max(0, config.initial - already)
    if not observed and not own_start:
        n_initial = n  # nothing to learn from yet
    n_initial = min(n, n_initial)
    batch: list[dict[str, Any]] = []
    names: list[str] = []
    predictions: list[dict[str, Any] | None] = []
    if n_initial:
        batch += initial_design(
            config.space, n_initial, seed=config.seed, skip=already, center=config.center
        )
        predictions += [None] * len(batch)
        names.append("sobol")
    if n - n_initial:
        proposer = proposer or make_proposer(config)
        proposer.last_predictions = []  # never a previous call's, whatever the kind does
        proposed = proposer.propose(config.space, observed, pending + batch, n - n_initial, seed)
        made = list(proposer.last_predictions)
        # a model-free proposer (random, sobol) predicts nothing: None per point
        predictions += made if len(made) == len(proposed) else [None] * len(proposed)
        batch += proposed
        names.append(proposer.name)
    for params in batch:
        problems = config.space.check_params(params)
        if problems:
            raise StoreError(
                f"proposer {'+'.join(names)} produced an invalid proposal "
                f"{params}: {'; '.join(problems)}"
            )
    return store.add_proposals(batch, "+".join(names), predictions)


class CandidateLabels:
    """The IDs and names of a space's candidate molecules (a candidate table's ``id_column``
    and ``name_column``), looked up by canonical SMILES: ``columns`` (per molecule parameter
    with labels, the ID column then the name column: the table's column names, or
    ``PARAM_COLUMN`` when two parameters use one name) and ``of(params)``."""

    def __init__(self, space: Space) -> None:
        from kiban.lab.proposers.base import canonical_smiles

        self._tables: list[tuple[str, str, dict[str, str]]] = []  # (param, column, table)
        labelled = [
            (m, str(column), values)
            for m in space.molecules
            for column, values in ((m.id_column, m.ids), (m.name_column, m.names))
            if values
        ]
        names = [column for _, column, _ in labelled]
        for m, column, values in labelled:
            if names.count(column) > 1 or column in space.keys:
                column = f"{m.name}_{column}"
            by_smiles = {canonical_smiles(smi): v for smi, v in zip(m.candidates, values)}
            self._tables.append((m.name, column, by_smiles))

    @property
    def columns(self) -> list[str]:
        return [column for _, column, _ in self._tables]

    def of(self, params: dict[str, Any]) -> dict[str, str]:
        """``{column: ID}`` of the candidates in ``params`` ("" for a molecule not in the
        table, e.g. one sampled from a model or imported from a history)."""
        from kiban.lab.proposers.base import canonical_smiles

        return {
            column: table.get(canonical_smiles(str(params.get(name, ""))), "")
            for name, column, table in self._tables
        }


def prediction_columns(objectives: list[str]) -> list[str]:
    """The columns a proposal's prediction fills in a to-do CSV (`lab propose --out`): per
    objective its predicted mean and sd, then the acquisition value. `lab record` and `lab add`
    read past them."""
    return [c for o in objectives for c in (f"{o}_predicted", f"{o}_sd")] + ["acquisition"]


def prediction_cells(prediction: dict[str, Any] | None, objectives: list[str]) -> dict[str, str]:
    """A proposal's prediction as text cells (`prediction_columns`); "-" where no model made
    one (design points, random and sobol proposers) or it has no value in the objective's
    units (a target goal, warped outcomes)."""
    cells = dict.fromkeys(prediction_columns(objectives), "-")
    if prediction is None:
        return cells
    for o in objectives:
        made = prediction.get("objectives", {}).get(o, {})
        for key, column in (("mean", f"{o}_predicted"), ("sd", f"{o}_sd")):
            if made.get(key) is not None:
                cells[column] = f"{made[key]:.4g}"
    if prediction.get("acquisition_value") is not None:
        cells["acquisition"] = f"{prediction['acquisition_value']:.4g}"
    return cells


def todo_cells(space: Space, proposals: list) -> dict[int, dict[str, str]]:
    """Per proposal id the cells a to-do file carries after the objective columns (`lab
    propose --out` and the csv instrument's file): candidate IDs, then the prediction."""
    labels = CandidateLabels(space)
    objectives = [o.name for o in space.objectives]
    return {
        p.id: {**labels.of(p.params), **prediction_cells(p.prediction, objectives)}
        for p in proposals
    }


# --------------------------------------------------------------------------------------------
# running


@dataclass
class RunSummary:
    ran: int = 0
    completed: int = 0
    failed: int = 0
    interrupted: list[int] = field(default_factory=list)
    exported: int = 0
    waiting: bool = False
    counts: dict[str, int] = field(default_factory=dict)


def _measured(space: Space, values: dict[str, Any]) -> tuple[dict[str, float] | None, str | None]:
    problems = space.check_values(values)
    if problems:
        return None, "; ".join(problems)
    clean = {}
    for k, v in values.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            clean[k] = float(v)
    return clean, None


def run_campaign(
    store: Store,
    budget: int,
    *,
    instrument=None,
    log: Callable[[str], None] | None = None,
    notice: Callable[[str], None] | None = None,
    workers: int | None = None,
) -> RunSummary:
    """Run batches until ``budget`` proposals exist and none is left pending, holding the
    campaign's lease. ``log``: progress; ``notice``: what the user must hear even when quiet
    (a lease taken over, experiments interrupted), default ``log``. ``workers`` replaces the
    instrument config's (function, xtb)."""
    notice = notice or log
    if budget < 1:
        raise StoreError(f"--budget must be ≥ 1, got {budget}")
    # the lease first: `running` proposals are interrupted ones only when nobody else runs
    with store.lease("run", notice):
        return _run(store, budget, instrument, log, notice, workers)


def cancel(store: Store, ids: list[int] | None) -> list[int]:
    """Cancel pending proposals (``None``: all pending ones), holding the campaign's lease."""
    with store.lease("cancel"):
        return store.cancel(ids)


def _run(
    store: Store,
    budget: int,
    instrument,
    log: Callable[[str], None] | None,
    notice: Callable[[str], None] | None,
    workers: int | None,
) -> RunSummary:
    config = store.config()
    summary = RunSummary(interrupted=store.recover_interrupted())
    if summary.interrupted and notice:
        notice(
            f"marked {len(summary.interrupted)} interrupted experiment(s) failed (not re-run): "
            f"{summary.interrupted}"
        )
    own = instrument is None
    instrument = instrument or _instrument(config, workers)
    timeout = config.instrument.get("timeout_s")
    described = instrument.describe()
    store.event("run", {"budget": budget, "instrument": described})
    proposer = None
    try:
        while True:
            store.check_lease()
            pending = store.proposals("pending")
            if not pending:
                counts = store.counts()
                # a cancelled proposal was never run: it is not one of the budget's experiments
                remaining = budget - counts["proposed"] + counts["cancelled"]
                if remaining <= 0:
                    break
                if proposer is None and store.results():
                    from kiban.lab.proposers import make_proposer

                    proposer = make_proposer(config)
                pending = propose(store, min(config.batch_size, remaining), proposer=proposer)
            if instrument.asynchronous:
                # exports only; results come back through `kiban lab record`
                jobs = [(p.id, p.params) for p in pending]
                extra = todo_cells(config.space, pending)  # a person sees IDs and predictions
                list(instrument.run_batch(jobs, timeout, extra=extra))
                summary.exported = len(pending)
                summary.waiting = True
                break
            store.mark_running([p.id for p in pending])
            seen: set[int] = set()
            by_id = {p.id: p for p in pending}
            for outcome in instrument.run_batch([(p.id, p.params) for p in pending], timeout):
                if outcome.proposal_id not in by_id or outcome.proposal_id in seen:
                    store.event("stray-outcome", {"proposal_id": outcome.proposal_id})
                    continue
                seen.add(outcome.proposal_id)
                summary.ran += 1
                source = f"instrument:{instrument.kind}"
                if outcome.error is None and outcome.values is not None:
                    values, problem = _measured(config.space, outcome.values)
                else:
                    values, problem = None, outcome.error or "instrument returned no values"
                if values is not None:
                    store.record_result(
                        outcome.proposal_id,
                        values,
                        source,
                        {"elapsed_s": outcome.elapsed_s, **(outcome.meta or {})},
                    )
                    summary.completed += 1
                else:
                    store.record_failure(
                        outcome.proposal_id,
                        problem,
                        source,
                        {"values": outcome.values, "meta": outcome.meta},
                    )
                    summary.failed += 1
                if log:
                    state = "ok" if values is not None else f"failed: {problem}"
                    log(f"proposal {outcome.proposal_id}: {values if values else ''} {state}")
            for pid in set(by_id) - seen:
                store.record_failure(
                    pid,
                    "the instrument returned no outcome for this experiment",
                    f"instrument:{instrument.kind}",
                )
                summary.failed += 1
    finally:
        if own:
            instrument.close()
    summary.counts = store.counts()
    return summary


# --------------------------------------------------------------------------------------------
# recording results measured elsewhere


@dataclass
class RecordSummary:
    recorded: list[int] = field(default_factory=list)
    failed: list[tuple[int, str]] = field(default_factory=list)  # values refused
    blank: list[int] = field(default_factory=list)  # not measured yet
    already: list[int] = field(default_factory=list)  # same row before, skipped
    conflicts: list[tuple[int, str]] = field(default_factory=list)  # other values, refused
    mismatched: list[tuple[int, str]] = field(default_factory=list)  # other conditions, refused
    as_run: list[int] = field(default_factory=list)  # recorded as run

    @property
    def refused(self) -> list[tuple[int, str]]:
        """Rows not recorded because they contradict the campaign (the command fails)."""
        return self.conflicts + self.mismatched


_EXTRA_COLUMNS = {"notes", "note", "comment", "comments"}


def _number(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


#: a censored measurement: "<4", "< 4", "<=4", "≤4" (at most 4) or ">10", ">= 10", "≥10" (at
#: least 10). "<" and "<=" are the same record: a bound reported by an assay ("below the limit
#: of quantification") does not tell whether the bound itself is possible, and the GP cannot
#: use the difference.
_CENSORED = re.compile(r"^(<=|>=|<|>|≤|≥)\s*(\S.*)$")


def parse_measurement(text: str) -> tuple[float | str, str | None]:
    """A measured cell: a number → ``(number, None)``; a censored one (``<4``, ``>= 10``) →
    ``(bound, "<" or ">")``; anything else → ``(text, None)`` (refused as not a number)."""
    match = _CENSORED.match(text.strip())
    if not match:
        return _number(text), None
    bound = _number(match.group(2).strip())
    if isinstance(bound, str) or not math.isfinite(bound):
        return text, None
    return bound, "<" if match.group(1) in ("<", "<=", "≤") else ">"


def censor_problem(objective: Objective, bound: float, censor: str) -> str | None:
    """Why a censored value cannot be used for ``objective`` (None: it can be).

    Refused: a bound that leaves nothing possible in the objective's declared range (``<0``
    with ``low = 0``); and for a ``target`` goal a bound on the target's side (``<8`` when
    the target is 6: the value may be the target itself or far below it, so how close it came
    is not bounded at all). For ``max``/``min`` both directions say something true: the
    utility is at most (``<`` when maximising, ``>`` when minimising) or at least the
    bound's."""
    side = "below" if censor == "<" else "above"
    shown = f"{censor}{bound:g}"
    low, high = objective.low, objective.high
    if (censor == "<" and low is not None and bound <= low) or (
        censor == ">" and high is not None and bound >= high
    ):
        return (
            f"objective {objective.name!r}: {shown} leaves nothing in the declared range "
            f"[{objective.low}, {objective.high}] (nothing is {side} {bound:g})"
        )
    if objective.goal == "target":
        target = float(objective.target)
        if (censor == "<" and bound > target) or (censor == ">" and bound < target):
            return (
                f"objective {objective.name!r} (goal: target {target:g}): {shown} is the wrong "
                f"direction: every value {side} {bound:g} includes the target, so how close "
                f"it came is unknown; expected a bound on the far side "
                f"({'>' if censor == '<' else '<'}{bound:g}) or a number"
            )
    return None


def upper_bound(objective: Objective, censor: str | None) -> bool:
    """Whether a value censored so is only an upper bound on the objective's utility (the
    truth may be worse): ``<`` when maximising, ``>`` when minimising, either for a target.
    Such a result is not a candidate for the best so far."""
    if censor is None:
        return False
    return objective.goal == "target" or (censor == "<") == (objective.goal == "max")


def _censored_cells(
    path: Path, line: int, space: Space, cells: dict[str, str]
) -> tuple[dict[str, Any], dict[str, str], list[str]]:
    """Objective cells parsed: values, censors (objective -> "<" | ">") and the problems of
    censored values that cannot be used (file:line, column, value, why)."""
    objectives = {o.name: o for o in space.objectives}
    values: dict[str, Any] = {}
    censors: dict[str, str] = {}
    problems: list[str] = []
    for column, cell in cells.items():
        if cell == "":
            values[column] = None
            continue
        value, censor = parse_measurement(cell)
        values[column] = value
        if censor is None:
            continue
        censors[column] = censor
        problem = censor_problem(objectives[column], float(value), censor)
        if problem:
            problems.append(f"{path.name}:{line}: column {column!r}: {cell!r}: {problem}")
    return values, censors, problems


def _read_rows(
    path: Path, expected: str = "a CSV with a proposal_id column"
) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """Header and ``(line, row)`` pairs of a results CSV; a file that is not CSV text (binary,
    NUL bytes, more cells than columns) is a `RecordError` naming the file and line."""
    import io

    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise RecordError(
            f"{path}: not a CSV text file (byte {error.start} is not UTF-8: "
            f"{error.object[error.start : error.start + 1]!r}); is it a binary "
            f"file? expected {expected}"
        ) from None
    if "\x00" in text:
        line = text[: text.index("\x00")].count("\n") + 1
        raise RecordError(
            f"{path}, line {line}: a NUL byte; is it a binary file? expected {expected}"
        )
    reader = csv.DictReader(io.StringIO(text, newline=""))
    rows: list[tuple[int, dict[str, str]]] = []
    try:
        columns = list(reader.fieldnames or [])
        for row in reader:
            if None in row:
                raise RecordError(
                    f"{path}, line {reader.line_num}: more cells than the header "
                    f"has columns ({len(columns)})"
                )
            rows.append((reader.line_num, row))
    except csv.Error as error:
        raise RecordError(f"{path}, line {reader.line_num}: not valid CSV: {error}") from None
    return columns, rows


def _param_types(space: Space) -> dict[str, str]:
    """Flat parameter key -> how its cells compare: "number", "integer", "text", "molecule"."""
    from kiban.lab.space import Categorical, Composition, Integer, Molecule

    out: dict[str, str] = {}
    for p in space.parameters:
        if isinstance(p, Composition):
            out.update({c: "number" for c in p.components})
        elif isinstance(p, Molecule):
            out[p.name] = "molecule"
        elif isinstance(p, Categorical):
            out[p.name] = "text"
        else:
            out[p.name] = "integer" if isinstance(p, Integer) else "number"
    return out


def _given_params(
    path: Path, line: int, row: dict[str, str], proposed: dict[str, Any], types: dict[str, str]
) -> tuple[dict[str, Any], list[str]]:
    """The conditions a row says were run (blank parameter cells: as proposed) and, per
    parameter that differs from the proposal, why (file, line, column, proposed vs given)."""
    from kiban.lab.proposers.base import canonical_smiles

    given = dict(proposed)
    differences: list[str] = []
    for key, kind in types.items():
        cell = (row.get(key) or "").strip()
        if key not in row or cell == "":
            continue
        old = proposed.get(key)
        if kind in ("number", "integer"):
            try:
                value: Any = float(cell)
            except ValueError:
                value = cell
            same = (
                isinstance(value, float)
                and isinstance(old, (int, float))
                and math.isclose(value, float(old), rel_tol=1e-9, abs_tol=1e-12)
            )
            if kind == "integer" and isinstance(value, float) and value.is_integer():
                value = int(value)
        elif kind == "molecule":
            value = cell
            same = canonical_smiles(cell) == canonical_smiles(str(old))
        else:
            value = cell
            same = cell == str(old)
        if not same:
            given[key] = value
            differences.append(
                f"{path.name}, line {line}, column {key!r}: proposed {old!r}, given {cell!r}"
            )
    return given, differences


def record_csv(store: Store, path: str | Path, *, as_run: bool = False) -> RecordSummary:
    """Import measured results: a ``proposal_id`` column and one column per objective.

    Refused whole (nothing changes, :class:`RecordError`): no such file, a file that is not CSV
    text, no ``proposal_id`` column, no objective column, unknown columns, a proposal id that is
    not an integer or names no proposal, an id given twice. Per row: blank objective cells →
    left pending; parameter cells that differ from the proposal → the row is refused (listed in
    ``mismatched``), or with ``as_run`` the result is recorded for the conditions given (the
    proposal's params become them; the proposed ones are kept in the result's meta and an
    ``as-run`` event); values that are not finite numbers or fall outside an objective's
    declared range → that experiment is recorded as failed with the reason; a row recorded
    before (the same result, or a failure already recorded) → skipped; another result for a
    completed proposal → refused (``conflicts``). The campaign's lease is held throughout."""
    path = Path(path)
    if not path.is_file():
        raise RecordError(f"results file {str(path)!r} not found")
    with store.lease("record"):
        return _record_csv(store, path, as_run)


def _record_csv(store: Store, path: Path, as_run: bool) -> RecordSummary:
    config = store.config()
    space = config.space
    objectives = [o.name for o in space.objectives]
    columns, rows = _read_rows(path)
    if "proposal_id" not in columns:
        raise RecordError(f"{path}: no 'proposal_id' column (columns: {columns})")
    measured = [c for c in columns if c in objectives]
    if not measured:
        raise RecordError(f"{path}: no objective column; expected one of {objectives}")
    unknown = [
        c
        for c in columns
        if c not in objectives
        and c != "proposal_id"
        and c not in space.keys
        and c.lower() not in _EXTRA_COLUMNS
        and c not in prediction_columns(objectives)  # a filled-in `propose --out` file
        and c not in CandidateLabels(space).columns
    ]
    if unknown:
        raise RecordError(
            f"{path}: unknown columns {unknown}; expected proposal_id, "
            f"objectives {objectives}, optionally the parameter columns"
        )
    errors: list[str] = []
    parsed: list[tuple[int, int, dict[str, str]]] = []
    seen: dict[int, int] = {}
    for line, row in rows:
        raw_id = (row.get("proposal_id") or "").strip()
        try:
            pid = int(raw_id)
        except ValueError:
            errors.append(f"line {line}: proposal_id {raw_id!r} is not an integer")
            continue
        if pid in seen:
            errors.append(f"line {line}: proposal {pid} already given on line {seen[pid]}")
            continue
        seen[pid] = line
        parsed.append((line, pid, row))
    known = {p.id: p for p in store.proposals()}
    missing = [(line, pid) for line, pid, _ in parsed if pid not in known]
    if missing:
        errors.append(
            "unknown proposals: "
            + ", ".join(f"{pid} (line {line})" for line, pid in missing[:20])
            + (f" and {len(missing) - 20} more" if len(missing) > 20 else "")
        )
    for line, _, row in parsed:  # a censored value that cannot be used refuses the file
        cells = {c: (row.get(c) or "").strip() for c in measured}
        errors += _censored_cells(path, line, space, cells)[2]
    if errors:
        raise RecordError(f"{path}: refused, nothing recorded: " + "; ".join(errors[:10]))
    results = {r.proposal_id: r for r in store.results()}
    types = {k: t for k, t in _param_types(space).items() if k in columns}
    summary = RecordSummary()
    source = f"csv:{path.name}"
    with store.transaction() as db:
        for line, pid, row in parsed:
            cells = {c: (row.get(c) or "").strip() for c in measured}
            if all(v == "" for v in cells.values()):
                summary.blank.append(pid)
                continue
            proposal = known[pid]
            if proposal.status == "cancelled":
                summary.conflicts.append(
                    (
                        pid,
                        f"line {line}: proposal {pid} was cancelled (never run); refusing {cells}",
                    )
                )
                continue
            given, differences = _given_params(path, line, row, proposal.params, types)
            if differences and not as_run:
                summary.mismatched.append(
                    (
                        pid,
                        "; ".join(differences) + " (not recorded: "
                        "results are learnt only for the conditions run; "
                        "--as-run records them for the conditions given)",
                    )
                )
                continue
            if differences:
                problems = space.check_params(given)
                if problems:
                    summary.mismatched.append(
                        (
                            pid,
                            f"{path.name}, line {line}: the conditions "
                            f"given are not in the space: " + "; ".join(problems),
                        )
                    )
                    continue
            values, censors, _ = _censored_cells(path, line, space, cells)
            if pid in results:
                old = results[pid].values
                if results[pid].censored == censors and all(
                    isinstance(values[c], float)
                    and c in old
                    and math.isclose(old[c], values[c], rel_tol=1e-12, abs_tol=0.0)
                    for c in measured
                ):
                    summary.already.append(pid)
                else:
                    summary.conflicts.append(
                        (
                            pid,
                            f"line {line}: proposal {pid} already has "
                            f"result {old}; refusing {cells}",
                        )
                    )
                continue
            problems = space.check_values(values)
            if problems:
                if proposal.status == "failed" and _failed_before(store, pid, cells):
                    summary.already.append(pid)  # the same file again: no second failure
                    continue
                reason = f"{path.name}:{line}: " + "; ".join(problems)
                store._fail(pid, reason, source, {"cells": cells})
                summary.failed.append((pid, reason))
                continue
            meta: dict[str, Any] = {"file": str(path), "line": line}
            if censors:  # the values are bounds (see `upper_bound`)
                meta["censored"] = censors
            if differences:
                meta.update(as_run=True, proposed=proposal.params)
                store._set_params(db, pid, given)
                store._event(
                    "as-run",
                    {
                        "proposal_id": pid,
                        "proposed": proposal.params,
                        "run": given,
                        "file": str(path),
                        "line": line,
                    },
                )
                summary.as_run.append(pid)
            store._record(db, pid, {k: float(v) for k, v in values.items()}, source, meta)
            summary.recorded.append(pid)
        store._event(
            "record",
            {
                "file": str(path),
                "recorded": summary.recorded,
                "failed": [p for p, _ in summary.failed],
                "conflicts": [p for p, _ in summary.conflicts],
                "mismatched": [p for p, _ in summary.mismatched],
                "as_run": summary.as_run,
                "blank": summary.blank,
                "already": summary.already,
            },
        )
    return summary


def _failed_before(store: Store, proposal_id: int, cells: dict[str, str]) -> bool:
    """Whether this proposal already failed with these cells (a results file recorded twice)."""
    return any(f.get("cells") == cells for f in store.failure_payloads(proposal_id))


# --------------------------------------------------------------------------------------------
# importing a lab's history


@dataclass
class AddSummary:
    imported: list[int] = field(default_factory=list)  # the new proposals' ids
    skipped: list[dict[str, Any]] = field(default_factory=list)  # {"line", "reason"}
    #: imported, but outside the candidate list of a molecule parameter: {"line", "reason"}
    flagged: list[dict[str, Any]] = field(default_factory=list)


def _row_params(row: dict[str, str], types: dict[str, str]) -> dict[str, Any]:
    """A history row's parameter cells as typed values (checked afterwards by the space)."""
    params: dict[str, Any] = {}
    for key, kind in types.items():
        cell = (row.get(key) or "").strip()
        value: Any = _number(cell) if kind in ("number", "integer") else cell
        if kind == "integer" and isinstance(value, float) and value.is_integer():
            value = int(value)
        params[key] = value
    return params


def _row_problems(space: Space, params: dict[str, Any], values: dict[str, Any]) -> list[str]:
    """Why a history row cannot be an experiment of this campaign: each problem names its
    column, the value and what the space allows."""
    problems = [f"column {k!r}: empty" for k, v in {**params, **values}.items() if v == ""]
    if problems:
        return problems
    names = {p.name for p in space.parameters}
    for problem in space.check_params(params):
        name, _, rest = problem.partition(": ")
        problems.append(f"column {name!r}: {rest}" if name in names else problem)
    return problems + space.check_values(values)


def _history_key(
    params: dict[str, Any], values: dict[str, Any], censored: dict[str, str] | None = None
) -> str:
    return json.dumps([params, values, censored or {}], sort_keys=True, default=str)


def add_csv(store: Store, path: str | Path, *, skip_invalid: bool = False) -> AddSummary:
    """Import completed experiments (a lab's history): one row per experiment, a column per
    parameter key and per objective (notes columns allowed). Each row becomes a proposal of
    proposer ``imported``, completed with its result (meta: file, line), so proposers learn from
    it as from a measured one; an ``imported`` event names the file.

    Refused whole (`RecordError`, nothing written): a file that is not CSV text, missing or
    unknown columns, no rows, and -- unless ``skip_invalid`` -- any row outside the space or
    whose objective cells are not finite numbers in the declared range (every such row named
    with file:line, column, value and what is allowed). Rows equal to ones imported before
    (the same conditions and values) are skipped and listed, so a file added twice adds
    nothing. One transaction, holding the campaign's lease."""
    path = Path(path)
    if not path.is_file():
        raise RecordError(f"history file {str(path)!r} not found")
    with store.lease("add"):
        return _add_csv(store, path, skip_invalid)


def _add_csv(store: Store, path: Path, skip_invalid: bool) -> AddSummary:
    from kiban.io import file_sha256

    space = store.config().space
    objectives = [o.name for o in space.objectives]
    columns, rows = _read_rows(path, "a CSV of past experiments: parameters and objectives")
    expected = [*space.keys, *objectives]
    missing = [c for c in expected if c not in columns]
    labels = CandidateLabels(space)
    # a filled-in `propose --out` file: predictions and candidate IDs are read past (an ID
    # given for a molecule outside the candidate table is kept with the result)
    known = {*expected, *prediction_columns(objectives), *labels.columns}
    unknown = [c for c in columns if c not in known and c.lower() not in _EXTRA_COLUMNS]
    if missing or unknown:
        what = "; ".join(
            part
            for part in (
                f"missing columns {missing}" if missing else "",
                f"unknown columns {unknown}" if unknown else "",
            )
            if part
        )
        raise RecordError(
            f"{path}, line 1: {what}; expected the parameter columns {space.keys} and the "
            f"objective columns {objectives} (optionally notes); the file has {columns}"
        )
    if not rows:
        raise RecordError(f"{path}: no rows after the header; nothing to import")
    types = _param_types(space)
    from kiban.lab.proposers.base import canonical_smiles

    # a candidate-only molecule parameter (no model) is the candidate list: a history row with
    # another molecule lies outside the space; it is imported (the GP learns from it) and
    # flagged, naming the row
    outside = [m for m in space.molecules if m.candidates and not m.model]
    candidate_sets = {m.name: {canonical_smiles(c) for c in m.candidates} for m in outside}
    before: dict[str, list[tuple[int, Any]]] = {}
    for r in store._results("WHERE p.proposer = 'imported'"):
        before.setdefault(_history_key(r.params, r.values, r.censored), []).append(
            (r.proposal_id, store.result_meta(r.proposal_id).get("where"))
        )
    summary = AddSummary()
    accepted: list[tuple[int, dict[str, Any], dict[str, float]]] = []
    invalid: list[str] = []
    for line, row in rows:
        params = _row_params(row, types)
        cells = {o: (row.get(o) or "").strip() for o in objectives}
        values, censors, censor_problems = _censored_cells(path, line, space, cells)
        values = {o: "" if v is None else v for o, v in values.items()}
        problems = _row_problems(space, params, values) + [
            p.split(": ", 1)[1] for p in censor_problems
        ]
        if problems:
            reason = "; ".join(problems)
            invalid.append(f"{path.name}:{line}: {reason}")
            summary.skipped.append({"line": line, "reason": reason})
            continue
        earlier = before.get(_history_key(params, values, censors))
        if earlier:  # the same row imported before: a file added twice adds nothing
            pid, where = earlier.pop(0)
            summary.skipped.append(
                {"line": line, "reason": f"already imported (proposal {pid}, from {where})"}
            )
            continue
        # an ID from the candidate table, else the row's own (a molecule outside the table)
        ids = {c: v or (row.get(c) or "").strip() for c, v in labels.of(params).items()}
        summary.flagged += [
            {
                "line": line,
                "reason": f"column {m.name!r}: {params[m.name]!r} is not one of the "
                f"{len(m.candidates)} candidates (imported: the model learns from it; it "
                "is never proposed)",
            }
            for m in outside
            if canonical_smiles(str(params[m.name])) not in candidate_sets[m.name]
        ]
        accepted.append((line, params, {k: float(v) for k, v in values.items()}, censors, ids))
    if invalid and not skip_invalid:
        shown = "; ".join(invalid[:10]) + (
            f"; and {len(invalid) - 10} more" if len(invalid) > 10 else ""
        )
        raise RecordError(
            f"{path}: refused, nothing imported: {len(invalid)} row(s) do not fit the "
            f"campaign: {shown} (--skip-invalid imports the other rows)"
        )
    with store.transaction() as db:
        batch = store.next_batch()
        for line, params, values, censors, ids in accepted:
            where = f"{path.name}:{line}"
            meta: dict[str, Any] = {
                "imported": True,
                "file": str(path),
                "line": line,
                "where": where,
            }
            if censors:  # the values are bounds (see `upper_bound`)
                meta["censored"] = censors
            if any(ids.values()):
                meta["labels"] = ids
            summary.imported.append(
                store._import(db, batch, params, values, f"import:{path.name}", meta)
            )
        store._event(
            "imported",
            {
                "file": str(path),
                "sha256": file_sha256(path),
                "proposals": summary.imported,
                "lines": [line for line, *_ in accepted],
                "skipped": summary.skipped,
                "flagged": summary.flagged,
            },
        )
    return summary


# --------------------------------------------------------------------------------------------
# status


def pareto_mask(utilities: np.ndarray) -> np.ndarray:
    """Rows not dominated by any other (all utilities maximised)."""
    u = np.asarray(utilities, dtype=float)
    if len(u) == 0:
        return np.zeros(0, dtype=bool)
    ge = (u[:, None, :] >= u[None, :, :]).all(-1)
    gt = (u[:, None, :] > u[None, :, :]).any(-1)
    dominated = (ge & gt).any(0)
    return ~dominated


def only_bounded_above(space: Space, result) -> bool:
    """Whether a result's censored values leave its utility only bounded above (`upper_bound`):
    the truth may be worse than any number shown, so it is never the best so far."""
    return any(upper_bound(o, result.censored.get(o.name)) for o in space.objectives)


def experiment_ids(store: Store) -> dict[int, dict[str, str]]:
    """Candidate IDs per proposal (`CandidateLabels`; an imported row's own ID where its
    molecule is not in the table); empty dicts when the space has no candidate table."""
    labels = CandidateLabels(store.config().space)
    if not labels.columns:
        return {}
    out = {p.id: labels.of(p.params) for p in store.proposals()}
    for r in store.results():
        given = store.result_meta(r.proposal_id).get("labels") or {}
        out[r.proposal_id] = {c: v or given.get(c, "") for c, v in out[r.proposal_id].items()}
    return out


def export(store: Store) -> dict[str, Any]:
    """`Store.export` with each proposal's candidate IDs (``ids``, when the space has any)."""
    data = store.export()
    ids = experiment_ids(store)
    if ids:
        data["proposals"] = [{**p, "ids": ids.get(p["id"], {})} for p in data["proposals"]]
    return data


def best(store: Store) -> dict[str, Any] | None:
    """One objective: the best result. Several: the Pareto set (and the best per objective).
    Results whose censored values only bound them from above (``<4`` when maximising) are not
    candidates: their true value may be worse than the bound."""
    space = store.config().space
    results = [r for r in store.results() if not only_bounded_above(space, r)]
    if not results:
        return None
    util = np.stack([space.utilities(r.values) for r in results])
    ids = experiment_ids(store)

    def entry(r) -> dict[str, Any]:
        out = {"proposal_id": r.proposal_id, "params": r.params, "values": r.values}
        if r.proposal_id in ids:
            out["ids"] = ids[r.proposal_id]
        return {**out, "censored": r.censored} if r.censored else out

    if len(space.objectives) == 1:
        return entry(results[int(np.argmax(util[:, 0]))])
    mask = pareto_mask(util)
    return {
        "pareto": [entry(r) for r, m in zip(results, mask) if m],
        "per_objective": {
            o.name: entry(results[int(np.argmax(util[:, j]))])
            for j, o in enumerate(space.objectives)
        },
    }


def status(store: Store) -> dict[str, Any]:
    counts = store.counts()
    return {
        "name": store.meta("name"),
        "db": str(store.path),
        **counts,
        "best": best(store),
        # a failure later corrected (a result recorded since) is no longer one; export keeps it
        "failures": [
            {"proposal_id": f.proposal_id, "reason": f.reason}
            for f in store.failures(corrected=False)
        ][-20:],
    }


def best_so_far(store: Store) -> tuple[np.ndarray, np.ndarray]:
    """(experiment number, best utility so far) over completed results in recording order, per
    objective (columns); failed experiments, and results only bounded above (`best`), count as
    experiments and keep the previous best."""
    space = store.config().space
    props = {p.id: p for p in store.proposals()}
    results = {r.proposal_id: r for r in store.results()}
    order = sorted(pid for pid in props if props[pid].status in ("completed", "failed"))
    k = len(space.objectives)
    best_u = np.full(k, -np.inf)
    curve = []
    for pid in order:
        if pid in results and not only_bounded_above(space, results[pid]):
            best_u = np.maximum(best_u, space.utilities(results[pid].values))
        curve.append(best_u.copy())
    return np.arange(1, len(curve) + 1), np.asarray(curve).reshape(len(curve), k)


# --------------------------------------------------------------------------------------------
# results into the corpus


def _num(value: float) -> str:
    return f"{value:.6g}"


def campaign_documents(store: Store) -> list:
    """One kiban `Document` per completed experiment, with provenance (campaign, instrument,
    time), so the next model trains on the lab's results."""
    from kiban.document import Document
    from kiban.lab.space import Categorical, Composition, Molecule

    config = store.config()
    space = config.space
    name = store.meta("name")
    docs = []
    for r in store.results():
        parts = []
        for p in space.parameters:
            if isinstance(p, Molecule):
                parts.append(f"{p.name} <mol>{r.params[p.name]}</mol>")
            elif isinstance(p, Composition):
                parts.append(
                    f"{p.name} "
                    + ", ".join(f"{c} <num>{_num(r.params[c])}</num>" for c in p.components)
                )
            elif isinstance(p, Categorical):
                parts.append(f"{p.name} {str(r.params[p.name]).replace('<', '&lt;')}")
            else:
                parts.append(f"{p.name} <num>{_num(float(r.params[p.name]))}</num>")
        # a censored value is a bound, said in words ("<" would read as markup)
        bound = {"<": "at most ", ">": "at least "}
        measured = ", ".join(
            f"{k} {bound.get(r.censored.get(k, ''), '')}<num>{_num(v)}</num>"
            for k, v in r.values.items()
        )
        text = (
            f"Experiment {r.proposal_id} of campaign {name} ({config.instrument['kind']}): "
            + "; ".join(parts)
            + f". Measured: {measured}."
        )
        when = _dt.datetime.fromtimestamp(r.recorded, _dt.UTC).isoformat()
        docs.append(
            Document(
                text,
                id=f"lab-{name}-{store.meta('fingerprint')}-{r.proposal_id}",
                source=f"lab:{name}",
                meta={
                    "campaign": name,
                    "fingerprint": store.meta("fingerprint"),
                    "proposal_id": r.proposal_id,
                    "instrument": r.source,
                    "recorded": when,
                    "params": r.params,
                    "values": r.values,
                    **({"censored": r.censored} if r.censored else {}),
                },
            )
        )
    return docs
