"""Test sagas: inject failures and crashes into a saga's real handlers, and
check the saga invariants on what it did.

- ``SagaHarness`` runs a saga on a real database under a failure plan
  (``Fault`` per step or compensation) and an optional simulated ``Crash``,
  then resumes it in a fresh engine.
- ``statesaga.testing.strategies`` derives Hypothesis strategies from a saga
  class (failure plans, crash points, duplicate deliveries, whole scenarios);
  ``SagaHarness.check_against_baseline`` runs one and compares it with the
  same failures without crash.
- ``SagaStateMachine`` is a Hypothesis state machine to subclass for a saga.
- ``check_saga`` verifies a finished saga's log against the saga invariants
  and fails with the log drawn as a timeline.
"""

from statesaga.testing.harness import (
    CRASH_POINTS,
    Call,
    Crash,
    Fault,
    InjectedFault,
    Outcome,
    SagaHarness,
    Scenario,
    SimulatedCrash,
)
from statesaga.testing.invariants import InvariantViolation, check_saga, format_timeline, outcomes
from statesaga.testing.stateful import SagaStateMachine

__all__ = [
    "CRASH_POINTS",
    "Call",
    "Crash",
    "Fault",
    "InjectedFault",
    "InvariantViolation",
    "Outcome",
    "SagaHarness",
    "SagaStateMachine",
    "Scenario",
    "SimulatedCrash",
    "check_saga",
    "format_timeline",
    "outcomes",
]
