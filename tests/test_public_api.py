"""The public surface is pinned: each public package's names, where they report
they live, and one error tree."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from types import ModuleType

import pytest

import statesaga

PUBLIC: dict[str, list[str]] = {
    "statesaga": [
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
        "NOT_COMPLETED",
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
    ],
    "statesaga.testing": [
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
    ],
    "statesaga.store": [
        "LogRecord",
        "LogRow",
        "NewSaga",
        "SagaChanges",
        "SagaRow",
        "SqlStore",
        "Transaction",
        "make_engine",
    ],
    "statesaga.choreography": [
        "Broker",
        "Consumer",
        "Delivery",
        "Event",
        "EventContext",
        "HandlerSpec",
        "Inbox",
        "MemoryBroker",
        "Participant",
        "RabbitMQ",
        "Relay",
        "SqlBroker",
        "Subscription",
        "handles",
        "publish",
    ],
    "statesaga.diagrams": [
        "DefinitionNotFound",
        "Edge",
        "GraphModel",
        "Node",
        "PathStep",
        "RenderError",
        "Report",
        "ScriptedFailure",
        "build_model",
        "find_sagas",
        "generate",
        "instance_model",
        "model_of",
        "render",
        "render_dot",
        "scripted_run",
        "to_dot",
        "to_mermaid",
        "write",
    ],
}


@pytest.mark.parametrize("package", sorted(PUBLIC))
def test_all_is_pinned(package: str) -> None:
    """``__all__`` lists exactly the public names; adding or removing one is a decision.
    Each has a docstring and reports the public package as its module."""
    module = importlib.import_module(package)
    assert sorted(module.__all__) == PUBLIC[package]
    for name in module.__all__:
        obj = getattr(module, name)
        assert obj.__doc__, f"{package}.{name} has no docstring"
        if isinstance(obj, type) or inspect.isfunction(obj):
            where = obj.__module__
            assert where == package, f"{package}.{name} says it lives in {where}"


def _modules() -> list[ModuleType]:
    found = [statesaga]
    for info in pkgutil.walk_packages(statesaga.__path__, prefix="statesaga."):
        if info.name.endswith("pytest_plugin"):
            continue  # loaded by pytest itself
        found.append(importlib.import_module(info.name))
    return found


#: Exceptions that are not StateSagaErrors on purpose, and why.
OUTSIDE_THE_TREE = {
    # A simulated crash must not be catchable by `except Exception` in a handler.
    "statesaga.testing.harness.SimulatedCrash",
    # Internal control flow: carries a handler's error out of its transaction; never escapes.
    "statesaga._attempts._Rollback",
    # Internal control flow: the runner lost its lease; a BaseException so that no
    # handler error path takes it for a failure; never escapes the runner.
    "statesaga._leases.LeaseLost",
    # Internal control flow: a handler cancelled from outside; the runner turns it
    # back into asyncio.CancelledError after logging the interruption.
    "statesaga._handlers.Interrupted",
    # The example sagas' own errors: they stand for a user's services, not statesaga.
    "statesaga.examples.services.ServiceError",
    "statesaga.examples.services.ServiceTimeout",
    "statesaga.examples.transfer.InsufficientFunds",
}


def test_errors_form_one_tree() -> None:
    """Every exception class defined anywhere in statesaga derives from StateSagaError
    and from a builtin a caller would catch (the listed few excepted, each for a
    reason), and the tree in the errors module's docstring names every one."""
    tree = inspect.getdoc(importlib.import_module("statesaga._errors"))
    assert tree is not None
    seen: dict[str, type] = {}
    for module in _modules():
        for name, cls in vars(module).items():
            if (
                isinstance(cls, type)
                and issubclass(cls, BaseException)
                and cls.__module__.startswith("statesaga")
                and cls is not statesaga.StateSagaError
            ):
                seen.setdefault(f"{module.__name__}.{name}", cls)
    classes = {cls for where, cls in seen.items() if where not in OUTSIDE_THE_TREE}
    classes -= {seen[where] for where in OUTSIDE_THE_TREE if where in seen}
    assert len(classes) >= 20, sorted(c.__name__ for c in classes)
    for cls in classes:
        assert issubclass(cls, statesaga.StateSagaError), f"{cls} is not a StateSagaError"
        builtins = [
            b
            for b in cls.__mro__
            if b.__module__ == "builtins" and b not in (Exception, BaseException, object)
        ]
        assert builtins, f"{cls} derives from no builtin a caller would catch"
        assert cls.__name__ in tree, f"{cls.__name__} is not drawn in the tree"
