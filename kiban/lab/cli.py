"""``kiban lab``: init, propose, record, add, cancel, run, status, report, export, documents.

Each command opens the campaign database, calls one library function and prints. Handlers raise
(`kiban._cli.run_command` turns a ValueError into exit 2, a RuntimeError into exit 1, one line
each). Heavy libraries (torch, BoTorch, RDKit, tblite) load inside the functions that need them.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "lab",
        help="closed-loop campaigns: propose, run, record, learn",
        description="Closed-loop experimentation: a campaign (search space, objectives, "
        "instrument) in a SQLite database; every proposal and result is committed "
        "before the next step.",
    )
    commands = parser.add_subparsers(dest="lab_command", required=True, metavar="COMMAND")

    def db_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument("--db", required=True, metavar="PATH", help="the campaign database")

    init = commands.add_parser("init", help="create a campaign from a TOML config")
    init.add_argument("config", metavar="CONFIG")
    db_arg(init)
    init.set_defaults(handler=_init)

    propose = commands.add_parser(
        "propose",
        help="propose the next experiments (pending)",
        description="Prints per proposal the candidate IDs (a candidate table's id_column), "
        "the model's predicted mean and sd per objective and the acquisition value ('-': no "
        "model: design points, random, sobol), and the conditions; --out writes them to a CSV "
        "to fill in.",
    )
    db_arg(propose)
    propose.add_argument("--n", type=int, default=None, help="how many (default: batch size)")
    propose.add_argument("--out", metavar="CSV", help="also write them to a CSV to fill in")
    propose.add_argument("--json", action="store_true")
    propose.set_defaults(handler=_propose)

    record = commands.add_parser(
        "record",
        help="import measured results from a CSV",
        description="RESULTS.csv: a proposal_id column and one column per objective; parameter "
        "columns, when given, must hold the proposed conditions (a row that "
        "differs is refused, or recorded for the conditions given with --as-run). "
        "A file naming unknown proposals is refused whole. Exit status 2 when a row "
        "was refused (after recording the others). A censored value ('<4', '>= 10') is "
        "recorded as a bound (docs/lab.md, 'Censored values'); one that cannot be used "
        "refuses the file.",
    )
    db_arg(record)
    record.add_argument("results", metavar="RESULTS.csv")
    record.add_argument(
        "--as-run",
        action="store_true",
        help="parameter cells that differ from the proposal are the conditions "
        "actually run: record the result for them",
    )
    record.add_argument("--json", action="store_true")
    record.set_defaults(handler=_record)

    add = commands.add_parser(
        "add",
        help="import completed experiments (a lab's history) from a CSV",
        description="PAST.csv: one row per experiment already run, a column per parameter "
        "and per objective (like a filled-in `lab propose --out` file without proposal_id). "
        "Each row becomes a completed experiment (proposer 'imported', with its file:line) "
        "that the proposers learn from. A row outside the search space or with a value that "
        "is not a number (or a censored bound such as '<4') in the objective's range refuses "
        "the whole file (exit 2, nothing "
        "imported) unless --skip-invalid; rows imported before are skipped, so adding a "
        "file twice adds nothing. Imported experiments count toward `run --budget`.",
    )
    db_arg(add)
    add.add_argument("history", metavar="PAST.csv")
    add.add_argument(
        "--skip-invalid",
        action="store_true",
        help="import the rows that fit and list the others (line and reason)",
    )
    add.add_argument("--json", action="store_true")
    add.set_defaults(handler=_add)

    cancel = commands.add_parser(
        "cancel",
        help="cancel pending proposals that will not be run",
        description="A cancelled proposal leaves the to-do list, is never run or recorded "
        "against and is not a failure; its point stays open to the proposers (it was never "
        "run). Only pending proposals can be cancelled.",
    )
    db_arg(cancel)
    cancel.add_argument("ids", nargs="*", type=int, metavar="PROPOSAL_ID")
    cancel.add_argument("--all-pending", action="store_true", help="every pending proposal")
    cancel.add_argument("--json", action="store_true")
    cancel.set_defaults(handler=_cancel)

    run = commands.add_parser("run", help="run the loop on the campaign's instrument")
    db_arg(run)
    run.add_argument(
        "--budget",
        type=int,
        required=True,
        help="the campaign's total number of experiments (a rerun continues to it)",
    )
    run.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="worker processes of the instrument (function, xtb), replacing the "
        "config's `workers` for this run (results do not depend on it)",
    )
    run.add_argument("--quiet", action="store_true")
    run.add_argument("--json", action="store_true")
    run.set_defaults(handler=_run)

    stat = commands.add_parser("status", help="counts and the best result so far")
    db_arg(stat)
    stat.add_argument("--json", action="store_true")
    stat.set_defaults(handler=_status)

    report = commands.add_parser("report", help="best-so-far curve, Pareto front: PNG + HTML")
    db_arg(report)
    report.add_argument(
        "--out", default=None, metavar="DIR", help="output folder (default: DB name + '-report')"
    )
    report.set_defaults(handler=_report)

    export = commands.add_parser("export", help="the whole campaign as JSON")
    db_arg(export)
    export.add_argument("--out", default="-", metavar="FILE", help="default: stdout")
    export.set_defaults(handler=_export)

    docs = commands.add_parser(
        "documents",
        help="completed experiments as kiban Documents (JSONL) for a corpus",
        description="One Document per completed experiment with provenance (campaign, "
        "instrument, time); the file is a source for `kiban corpus build`.",
    )
    db_arg(docs)
    docs.add_argument("--out", required=True, metavar="FILE.jsonl")
    docs.set_defaults(handler=_documents)
    return parser


def _notes(store) -> None:
    for note in store.notes:  # e.g. an older store upgraded in place
        print(f"kiban lab: {note}", file=sys.stderr)


def _open(args: argparse.Namespace):
    from kiban.lab.store import Store

    store = Store.open(args.db)
    _notes(store)
    return store


def _init(args: argparse.Namespace) -> int:
    from kiban.lab.campaign import init_campaign

    store = init_campaign(args.config, args.db)
    _notes(store)
    counts = store.counts()
    print(
        f"campaign {store.meta('name')!r} in {args.db} (fingerprint {store.meta('fingerprint')}"
        f"; {counts['proposed']} proposals so far)"
    )
    return 0


def _params_line(params: dict[str, Any]) -> str:
    return ", ".join(
        f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()
    )


def _values_line(entry: dict[str, Any]) -> str:
    """``compound_id=CPD-7: pIC50=>10``: candidate IDs, then the measured values (a censored
    one with its sign)."""
    censored = entry.get("censored") or {}
    values = ", ".join(f"{k}={censored.get(k, '')}{v:.6g}" for k, v in entry["values"].items())
    ids = ", ".join(f"{k}={v}" for k, v in (entry.get("ids") or {}).items() if v)
    return f"{ids}: {values}" if ids else values


def _propose(args: argparse.Namespace) -> int:
    from kiban.lab.campaign import (
        CandidateLabels,
        prediction_cells,
        prediction_columns,
        propose,
        todo_cells,
    )

    store = _open(args)
    proposals = propose(store, args.n)
    space = store.config().space
    objectives = [o.name for o in space.objectives]
    labels = CandidateLabels(space)
    ids = {p.id: labels.of(p.params) for p in proposals}
    cells = {p.id: prediction_cells(p.prediction, objectives) for p in proposals}
    if args.out:
        from kiban.lab.instruments.csvfile import export_proposals

        export_proposals(
            args.out,
            [(p.id, p.params) for p in proposals],
            store.config().space.keys,
            objectives,
            extra=todo_cells(space, proposals),
        )
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "proposal_id": p.id,
                        "batch": p.batch,
                        "proposer": p.proposer,
                        "params": p.params,
                        **({"ids": ids[p.id]} if ids[p.id] else {}),
                        "prediction": p.prediction,
                    }
                    for p in proposals
                ],
                indent=1,
            )
        )
    else:
        # the model's expectation per proposal; "-": no model (design points, random, sobol)
        head = ["id", "proposer", *labels.columns, *prediction_columns(objectives), "conditions"]
        print("\t".join(head))
        for p in proposals:
            row = [str(p.id), p.proposer, *ids[p.id].values(), *cells[p.id].values()]
            print("\t".join([*row, _params_line(p.params)]))
    return 0


def _record(args: argparse.Namespace) -> int:
    from kiban.lab.campaign import RecordError, record_csv

    summary = record_csv(_open(args), args.results, as_run=args.as_run)
    payload = {
        "recorded": summary.recorded,
        "failed": summary.failed,
        "blank": summary.blank,
        "already": summary.already,
        "conflicts": summary.conflicts,
        "mismatched": summary.mismatched,
        "as_run": summary.as_run,
    }
    if args.json:
        print(json.dumps(payload, indent=1))
    else:
        print(
            f"recorded {len(summary.recorded)} ({len(summary.as_run)} as run), failed "
            f"{len(summary.failed)}, not yet measured {len(summary.blank)}, already recorded "
            f"{len(summary.already)}, refused {len(summary.refused)}"
        )
        for pid, reason in summary.failed + summary.refused:
            print(f"  {pid}: {reason}", file=sys.stderr)
    if summary.refused:
        refused = ", ".join(str(pid) for pid, _ in summary.refused)
        raise RecordError(
            f"{args.results}: refused the rows of proposals {refused} (the other "
            "rows were recorded); see the reasons above"
        )
    return 0


def _add(args: argparse.Namespace) -> int:
    from kiban.lab.campaign import add_csv

    summary = add_csv(_open(args), args.history, skip_invalid=args.skip_invalid)
    if args.json:
        payload = {
            "imported": len(summary.imported),
            "skipped": summary.skipped,
            "flagged": summary.flagged,
        }
        print(json.dumps(payload, indent=1))
        return 0
    ids = summary.imported
    span = (
        f" (proposals {ids[0]}-{ids[-1]})"
        if len(ids) > 1
        else f" (proposal {ids[0]})"
        if ids
        else ""
    )
    flagged = f", flagged {len(summary.flagged)}" if summary.flagged else ""
    print(f"imported {len(ids)} experiments{span}, skipped {len(summary.skipped)}{flagged}")
    for skipped in summary.skipped:
        print(f"  {args.history}:{skipped['line']}: skipped: {skipped['reason']}", file=sys.stderr)
    for flagged in summary.flagged:
        print(f"  {args.history}:{flagged['line']}: flagged: {flagged['reason']}", file=sys.stderr)
    return 0


def _cancel(args: argparse.Namespace) -> int:
    from kiban.lab.campaign import cancel
    from kiban.lab.store import StoreError

    if bool(args.ids) == args.all_pending:
        raise StoreError("give the PROPOSAL_IDs to cancel, or --all-pending (not both)")
    ids = cancel(_open(args), None if args.all_pending else args.ids)
    if args.json:
        print(json.dumps({"cancelled": ids}))
    else:
        print(f"cancelled {len(ids)} proposals" + (f": {ids}" if ids else ""))
    return 0


def _run(args: argparse.Namespace) -> int:
    from kiban.lab.campaign import run_campaign

    log = None if args.quiet or args.json else (lambda m: print(m, file=sys.stderr))
    summary = run_campaign(
        _open(args),
        args.budget,
        log=log,
        workers=args.workers,
        notice=lambda m: print(f"kiban lab run: {m}", file=sys.stderr),
    )
    payload = {
        "ran": summary.ran,
        "completed": summary.completed,
        "failed": summary.failed,
        "interrupted": summary.interrupted,
        "exported": summary.exported,
        "waiting_for_results": summary.waiting,
        **summary.counts,
    }
    if args.json:
        print(json.dumps(payload, indent=1))
    else:
        print(", ".join(f"{k} {v}" for k, v in payload.items()))
    return 0


def _status(args: argparse.Namespace) -> int:
    from kiban.lab.campaign import status

    info = status(_open(args))
    if args.json:
        print(json.dumps(info, indent=1))
        return 0
    print(
        f"{info['name']}: proposed {info['proposed']}, pending {info['pending']}, "
        f"running {info['running']}, completed {info['completed']}, failed {info['failed']}, "
        f"cancelled {info['cancelled']}"
    )
    b = info["best"]
    if b and "pareto" in b:
        print(f"Pareto set: {len(b['pareto'])} experiments")
        for e in b["pareto"]:
            print(f"  {e['proposal_id']}: {_values_line(e)}  {_params_line(e['params'])}")
    elif b:
        print(f"best: proposal {b['proposal_id']}: {_values_line(b)}  {_params_line(b['params'])}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from kiban.lab.report import write_report

    store = _open(args)
    out = args.out or str(Path(args.db).with_suffix("")) + "-report"
    info = write_report(store, out)
    print(f"wrote {', '.join(info['files'])} to {info['out']}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from kiban.io import atomic_write_text
    from kiban.lab.campaign import export

    data = json.dumps(export(_open(args)), indent=1, ensure_ascii=False)
    if args.out == "-":
        print(data)
    else:
        atomic_write_text(args.out, data + "\n")
    return 0


def _documents(args: argparse.Namespace) -> int:
    from kiban.io import atomic_write_text
    from kiban.lab.campaign import campaign_documents

    docs = campaign_documents(_open(args))
    atomic_write_text(args.out, "".join(d.to_json() + "\n" for d in docs))
    print(f"wrote {len(docs)} documents to {args.out}")
    return 0
