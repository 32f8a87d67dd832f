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
import os
import socket
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs
from sqlalchemy.engine import Engine

from statesaga import _inputs as inputs
from statesaga._claiming import Claims
from statesaga._clock import DbClock
from statesaga._definition import Saga
from statesaga._errors import SagaIdConflict, SagaNotFound
from statesaga._handlers import HandlerLoop, Hooks, Observed, observed
from statesaga._leases import Leases
from statesaga._live import LiveRun
from statesaga._operating import Operating
from statesaga._reads import Reading, Reads
from statesaga._registry import Registry
from statesaga._runner import Runner
from statesaga._signals import Signalling
from statesaga._spec import SagaSpec
from statesaga._status import SagaStatus
from statesaga._views import SagaRun
from statesaga._worker import Crew, Working
from statesaga.store import SqlStore, make_engine
from statesaga.store.migrations import upgrade

if TYPE_CHECKING:
    pass


class SagaEngine(Reading, Working, Signalling, Operating):
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
            clock = DbClock(self.store, clock)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._registry = Registry()
        self._clock = clock
        self._leases = Leases(self.store, self.owner, lease, clock, heartbeat)
        self._handler_loop = HandlerLoop()
        self._runner = Runner(self.store, self._leases, clock, sleep, self._handler_loop)
        self._claims = Claims(self.store, self._registry, self._leases, self._runner, clock)
        self._reads = Reads(self.store, self._registry)
        self._crew = Crew()

    def __repr__(self) -> str:
        return f"<SagaEngine {self.store.url} owner={self.owner} definitions: {self._registry}>"

    @property
    def hooks(self) -> Hooks | None:
        """Observation and fault-injection points (``statesaga.testing`` sets them);
        the observers added with ``observe`` stay around whatever is set here."""
        hooks = self._runner.hooks
        return hooks.inner if isinstance(hooks, Observed) else hooks

    @hooks.setter
    def hooks(self, hooks: Hooks | None) -> None:
        current = self._runner.hooks
        observers = current.observers if isinstance(current, Observed) else ()
        self._runner.hooks = observed(observers, hooks)

    def observe(self, observer: Hooks) -> None:
        """Add an observer: its ``call``, ``point`` and ``transition`` see every
        handler call, commit point and transition of the sagas this engine drives,
        around ``hooks`` (an injected failure is a failure to it). Observers run in
        the order they were added; ``statesaga.otel.Telemetry`` is one."""
        current = self._runner.hooks
        if isinstance(current, Observed):
            self._runner.hooks = observed((*current.observers, observer), current.inner)
        else:
            self._runner.hooks = observed((observer,), current)

    def close(self) -> None:
        """Stop the engine's workers, let go of the sagas it holds, and close its
        connections once the commits in flight are done. A saga whose handler is
        still running in another thread is left where it was (resumable); that
        thread's next write raises ``EngineClosed``."""
        self._crew.stop()
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
        versions of one saga may be registered side by side. A registered
        definition is never replaced: registering the same class (or the same
        instance) again is a no-op, anything else under its name and version is
        a ``DefinitionConflict``.

        Raises:
            InvalidDefinition: a saga is not a concrete ``Saga`` class or instance.
            DefinitionConflict: something else is registered under the same name
                and version: another structure, another class, another instance
                of the class, or its class where an instance is registered.
        """
        for saga in sagas:
            self._registry.add(saga)

    def definition(self, name: str, version: int | None = None) -> SagaSpec:
        """The registered definition ``name`` (its newest version, or ``version``).

        Raises:
            NotRegistered: none is registered under that name (and version).
        """
        return self._registry.spec(name, version)

    # -- starting and running ---------------------------------------------

    def run(
        self, saga: type[Saga] | Saga, input: Any = None, saga_id: str | None = None
    ) -> SagaRun:
        """Start a saga and run it to a terminal state.

        Args:
            saga: a registered definition: the class or instance given to
                ``register``; the class of a registered instance runs on that
                instance.
            input: the saga's input, an instance of its ``input_type``.
            saga_id: a caller-chosen id; if a saga with that id exists, it is
                returned as it is (``created=False``) and nothing runs again.

        Returns:
            The saga's final state: status, results, error.

        Raises:
            NotRegistered: the saga's name and version are not registered.
            DefinitionConflict: another object is registered under them (another
                instance, another class); nothing is replaced.
            InvalidDefinition: ``saga`` is not a saga class or instance.
            InvalidInput: ``input`` is not a valid ``input_type`` value.
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
        run = self._create(saga, input, saga_id, held=True, action="run")
        if isinstance(run, SagaRun):
            return run  # it existed already
        run.loop = loop
        return self._runner.drive(run) or self.get(run.saga_id)

    def start(
        self, saga: type[Saga] | Saga, input: Any = None, saga_id: str | None = None
    ) -> SagaRun:
        """Record a new saga without running it, and return at once: a worker (in
        any process) runs it, or ``resume``/``recover`` does.

        Idempotent on ``saga_id``, and ``saga`` must be registered, like ``run``.
        """
        run = self._create(saga, input, saga_id, held=False, action="start")
        if isinstance(run, SagaRun):
            return run  # it existed already
        self._crew.wake()
        return run.snapshot()

    async def astart(
        self, saga: type[Saga] | Saga, input: Any = None, saga_id: str | None = None
    ) -> SagaRun:
        """``start`` for async applications: the commit runs in a thread."""
        return await asyncio.to_thread(self.start, saga, input, saga_id)

    def _create(
        self, saga: type[Saga] | Saga, input: Any, saga_id: str | None, *, held: bool, action: str
    ) -> LiveRun | SagaRun:
        """Store a new saga (``held``: owned by this engine, its first attempt
        started) and return it; when ``saga_id`` is taken, the existing saga instead."""
        defn = self._registry.for_saga(saga, action)
        spec = defn.spec
        sid, input_text = inputs.checked(spec, input, saga_id)
        self.store.ensure_schema()
        found = self._claims.create(defn, sid, input, input_text, held=held)
        if isinstance(found, LiveRun):
            return found
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
        run = self._claims.one(self._registry.of_row(row), saga_id)
        if run is None:
            return self.get(saga_id)  # another live runner holds it
        run.loop = loop
        return self._runner.drive(run) or self.get(saga_id)
