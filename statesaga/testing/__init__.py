"""Test sagas: inject failures and crashes into a saga's real handlers, and
check the saga invariants on what it did.

- ``assert_saga_correct(saga, input, effects=..., state=...)`` is the one-line
  test: it runs ``explore`` and fails with the smallest counterexample.
- ``explore`` walks the saga's whole failure space — every failure plan up to
  ``max_faults`` faults, by every crash point each plan reaches, by a
  duplicate start — deterministically, smallest first, and compares each run with the
  same faults without the crash: status and log, effects, the services' state.
- ``SagaHarness`` runs a saga on a real database under a failure plan
  (``Fault`` per step or compensation) and simulated ``Crash``es, then resumes
  it in a fresh engine; async sagas run on one event loop.
- ``statesaga.testing.strategies`` derives Hypothesis strategies from a saga
  class (failure plans, reachable crash points, duplicate deliveries, whole
  scenarios) for custom properties.
- ``SagaStateMachine`` is a Hypothesis state machine to subclass for a saga;
  it compares effects with a crash-free model of the same operations.
- ``check_saga`` verifies a finished saga's log against the saga invariants
  and fails with the log drawn as a timeline.

Hypothesis comes with the ``test`` extra (``pip install 'statesaga[test]'``).
This package imports it only when a name that needs it is first used
(``SagaStateMachine``, ``statesaga.testing.strategies``, ``explore`` of a
space too large to run whole): the pytest plugin imports this package in
every pytest run, with or without the extra.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from statesaga.testing._injection import SimulatedCrash
from statesaga.testing._outcome import Call, Outcome
from statesaga.testing._report import Counterexample
from statesaga.testing._scenario import CRASH_POINTS, Crash, Fault, InjectedFault, Scenario
from statesaga.testing.explore import Exploration, aexplore, assert_saga_correct, explore
from statesaga.testing.harness import SagaHarness
from statesaga.testing.invariants import InvariantViolation, check_saga, format_timeline, outcomes

if TYPE_CHECKING:
    from statesaga.testing.stateful import SagaStateMachine

__all__ = [
    "CRASH_POINTS",
    "Call",
    "Counterexample",
    "Crash",
    "Exploration",
    "Fault",
    "InjectedFault",
    "InvariantViolation",
    "Outcome",
    "SagaHarness",
    "SagaStateMachine",
    "Scenario",
    "SimulatedCrash",
    "aexplore",
    "assert_saga_correct",
    "check_saga",
    "explore",
    "format_timeline",
    "outcomes",
]

# Public names report the package a user imports them from.
for _name in __all__:
    _obj = globals().get(_name)
    if isinstance(_obj, type) or callable(_obj):
        _obj.__module__ = __name__
del _name, _obj


def __getattr__(name: str) -> Any:
    """Import the names that need Hypothesis on first use."""
    if name == "SagaStateMachine":
        try:
            from statesaga.testing.stateful import SagaStateMachine
        except ModuleNotFoundError as exc:
            if (exc.name or "").partition(".")[0] != "hypothesis":
                raise
            raise ModuleNotFoundError(
                "statesaga.testing.SagaStateMachine needs Hypothesis: "
                "pip install 'statesaga[test]'",
                name=exc.name,
            ) from exc
        globals()[name] = SagaStateMachine
        return SagaStateMachine
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
