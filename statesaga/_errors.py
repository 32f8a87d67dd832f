"""Errors raised by statesaga.

Every error is a ``StateSagaError``; each also subclasses the builtin that fits,
so callers may catch either. Errors carry the saga, step and cause they concern
as attributes, and their message says what to do::

    StateSagaError
    ├── InvalidDefinition (TypeError)      a saga class is malformed (at class creation), or
    │                                      register/run was given something not a saga
    ├── DefinitionConflict (ValueError)    something else is registered under that name@version
    ├── InvalidInput (TypeError)           the input is not the saga's ``input_type``
    ├── SerializationError (TypeError)     a value cannot be stored as JSON
    ├── NotRegistered (LookupError)        no registered definition for a saga's name/version
    │   └── (diagrams) DefinitionNotFound  none of the definitions given is the saga's
    ├── SagaNotFound (LookupError)         no saga with that id
    ├── SignalRefused (LookupError)        a signal no saga would ever consume (not stored)
    ├── OperatorRefused (ValueError)       an operator's action that makes no sense for the saga
    ├── SagaCancelled (RuntimeError)       the error a cancelled saga records (never raised)
    ├── SagaIdConflict (ValueError)        a saga id is already used by another saga type
    ├── ResumeError (RuntimeError)         a stored saga cannot be resumed (left untouched)
    │   └── CorruptSaga                    its row or log is damaged: not read, not acted on
    ├── HistoryMismatch (ValueError)       a saga log is not a path of its definition's machine
    ├── StepTimeout (TimeoutError)         one attempt of a step took longer than its timeout
    ├── InDoubt (RuntimeError)             a handler failed after it may have acted (it raises it)
    ├── DeadlineExceeded (TimeoutError)    the saga's deadline passed before a step could start
    ├── ConcurrentUpdate (RuntimeError)    another runner changed the saga first; this one stops
    ├── InvalidTransition (RuntimeError)   a trigger the current state does not accept (a bug)
    ├── SchemaVersionError (RuntimeError)  the database's schema is newer, unknown or unversioned
    ├── SchemaMissing (LookupError)        no statesaga schema in the database (reads create none)
    ├── EngineClosed (RuntimeError)        the engine was closed; it starts no new work
    ├── NestedTransaction (RuntimeError)   a write inside a transactional step's own (SQLite)
    ├── InvalidParticipant (TypeError)     a participant class is malformed; at class creation
    ├── InvalidEvent (ValueError)          an event to publish is malformed or not declared
    ├── BrokerError (ConnectionError)      the message broker is unreachable or refused a message
    ├── (diagrams) RenderError (RuntimeError), DotError (ValueError),
    │              ScriptedFailure (RuntimeError)
    └── (testing) InjectedFault (RuntimeError), InvariantViolation (AssertionError)

``statesaga.testing.SimulatedCrash`` is the one exception outside the tree: it
derives from ``BaseException`` on purpose, so that no handler can swallow a
simulated crash.
"""

from __future__ import annotations


class StateSagaError(Exception):
    """Root of every error statesaga raises."""


class InvalidDefinition(StateSagaError, TypeError):
    """A saga class is malformed (raised when the class is created), or what was
    given to ``register``/``run`` is not a concrete saga class or instance.

    Attributes:
        saga: the class name.
    """

    def __init__(self, saga: str, problem: str) -> None:
        super().__init__(f"saga {saga}: {problem}")
        self.saga = saga
        self.problem = problem


class InvalidInput(StateSagaError, TypeError):
    """The input given to ``run``/``start`` is not a valid ``input_type`` value: not an
    instance of it, or one that would not come back equal from storage (a field of
    the wrong type), so the saga could not be resumed.

    Attributes:
        saga: the saga's name.
        expected: its ``input_type``.
        problem: what is wrong, when the type itself is right.
    """

    def __init__(self, saga: str, expected: type, got: object, problem: str | None = None) -> None:
        name = expected.__qualname__
        if expected is str and problem is not None:
            message = f"saga {saga!r}: {problem}"
        elif problem is None:
            message = (
                f"saga {saga!r} expects input of type {name}, got {type(got).__qualname__}: "
                f"build a {name}(...) and pass that"
            )
        else:
            message = (
                f"saga {saga!r}: this {name} input could not be resumed from storage: "
                f"{problem}; pass values of the declared types"
            )
        super().__init__(message)
        self.saga = saga
        self.expected = expected
        self.problem = problem


class SerializationError(StateSagaError, TypeError):
    """A value (input or step result) cannot be stored as JSON.

    Attributes:
        saga_id: the saga concerned (``None`` before it was created).
        step: the step whose result it is, or ``"input"``.
        value_type: the offending type's qualified name.
    """

    def __init__(
        self, saga: str, saga_id: str | None, step: str, value: object, cause: str
    ) -> None:
        self.saga_id = saga_id
        self.step = step
        self.value_type = type(value).__qualname__
        where = f"saga {saga!r} (id {saga_id})" if saga_id else f"saga {saga!r}"
        advice = (
            "pass plain JSON types or attrs classes as input"
            if step == "input"
            else "return plain JSON types or attrs classes, and annotate the handler's "
            "return type so the result can be rebuilt on resume"
        )
        super().__init__(
            f"{where}, {step}: a value of type {self.value_type} cannot be stored as JSON "
            f"({cause}); {advice}"
        )


class NotRegistered(StateSagaError, LookupError):
    """No definition is registered under a saga's name and version (an engine
    runs only what was registered with it).

    Attributes:
        name: the definition's name.
        version: its version (``None``: any).
    """

    def __init__(
        self,
        name: str,
        version: int | None,
        known: list[str],
        *,
        saga_class: type | None = None,
    ) -> None:
        wanted = name if version is None else f"{name} v{version}"
        have = ", ".join(known) or "none"
        if saga_class is None:
            fix = "call engine.register(...) with that definition"
        else:
            cls = saga_class.__name__
            fix = (
                f"call engine.register({cls}) first (or engine.register({cls}(...)) with "
                "the clients its handlers use)"
            )
        super().__init__(f"no saga definition registered for {wanted} (registered: {have}); {fix}")
        self.name = name
        self.version = version


class SagaNotFound(StateSagaError, LookupError):
    """No saga with the given id exists in the store."""

    def __init__(self, saga_id: str) -> None:
        super().__init__(f"no saga with id {saga_id!r} in this store")
        self.saga_id = saga_id


class SagaIdConflict(StateSagaError, ValueError):
    """A caller-chosen saga id already belongs to another saga: of another type,
    or of the same type with another input."""

    def __init__(self, saga_id: str, existing: str, requested: str) -> None:
        if existing == requested:
            message = (
                f"saga id {saga_id!r} already belongs to a {existing!r} saga started with "
                "another input; the same id with the same input returns that saga, with "
                "another input choose another id"
            )
        else:
            message = (
                f"saga id {saga_id!r} already belongs to a {existing!r} saga, not "
                f"{requested!r}; choose another id"
            )
        super().__init__(message)
        self.saga_id = saga_id


class ResumeError(StateSagaError, RuntimeError):
    """A stored saga cannot be resumed; it is left exactly as it was.

    Attributes:
        saga_id: the saga concerned.
        reason: why (unknown definition, version or fingerprint mismatch, corrupt row).
    """

    def __init__(self, saga_id: str, reason: str) -> None:
        super().__init__(f"saga {saga_id!r} cannot be resumed: {reason}")
        self.saga_id = saga_id
        self.reason = reason


class ConcurrentUpdate(StateSagaError, RuntimeError):
    """The saga row changed under this runner (another runner owns it now).

    The runner stops without writing; the owner of the saga carries on.
    """

    def __init__(self, saga_id: str) -> None:
        super().__init__(
            f"saga {saga_id!r} was changed by another runner; this runner stopped without writing"
        )
        self.saga_id = saga_id


class InDoubt(StateSagaError, RuntimeError):
    """Raised by a step's handler: it failed, and its effect may have happened
    (the request went out, the answer never came).

    A step that fails for good in doubt is compensated itself, first: its
    compensation runs with ``NOT_COMPLETED`` in place of a result, then the
    completed steps' compensations in reverse. Raise it ``from`` the cause.
    """


class StepTimeout(StateSagaError, TimeoutError):
    """One attempt of a step took longer than the step's ``timeout``.

    It counts as a failed attempt for the step's retry policy (retry on
    ``TimeoutError`` or ``StepTimeout`` to retry it), and as a failure in doubt:
    the handler may have acted before its time ran out.
    """

    def __init__(self, saga_id: str, step: str, timeout: float) -> None:
        super().__init__(
            f"saga {saga_id!r}, step {step!r}: the attempt took longer than {timeout}s"
        )
        self.saga_id = saga_id
        self.step = step
        self.timeout = timeout


class DeadlineExceeded(StateSagaError, TimeoutError):
    """The saga's ``deadline`` passed before a step could start; the saga compensates."""

    def __init__(self, saga_id: str, step: str, deadline: float) -> None:
        super().__init__(
            f"saga {saga_id!r}: its deadline of {deadline}s passed before step {step!r} could start"
        )
        self.saga_id = saga_id
        self.step = step


class SagaCancelled(StateSagaError, RuntimeError):
    """The error a cancelled saga records: an operator stopped it going forward,
    and it compensated. Not raised; its text is the saga's ``error``."""

    def __init__(self, saga_id: str, by: str | None, reason: str | None) -> None:
        who = f"by {by}" if by else "by an operator"
        super().__init__(f"cancelled {who}: {reason or 'no reason given'}")
        self.saga_id = saga_id


class OperatorRefused(StateSagaError, ValueError):
    """An operator's action that makes no sense for the saga as it is (cancel a
    completed saga, resolve a running one); nothing was changed."""

    def __init__(self, action: str, saga_id: str, why: str) -> None:
        super().__init__(f"cannot {action} saga {saga_id!r}: {why}")
        self.action = action
        self.saga_id = saga_id


class SignalRefused(StateSagaError, LookupError):
    """A signal was refused, not stored: no saga would ever consume it (its saga
    waits for no such event, is past that wait, or has ended).

    Attributes:
        event: the event's name.
        reason: why.
    """

    def __init__(self, event: str, reason: str) -> None:
        super().__init__(f"signal {event!r} refused: {reason}")
        self.event = event
        self.reason = reason


class DefinitionConflict(StateSagaError, ValueError):
    """Something else is already registered under a definition's name and version:
    another structure, another class, or another object of the same class. A
    registered definition is never replaced.

    Attributes:
        key: the definition's ``name@vversion``.
    """

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(problem)
        self.key = key

    @classmethod
    def changed(cls, key: str, known: str, given: str) -> DefinitionConflict:
        """Another structure (fingerprint) under the same name and version."""
        return cls(
            key,
            f"{key} is already registered with another structure (fingerprint {known}, "
            f"this one {given}); bump the version of the changed definition",
        )


class InvalidTransition(StateSagaError, RuntimeError):
    """A trigger was fired that the current state does not accept (a bug in statesaga)."""

    def __init__(self, saga: str, state: str, trigger: str) -> None:
        super().__init__(f"{saga}: no {trigger!r} transition from {state}")
        self.state = state
        self.trigger = trigger


class SchemaVersionError(StateSagaError, RuntimeError):
    """The database holds a statesaga schema this version cannot use; nothing was changed.

    Attributes:
        found: the schema version in the database (``None``: none is recorded).
        supported: the version this statesaga writes.
    """

    def __init__(self, found: int | None, supported: int, message: str | None = None) -> None:
        super().__init__(
            message
            or f"the database has statesaga schema version {found}, newer than this "
            f"statesaga's {supported}; upgrade statesaga"
        )
        self.found = found
        self.supported = supported

    @classmethod
    def missing(cls, supported: int) -> SchemaVersionError:
        """statesaga's tables exist but no schema version is recorded."""
        return cls(
            None,
            supported,
            "statesaga's tables exist but no schema version is recorded (the "
            "statesaga_schema table is missing or empty); statesaga will not guess: "
            "restore that table, or move the tables aside and let statesaga create them",
        )

    @classmethod
    def older(cls, found: int, supported: int) -> SchemaVersionError:
        """The schema is older than this statesaga's; reading does not upgrade it."""
        return cls(
            found,
            supported,
            f"the database has statesaga schema version {found}, older than this "
            f"statesaga's {supported}; upgrade it with `statesaga db upgrade --db URL` "
            "(or engine.upgrade())",
        )

    @classmethod
    def unknown(cls, found: int, supported: int) -> SchemaVersionError:
        """The recorded schema version is not one statesaga ever wrote."""
        return cls(
            found,
            supported,
            f"the database records statesaga schema version {found}, which no statesaga "
            "ever wrote; check the statesaga_schema table",
        )


class SchemaMissing(StateSagaError, LookupError):
    """The database has no statesaga schema (and reading does not create one).

    Attributes:
        url: the database, its password hidden.
    """

    def __init__(self, url: str) -> None:
        super().__init__(
            f"no statesaga schema in {url}; create it with `statesaga db upgrade --db URL` "
            "(or by starting a saga), or check the database URL"
        )
        self.url = url


class EngineClosed(StateSagaError, RuntimeError):
    """The engine was closed; it starts no new work. A saga it was driving stays
    where it was, resumable by any other engine."""

    def __init__(self) -> None:
        super().__init__(
            "this SagaEngine is closed; make a new one (sagas it was driving are left "
            "resumable where they were)"
        )


class HistoryMismatch(StateSagaError, ValueError):
    """A saga log does not fit the definition it is read with.

    Attributes:
        saga: the definition's ``name@vversion``.
        problem: what does not fit.
    """

    def __init__(self, saga: str, problem: str) -> None:
        super().__init__(
            f"the log does not fit {saga}: {problem}; read it with the definition "
            "(name, version) the saga ran on"
        )
        self.saga = saga
        self.problem = problem


class NestedTransaction(StateSagaError, RuntimeError):
    """A write to an SQLite database from inside a transactional step's own
    transaction on it (``engine.run`` from the step, say): SQLite has one writer at
    a time, so it would wait for its own lock until the busy timeout. Raised at once."""

    def __init__(self, database: str) -> None:
        super().__init__(
            f"a saga was started or moved on SQLite database {database!r} from inside a "
            "transactional step's transaction on the same database, which holds its only "
            "write lock: that would wait for itself. Start it from a non-transactional "
            "step (or after the saga), or use PostgreSQL"
        )
        self.database = database


class CorruptSaga(ResumeError):
    """A stored saga's row or log is damaged (an unknown status, unreadable JSON, a
    log that is not a path of its machine, a row that contradicts its log). It is
    neither read into a run nor acted on; it is left exactly as it is.

    Attributes:
        saga_id: the saga concerned.
        reason: what is wrong.
    """

    def __init__(self, saga_id: str, problem: str) -> None:
        super().__init__(saga_id, problem)
        self.args = (
            f"saga {saga_id!r} is corrupt: {problem}; it was left as it is: repair or "
            "restore its rows, or set it aside by hand",
        )

    def __str__(self) -> str:
        return str(self.args[0])


class InvalidParticipant(StateSagaError, TypeError):
    """A choreography participant class is malformed (or two share a name). Raised
    when the class is created, or when participants are put together.

    Attributes:
        participant: the class (or participant) name.
        problem: what is wrong.
    """

    def __init__(self, participant: str, problem: str) -> None:
        super().__init__(f"participant {participant}: {problem}")
        self.participant = participant
        self.problem = problem


class InvalidEvent(StateSagaError, ValueError):
    """An event to publish is malformed (its name, key or payload), or its
    publisher did not declare that it emits it. Nothing was written.

    Attributes:
        event: the event's name.
        problem: what is wrong.
    """

    def __init__(self, event: str, problem: str) -> None:
        super().__init__(f"event {event!r}: {problem}")
        self.event = event
        self.problem = problem


class BrokerError(StateSagaError, ConnectionError):
    """The message broker is unreachable, or refused a message. Nothing that
    was not confirmed is marked published: the relay sends it again.

    Attributes:
        broker: the broker, its password hidden.
    """

    def __init__(self, broker: str, problem: str) -> None:
        super().__init__(f"message broker {broker}: {problem}")
        self.broker = broker
        self.problem = problem
