"""The saga log read back: one parser, from log entries to the path they took.

A log is a sequence of entries: the start of an attempt in a state
(``executing``, ``compensating``), its outcome (``completed``, ``retrying``,
``failed``, ``compensated``, ``compensation_retrying``, ``compensation_failed``)
or its interruption. ``replay`` walks them through the saga's machine and
returns the moves they took, refusing any log that is not a path of the
machine from its start. Resuming a saga (``Journal.rebuild``), checking a
stored saga on read, and the diagram overlay all read a log through it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

import attrs

from statesaga._errors import HistoryMismatch
from statesaga._machine import SagaMachine
from statesaga._spec import StateKind, TransitionKind
from statesaga._status import EntryStatus

#: The entry that starts an attempt in a state of each kind.
ENTERED: Mapping[StateKind, EntryStatus] = {
    "step": EntryStatus.EXECUTING,
    "compensation": EntryStatus.COMPENSATING,
}
#: The entry that ends an attempt, by the state's kind and the trigger it fires:
#: ``succeed``; ``retry`` (it failed, another attempt follows); ``fail`` (for good);
#: ``fail_in_doubt`` (for good, after the handler may have acted).
OUTCOMES: Mapping[tuple[StateKind, str], EntryStatus] = {
    ("step", "succeed"): EntryStatus.COMPLETED,
    ("step", "retry"): EntryStatus.RETRYING,
    ("step", "fail"): EntryStatus.FAILED,
    ("step", "fail_in_doubt"): EntryStatus.FAILED_IN_DOUBT,
    ("step", "expire"): EntryStatus.TIMED_OUT,
    ("step", "cancel"): EntryStatus.CANCELLED,
    ("compensation", "succeed"): EntryStatus.COMPENSATED,
    ("compensation", "retry"): EntryStatus.COMPENSATION_RETRYING,
    ("compensation", "fail"): EntryStatus.COMPENSATION_FAILED,
}

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

    def operator_move(source: str, trigger: str, dest: str, i: int, entry: Entry) -> str:
        try:
            kind = machine.transition(source, trigger, dest).kind
        except KeyError:
            raise HistoryMismatch(
                key, f"entry {i} ({entry.step} {entry.status}) is no transition of the machine"
            ) from None
        moves.append(Move(source, dest, trigger, kind, entry.attempt, entry.error))
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
        elif status in (EntryStatus.RESOLVED, EntryStatus.RETRIED):
            # The operator's, on a saga that ended compensation_failed.
            if pending is not None:
                source, failed = pending
                state = expected = move(source, "fail", failed)
                pending = None
            if open_ or state != "compensation_failed":
                raise HistoryMismatch(
                    key, f"entry {i} ({entry.step} {status}) follows no compensation_failed end"
                )
            if status == EntryStatus.RESOLVED:
                state = expected = operator_move(state, "resolve", "resolved", i, entry)
            else:
                target = _state_of(machine, entry.step, "compensation", i)
                operator_move(state, "retry_compensations", target, i, entry)
                state = expected = target
                comp_failed, interrupted = False, True  # its compensations begin again
        elif status == EntryStatus.UNPAUSED:
            if open_ or state is None or machine.is_terminal(state):
                raise HistoryMismatch(key, f"entry {i} ({entry.step} unpaused) follows no pause")
        elif status in (EntryStatus.INTERRUPTED, EntryStatus.WAITING, EntryStatus.PAUSED):
            if not open_ or state is None or machine.state(state).step != entry.step:
                raise HistoryMismatch(
                    key, f"entry {i} ({entry.step} {status}) does not follow an attempt"
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
