"""The saga log protocol, as pure functions: what a transition writes, and how a
log becomes a run again.

Every transition of a saga appends to its log the outcome of the attempt that
ends (``completed``, ``failed``, ``compensated``, ``compensation_failed``) and,
unless it enters a terminal, the start of the attempt that begins
(``executing``, ``compensating``), and updates the saga row — in one
transaction. Read back in order, a log is therefore a path of the saga's
state machine; ``replay`` walks it and returns the moves it took, checking
each against the machine. The runner rebuilds a live run from it
(``Journal.rebuild``) and the diagram overlay draws it; neither re-derives
the protocol.

Nothing here does I/O: the store persists what this module builds, and hands
back rows for it to read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import attrs

from statesaga import _codec as codec
from statesaga._errors import HistoryMismatch
from statesaga._machine import SagaMachine, StateInfo
from statesaga._spec import SagaSpec, StateKind, TransitionKind
from statesaga._status import EntryStatus, SagaStatus
from statesaga._views import results
from statesaga.store import LogRecord, LogRow, NewSaga, SagaChanges, SagaRow

#: The entry that starts an attempt in a state of each kind.
ENTERED: Mapping[StateKind, EntryStatus] = {
    "step": EntryStatus.EXECUTING,
    "compensation": EntryStatus.COMPENSATING,
}
#: The entry that ends an attempt, by the state's kind and the trigger it fires:
#: ``succeed``; ``retry`` (it failed, another attempt follows); ``fail`` (for good).
OUTCOMES: Mapping[tuple[StateKind, str], EntryStatus] = {
    ("step", "succeed"): EntryStatus.COMPLETED,
    ("step", "retry"): EntryStatus.RETRYING,
    ("step", "fail"): EntryStatus.FAILED,
    ("compensation", "succeed"): EntryStatus.COMPENSATED,
    ("compensation", "retry"): EntryStatus.COMPENSATION_RETRYING,
    ("compensation", "fail"): EntryStatus.COMPENSATION_FAILED,
}
#: A runner's hold on a saga: (owner, until when).
Lease = tuple[str, float]

_KIND_OF_ENTERED = {status: kind for kind, status in ENTERED.items()}
_OUTCOME_OF = {status: key for key, status in OUTCOMES.items()}


class Entry(Protocol):
    """What ``replay`` reads of a log entry (``LogRow`` and ``LogEntry`` fit)."""

    @property
    def step(self) -> str:
        """The step the entry concerns."""

    @property
    def status(self) -> str:
        """The entry's status (an ``EntryStatus`` value)."""

    @property
    def attempt(self) -> int:
        """The attempt number."""

    @property
    def error(self) -> str | None:
        """The error of a failed attempt."""


@attrs.frozen
class Move:
    """One transition a saga took, read back from its log.

    Attributes:
        source: the state it left.
        dest: the state it entered.
        trigger: ``succeed``, ``retry`` or ``fail``.
        kind: what the transition means (see ``TransitionInfo.kind``).
        attempt: the attempt of ``source`` that ended with it.
        error: that attempt's error, if it failed.
    """

    source: str
    dest: str
    trigger: str
    kind: TransitionKind
    attempt: int
    error: str | None


@attrs.frozen
class Replay:
    """A saga log walked through its machine.

    Attributes:
        moves: the transitions taken, in order.
        state: the state the saga is in at the end of the log.
        entered: for each state, the entries that started an attempt in it
            (attempts, counting one re-run per crash).
        failures: failed attempts of ``state`` since the saga entered it: what
            its retry policy has used up.
        compensation_failed: whether some compensation failed for good.
        awaiting: the last attempt in ``state`` failed and the next one has not
            started yet (it waits out its retry delay).
    """

    moves: tuple[Move, ...]
    state: str
    entered: Mapping[str, int]
    failures: int
    compensation_failed: bool
    awaiting: bool = False


def replay(machine: SagaMachine, entries: Sequence[Entry]) -> Replay:
    """Walk a saga's log through its machine.

    Each outcome entry is one transition: ``retrying`` re-enters the same state
    (whose next attempt starts with its own entry, when it really starts), any
    other outcome leaves it for the state the machine gives, whose attempt starts
    in the next entry (or a terminal, which ends the log). An attempt started
    twice in a row is a re-run after a crash. (Logs written before ``retrying``
    existed say ``failed`` and start the next attempt at once; a ``failed``
    followed by the same state again is read as a retry.)

    Raises:
        HistoryMismatch: the log is not a path of the machine from its start.
    """
    key = machine.spec.key
    moves: list[Move] = []
    entered: dict[str, int] = {}
    state: str | None = None  # the state the saga is in
    open_ = False  # whether an attempt in ``state`` has started and has no outcome
    expected: str | None = machine.initial  # the state the next start entry must name
    failures = 0
    comp_failed = False
    pending: tuple[str, Entry] | None = None  # a legacy ``failed``: fail or retry?
    interrupted = False  # the last attempt was interrupted (not failed)

    def move(source: str, trigger: str, entry: Entry) -> str:
        nonlocal comp_failed, failures
        if trigger == "fail" and machine.state(source).kind == "compensation":
            comp_failed = True
        dest = machine.next_state(source, trigger, comp_failed)
        kind = machine.transition(source, trigger, dest).kind
        error = entry.error if trigger != "succeed" else None
        moves.append(Move(source, dest, trigger, kind, entry.attempt, error))
        failures = failures + 1 if trigger == "retry" else 0
        return dest

    for i, entry in enumerate(entries, 1):
        status = str(entry.status)
        if status in _KIND_OF_ENTERED:
            target = _state_of(machine, entry.step, _KIND_OF_ENTERED[EntryStatus(status)], i)
            if pending is not None:
                source, failed = pending
                expected = move(source, "retry" if target == source else "fail", failed)
                pending = None
            if open_ and target == state:
                pass  # the same attempt started again: a re-run after a crash
            elif open_:
                raise HistoryMismatch(
                    key, f"entry {i} enters {target!r} while {state!r} had no outcome"
                )
            elif target != expected:
                where = "starts at" if state is None else "enters"
                raise HistoryMismatch(
                    key, f"entry {i} {where} {target!r}, but the machine enters {expected!r}"
                )
            state, open_, interrupted = target, True, False
            entered[target] = entered.get(target, 0) + 1
        elif status in _OUTCOME_OF:
            kind, trigger = _OUTCOME_OF[EntryStatus(status)]
            owner = _state_of(machine, entry.step, kind, i)
            if not open_ or owner != state or pending is not None:
                raise HistoryMismatch(
                    key,
                    f"entry {i} ({entry.step} {status}) does not follow the start of its attempt",
                )
            assert state is not None
            open_ = False
            if trigger == "fail":
                pending = (state, entry)  # for good, unless the same state follows (old logs)
                continue
            expected = move(state, trigger, entry)
            if machine.is_terminal(expected):
                state = expected
        elif status == EntryStatus.INTERRUPTED:
            if not open_ or state is None or machine.state(state).step != entry.step:
                raise HistoryMismatch(
                    key, f"entry {i} ({entry.step} interrupted) does not follow an attempt"
                )
            open_, expected, interrupted = False, state, True  # the same state begins again
        else:
            raise HistoryMismatch(key, f"entry {i} has an unknown status {status!r}")

    if pending is not None:
        state = move(pending[0], "fail", pending[1])
    if state is not None and not open_ and not machine.is_terminal(state):
        last = moves[-1] if moves else None
        if not interrupted and (last is None or last.trigger != "retry"):
            raise HistoryMismatch(
                key, f"the log ends as {state!r} is left, but the machine goes on to {expected!r}"
            )
    if state is not None and machine.is_terminal(state):
        failures = 0
    return Replay(
        moves=tuple(moves),
        state=state if state is not None else machine.initial,
        entered=entered,
        failures=failures,
        compensation_failed=comp_failed,
        awaiting=state is not None and not open_ and not machine.is_terminal(state),
    )


def _state_of(machine: SagaMachine, step: str, kind: StateKind, index: int) -> str:
    """The state an entry of ``kind`` about ``step`` concerns."""
    spec = machine.spec
    try:
        s = spec.step(step)
    except KeyError:
        raise HistoryMismatch(
            spec.key, f"entry {index} names {step!r}, which is not a step"
        ) from None
    if kind == "step":
        return s.name
    if s.compensation is None:
        raise HistoryMismatch(
            spec.key, f"entry {index} compensates {step!r}, which has no compensation"
        )
    return s.compensation.name


@attrs.frozen
class _Plan:
    """What a transition writes: the outcome entry of the attempt that ends, the
    start entry of the one that begins (``None`` into a terminal), the saga's status."""

    step: str
    outcome: str
    failed: bool
    entered: str | None
    entered_step: str | None
    status: str
    terminal: bool


@attrs.frozen
class Rebuilt:
    """A stored saga, read back to be driven on.

    Attributes:
        input: its input, rebuilt as the saga's ``input_type``.
        results: its completed steps' results, rebuilt as their types.
        texts: their JSON.
        replay: its log walked through the machine.
    """

    input: Any
    results: dict[str, Any]
    texts: dict[str, str]
    replay: Replay


class Journal:
    """The log protocol of one saga definition.

    Args:
        spec: the definition.
        machine: its state machine.
    """

    def __init__(self, spec: SagaSpec, machine: SagaMachine) -> None:
        self.spec = spec
        self.machine = machine
        self._plans = {
            (t.source, t.trigger, t.dest): self._plan(machine.state(t.source), t.trigger, t.dest)
            for t in machine.transitions
        }

    def _plan(self, src: StateInfo, trigger: str, dest: str) -> _Plan:
        assert src.step is not None and src.kind != "terminal"
        dst = self.machine.state(dest)
        # A retry's next attempt is started by ``begin`` when it really starts.
        entered = None if dst.kind == "terminal" or trigger == "retry" else ENTERED[dst.kind].value
        return _Plan(
            src.step,
            OUTCOMES[(src.kind, trigger)].value,
            trigger != "succeed",
            entered,
            dst.step,
            dst.status.value,
            dst.kind == "terminal",
        )

    def created(
        self, saga_id: str, input_text: str, now: float, *, lease: Lease | None
    ) -> tuple[NewSaga, list[LogRecord]]:
        """The row and first entries of a new saga. With a ``lease`` (owner,
        until) its creator holds it and its first attempt starts now; without,
        it waits (attempt 0) for any runner to claim it."""
        running = lease is not None
        first = self.machine.initial
        entries = [_record(saga_id, 1, first, EntryStatus.EXECUTING, 1, now)] if running else []
        row: NewSaga = {
            "saga_id": saga_id,
            "name": self.spec.name,
            "version": self.spec.version,
            "fingerprint": self.spec.fingerprint,
            "status": SagaStatus.STARTED.value,
            "state": first,
            "attempt": 1 if running else 0,
            "seq": len(entries),
            "input": input_text,
            "error": None,
            "due_at": None,
            "created_at": now,
            "updated_at": now,
            "owner": lease[0] if lease else None,
            "lease_until": lease[1] if lease else None,
            "lease_epoch": 1 if lease else 0,
        }
        return row, entries

    def transition(
        self,
        saga_id: str,
        seq: int,
        attempt: int,
        source: str,
        trigger: str,
        dest: str,
        outcome: str | None,
        error: str | None,
        due_at: float | None,
        now: float,
        lease: Lease | None,
    ) -> tuple[SagaChanges, list[LogRecord]]:
        """What ``source --trigger--> dest`` writes.

        Args:
            saga_id: the saga.
            seq: the log entries written so far (the row's fence).
            attempt: the attempt of ``source`` that ended (after a retry, the row
                keeps it until ``begin`` starts the next).
            source: the state left; trigger: the trigger fired; dest: the state entered.
            outcome: the ending attempt's result as JSON, or its error text if it failed.
            error: the saga's error (what made it compensate), if any.
            due_at: for a retry, when the next attempt is due.
            now: the time of the transition.
            lease: the runner's (owner, new expiry) to keep the saga, or ``None``
                to let it go (it is also let go on entering a terminal).
        """
        plan = self._plans[(source, trigger, dest)]
        seq += 1
        entries: list[LogRecord] = [
            {
                "saga_id": saga_id,
                "seq": seq,
                "step": plan.step,
                "status": plan.outcome,
                "attempt": attempt,
                "result": None if plan.failed else outcome,
                "error": outcome if plan.failed else None,
                "at": now,
            }
        ]
        next_attempt = attempt if trigger == "retry" else 0
        if plan.entered is not None:
            assert plan.entered_step is not None
            next_attempt = 1
            seq += 1
            entries.append(
                {
                    "saga_id": saga_id,
                    "seq": seq,
                    "step": plan.entered_step,
                    "status": plan.entered,
                    "attempt": next_attempt,
                    "result": None,
                    "error": None,
                    "at": now,
                }
            )
        changes: SagaChanges = {
            "status": plan.status,
            "state": dest,
            "attempt": next_attempt,
            "seq": seq,
            "error": error,
            "due_at": due_at if trigger == "retry" else None,
            "updated_at": now,
            "owner": lease[0] if lease and not plan.terminal else None,
            "lease_until": lease[1] if lease and not plan.terminal else None,
        }
        return changes, entries

    def begin(
        self,
        saga_id: str,
        seq: int,
        state: str,
        attempt: int,
        error: str | None,
        now: float,
        lease: Lease,
    ) -> tuple[SagaChanges, LogRecord]:
        """What starting the next attempt in ``state`` writes: after a retry delay,
        when a runner claimed a saga (a crash during the attempt is then counted),
        or when a started saga is first run.

        Args:
            saga_id: the saga; seq: the log entries so far; state: its state.
            attempt: the row's attempt number (the last one begun, 0 for none).
            error: the saga's error, kept.
            now: when the attempt starts; lease: the runner's hold.
        """
        info = self.machine.state(state)
        assert info.step is not None and info.kind != "terminal"
        entry = _record(saga_id, seq + 1, info.step, ENTERED[info.kind], attempt + 1, now)
        return _staying(info, seq + 1, attempt + 1, error, now, lease), entry

    def interrupted(
        self,
        saga_id: str,
        seq: int,
        state: str,
        attempt: int,
        error: str | None,
        why: str,
        now: float,
    ) -> tuple[SagaChanges, LogRecord]:
        """What an attempt interrupted from outside (not failed) writes: an
        ``interrupted`` entry; the saga stays in ``state``, let go, its next
        attempt to begin when a runner takes it."""
        info = self.machine.state(state)
        assert info.step is not None
        entry = _record(saga_id, seq + 1, info.step, EntryStatus.INTERRUPTED, attempt, now)
        entry["error"] = why
        return _staying(info, seq + 1, attempt, error, now, None), entry

    def check(self, row: SagaRow, log: Sequence[LogRow]) -> Replay:
        """Check that ``log`` is a path of the machine ending where ``row`` says.

        Raises:
            HistoryMismatch: it is not.
        """
        key = self.spec.key
        try:
            info = self.machine.state(row.state)
        except KeyError:
            raise HistoryMismatch(key, f"its state {row.state!r} is not a state of {key}") from None
        if len(log) != row.seq:
            raise HistoryMismatch(
                key, f"its row says {row.seq} log entries but the log has {len(log)}"
            )
        walked = replay(self.machine, log)
        if walked.state != row.state or info.status.value != row.status:
            raise HistoryMismatch(
                key,
                f"its row says {row.status} in {row.state!r} but its log leads to {walked.state!r}",
            )
        return walked

    def rebuild(self, row: SagaRow, log: Sequence[LogRow]) -> Rebuilt:
        """Read a stored saga back: its input, results and position.

        Raises:
            HistoryMismatch: the row and its log disagree, or the log is not a
                path of this definition's machine.
            Exception: the stored input or a result cannot be decoded.
        """
        walked = self.check(row, log)
        return Rebuilt(
            input=codec.loads(row.input, self.spec.input_type),
            results=results(log, self.spec),
            texts={r.step: r.result for r in log if r.status == EntryStatus.COMPLETED and r.result},
            replay=walked,
        )


def _staying(
    info: StateInfo, seq: int, attempt: int, error: str | None, now: float, lease: Lease | None
) -> SagaChanges:
    """The row of a saga that stays in its state (an attempt begins or stops)."""
    return {
        "status": info.status.value,
        "state": info.name,
        "attempt": attempt,
        "seq": seq,
        "error": error,
        "due_at": None,
        "updated_at": now,
        "owner": lease[0] if lease else None,
        "lease_until": lease[1] if lease else None,
    }


def _record(
    saga_id: str, seq: int, step: str, status: EntryStatus, attempt: int, now: float
) -> LogRecord:
    return {
        "saga_id": saga_id,
        "seq": seq,
        "step": step,
        "status": status.value,
        "attempt": attempt,
        "result": None,
        "error": None,
        "at": now,
    }
