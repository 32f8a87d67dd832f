"""The rows the store reads and writes, typed once.

The journal builds the written ones (``NewSaga``, ``LogRecord``,
``SagaChanges``: plain dicts, handed to the driver as they are, so they cost
nothing on the hot path) and reads the stored ones (``SagaRow``, ``LogRow``).
"""

from __future__ import annotations

from typing import TypedDict

import attrs


@attrs.frozen
class SagaRow:
    """A saga row as stored."""

    saga_id: str
    name: str
    version: int
    fingerprint: str
    status: str
    state: str
    attempt: int
    seq: int
    input: str
    error: str | None
    due_at: float | None
    created_at: float
    updated_at: float
    owner: str | None = None
    lease_until: float | None = None
    lease_epoch: int = 0
    waiting_for: str | None = None
    waiting_key: str | None = None
    wait_until: float | None = None
    request: str | None = None
    request_by: str | None = None
    request_reason: str | None = None


@attrs.frozen
class LogRow:
    """A saga log entry as stored."""

    saga_id: str
    seq: int
    step: str
    status: str
    attempt: int
    result: str | None
    error: str | None
    at: float


class LogRecord(TypedDict):
    """A log entry to append (the columns of ``LogRow``)."""

    saga_id: str
    seq: int
    step: str
    status: str
    attempt: int
    result: str | None
    error: str | None
    at: float


class SagaChanges(TypedDict):
    """What one transition changes in a saga row (``owner`` and ``lease_until``:
    the runner keeps its lease, or ``None`` to let the saga go)."""

    status: str
    state: str
    attempt: int
    seq: int
    error: str | None
    due_at: float | None
    updated_at: float
    owner: str | None
    lease_until: float | None
    waiting_for: str | None
    waiting_key: str | None
    wait_until: float | None


class NewSaga(SagaChanges):
    """A saga row to insert (the columns of ``SagaRow``)."""

    saga_id: str
    name: str
    version: int
    fingerprint: str
    input: str
    created_at: float
    lease_epoch: int
    request: str | None
    request_by: str | None
    request_reason: str | None
