"""The instrument protocol, and a process-pool runner for instruments that evaluate one function.

An instrument turns proposals (``proposal_id``, flat ``params`` dict) into :class:`Outcome` s. A
failed experiment is an outcome with ``error`` set, never an exception: a campaign must go on when
one molecule does not embed or one job crashes, and the failure itself is data (the proposer learns
to avoid it).

:class:`ProcessRunner` runs a picklable module-level function ``fn(params, **options)`` in N
persistent worker processes started with "spawn" (RDKit, OpenMP and torch threads make ``fork``
unsafe). A job that overruns its timeout has its worker killed and replaced; a job that raises, or
whose worker dies (segfault, ``os._exit``), fails alone and the batch goes on.
"""

from __future__ import annotations

import abc
import importlib
import math
import multiprocessing
import multiprocessing.util
import numbers
import os
import signal
import sys
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from kiban.errors import did_you_mean
from kiban.lab.options import Options

if TYPE_CHECKING:
    from kiban.lab.space import Space


class InstrumentError(ValueError):
    """An instrument config that cannot work (unknown key, missing file, space mismatch)."""


@dataclass(frozen=True, kw_only=True)
class InstrumentOptions(Options):
    """Base of an instrument kind's options: the ``[instrument]`` table less ``kind``."""

    owner = "instrument"
    error = InstrumentError
    #: the smallest table that works (its required keys), for the docs and the conformance test
    example: ClassVar[Mapping[str, Any]] = {}


@dataclass
class Outcome:
    """What one experiment gave: ``values`` (measurement name -> number) or ``error``."""

    proposal_id: int
    values: dict[str, float] | None
    error: str | None
    elapsed_s: float
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None


class Instrument(abc.ABC):
    """Runs experiments. ``asynchronous`` instruments only export in :meth:`run_batch`; their
    results come back later (a CSV a person fills in, imported by ``kiban lab record``), and
    their :meth:`run_batch` takes ``extra=`` (per job id, the cells a person reads next to the
    conditions: candidate IDs, the model's prediction).

    A kind declares ``kind`` (its registered name), ``Options`` (a frozen keyword-only
    `InstrumentOptions` dataclass) and :meth:`from_options`; :meth:`from_config` builds it from
    a campaign's ``[instrument]`` table."""

    kind: ClassVar[str] = ""
    Options: ClassVar[type[InstrumentOptions]] = InstrumentOptions
    asynchronous: bool = False

    @classmethod
    def from_config(cls, config: Mapping[str, Any], space: Space) -> Instrument:
        """The instrument an ``[instrument]`` table (without ``kind``) describes, for ``space``;
        options checked by name and type (`InstrumentError` naming the closest valid key)."""
        options = cls.Options.from_config(config, where=f"[instrument] (kind {cls.kind!r})")
        return cls.from_options(options, space)

    @classmethod
    @abc.abstractmethod
    def from_options(cls, options: Any, space: Space) -> Instrument:
        """The instrument for checked ``options`` (an instance of ``cls.Options``)."""

    @abc.abstractmethod
    def measures(self) -> tuple[str, ...]:
        """Names of the values the outcomes carry (objectives and extras)."""

    @abc.abstractmethod
    def run_batch(
        self, jobs: list[tuple[int, dict]], timeout_s: float | None = None
    ) -> Iterator[Outcome]:
        """Run ``(proposal_id, params)`` jobs; yield each outcome as soon as it is known."""

    def describe(self) -> dict[str, Any]:
        """Provenance for the campaign record (kind, versions, options)."""
        return {"kind": self.kind}

    def close(self) -> None:  # noqa: B027
        """Release workers and files."""

    def __enter__(self) -> Instrument:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------------------------
# small shared helpers


def check_box(
    params: Mapping[str, Any], bounds: Mapping[str, tuple[float, float]], where: str
) -> str | None:
    """The first problem of ``params`` against box ``bounds`` (None when inside)."""
    missing = [k for k in bounds if k not in params]
    if missing:
        return f"{where}: params lack {missing} (got keys {sorted(params)})"
    for name, (low, high) in bounds.items():
        v = params[name]
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
            return f"{where}: {name} = {v!r} is not a finite number"
        if not low <= v <= high:
            return f"{where}: {name} = {v!r} is outside [{low:g}, {high:g}]"
    return None


def screen_jobs(
    jobs: Iterable[tuple[int, dict]], problem_of: Callable[[dict], str | None], meta: dict[str, Any]
) -> tuple[list[Outcome], list[tuple[int, dict]]]:
    """Split a batch into failures for the jobs ``problem_of`` objects to (bad input) and the
    jobs to run, for instruments that evaluate a whole batch at once."""
    failed, good = [], []
    for job_id, params in jobs:
        problem = problem_of(params)
        if problem:
            failed.append(Outcome(int(job_id), None, problem, 0.0, meta))
        else:
            good.append((job_id, params))
    return failed, good


def check_dataset(family: str, dataset: str, known: Iterable[str]) -> str:
    """``dataset`` if it is one of ``known``, else an error naming the closest."""
    known = list(known)
    if dataset not in known:
        raise InstrumentError(
            f"unknown {family} dataset {dataset!r}"
            f"{did_you_mean(dataset, known)}; expected one of {known}"
        )
    return dataset


def same_keys(where: str, needed: list[str], space: Space) -> None:
    """The space's parameter keys must be exactly the instrument's inputs."""
    missing = [k for k in needed if k not in space.keys]
    extra = [k for k in space.keys if k not in needed]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"the space lacks {missing}")
        if extra:
            parts.append(f"the instrument does not use {extra}")
        raise InstrumentError(
            f"{where}: {'; '.join(parts)}; its parameters are {needed} "
            "(instrument_space() gives a matching [[parameters]] list)"
        )


def package_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def resolve_target(target: str) -> Callable[..., Any]:
    """``"package.module:function"`` (``module:Class.method`` also works) -> the callable."""
    if not isinstance(target, str) or target.count(":") != 1:
        raise InstrumentError(f"target {target!r}: expected 'package.module:function'")
    module_name, _, qualname = target.partition(":")
    if not module_name or not qualname:
        raise InstrumentError(f"target {target!r}: expected 'package.module:function'")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as error:
        raise InstrumentError(
            f"target {target!r}: cannot import module {module_name!r}: {error}"
        ) from None
    for part in qualname.split("."):
        if not hasattr(obj, part):
            raise InstrumentError(f"target {target!r}: module {module_name!r} has no {qualname!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise InstrumentError(f"target {target!r} is a {type(obj).__name__}, not a function")
    return obj


def target_of(fn: Callable[..., Any] | str) -> str:
    """A callable as an importable ``module:qualname`` (workers import it by name)."""
    if isinstance(fn, str):
        return fn
    module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
    if not module or not qualname or "<" in qualname:
        raise InstrumentError(
            f"{fn!r} is not a module-level function; worker processes "
            "import the function by name, so define it at the top of a module"
        )
    return f"{module}:{qualname}"


def normalise_result(result: Any) -> tuple[dict[str, float], dict[str, Any]]:
    """``fn``'s return (``values`` or ``(values, meta)``) -> plain floats and a meta dict."""
    meta: dict[str, Any] = {}
    if isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], Mapping):
        result, meta = result[0], dict(result[1])
    if not isinstance(result, Mapping):
        raise TypeError(
            f"returned a {type(result).__name__}, expected a dict of measurement name -> number"
        )
    values: dict[str, float] = {}
    for key, value in result.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"returned {key!r} = {value!r}, expected a number")
        values[str(key)] = float(value)
    return values, meta


def _exception_text(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


# --------------------------------------------------------------------------------------------
# the worker side


def _worker_main(
    conn: Any,
    target: str,
    options: dict[str, Any],
    env: dict[str, str],
    sys_path: list[str],
    init: str | None,
) -> None:
    """One worker: set up, say ready, then evaluate jobs until told to stop (None)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the parent, which kills us
    os.environ.update(env)
    for p in reversed(sys_path):
        if p not in sys.path:
            sys.path.insert(0, p)
    try:
        if init:
            resolve_target(init)()
        fn = resolve_target(target)
    except BaseException as error:  # noqa: BLE001 - reported to the parent, which fails the jobs
        conn.send(("init_error", _exception_text(error)))
        return
    conn.send(("ready", os.getpid()))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        job_id, params = message
        start = time.perf_counter()
        try:
            values, meta = normalise_result(fn(params, **options))
            reply = ("done", job_id, values, None, time.perf_counter() - start, meta)
        except BaseException as error:  # noqa: BLE001 - a crashing job fails alone
            reply = (
                "done",
                job_id,
                None,
                _exception_text(error),
                time.perf_counter() - start,
                {"traceback": traceback.format_exc(limit=8)},
            )
        try:
            conn.send(reply)
        except (EOFError, OSError):  # the parent is gone
            return
        except Exception as error:  # noqa: BLE001 - e.g. meta that does not pickle
            conn.send(
                (
                    "done",
                    job_id,
                    None,
                    f"result could not be sent back: {_exception_text(error)}",
                    reply[4],
                    {},
                )
            )


# --------------------------------------------------------------------------------------------
# the parent side


class _Worker:
    """One worker process, its pipe, and the job it runs (if any)."""

    def __init__(self, context: Any, args: tuple[Any, ...]) -> None:
        parent, child = context.Pipe(duplex=True)
        self.conn = parent
        # not a daemon, so that a user's function may start processes of its own
        self.process = context.Process(target=_worker_main, args=(child, *args), daemon=False)
        self.process.start()
        child.close()
        self.started = time.monotonic()
        self.ready = False
        self.pid: int | None = None
        self.job: tuple[int, float] | None = None  # (proposal_id, dispatched at)

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=5)
        self.conn.close()


def _shutdown(workers: list[_Worker], grace_s: float = 2.0) -> None:
    """Ask every worker to stop, wait up to ``grace_s`` in all, kill the rest."""
    for w in workers:
        try:
            w.conn.send(None)
        except (OSError, ValueError):
            pass
    deadline = time.monotonic() + grace_s
    for w in workers:
        w.process.join(timeout=max(0.0, deadline - time.monotonic()))
        w.kill()
    workers.clear()


def _exit_text(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class ProcessRunner:
    """Evaluates ``fn(params, **options) -> dict[str, float]`` (or ``(values, meta)``) for many
    jobs in ``workers`` persistent processes; ``workers=0`` runs in this process (no timeout).

    ``fn`` is a module-level function or a ``"module:function"`` string, imported by name in each
    worker after ``env`` is applied (set thread counts there) and ``sys_path`` prepended. ``init``
    (a ``"module:function"``) runs once per worker, e.g. to import heavy libraries before the
    first job's clock starts. ``measures``: names every successful result must contain.
    """

    def __init__(
        self,
        fn: Callable[..., Any] | str,
        options: Mapping[str, Any] | None = None,
        *,
        workers: int = 1,
        timeout_s: float | None = None,
        env: Mapping[str, str] | None = None,
        sys_path: Iterable[str] = (),
        init: str | None = None,
        measures: Iterable[str] = (),
        meta: Mapping[str, Any] | None = None,
        start_method: str = "spawn",
        startup_timeout_s: float = 300.0,
        name: str = "instrument",
    ) -> None:
        if not isinstance(workers, int) or isinstance(workers, bool) or workers < 0:
            raise InstrumentError(f"{name}: workers must be an integer >= 0, got {workers!r}")
        if timeout_s is not None and not (isinstance(timeout_s, (int, float)) and timeout_s > 0):
            raise InstrumentError(f"{name}: timeout_s must be a number > 0, got {timeout_s!r}")
        if start_method not in ("spawn", "forkserver"):
            raise InstrumentError(
                f"{name}: start_method must be 'spawn' or 'forkserver' (fork "
                f"is unsafe with RDKit/OpenMP threads), got {start_method!r}"
            )
        self.target = target_of(fn)
        self.options = dict(options or {})
        self.workers = workers
        self.timeout_s = timeout_s
        self.env = {str(k): str(v) for k, v in (env or {}).items()}
        self.sys_path = [str(p) for p in sys_path]
        self.init = init
        self.measures = tuple(measures)
        self.meta = dict(meta or {})
        self.start_method = start_method
        self.startup_timeout_s = startup_timeout_s
        self.name = name
        self._fn: Callable[..., Any] | None = None
        self._pool: list[_Worker] = []
        self._broken: str | None = None  # why workers cannot start; fails every later job
        # runs when the runner is garbage-collected, closed, or at exit: multiprocessing's exit
        # handler runs finalizers with an exit priority before it joins (non-daemon) children
        self._finalizer = multiprocessing.util.Finalize(
            self, _shutdown, args=(self._pool,), exitpriority=10
        )

    # -- public
    def run(
        self, jobs: Iterable[tuple[int, dict]], timeout_s: float | None = None
    ) -> Iterator[Outcome]:
        """Yield one :class:`Outcome` per job, in the order they finish."""
        timeout = self.timeout_s if timeout_s is None else timeout_s
        jobs = list(jobs)
        if self.workers == 0:
            yield from self._run_here(jobs)
        else:
            yield from self._run_pool(jobs, timeout)

    def close(self) -> None:
        self._finalizer()

    # -- in-process
    def _run_here(self, jobs: list[tuple[int, dict]]) -> Iterator[Outcome]:
        if self._fn is None:
            for p in reversed(self.sys_path):
                if p not in sys.path:
                    sys.path.insert(0, p)
            if self.init:
                resolve_target(self.init)()
            self._fn = resolve_target(self.target)
        for job_id, params in jobs:
            start = time.perf_counter()
            try:
                values, meta = normalise_result(self._fn(params, **self.options))
            except Exception as error:  # noqa: BLE001 - a crashing job fails alone
                yield self._outcome(
                    job_id, None, _exception_text(error), time.perf_counter() - start, {}
                )
                continue
            yield self._outcome(job_id, values, None, time.perf_counter() - start, meta)

    # -- pool
    def _context(self) -> Any:
        return multiprocessing.get_context(self.start_method)

    def _spawn(self) -> _Worker:
        return _Worker(
            self._context(), (self.target, self.options, self.env, self.sys_path, self.init)
        )

    def _outcome(
        self,
        job_id: int,
        values: dict[str, float] | None,
        error: str | None,
        elapsed: float,
        meta: dict[str, Any],
    ) -> Outcome:
        if values is not None and self.measures:
            missing = [m for m in self.measures if m not in values]
            if missing:
                values, error = (
                    None,
                    (
                        f"{self.name}: the result lacks {missing} (got "
                        f"{sorted(values)}); expected {list(self.measures)}"
                    ),
                )
        return Outcome(int(job_id), values, error, float(elapsed), {**self.meta, **meta})

    def _run_pool(self, jobs: list[tuple[int, dict]], timeout: float | None) -> Iterator[Outcome]:
        from multiprocessing.connection import wait

        pending = deque(jobs)
        if self._broken:
            for job_id, _ in pending:
                yield self._outcome(job_id, None, self._broken, 0.0, {})
            return
        pool = self._pool
        deaths_before_ready = 0
        try:
            while pending or any(w.job for w in pool):
                # grow the pool up to `workers` while jobs wait
                waiting = len(pending) - sum(1 for w in pool if w.job is None)
                while waiting > 0 and len(pool) < self.workers:
                    pool.append(self._spawn())
                    waiting -= 1
                for w in pool:
                    if w.ready and w.job is None and pending:
                        job_id, params = pending.popleft()
                        try:
                            w.conn.send((job_id, params))
                        except Exception as error:  # noqa: BLE001 - unpicklable params
                            yield self._outcome(
                                job_id,
                                None,
                                f"{self.name}: params could not "
                                f"be sent to a worker: {_exception_text(error)}",
                                0.0,
                                {},
                            )
                            continue
                        w.job = (job_id, time.monotonic())
                now = time.monotonic()
                deadlines = [w.job[1] + timeout for w in pool if w.job and timeout is not None]
                deadlines += [w.started + self.startup_timeout_s for w in pool if not w.ready]
                wait_s = max(0.0, min(deadlines) - now) if deadlines else None
                ready = set(
                    wait([o for w in pool for o in (w.conn, w.process.sentinel)], timeout=wait_s)
                )
                for w in list(pool):
                    message = None
                    signalled = w.conn in ready or w.process.sentinel in ready
                    if signalled:
                        try:
                            if w.conn.poll():
                                message = w.conn.recv()
                        except (EOFError, OSError):  # the pipe closed: the worker is exiting
                            w.process.join(timeout=5)
                    if message is not None:
                        if message[0] == "ready":
                            w.ready, w.pid = True, message[1]
                            deaths_before_ready = 0
                        elif message[0] == "init_error":
                            self._broken = f"{self.name}: worker could not start: {message[1]}"
                        elif message[0] == "done" and w.job and w.job[0] == message[1]:
                            _, job_id, values, error, elapsed, meta = message
                            w.job = None
                            yield self._outcome(
                                job_id, values, error, elapsed, {"worker_pid": w.pid, **meta}
                            )
                        continue
                    if signalled and not w.process.is_alive():
                        # the worker died: its job (if any) failed; start another
                        w.process.join(timeout=1)
                        code = w.process.exitcode
                        pool.remove(w)
                        w.kill()
                        if w.job:
                            job_id, t0 = w.job
                            yield self._outcome(
                                job_id,
                                None,
                                f"crash: the worker process died while running "
                                f"this job ({_exit_text(code)})",
                                time.monotonic() - t0,
                                {"worker_pid": w.pid},
                            )
                        elif not w.ready:
                            deaths_before_ready += 1
                            if deaths_before_ready >= 3:
                                self._broken = (
                                    f"{self.name}: worker processes die while starting "
                                    f"({_exit_text(code)}; their stderr says why; with 'spawn' "
                                    "each worker re-imports the main script, so a script must "
                                    "guard its entry point with `if __name__ == '__main__':`)"
                                )
                now = time.monotonic()
                for w in list(pool):
                    if w.job and timeout is not None and now - w.job[1] >= timeout:
                        job_id, t0 = w.job
                        pool.remove(w)
                        w.kill()
                        yield self._outcome(
                            job_id,
                            None,
                            f"timeout after {timeout:g} s",
                            now - t0,
                            {"worker_pid": w.pid},
                        )
                    elif not w.ready and now - w.started >= self.startup_timeout_s:
                        pool.remove(w)
                        w.kill()
                        self._broken = (
                            f"{self.name}: a worker did not start within "
                            f"{self.startup_timeout_s:g} s"
                        )
                if self._broken:
                    for w in list(pool):
                        if w.job:
                            job_id, t0 = w.job
                            w.job = None
                            yield self._outcome(
                                job_id, None, self._broken, time.monotonic() - t0, {}
                            )
                    while pending:
                        job_id, _ = pending.popleft()
                        yield self._outcome(job_id, None, self._broken, 0.0, {})
                    _shutdown(pool)
                    return
        finally:
            # the caller stopped early (or an error): workers still busy hold stale jobs
            for w in list(pool):
                if w.job:
                    pool.remove(w)
                    w.kill()
