"""The saga log protocol, as pure functions: what a transition writes, and how a
log becomes a run again.

Every transition of a saga appends to its log the outcome of the attempt that
ends (``completed``, ``failed``, ``compensated``, ``compensation_failed``) and,
unless it enters a terminal, the start of the attempt that begins
(``executing``, ``compensating``), and updates the saga row — in one
transaction. Read back in order, a log is therefore a path of the saga's
state machine; ``statesaga._replay`` walks it and returns the moves it took,
checking each against the machine. The runner rebuilds a live run from it
(``Journal.rebuild``) and the diagram overlay draws it; neither re-derives
the protocol.

Nothing here does I/O: the store persists what this module builds, and hands
back rows for it to read.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs

from statesaga import _codec as codec
from statesaga._errors import HistoryMismatch
from statesaga._machine import SagaMachine, StateInfo
from statesaga._replay import ENTERED, OUTCOMES, Replay, replay
from statesaga._spec import SagaSpec
from statesaga._status import EntryStatus, SagaStatus
from statesaga._views import results
from statesaga.store import LogRecord, LogRow, NewSaga, SagaChanges, SagaRow

#: A runner's hold on a saga: (owner, until when).
Lease = tuple[str, float]


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
            if not machine.is_terminal(t.source)  # the operator's: see ``operator``
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
            "waiting_for": None,
            "waiting_key": None,
            "wait_until": None,
            "request": None,
            "request_by": None,
            "request_reason": None,
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
        wait_until: float | None = None,
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
            wait_until: at a wait step, when it gives up; kept by a retry.
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
            "waiting_for": None,
            "waiting_key": None,
            "wait_until": wait_until if trigger == "retry" else None,
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
        wait_until: float | None = None,
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
        return _staying(info, seq + 1, attempt + 1, error, now, lease, wait_until), entry

    def interrupted(
        self,
        saga_id: str,
        seq: int,
        state: str,
        attempt: int,
        error: str | None,
        why: str,
        now: float,
        wait_until: float | None = None,
    ) -> tuple[SagaChanges, LogRecord]:
        """What an attempt interrupted from outside (not failed) writes: an
        ``interrupted`` entry; the saga stays in ``state``, let go, its next
        attempt to begin when a runner takes it."""
        changes, entry = self._stopped(
            saga_id, seq, state, attempt, error, EntryStatus.INTERRUPTED, now, wait_until
        )
        entry["error"] = why
        return changes, entry

    def paused(
        self,
        saga_id: str,
        seq: int,
        state: str,
        attempt: int,
        error: str | None,
        note: str,
        now: float,
        wait_until: float | None = None,
    ) -> tuple[SagaChanges, LogRecord]:
        """What carrying out an operator's pause writes: a ``paused`` entry (its
        result says who and why); the saga stays in ``state``, let go."""
        changes, entry = self._stopped(
            saga_id, seq, state, attempt, error, EntryStatus.PAUSED, now, wait_until
        )
        entry["result"] = note
        return changes, entry

    def _stopped(
        self,
        saga_id: str,
        seq: int,
        state: str,
        attempt: int,
        error: str | None,
        status: EntryStatus,
        now: float,
        wait_until: float | None,
    ) -> tuple[SagaChanges, LogRecord]:
        """An attempt that stops without an outcome (``status``): the saga stays in
        ``state``, let go, and its next attempt begins when a runner takes it."""
        info = self.machine.state(state)
        assert info.step is not None
        entry = _record(saga_id, seq + 1, info.step, status, attempt, now)
        return _staying(info, seq + 1, attempt, error, now, None, wait_until), entry

    def operator(
        self,
        saga_id: str,
        seq: int,
        source: str,
        status: EntryStatus,
        dest: str,
        step: str,
        attempt: int,
        error: str | None,
        note: str,
        now: float,
    ) -> tuple[SagaChanges, LogRecord]:
        """What an operator's ``unpaused`` (``dest`` = ``source``), ``resolved`` or
        ``retried`` writes: one entry about ``step`` (its result says who and
        why), the saga in ``dest``, let go, its next attempt to begin (numbered
        after ``attempt``)."""
        entry = _record(saga_id, seq + 1, step, status, attempt, now)
        entry["result"] = note
        info = self.machine.state(dest)
        return _staying(info, seq + 1, attempt, error, now, None, None), entry

    def waiting(
        self,
        saga_id: str,
        seq: int,
        state: str,
        attempt: int,
        error: str | None,
        key: str | None,
        until: float | None,
        now: float,
    ) -> tuple[SagaChanges, LogRecord]:
        """What parking a wait step writes: a ``waiting`` entry; the saga stays in
        ``state``, let go, named as waiting for its event (and ``key``), due when
        the wait gives up (``until``; ``None``: only a signal wakes it)."""
        info = self.machine.state(state)
        assert info.step is not None and info.wait is not None
        entry = _record(saga_id, seq + 1, info.step, EntryStatus.WAITING, attempt, now)
        changes = _staying(info, seq + 1, attempt, error, now, None, until)
        changes["due_at"] = until
        changes["waiting_for"] = info.wait
        changes["waiting_key"] = key
        return changes, entry

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
    info: StateInfo,
    seq: int,
    attempt: int,
    error: str | None,
    now: float,
    lease: Lease | None,
    wait_until: float | None,
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
        "waiting_for": None,
        "waiting_key": None,
        "wait_until": wait_until,
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
