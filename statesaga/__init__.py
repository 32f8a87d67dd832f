"""statesaga: declarative sagas compiled to state machines, persisted in SQL.

Declare a saga as a class of steps with compensations, register it with a
``SagaEngine``, and run it; every transition is one database transaction, so a
crashed process resumes where it stopped.

The public packages are ``statesaga`` (this one), ``statesaga.store``,
``statesaga.diagrams`` and ``statesaga.testing``; modules whose names start
with an underscore are the implementation.

The public names are imported on first use (PEP 562), all together: importing
``statesaga`` alone, as the ``statesaga`` command does before it knows which
subcommand runs, costs nothing of SQLAlchemy or transitions.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from statesaga._definition import Saga, step, wait
    from statesaga._engine import SagaEngine
    from statesaga._errors import (
        BrokerError,
        ConcurrentUpdate,
        CorruptSaga,
        DeadlineExceeded,
        DefinitionConflict,
        EngineClosed,
        HistoryMismatch,
        InDoubt,
        InvalidDefinition,
        InvalidEvent,
        InvalidInput,
        InvalidParticipant,
        InvalidTransition,
        NestedTransaction,
        NotRegistered,
        OperatorRefused,
        ResumeError,
        SagaIdConflict,
        SagaNotFound,
        SchemaMissing,
        SchemaVersionError,
        SerializationError,
        SignalRefused,
        StateSagaError,
        StepTimeout,
    )
    from statesaga._handlers import Hooks, Signal, StepContext
    from statesaga._machine import SagaMachine
    from statesaga._signals import PendingSignal, SignalReceipt
    from statesaga._spec import NOT_COMPLETED, CompensationSpec, Retry, SagaSpec, StepSpec
    from statesaga._status import EntryStatus, SagaStatus
    from statesaga._views import LogEntry, SagaRun, SagaSummary
    from statesaga._worker import RecoveryReport, Worker

#: Where each public name is defined.
_SOURCES = {
    "statesaga._definition": ("Saga", "step", "wait"),
    "statesaga._engine": ("SagaEngine",),
    "statesaga._errors": (
        "BrokerError",
        "ConcurrentUpdate",
        "CorruptSaga",
        "DeadlineExceeded",
        "DefinitionConflict",
        "EngineClosed",
        "HistoryMismatch",
        "InDoubt",
        "InvalidDefinition",
        "InvalidEvent",
        "InvalidInput",
        "InvalidParticipant",
        "InvalidTransition",
        "NestedTransaction",
        "NotRegistered",
        "OperatorRefused",
        "ResumeError",
        "SagaIdConflict",
        "SagaNotFound",
        "SchemaMissing",
        "SchemaVersionError",
        "SerializationError",
        "SignalRefused",
        "StateSagaError",
        "StepTimeout",
    ),
    "statesaga._machine": ("SagaMachine",),
    "statesaga._handlers": ("Hooks", "Signal", "StepContext"),
    "statesaga._signals": ("PendingSignal", "SignalReceipt"),
    "statesaga._spec": ("NOT_COMPLETED", "CompensationSpec", "Retry", "SagaSpec", "StepSpec"),
    "statesaga._status": ("EntryStatus", "SagaStatus"),
    "statesaga._views": ("LogEntry", "SagaRun", "SagaSummary"),
    "statesaga._worker": ("RecoveryReport", "Worker"),
}

__all__ = [
    "NOT_COMPLETED",
    "BrokerError",
    "CompensationSpec",
    "ConcurrentUpdate",
    "CorruptSaga",
    "DeadlineExceeded",
    "DefinitionConflict",
    "EngineClosed",
    "EntryStatus",
    "HistoryMismatch",
    "Hooks",
    "InDoubt",
    "InvalidDefinition",
    "InvalidEvent",
    "InvalidInput",
    "InvalidParticipant",
    "InvalidTransition",
    "LogEntry",
    "NestedTransaction",
    "NotRegistered",
    "OperatorRefused",
    "PendingSignal",
    "RecoveryReport",
    "ResumeError",
    "Retry",
    "Saga",
    "SagaEngine",
    "SagaIdConflict",
    "SagaMachine",
    "SagaNotFound",
    "SagaRun",
    "SagaSpec",
    "SagaStatus",
    "SagaSummary",
    "SchemaMissing",
    "SchemaVersionError",
    "SerializationError",
    "Signal",
    "SignalReceipt",
    "SignalRefused",
    "StateSagaError",
    "StepContext",
    "StepSpec",
    "StepTimeout",
    "Worker",
    "step",
    "wait",
]
__version__ = "0.1.0"


def _load() -> None:
    """Import every public name at once, and make each report this package as
    its module (as httpx does)."""
    for module_name, names in _SOURCES.items():
        module = importlib.import_module(module_name)
        for name in names:
            value = getattr(module, name)
            value.__module__ = __name__
            globals()[name] = value


def __getattr__(name: str) -> Any:
    if name in __all__:
        _load()
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
