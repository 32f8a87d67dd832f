"""The instance overlay: what one saga's log says became of each state of its machine.

The log is read by ``statesaga._replay.replay``, the one parser of the log
protocol, which checks every move against the machine; the runner rebuilds a
run from the same reading. This module only sums its moves up per state, for
``GraphModel.with_path`` to lay over the drawing.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import attrs

from statesaga._errors import HistoryMismatch
from statesaga._machine import SagaMachine
from statesaga._replay import Entry, Move, replay
from statesaga._status import EntryStatus

#: What an instance overlay says became of a state:
#:
#: - ``completed``: a step that completed (and was not compensated);
#: - ``failed``: the step whose final failure made the saga compensate;
#: - ``compensated``: a step whose compensation ran, or a compensation that ran;
#: - ``compensation_failed``: a compensation that failed for good, or its step;
#: - ``running``: the state the saga is in now (it is not finished);
#: - ``waiting``: the wait step the saga is parked at now, for its event;
#: - ``reached``: the terminal the saga ended in.
NodeOutcome = Literal[
    "completed", "failed", "compensated", "compensation_failed", "running", "waiting", "reached"
]


@attrs.frozen
class Overlay:
    """One saga's log, summed up per state of its machine.

    Attributes:
        moves: the transitions it took, in order.
        outcomes: what became of each state it entered (others are absent).
        attempts: the attempts made in each state it entered.
        errors: the error of the last failed attempt of each state that had one.
        status: the saga's status.
        current: the state it is in, if it has not finished.
        error: the error that made it compensate, if any.
        waiting_since: when it parked at the wait step it is at, if it is.
    """

    moves: tuple[Move, ...]
    outcomes: Mapping[str, NodeOutcome]
    attempts: Mapping[str, int]
    errors: Mapping[str, str]
    status: str
    current: str | None
    error: str | None
    waiting_since: float | None = None


def read_log(
    machine: SagaMachine,
    history: Sequence[Entry],
    status: str | None = None,
    error: str | None = None,
) -> Overlay:
    """Read a saga's log over its machine; see ``GraphModel.with_path``.

    Raises:
        HistoryMismatch: the log is not a path of ``machine`` from its start,
            or it ends in a state whose status is not ``status``.
    """
    walked = replay(machine, history)
    end = machine.state(walked.state)
    finished = end.kind == "terminal"
    if status is not None and str(status) != end.status:
        ends = "ends" if finished else "stops"
        raise HistoryMismatch(
            machine.spec.key, f"the saga is {status} but its log {ends} in {end.name!r}"
        )
    succeeded = {m.source for m in walked.moves if m.trigger == "succeed"}
    gave_up = {m.source for m in walked.moves if m.trigger in ("fail", "fail_in_doubt")}
    errors = {m.source: m.error for m in walked.moves if m.error}
    comp_of = {st.step: st.name for st in machine.states if st.kind == "compensation"}

    last = history[-1] if history else None
    since: float | None = None
    if last is not None and str(last.status) == EntryStatus.WAITING:
        at: Any = getattr(last, "at", None)  # a LogEntry's is a datetime, a LogRow's seconds
        since = at.timestamp() if isinstance(at, datetime.datetime) else at

    def outcome(name: str) -> NodeOutcome | None:
        st = machine.state(name)
        if name == walked.state:
            return "reached" if finished else ("waiting" if since is not None else "running")
        if name in gave_up:
            return "failed" if st.kind == "step" else "compensation_failed"
        if name not in succeeded:
            return None
        undo = comp_of.get(st.step) if st.kind == "step" else None
        if undo in gave_up:
            return "compensation_failed"
        return "compensated" if undo in succeeded or st.kind == "compensation" else "completed"

    outcomes = {st.name: o for st in machine.states if (o := outcome(st.name)) is not None}
    if error is None:
        error = next((errors.get(s) for s, o in outcomes.items() if o == "failed"), None)
    return Overlay(
        moves=walked.moves,
        outcomes=outcomes,
        attempts=walked.entered,
        errors=errors,
        status=str(status) if status is not None else end.status.value,
        current=None if finished else end.name,
        error=error,
        waiting_since=since,
    )
