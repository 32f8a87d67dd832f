"""What the console's pages show, read from the engine: one saga, the
definitions, and which operator actions a saga offers."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import UTC, datetime

import attrs

from statesaga._definition import Saga
from statesaga._engine import SagaEngine
from statesaga._errors import CorruptSaga, SagaNotFound, StateSagaError
from statesaga._status import SagaStatus
from statesaga._views import LogEntry, SagaRun
from statesaga.store import SagaRow, SqlStore
from statesaga.web._svg import inline_svg
from statesaga.web._text import inert


@attrs.frozen
class Action:
    """An operator action the console offers.

    Attributes:
        name: the engine method (``engine.cancel``, ...).
        title: its button.
        reason: whether it takes a reason (required then).
        what: what it does, in a sentence, shown on its confirmation.
    """

    name: str
    title: str
    reason: bool
    what: str


ACTIONS = {
    a.name: a
    for a in (
        Action(
            "cancel",
            "Cancel",
            True,
            "The saga stops going forward and compensates its completed steps in reverse "
            "order. A handler already running finishes its attempt first.",
        ),
        Action(
            "retry",
            "Retry",
            False,
            "A saga whose compensations failed retries them, with their retry policies; "
            "a saga waiting out a retry delay runs now.",
        ),
        Action(
            "resolve",
            "Resolve",
            True,
            "You declare that what the failed compensations left undone was handled by "
            "hand; the saga ends resolved.",
        ),
        Action(
            "pause",
            "Pause",
            False,
            "Workers stop picking the saga up; a handler already running finishes its attempt.",
        ),
        Action("unpause", "Unpause", False, "Workers pick the saga up again."),
    )
}


def offered(row: SagaRow) -> list[Action]:
    """The actions that make sense for the saga now (the engine has the last
    word: it refuses anything else with ``OperatorRefused``)."""
    status = row.status
    if status == SagaStatus.COMPENSATION_FAILED:
        return [ACTIONS["retry"], ACTIONS["resolve"]]
    if status not in (SagaStatus.STARTED, SagaStatus.COMPENSATING):
        return []
    found = []
    request = pending(row)[0]
    if status == SagaStatus.STARTED and request != "cancel":
        found.append(ACTIONS["cancel"])
    # The engine keeps a pause as a request on the row: "pause" asked, "paused" done.
    found.append(ACTIONS["unpause" if request in ("pause", "paused") else "pause"])
    if row.due_at is not None and row.waiting_for is None:
        found.append(ACTIONS["retry"])
    return found


def pending(row: SagaRow) -> tuple[str | None, str | None, str | None]:
    """The operator request on the saga's row, by whom and why (``None`` each:
    none, or a store that keeps no requests)."""
    return (
        getattr(row, "request", None),
        getattr(row, "request_by", None),
        getattr(row, "request_reason", None),
    )


@attrs.frozen
class SagaView:
    """One saga as its page shows it.

    Attributes:
        row: its stored row (input, times, what it waits for).
        run: its state with decoded results, or ``None`` when it is damaged.
        history: its log, oldest first (empty when damaged).
        problem: why it could not be read whole (``CorruptSaga``), or ``None``.
        svg: its path on the diagram, as safe inline SVG, or ``None``.
        diagram_note: why there is no diagram, or how it was drawn.
        actions: the operator actions it offers.
    """

    row: SagaRow
    run: SagaRun | None
    history: list[LogEntry]
    problem: str | None
    svg: str | None
    diagram_note: str | None
    actions: list[Action]

    @property
    def request(self) -> tuple[str | None, str | None, str | None]:
        """The operator request on it (see ``pending``)."""
        return pending(self.row)

    @property
    def running(self) -> bool:
        """Whether the saga is not finished (its page keeps itself up to date)."""
        return self.row.status in (SagaStatus.STARTED, SagaStatus.COMPENSATING)


def read_saga(engine: SagaEngine, saga_id: str, definitions: Sequence[type[Saga]]) -> SagaView:
    """The saga ``saga_id`` as its page shows it.

    Raises:
        SagaNotFound: there is no such saga.
    """
    engine.store.require_schema()
    row = engine.store.get(saga_id)
    if row is None:
        raise SagaNotFound(saga_id)
    try:
        run: SagaRun | None = engine.get(saga_id)
        history = engine.history(saga_id)
        problem = None
    except CorruptSaga as exc:
        run, history, problem = None, [], str(exc)
    svg, note = (
        _diagram(engine.store, row, history, definitions) if problem is None else (None, None)
    )
    return SagaView(row, run, history, problem, svg, note, offered(row))


def _diagram(
    store: SqlStore, row: SagaRow, history: list[LogEntry], definitions: Sequence[type[Saga]]
) -> tuple[str | None, str | None]:
    """The saga's path drawn over its definition (or over what its log tells)."""
    from statesaga._machine import SagaMachine
    from statesaga.cli._from_log import spec_from_log
    from statesaga.cli._options import ran_on
    from statesaga.diagrams.extract import build_model
    from statesaga.diagrams.render import render

    found = ran_on(row, definitions)
    note = None
    try:
        if found is not None:
            spec, machine = found.spec, found.machine
        else:
            note = (
                f"No definition of {row.name} v{row.version} was given (--definitions), so "
                "the saga is drawn over what its log tells: steps it never reached and the "
                "names of compensations are unknown."
            )
            spec = spec_from_log(row, store.log(row.saga_id))
            machine = SagaMachine(spec)
        # Control characters would make the SVG unreadable XML: show them as escapes first.
        shown = [
            attrs.evolve(e, error=None if e.error is None else inert(e.error)) for e in history
        ]
        model = build_model(spec, machine).with_path(
            shown, row.status, saga_id=row.saga_id, error=inert(row.error) if row.error else None
        )
        svg = inline_svg(render(model, "svg"))
    except (StateSagaError, ValueError, KeyError) as exc:
        return None, f"The diagram could not be drawn: {exc}"
    if svg is None:
        return None, "The diagram could not be drawn: Graphviz gave no SVG."
    return svg, note


@functools.cache
def definition_svg(saga: type[Saga]) -> str | None:
    """The diagram of a definition, as safe inline SVG (drawn once per class)."""
    from statesaga.diagrams.extract import model_of
    from statesaga.diagrams.render import render

    try:
        return inline_svg(render(model_of(saga), "svg"))
    except StateSagaError:
        return None


def when(ts: float | None) -> str:
    """A stored time as ``2024-05-01 12:00:00 UTC`` (empty for none)."""
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
