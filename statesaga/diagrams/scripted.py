"""Scripted runs: drive a saga definition through the real engine and store with
stand-in handlers that fail where a script says, to draw what such a run does.

The definition's own handlers never run, so a scripted run has no effects and
needs none of the services a saga talks to; the engine, the state machine and
the saga log are the real ones. ``statesaga diagrams`` uses it to draw the
example instance overlays under ``diagrams/`` reproducibly.
"""

from __future__ import annotations

import weakref
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

    The first scripted run of ``saga`` on ``engine`` registers the stand-in
    under the definition's name and version, so ``saga`` itself must not be
    registered on that engine (a ``DefinitionConflict`` says so); later scripted
    runs of it on the same engine reuse the stand-in.

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
        DefinitionConflict: ``saga`` itself is registered on ``engine``.
    """
    spec = saga.spec
    names = {s.name for s in spec.steps} | {
        s.compensation.name for s in spec.steps if s.compensation
    }
    unknown = sorted(set(failures) - names)
    if unknown:
        raise KeyError(f"{spec.key} has no step or compensation {', '.join(unknown)}")
    stand_ins = _stand_ins.setdefault(engine, {})
    stand_in = stand_ins.get(saga)
    if stand_in is None:
        stand_in = _stand_in(saga)
        engine.register(stand_in)
        stand_ins[saga] = stand_in
    stand_in.scripts[saga_id] = dict(failures)
    return engine.run(stand_in, input, saga_id=saga_id)


class _StandIn:
    """What the stand-in handlers read their script from: failures by saga id
    (a run's own, so that runs of one definition do not share a script)."""

    scripts: dict[str, dict[str, int | None]]

    def fails(self, ctx: StepContext, name: str) -> None:
        script = self.scripts.get(ctx.saga_id, {})
        if name in script and (script[name] is None or ctx.attempt <= (script[name] or 0)):
            raise ScriptedFailure(f"{name} failed (scripted, attempt {ctx.attempt})")


#: The stand-in registered for each definition, per engine: an engine runs one
#: registered object per name and version.
_stand_ins: weakref.WeakKeyDictionary[SagaEngine, dict[type[Saga], Any]] = (
    weakref.WeakKeyDictionary()
)


def _stand_in(saga: type[Saga]) -> Any:
    """An instance of ``saga`` whose handlers fail as its ``scripts`` say."""
    spec = saga.spec

    def stand_in_step(s: StepSpec) -> Any:
        def handler(self: _StandIn, ctx: StepContext) -> None:
            self.fails(ctx, s.name)

        return handler

    def stand_in_compensation(name: str) -> Any:
        def handler(self: _StandIn, ctx: StepContext, _result: object) -> None:
            self.fails(ctx, name)

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
    cls: type[Saga] = type(f"Scripted{saga.__name__}", (saga, _StandIn), {}, abstract=True)
    # No deadline either: the script, not the clock, decides what fails.
    cls.spec = attrs.evolve(spec, steps=tuple(steps), input_type=None, deadline=None)
    instance: Any = object.__new__(cls)  # the definition's __init__ may want services
    instance.scripts = {}
    return instance
