"""What callers see of a saga — ``SagaRun``, ``SagaSummary``, ``LogEntry`` — built
from stored rows or a live run."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import attrs

from statesaga import _codec as codec
from statesaga._machine import SagaMachine
from statesaga._spec import SagaSpec
from statesaga._status import EntryStatus, SagaStatus
from statesaga.store import LogRow, SagaRow


@attrs.frozen
class LogEntry:
    """One entry of a saga's log.

    Attributes:
        seq: position in the log, from 1.
        step: the step the entry concerns (compensation entries name their step).
        status: what happened.
        attempt: the attempt number of that step or compensation.
        result: the step's result, on ``completed`` entries.
        error: the error, on ``failed`` and ``compensation_failed`` entries.
        at: when it was recorded (UTC).
    """

    seq: int
    step: str
    status: EntryStatus
    attempt: int
    result: Any
    error: str | None
    at: datetime


@attrs.frozen
class SagaRun:
    """A saga's state as seen by the caller.

    Attributes:
        saga_id: its id.
        name: its definition's name.
        version: its definition's version.
        fingerprint: its definition's structural fingerprint.
        status: its status.
        state: its FSM state (the step or compensation in flight, or a terminal).
        results: the results of its completed steps, by step name.
        error: the error that made it compensate, if any.
        created: ``False`` when ``run``/``start`` found it already existing.
    """

    saga_id: str
    name: str
    version: int
    fingerprint: str
    status: SagaStatus
    state: str
    results: Mapping[str, Any]
    error: str | None
    created: bool = True

    @property
    def succeeded(self) -> bool:
        """Whether the saga completed."""
        return self.status is SagaStatus.COMPLETED


@attrs.frozen
class SagaSummary:
    """One saga as a listing shows it: its row, without its log.

    Attributes:
        saga_id: its id.
        name: its definition's name.
        version: its definition's version.
        fingerprint: its definition's structural fingerprint.
        status: its status.
        state: its FSM state.
        attempt: the attempt number of the step or compensation in ``state``
            (0: not tried yet, or finished).
        error: the error that made it compensate, if any.
        created_at: when it was started (UTC).
        updated_at: when its last transition was recorded (UTC).
    """

    saga_id: str
    name: str
    version: int
    fingerprint: str
    status: SagaStatus
    state: str
    attempt: int
    error: str | None
    created_at: datetime
    updated_at: datetime


def results(log: Sequence[LogRow], spec: SagaSpec | None) -> dict[str, Any]:
    """The results of the completed steps in ``log``, by step name, rebuilt as
    their handlers' annotated types when ``spec`` is given."""
    found: dict[str, Any] = {}
    for r in log:
        if r.status == EntryStatus.COMPLETED:
            found[r.step] = _decode_result(r, spec)
    return found


def _decode_result(row: LogRow, spec: SagaSpec | None) -> Any:
    result_type = None
    if spec is not None:
        try:
            result_type = spec.step(row.step).result_type
        except KeyError:
            result_type = None
    return codec.loads(row.result, result_type)


#: Entries an operator's action writes, whose result is ``{"actor", "reason"}``.
_OPERATOR_ENTRIES = frozenset(
    s.value
    for s in (EntryStatus.PAUSED, EntryStatus.UNPAUSED, EntryStatus.RESOLVED, EntryStatus.RETRIED)
)


def log_entry(row: LogRow, spec: SagaSpec | None) -> LogEntry:
    """A stored log row as the caller sees it."""
    return LogEntry(
        seq=row.seq,
        step=row.step,
        status=EntryStatus(row.status),
        attempt=row.attempt,
        result=(
            _decode_result(row, spec)
            if row.status == EntryStatus.COMPLETED
            # An operator's entry says who and why.
            else json.loads(row.result)
            if row.status in _OPERATOR_ENTRIES and row.result is not None
            else None
        ),
        error=row.error,
        at=datetime.fromtimestamp(row.at, UTC),
    )


def stored_run(row: SagaRow, results: Mapping[str, Any]) -> SagaRun:
    """A stored saga, with its results, as the caller sees it."""
    return SagaRun(
        saga_id=row.saga_id,
        name=row.name,
        version=row.version,
        fingerprint=row.fingerprint,
        status=SagaStatus(row.status),
        state=row.state,
        results=results,
        error=row.error,
    )


def summary(row: SagaRow) -> SagaSummary:
    """A stored saga row as a listing shows it."""
    return SagaSummary(
        saga_id=row.saga_id,
        name=row.name,
        version=row.version,
        fingerprint=row.fingerprint,
        status=SagaStatus(row.status),
        state=row.state,
        attempt=row.attempt,
        error=row.error,
        created_at=datetime.fromtimestamp(row.created_at, UTC),
        updated_at=datetime.fromtimestamp(row.updated_at, UTC),
    )


def snapshot(
    spec: SagaSpec,
    machine: SagaMachine,
    saga_id: str,
    state: str,
    results: Mapping[str, Any],
    error: str | None,
) -> SagaRun:
    """A saga in ``state`` as the caller sees it."""
    return SagaRun(
        saga_id=saga_id,
        name=spec.name,
        version=spec.version,
        fingerprint=spec.fingerprint,
        status=machine.state(state).status,
        state=state,
        results=dict(results),
        error=error,
    )
