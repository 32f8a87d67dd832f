"""What the runner tells about each transition: a log record, and the hooks.

One INFO record on the ``statesaga`` logger per transition (with the saga, the
states and the trigger in its extra fields), and ``Hooks.transition`` for
observers such as ``statesaga.otel``; nothing at all when logging is off and
no hooks are set. ``_probe`` gives test hooks their commit points.
"""

from __future__ import annotations

import logging

from statesaga._handlers import Handlers, Transition
from statesaga._live import LiveRun

log = logging.getLogger("statesaga")


class Observation:
    """Transition records and hook points (its methods are the runner's)."""

    handlers: Handlers

    def _observe(self, run: LiveRun, source: str, trigger: str, dest: str) -> None:
        """Tell the ``statesaga`` logger (one INFO record, the transition in its
        extra fields) and the hooks about a transition just written."""
        hooks = self.handlers.hooks
        logging_on = log.isEnabledFor(logging.INFO)
        if hooks is None and not logging_on:
            return
        spec, machine = run.defn.spec, run.defn.machine
        left = machine.state(source)
        step = left.step or source
        if logging_on:
            log.info(
                "%s %s: %s --%s--> %s (attempt %d)",
                spec.name,
                run.saga_id,
                source,
                trigger,
                dest,
                run.attempt,
                extra={
                    "saga_id": run.saga_id,
                    "saga": spec.name,
                    "step": step,
                    "from": source,
                    "to": dest,
                    "trigger": trigger,
                    "attempt": run.attempt,
                },
            )
        if hooks is not None:
            hooks.transition(
                Transition(
                    run.saga_id,
                    spec,
                    step,
                    left.kind,
                    source,
                    trigger,
                    dest,
                    run.attempt,
                    machine.state(dest).status,
                    run.parked,
                    None if trigger in ("succeed", "wait") else run.outcome,
                )
            )

    def _probe(self, point: str, run: LiveRun) -> None:
        hooks = self.handlers.hooks
        if hooks is not None:
            hooks.point(point, run.saga_id, run.state, run.attempt)
