"""statesaga: declarative sagas compiled to state machines, persisted in SQL.

Declare a saga as a class of steps with compensations, register it with a
``SagaEngine``, and run it; every transition is one database transaction, so a
crashed process resumes where it stopped.
"""

from statesaga._definition import Retry, Saga, SagaSpec, StepSpec, step
from statesaga._engine import Hooks, LogEntry, RecoveryReport, SagaEngine, SagaRun, StepContext
from statesaga._errors import (
    ConcurrentUpdate,
    DeadlineExceeded,
    InvalidDefinition,
    InvalidInput,
    NotRegistered,
    ResumeError,
    SagaIdConflict,
    SagaNotFound,
    SerializationError,
    StateSagaError,
    StepTimeout,
)
from statesaga._machine import SagaMachine
from statesaga._status import EntryStatus, SagaStatus

__all__ = [
    "ConcurrentUpdate",
    "DeadlineExceeded",
    "EntryStatus",
    "Hooks",
    "InvalidDefinition",
    "InvalidInput",
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
    "SerializationError",
    "StateSagaError",
    "StepContext",
    "StepSpec",
    "StepTimeout",
    "step",
]
__version__ = "0.1.0"
