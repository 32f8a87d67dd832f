"""The public surface of ``import statesaga`` is pinned."""

import statesaga


def test_all_is_pinned() -> None:
    """``__all__`` lists exactly the public names; adding or removing one is a decision."""
    assert sorted(statesaga.__all__) == [
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
    for name in statesaga.__all__:
        assert getattr(statesaga, name).__doc__, f"{name} has no docstring"


def test_errors_form_one_tree() -> None:
    """Every error statesaga raises is a StateSagaError."""
    errors = [
        getattr(statesaga, n)
        for n in statesaga.__all__
        if n.endswith(
            (
                "Error",
                "Definition",
                "Input",
                "Registered",
                "Found",
                "Conflict",
                "Update",
                "Timeout",
                "Exceeded",
            )
        )
    ]
    assert len(errors) == 11
    for err in errors:
        assert issubclass(err, statesaga.StateSagaError)
