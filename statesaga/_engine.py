"""The ``SagaEngine`` facade: register definitions, start and run sagas, read them.

The engine is the public door and holds little: a registry of definitions,
the store, its leases and a runner. Driving a saga is the runner's job; what
a transition writes and how a log is read back is the journal's; claiming and
parking is the worker's; SQL is the store's.

Every runner owns the sagas it drives through a lease: ``run`` creates its
saga already owned, ``resume`` and workers claim theirs, and every write is
fenced by the lease epoch. So ``run``, ``resume``, ``recover`` and any number
of workers, in any number of processes, can share one database: a saga
another live runner drives is left to it.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import attrs
from sqlalchemy.engine import Engine

from statesaga import _codec as codec
from statesaga import _views as views
from statesaga._definition import Saga
from statesaga._errors import (
    ConcurrentUpdate,
    CorruptSaga,
    DefinitionConflict,
    HistoryMismatch,
    InvalidInput,
    NotRegistered,
    ResumeError,
    SagaIdConflict,
    SagaNotFound,
    SerializationError,
)
from statesaga._leases import Leases
from statesaga._runner import Definition, HandlerLoop, Hooks, LiveRun, Runner, describe
from statesaga._spec import SagaSpec
from statesaga._status import EntryStatus, SagaStatus
from statesaga._views import LogEntry, SagaRun, SagaSummary
from statesaga._worker import RecoveryReport, Worker
from statesaga.store import LogRow, SagaRow, SqlStore, make_engine
from statesaga.store.migrations import upgrade


class SagaEngine:
    """Runs sagas and persists them in a SQL database.

    Args:
        url_or_engine: a database URL (``sqlite:///sagas.db``,
            ``postgresql+psycopg://user@host/db``) or an SQLAlchemy ``Engine``.
        sqlite_synchronous: SQLite's ``synchronous`` pragma: ``NORMAL`` (the
            default: durable across process crashes, may lose the last commits
            on power loss) or ``FULL`` (durable across power loss).
        clock: the time source (UNIX seconds); tests may replace it.
        sleep: how ``run`` and ``resume`` wait out a retry delay; tests may
            replace it (workers and ``recover`` park the saga instead).
        lease: seconds a runner's hold on a saga lasts without renewal. A
            shorter lease lets another process take over a dead one's sagas
            sooner; a longer one tolerates longer stalls (GC pauses, a slow
            database) before a live runner is taken over.
        heartbeat: seconds between lease renewals while handlers run (default:
            a third of ``lease``); each renewal is one statement for all of
            the engine's sagas.
        pool_size: connections the engine's pool keeps (with a URL); size it
            from the concurrency of transactional steps. Plain transitions
            borrow a connection only for their commit.
        db_clock: read times (a saga's start, deadlines, due times, leases) off
            the database server's clock, so processes whose own clocks are
            skewed agree: ``clock`` plus the offset to the server, measured once.
            Default: on PostgreSQL unless a ``clock`` is given.

    Attributes:
        store: the SQL store the engine reads and writes.
        owner: this engine's id, written on the sagas it holds.
    """

    def __init__(
        self,
        url_or_engine: str | Engine = "sqlite:///statesaga.db",
        *,
        sqlite_synchronous: str = "NORMAL",
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        lease: float = 30.0,
        heartbeat: float | None = None,
        pool_size: int | None = None,
        db_clock: bool | None = None,
    ) -> None:
        if isinstance(url_or_engine, str):
            db = make_engine(
                url_or_engine, sqlite_synchronous=sqlite_synchronous, pool_size=pool_size
            )
        else:
            db = url_or_engine
        self.store = SqlStore(db)
        if db_clock is None:
            db_clock = clock is time.time and self.store.dialect == "postgresql"
        if db_clock:
            clock = _DbClock(self.store, clock)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._definitions: dict[tuple[str, int], Definition] = {}
        self._clock = clock
        self._leases = Leases(self.store, self.owner, lease, clock, heartbeat)
        self._handler_loop = HandlerLoop()
        self._runner = Runner(self.store, self._leases, clock, sleep, self._handler_loop)
        self._workers: set[Worker] = set()
        self._workers_lock = threading.Lock()
        # Sagas this engine found it cannot resume: not claimed again by it.
        self._unresumable_ids: set[str] = set()

    def __repr__(self) -> str:
        keys = ", ".join(d.spec.key for d in self._definitions.values()) or "none"
        return f"<SagaEngine {self.store.url} owner={self.owner} definitions: {keys}>"

    @property
    def hooks(self) -> Hooks | None:
        """Observation and fault-injection points (``statesaga.testing`` sets them)."""
        return self._runner.hooks

    @hooks.setter
    def hooks(self, hooks: Hooks | None) -> None:
        self._runner.hooks = hooks

    def close(self) -> None:
        """Stop the engine's workers, let go of the sagas it holds, and close its
        connections once the commits in flight are done. A saga whose handler is
        still running in another thread is left where it was (resumable); that
        thread's next write raises ``EngineClosed``."""
        with self._workers_lock:
            workers = list(self._workers)
        for worker in workers:
            worker.stop(grace=0)
        self._leases.close()
        self.store.close(release=self.owner if self._leases.ever_held else None)
        self._handler_loop.close()

    def upgrade(self) -> tuple[int | None, int]:
        """Create the schema, or upgrade an older one in place (safe when many
        processes do it at once).

        Returns:
            The schema version found (``None``: there was none) and the one now.

        Raises:
            SchemaVersionError: the database's schema is newer or unknown.
        """
        return upgrade(self.store.engine)

    def __enter__(self) -> SagaEngine:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- registration -----------------------------------------------------

    def register(self, *sagas: type[Saga] | Saga) -> None:
        """Register saga definitions, as classes or as instances.

        An instance lets handlers use what it was built with (clients,
        repositories); a class is instantiated without arguments. Several
        versions of one saga may be registered side by side.

        Raises:
            DefinitionConflict: another definition is registered under the same
                name and version with a different structure.
        """
        for saga in sagas:
            defn = Definition.of(saga() if isinstance(saga, type) else saga)
            spec = defn.spec
            known = self._definitions.get((spec.name, spec.version))
            if known is not None and known.spec.fingerprint != spec.fingerprint:
                raise DefinitionConflict(spec.key, known.spec.fingerprint, spec.fingerprint)
            self._definitions[(spec.name, spec.version)] = defn

    def definition(self, name: str, version: int | None = None) -> SagaSpec:
        """The registered definition ``name`` (its newest version, or ``version``).

        Raises:
            NotRegistered: none is registered under that name (and version).
        """
        versions = sorted(v for (n, v) in self._definitions if n == name)
        wanted = versions[-1] if version is None and versions else version
        defn = self._definitions.get((name, wanted or 0))
        if defn is None:
            raise NotRegistered(
                name, version, sorted(d.spec.key for d in self._definitions.values())
            )
        return defn.spec

    def _definition_for(self, saga: type[Saga] | Saga) -> Definition:
        cls = saga if isinstance(saga, type) else type(saga)
        spec: SagaSpec = cls.spec
        defn = self._definitions.get((spec.name, spec.version))
        if defn is None or defn.spec.fingerprint != spec.fingerprint or not isinstance(saga, type):
            self.register(saga)
            defn = self._definitions[(spec.name, spec.version)]
        return defn

    def _definition_of(self, row: SagaRow) -> Definition:
        defn = self._definitions.get((row.name, row.version))
        if defn is None:
            others = sorted(v for (n, v) in self._definitions if n == row.name)
            have = ", ".join(f"v{v}" for v in others) or "none"
            raise ResumeError(
                row.saga_id,
                f"it needs {row.name} v{row.version} (fingerprint {row.fingerprint}), "
                f"which is not registered (registered versions of {row.name}: {have}); "
                f"register that version beside the others",
            )
        if defn.spec.fingerprint != row.fingerprint:
            raise ResumeError(
                row.saga_id,
                f"it started on {row.name} v{row.version} with fingerprint {row.fingerprint}, "
                f"but the registered v{row.version} has fingerprint {defn.spec.fingerprint} "
                "(its steps changed without a version bump); register the definition it "
                "started on",
            )
        return defn

    # -- starting and running ---------------------------------------------

    def run(
        self, saga: type[Saga] | Saga, input: Any = None, saga_id: str | None = None
    ) -> SagaRun:
        """Start a saga and run it to a terminal state.

        Args:
            saga: the definition (class or registered instance).
            input: the saga's input, an instance of its ``input_type``.
            saga_id: a caller-chosen id; if a saga with that id exists, it is
                returned as it is (``created=False``) and nothing runs again.

        Returns:
            The saga's final state: status, results, error.
        """
        return self._run(saga, input, saga_id, None)

    async def arun(
        self, saga: type[Saga] | Saga, input: Any = None, saga_id: str | None = None
    ) -> SagaRun:
        """``run`` for async applications.

        The database work runs in a worker thread so the event loop is never
        blocked; ``async def`` handlers run on the calling event loop, sync
        handlers in the worker thread.
        """
        loop = asyncio.get_running_loop()
        return await asyncio.to_thread(self._run, saga, input, saga_id, loop)

    def _run(
        self,
        saga: type[Saga] | Saga,
        input: Any,
        saga_id: str | None,
        loop: asyncio.AbstractEventLoop | None,
    ) -> SagaRun:
        run = self._create(saga, input, saga_id, held=True)
        if isinstance(run, SagaRun):
            return run  # it existed already
        run.loop = loop
        return self._runner.drive(run) or self.get(run.saga_id)

    def start(
        self, saga: type[Saga] | Saga, input: Any = None, saga_id: str | None = None
    ) -> SagaRun:
        """Record a new saga without running it, and return at once: a worker (in
        any process) runs it, or ``resume``/``recover`` does.

        Idempotent on ``saga_id`` like ``run``.
        """
        run = self._create(saga, input, saga_id, held=False)
        if isinstance(run, SagaRun):
            return run  # it existed already
        with self._workers_lock:
            workers = list(self._workers)
        for worker in workers:
            worker.wake()
        return run.snapshot()

    async def astart(
        self, saga: type[Saga] | Saga, input: Any = None, saga_id: str | None = None
    ) -> SagaRun:
        """``start`` for async applications: the commit runs in a thread."""
        return await asyncio.to_thread(self.start, saga, input, saga_id)

    def _create(
        self, saga: type[Saga] | Saga, input: Any, saga_id: str | None, *, held: bool
    ) -> LiveRun | SagaRun:
        """Store a new saga (``held``: owned by this engine, its first attempt
        started) and return it; when ``saga_id`` is taken, the existing saga instead."""
        defn = self._definition_for(saga)
        spec = defn.spec
        if spec.input_type is not None and not isinstance(input, spec.input_type):
            raise InvalidInput(spec.name, spec.input_type, input)
        sid = saga_id if saga_id is not None else uuid.uuid4().hex
        problem = _bad_id(sid)
        if problem is not None:
            raise InvalidInput(spec.name, str, sid, problem)
        try:
            input_text = codec.dumps(input)
        except (TypeError, ValueError) as exc:
            raise SerializationError(spec.name, saga_id, "input", input, str(exc)) from exc
        if spec.input_type is not None:
            problem = codec.round_trip_problem(input, spec.input_type)
            if problem is not None:
                raise InvalidInput(spec.name, spec.input_type, input, problem)
        self.store.ensure_schema()
        now = self._clock()
        lease = (self.owner, self._leases.until()) if held else None
        row, entries = defn.journal.created(sid, input_text, now, lease=lease)
        found = self.store.create(row, entries, notify=not held)
        if found is None:
            if lease is not None:
                self._leases.hold(sid, lease[1])
            return LiveRun(
                defn, sid, input, row["state"], row["attempt"], row["seq"], now, row["lease_epoch"]
            )
        if found.name != spec.name or found.input != input_text:
            raise SagaIdConflict(sid, found.name, spec.name)
        return attrs.evolve(self.get(sid), created=False)

    # -- resuming ---------------------------------------------------------

    def resume(self, saga_id: str) -> SagaRun:
        """Run a stored saga from its persisted state to a terminal state, here.

        Completed steps never run again; the step or compensation that was in
        flight runs again with the same idempotency key and the next attempt
        number; later steps and compensations get the stored results. A
        terminal saga, or one another live runner holds, is returned as it is.

        Raises:
            SagaNotFound: no saga has that id.
            ResumeError: the saga's definition (name, version, fingerprint) is
                not registered, or its row is corrupt; nothing was written.
        """
        return self._resume(saga_id, None)

    async def aresume(self, saga_id: str) -> SagaRun:
        """``resume`` for async applications (see ``arun``)."""
        loop = asyncio.get_running_loop()
        return await asyncio.to_thread(self._resume, saga_id, loop)

    def _resume(self, saga_id: str, loop: asyncio.AbstractEventLoop | None) -> SagaRun:
        self.store.require_schema()
        row = self.store.get(saga_id)
        if row is None:
            raise SagaNotFound(saga_id)
        if SagaStatus(row.status).is_terminal:
            return self.get(saga_id)
        defn = self._definition_of(row)
        now = self._clock()
        taken = self.store.claim(
            self.owner,
            self._leases.until(),
            now,
            [_key(defn.spec)],
            saga_id=saga_id,
            due_only=False,
        )
        if not taken:
            return self.get(saga_id)  # another live runner holds it
        run = self._claimed(defn, taken[0])
        run.loop = loop
        return self._runner.drive(run) or self.get(saga_id)

    def _claimed(self, defn: Definition, row: SagaRow) -> LiveRun:
        """The live run of a saga just claimed; an unresumable one is let go again."""
        try:
            return self._runner.claimed(defn, row)
        except ResumeError:
            self._unresumable_ids.add(row.saga_id)
            self.store.release(self.owner, [row.saga_id])
            raise

    def recover(self, concurrency: int = 1, *, wait: bool = True) -> RecoveryReport:
        """Drive every saga that is runnable now and that no live runner holds —
        those of a process that died, and those started but never run — to its end.

        Safe beside live workers and other ``recover`` calls, in any process: a
        saga someone else holds is left to them, silently. A saga that cannot be
        resumed is reported with its reason and left untouched; the others go on.

        Args:
            concurrency: sagas driven at once.
            wait: wait out retry delays (a waiting saga holds one of the
                ``concurrency`` threads; the others go on); ``False``: leave such
                a saga parked at its delay, for a worker.
        """
        self.store.ensure_schema()
        return Worker(self, concurrency).drain(wait)

    def worker(self, concurrency: int = 8, *, poll: float = 1.0, grace: float = 30.0) -> Worker:
        """A worker that claims and drives this engine's sagas (see ``Worker``):
        ``run()`` it, ``start()`` it in a thread, or enter it (``with``/``async with``).

        Args:
            concurrency: sagas driven at once; it never claims more.
            poll: the longest idle wait between claims, in seconds.
            grace: seconds a stop lets running handlers finish.
        """
        self.store.ensure_schema()
        return Worker(self, concurrency, poll=poll, grace=grace)

    # -- what workers use --------------------------------------------------

    def _keys(self) -> list[tuple[str, int, str]]:
        return [_key(d.spec) for d in self._definitions.values()]

    def _take(
        self, limit: int, loop: asyncio.AbstractEventLoop | None, parks: bool
    ) -> tuple[list[LiveRun], list[ResumeError]]:
        """Claim up to ``limit`` runnable sagas; return their live runs and the
        claimed ones that cannot be resumed. With ``parks`` only due sagas are
        claimed and their retry delays park them again; without, a saga waiting
        out a delay is claimed too and waits it out in its thread."""
        now = self._clock()
        rows = self.store.claim(
            self.owner,
            self._leases.until(),
            now,
            self._keys(),
            limit=limit,
            exclude=self._unresumable_ids,
            due_only=parks,
        )
        runs: list[LiveRun] = []
        skipped: list[ResumeError] = []
        for row in rows:
            try:
                run = self._claimed(self._definition_of(row), row)
            except ResumeError as exc:
                skipped.append(exc)
                continue
            except ConcurrentUpdate:
                continue
            run.parks = parks
            run.loop = loop
            runs.append(run)
        return runs, skipped

    def _unresumable(self) -> list[ResumeError]:
        """Unfinished sagas of definitions this engine does not have, each with why."""
        skipped = []
        for row in self.store.incomplete(except_=self._keys()):
            try:
                self._definition_of(row)
            except ResumeError as exc:
                skipped.append(exc)
        return skipped

    def _quarantine(self, saga_id: str, exc: Exception) -> ResumeError:
        """Set a saga aside after driving it failed unexpectedly; say why."""
        self._unresumable_ids.add(saga_id)
        return ResumeError(saga_id, f"driving it failed: {describe(exc)}")

    def _next_due(self) -> float | None:
        return self.store.next_due(self._keys())

    def _let_go(self, saga_ids: Iterable[str], why: str) -> None:
        ids = set(saga_ids)
        self._leases.lose(ids, why)
        self.store.release(self.owner, ids)

    def _attach(self, worker: Worker) -> None:
        with self._workers_lock:
            self._workers.add(worker)

    def _detach(self, worker: Worker) -> None:
        with self._workers_lock:
            self._workers.discard(worker)

    # -- reading ----------------------------------------------------------

    def get(self, saga_id: str) -> SagaRun:
        """The saga's current state.

        Raises:
            SagaNotFound: no saga has that id.
            CorruptSaga: its row or log is damaged (it is left as it is).
        """
        row, log, spec = self._read(saga_id)
        return views.stored_run(row, self._decoded(row, log, lambda: views.results(log, spec)))

    def history(self, saga_id: str) -> list[LogEntry]:
        """The saga's log, oldest first.

        Raises:
            SagaNotFound: no saga has that id.
            CorruptSaga: its row or log is damaged (it is left as it is).
        """
        row, log, spec = self._read(saga_id)
        return self._decoded(row, log, lambda: [views.log_entry(r, spec) for r in log])

    def list(
        self,
        *,
        status: SagaStatus | str | None = None,
        name: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[SagaSummary]:
        """Sagas, newest first.

        Args:
            status: only sagas with this status.
            name: only sagas of the definition with this name.
            limit: at most this many.
            offset: skip this many first (for paging).
        """
        self.store.require_schema()
        wanted = None if status is None else SagaStatus(status).value
        rows = self.store.list(status=wanted, name=name, limit=limit, offset=offset)
        return [views.summary(r) for r in rows]

    def _read(self, saga_id: str) -> tuple[SagaRow, Sequence[LogRow], SagaSpec | None]:
        """The saga's row and log (read together), checked: its status and each
        entry's are known, and, when the definition it ran on is registered (its
        spec is returned then, to rebuild results as their types), its log is a
        path of that definition's machine that ends where the row says.

        Raises:
            SagaNotFound: no saga has that id.
            CorruptSaga: any of that does not hold.
        """
        self.store.require_schema()
        row, log = self.store.saga(saga_id)
        if row is None:
            raise SagaNotFound(saga_id)
        try:
            SagaStatus(row.status)
        except ValueError:
            raise CorruptSaga(saga_id, f"its status {row.status!r} is not a status") from None
        for r in log:
            if r.status not in _ENTRY_STATUSES:
                raise CorruptSaga(saga_id, f"entry {r.seq} has an unknown status {r.status!r}")
        defn = self._definitions.get((row.name, row.version))
        if defn is None or defn.spec.fingerprint != row.fingerprint:
            return row, log, None
        try:
            defn.journal.check(row, log)
        except HistoryMismatch as exc:
            raise CorruptSaga(saga_id, exc.problem) from None
        return row, log, defn.spec

    def _decoded(self, row: SagaRow, log: Sequence[LogRow], decode: Callable[[], _T]) -> _T:
        """``decode()``, with a stored value that cannot be read reported as corrupt."""
        try:
            return decode()
        except Exception as exc:
            bad = next((r for r in log if not _readable(r.result)), None)
            where = f"entry {bad.seq} ({bad.step} {bad.status})" if bad else "a stored value"
            raise CorruptSaga(row.saga_id, f"{where}: it cannot be read: {describe(exc)}") from exc


def _key(spec: SagaSpec) -> tuple[str, int, str]:
    return (spec.name, spec.version, spec.fingerprint)


#: The longest saga id (the column's width).
MAX_ID = 200


def _bad_id(saga_id: object) -> str | None:
    """Why ``saga_id`` cannot be a saga id, the same on every backend, or ``None``."""
    if not isinstance(saga_id, str):
        return f"a saga id is a str, got {type(saga_id).__name__}"
    if not saga_id or len(saga_id) > MAX_ID:
        return f"a saga id has 1 to {MAX_ID} characters, this one {len(saga_id)}"
    if not saga_id.isprintable():
        return (
            f"the saga id {saga_id!r} has a character that cannot be stored or shown "
            "(a control character, NUL or lone surrogate); use printable text"
        )
    return None


class _DbClock:
    """A local clock corrected to the database server's: the offset between them
    is measured once, on first use, so every process sharing the database reads
    the same time (within the round trip), whatever its own clock says."""

    def __init__(self, store: SqlStore, local: Callable[[], float]) -> None:
        self._store = store
        self._local = local
        self._offset: float | None = None
        self._lock = threading.Lock()

    def __call__(self) -> float:
        if self._offset is None:
            with self._lock:
                if self._offset is None:
                    before = self._local()
                    server = self._store.db_time()
                    after = self._local()
                    self._offset = 0.0 if server is None else server - (before + after) / 2
        return self._local() + self._offset


_T = TypeVar("_T")
_ENTRY_STATUSES = frozenset(s.value for s in EntryStatus)


def _readable(text: str | None) -> bool:
    if text is None:
        return True
    try:
        json.loads(text)
    except ValueError:
        return False
    return True
