"""The ``SagaEngine`` facade: register definitions, start and run sagas, read them.

The engine is the public door and holds little: a registry of definitions,
the store, and a runner. Driving a saga is the runner's job; what a
transition writes and how a log is read back is the journal's; SQL is the
store's.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any

import attrs
from sqlalchemy.engine import Engine

from statesaga import _codec as codec
from statesaga import _views as views
from statesaga._definition import Saga
from statesaga._errors import (
    ConcurrentUpdate,
    DefinitionConflict,
    InvalidInput,
    NotRegistered,
    ResumeError,
    SagaIdConflict,
    SagaNotFound,
    SerializationError,
)
from statesaga._runner import Definition, Hooks, LiveRun, Runner
from statesaga._spec import SagaSpec
from statesaga._status import SagaStatus
from statesaga._views import LogEntry, SagaRun, SagaSummary
from statesaga.store import SagaRow, SqlStore, make_engine


@attrs.frozen
class RecoveryReport:
    """What ``recover`` did.

    Attributes:
        resumed: the sagas it resumed, in their final state.
        skipped: the sagas it could not resume, each with its reason; they were
            left untouched.
    """

    resumed: list[SagaRun]
    skipped: list[ResumeError]


class SagaEngine:
    """Runs sagas and persists them in a SQL database.

    Args:
        url_or_engine: a database URL (``sqlite:///sagas.db``,
            ``postgresql+psycopg://user@host/db``) or an SQLAlchemy ``Engine``.
        sqlite_synchronous: SQLite's ``synchronous`` pragma: ``NORMAL`` (the
            default: durable across process crashes, may lose the last commits
            on power loss) or ``FULL`` (durable across power loss).
        clock: the time source (UNIX seconds); tests may replace it.
        sleep: how the engine waits for a retry delay; tests may replace it.

    Attributes:
        store: the SQL store the engine reads and writes.
    """

    def __init__(
        self,
        url_or_engine: str | Engine = "sqlite:///statesaga.db",
        *,
        sqlite_synchronous: str = "NORMAL",
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if isinstance(url_or_engine, str):
            db = make_engine(url_or_engine, sqlite_synchronous=sqlite_synchronous)
        else:
            db = url_or_engine
        self.store = SqlStore(db)
        self._definitions: dict[tuple[str, int], Definition] = {}
        self._clock = clock
        self._runner = Runner(self.store, clock, sleep)

    def __repr__(self) -> str:
        url = self.store.engine.url.render_as_string(hide_password=True)
        keys = ", ".join(d.spec.key for d in self._definitions.values()) or "none"
        return f"<SagaEngine {url} definitions: {keys}>"

    @property
    def hooks(self) -> Hooks | None:
        """Observation and fault-injection points (``statesaga.testing`` sets them)."""
        return self._runner.hooks

    @hooks.setter
    def hooks(self, hooks: Hooks | None) -> None:
        self._runner.hooks = hooks

    def close(self) -> None:
        """Close the engine's database connections."""
        self.store.close()

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
        run, existing = self._create(saga, input, saga_id, running=True)
        if existing is not None:
            return existing
        run.loop = loop
        return self._runner.drive(run)

    def start(
        self, saga: type[Saga] | Saga, input: Any = None, saga_id: str | None = None
    ) -> SagaRun:
        """Record a new saga without running it; ``resume`` or ``recover`` runs it later.

        Idempotent on ``saga_id`` like ``run``.
        """
        try:
            run, existing = self._create(saga, input, saga_id, running=False)
        finally:
            self.store.release()
        return existing if existing is not None else run.snapshot()

    def _create(
        self, saga: type[Saga] | Saga, input: Any, saga_id: str | None, *, running: bool
    ) -> tuple[LiveRun, SagaRun | None]:
        """Store a new saga (its first attempt started when ``running``); return it,
        and the existing saga instead when ``saga_id`` is taken."""
        defn = self._definition_for(saga)
        spec = defn.spec
        if spec.input_type is not None and not isinstance(input, spec.input_type):
            raise InvalidInput(spec.name, spec.input_type, input)
        sid = saga_id if saga_id is not None else uuid.uuid4().hex
        try:
            input_text = codec.dumps(input)
        except (TypeError, ValueError) as exc:
            raise SerializationError(spec.name, saga_id, "input", input, str(exc)) from exc
        self.store.ensure_schema()
        now = self._clock()
        row, entries = defn.journal.created(sid, input_text, now, running=running)
        found = self.store.create(row, entries)
        run = LiveRun(defn, sid, input, row["state"], row["attempt"], row["seq"], now)
        if found is None:
            return run, None
        if found.name != spec.name:
            raise SagaIdConflict(sid, found.name, spec.name)
        return run, attrs.evolve(self.get(sid), created=False)

    # -- resuming ---------------------------------------------------------

    def resume(self, saga_id: str) -> SagaRun:
        """Run a stored saga from its persisted state to a terminal state.

        Completed steps never run again; the step or compensation that was in
        flight runs again with the same idempotency key and the next attempt
        number; later steps and compensations get the stored results. A
        terminal saga is returned as it is.

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
        self.store.ensure_schema()
        row = self.store.get(saga_id)
        if row is None:
            raise SagaNotFound(saga_id)
        if SagaStatus(row.status).is_terminal:
            return self.get(saga_id)
        run = self._runner.reload(self._definition_of(row), row)
        run.loop = loop
        return self._runner.drive(run)

    def recover(self) -> RecoveryReport:
        """Resume every incomplete saga (``started`` or ``compensating``).

        A saga that cannot be resumed is reported with its reason and left
        untouched; the others go on.
        """
        self.store.ensure_schema()
        resumed: list[SagaRun] = []
        skipped: list[ResumeError] = []
        for row in self.store.incomplete():
            try:
                run = self._runner.reload(self._definition_of(row), row)
            except ResumeError as exc:
                skipped.append(exc)
                continue
            except ConcurrentUpdate:
                continue  # another runner got to it first
            resumed.append(self._runner.drive(run))
        return RecoveryReport(resumed=resumed, skipped=skipped)

    # -- reading ----------------------------------------------------------

    def get(self, saga_id: str) -> SagaRun:
        """The saga's current state.

        Raises:
            SagaNotFound: no saga has that id.
        """
        row, spec = self._row_and_spec(saga_id)
        return SagaRun(
            saga_id=row.saga_id,
            name=row.name,
            version=row.version,
            fingerprint=row.fingerprint,
            status=SagaStatus(row.status),
            state=row.state,
            results=views.results(self.store.log(saga_id), spec),
            error=row.error,
        )

    def history(self, saga_id: str) -> list[LogEntry]:
        """The saga's log, oldest first.

        Raises:
            SagaNotFound: no saga has that id.
        """
        _, spec = self._row_and_spec(saga_id)
        return [views.log_entry(r, spec) for r in self.store.log(saga_id)]

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
        self.store.ensure_schema()
        wanted = None if status is None else SagaStatus(status).value
        rows = self.store.list(status=wanted, name=name, limit=limit, offset=offset)
        return [views.summary(r) for r in rows]

    def _row_and_spec(self, saga_id: str) -> tuple[SagaRow, SagaSpec | None]:
        """The saga's row, and the registered spec it ran on (to rebuild its
        results as their types), if that is registered."""
        self.store.ensure_schema()
        row = self.store.get(saga_id)
        if row is None:
            raise SagaNotFound(saga_id)
        defn = self._definitions.get((row.name, row.version))
        spec = defn.spec if defn and defn.spec.fingerprint == row.fingerprint else None
        return row, spec
