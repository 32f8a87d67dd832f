"""Scripted runs: drive a saga definition through the real engine and store with
stand-in handlers that fail where a script says, to draw what such a run does.

The definition's own handlers never run, so a scripted run has no effects and
needs none of the services a saga talks to; the engine, the state machine and
the saga log are the real ones. ``statesaga diagrams`` uses it to draw the
example instance overlays under ``diagrams/`` reproducibly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from statesaga._definition import Saga
from statesaga._engine import SagaEngine
from statesaga._errors import StateSagaError
from statesaga._handlers import StepContext
from statesaga._spec import StepSpec
from statesaga._views import SagaRun


class ScriptedFailure(StateSagaError, RuntimeError):
    """The failure a scripted run injects."""


def scripted_run(
    saga: type[Saga],
    engine: SagaEngine,
    saga_id: str,
    failures: Mapping[str, int | None],
    input: Any = None,
) -> SagaRun:
    """Run ``saga`` on ``engine`` with stand-in handlers that fail as scripted.

    Args:
        saga: the definition; the saga is stored under its name, version and
            fingerprint, so its log can be laid over ``model_of(saga)``.
        engine: where to run and store it.
        saga_id: its id (an existing saga is returned as it is).
        failures: step or compensation name → how many of its first attempts
            fail with ``ScriptedFailure`` (``None``: every attempt). Every
            other attempt succeeds and returns ``None``.
        input: the saga's input; the default ``None`` skips the input type
            check, as the stand-ins ignore it.

    Returns:
        The saga in the state the run left it.

    Raises:
        KeyError: ``failures`` names a state the definition does not have.
    """
    spec = saga.spec
    names = {s.name for s in spec.steps} | {
        s.compensation.name for s in spec.steps if s.compensation
    }
    unknown = sorted(set(failures) - names)
    if unknown:
        raise KeyError(f"{spec.key} has no step or compensation {', '.join(unknown)}")

    def stand_in_step(s: StepSpec) -> Any:
        fails = failures.get(s.name, 0)

        def handler(_self: object, ctx: StepContext) -> None:
            if fails is None or ctx.attempt <= fails:
                raise ScriptedFailure(f"{s.name} failed (scripted, attempt {ctx.attempt})")

        return handler

    def stand_in_compensation(name: str) -> Any:
        fails = failures.get(name, 0)

        def handler(_self: object, ctx: StepContext, _result: object) -> None:
            if fails is None or ctx.attempt <= fails:
                raise ScriptedFailure(f"{name} failed (scripted, attempt {ctx.attempt})")

        return handler

    steps = []
    for s in spec.steps:
        comp = s.compensation
        if comp is not None:
            comp = attrs.evolve(comp, handler=stand_in_compensation(comp.name))
        steps.append(
            attrs.evolve(
                s, handler=stand_in_step(s), result_type=None, timeout=None, compensation=comp
            )
        )
    # An abstract subclass is not compiled again: it carries the stand-in spec,
    # whose name, version and fingerprint are the definition's own.
    stand_in: type[Saga] = type(f"Scripted{saga.__name__}", (saga,), {}, abstract=True)
    # No deadline either: the script, not the clock, decides what fails.
    stand_in.spec = attrs.evolve(spec, steps=tuple(steps), input_type=None, deadline=None)
    engine.register(object.__new__(stand_in))
    instance = engine.run(object.__new__(stand_in), input, saga_id=saga_id)
    return instance
