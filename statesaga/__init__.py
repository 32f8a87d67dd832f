"""statesaga: declarative sagas compiled to state machines, persisted in SQL.

Declare a saga as a class of steps with compensations, register it with a
``SagaEngine``, and run it; every transition is one database transaction, so a
crashed process resumes where it stopped.

The public packages are ``statesaga`` (this one), ``statesaga.store``,
``statesaga.diagrams`` and ``statesaga.testing``; modules whose names start
with an underscore are the implementation.
"""

from statesaga._definition import Saga, step
from statesaga._engine import SagaEngine
from statesaga._errors import (
    ConcurrentUpdate,
    DeadlineExceeded,
    DefinitionConflict,
    EngineClosed,
    HistoryMismatch,
    InvalidDefinition,
    InvalidInput,
    InvalidTransition,
    NotRegistered,
    ResumeError,
    SagaIdConflict,
    SagaNotFound,
    SchemaMissing,
    SchemaVersionError,
    SerializationError,
    StateSagaError,
    StepTimeout,
)
from statesaga._machine import SagaMachine
from statesaga._runner import Hooks, StepContext
from statesaga._spec import CompensationSpec, Retry, SagaSpec, StepSpec
from statesaga._status import EntryStatus, SagaStatus
from statesaga._views import LogEntry, SagaRun, SagaSummary
from statesaga._worker import RecoveryReport, Worker

__all__ = [
    "CompensationSpec",
    "ConcurrentUpdate",
    "DeadlineExceeded",
    "DefinitionConflict",
    "EngineClosed",
    "EntryStatus",
    "HistoryMismatch",
    "Hooks",
    "InvalidDefinition",
    "InvalidInput",
    "InvalidTransition",
    "LogEntry",
    "NotRegistered",
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
    "StateSagaError",
    "StepContext",
    "StepSpec",
    "StepTimeout",
    "Worker",
    "step",
]
__version__ = "0.1.0"

# Public names report the package a user imports them from (as httpx does).
for _name in __all__:
    globals()[_name].__module__ = __name__
del _name
