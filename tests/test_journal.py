"""The journal without a database: what transitions write reads back as the same run.

A saga is simulated with nothing but its machine and its journal, as the runner
drives it: every attempt succeeds or fails as a Hypothesis-drawn plan says,
and may be interrupted by crashes (the runner then records a re-entry). After
every write, the rows written so far are read back (``Journal.rebuild``) and
must give exactly the live run's position, retry budget, compensation flag and
results.
"""

from __future__ import annotations

import json
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from definitions.order import OrderSaga
from definitions.trip import TripSaga
from statesaga import HistoryMismatch, Retry, Saga, StepContext, step
from statesaga._journal import Journal
from statesaga._replay import replay
from statesaga.store import LogRow, SagaRow

#: The runner that holds the simulated saga.
LEASE = ("runner-1", 100.0)


class Shop(Saga):
    """Retries, a step without compensation in the middle, a retried compensation."""

    name = "shop"

    @step(retry=Retry(max_attempts=3))
    def reserve(self, ctx: StepContext) -> str:
        raise NotImplementedError

    @reserve.compensate(retry=Retry(max_attempts=2))
    def release(self, ctx: StepContext, result: str) -> None: ...

    @step
    def notify(self, ctx: StepContext) -> str:
        raise NotImplementedError

    @step(retry=Retry(max_attempts=2))
    def charge(self, ctx: StepContext) -> str:
        raise NotImplementedError

    @charge.compensate
    def refund(self, ctx: StepContext, result: str) -> None: ...

    @step
    def ship(self, ctx: StepContext) -> str:
        raise NotImplementedError


@attrs.define
class Live:
    """The runner's view of a run, kept by the simulation."""

    state: str
    attempt: int = 1
    failures: int = 0
    comp_failed: bool = False
    error: str | None = None
    results: dict[str, Any] = attrs.Factory(dict)


def _row(fields: dict[str, Any]) -> SagaRow:
    return SagaRow(**{k: fields[k] for k in attrs.fields_dict(SagaRow)})


def simulate(saga: type[Saga], outcomes: list[bool], crashes: list[int]) -> tuple[int, str]:
    """Drive ``saga`` by ``outcomes`` (one per attempt; missing: success), with
    ``crashes[i]`` crashes before attempt ``i``'s outcome; after every write,
    check that the rows read back as the live run. Returns the checks made and
    the terminal state reached."""
    spec, machine = saga.spec, saga.machine
    journal = Journal(spec, machine)
    row, log = journal.created("s-1", "null", 0.0, lease=LEASE)
    fields: dict[str, Any] = dict(row)
    entries: list[dict[str, Any]] = list(log)
    live = Live(state=machine.initial)
    checks = 0

    def check() -> None:
        nonlocal checks
        stored = _row(fields)
        rebuilt = journal.rebuild(stored, [LogRow(**e) for e in entries])
        assert rebuilt.replay.state == live.state == stored.state
        assert stored.attempt == live.attempt
        assert rebuilt.replay.failures == live.failures
        assert rebuilt.replay.compensation_failed == live.comp_failed
        assert rebuilt.results == live.results
        assert stored.error == live.error
        checks += 1

    def begin() -> None:
        """The next attempt starts (after a retry delay, or again after a crash)."""
        changes, entry = journal.begin(
            "s-1", fields["seq"], live.state, fields["attempt"], live.error, 1.0, LEASE
        )
        fields.update(changes)
        entries.append(dict(entry))
        live.attempt += 1
        check()

    check()
    n = 0
    while not machine.is_terminal(live.state):
        for _ in range(crashes[n] if n < len(crashes) else 0):
            begin()
        ok = outcomes[n] if n < len(outcomes) else True
        n += 1
        info = machine.state(live.state)
        assert info.step is not None
        s = spec.step(info.step)
        policy = s.retry if info.kind == "step" else s.compensation.retry  # type: ignore[union-attr]
        outcome: str | None
        if ok:
            trigger = "succeed"
            outcome = None
            if info.kind == "step":
                # A value of the step's annotated type, as the codec rebuilds it.
                value = f"{live.state}#{live.attempt}" if s.result_type is str else None
                live.results[info.step] = value
                outcome = json.dumps(value)
        else:
            live.failures += 1
            outcome = f"Boom: {live.state}#{live.attempt}"
            if live.failures < policy.max_attempts:
                trigger = "retry"
            else:
                trigger = "fail"
                if info.kind == "compensation":
                    live.comp_failed = True
                elif live.error is None:
                    live.error = outcome
        dest = machine.next_state(live.state, trigger, live.comp_failed)
        changes, written = journal.transition(
            "s-1",
            fields["seq"],
            live.attempt,
            live.state,
            trigger,
            dest,
            outcome,
            live.error,
            5.0,
            2.0,
            LEASE,
        )
        fields.update(changes)
        entries.extend(dict(e) for e in written)
        live.attempt = changes["attempt"]
        if trigger != "retry":
            live.failures = 0
        live.state = dest
        check()
        if trigger == "retry":
            assert changes["due_at"] == 5.0 and changes["attempt"] == live.attempt
            begin()  # the delay is over: the next attempt starts, numbered one more
    return checks, live.state


SAGAS = [Shop, OrderSaga, TripSaga]


@given(
    saga=st.sampled_from(SAGAS),
    outcomes=st.lists(st.booleans(), max_size=30),
    crashes=st.lists(st.integers(0, 2), max_size=30),
)
def test_any_run_reads_back_as_it_was_live(
    saga: type[Saga], outcomes: list[bool], crashes: list[int]
) -> None:
    """For any failure plan and any crashes, after every write the journal's rows
    rebuild the run's exact position, retry budget, compensation flag and results."""
    checks, final = simulate(saga, outcomes, crashes)
    assert checks >= 2 and saga.machine.is_terminal(final)


def test_simulation_reaches_every_terminal() -> None:
    """The simulation is not vacuous: it reaches completed, failed and
    compensation_failed, with retries and re-entries on the way."""
    assert simulate(Shop, [], []) == (5, "completed")  # created + 4 transitions
    # Two crashes before notify's outcome; charge fails twice (for good), so
    # reserve's release runs (notify has nothing to undo): it fails once, then works.
    # Each retry is two writes: the failed attempt, then the next one as it starts.
    assert simulate(Shop, [True, True, False, False, False], [0, 2]) == (11, "failed")
    # charge fails for good; release fails twice (for good).
    assert simulate(Shop, [True, True, False, False, False, False], [1]) == (
        10,
        "compensation_failed",
    )


def _log_of(saga: type[Saga], outcomes: list[bool]) -> tuple[Journal, list[LogRow]]:
    """The log a run by ``outcomes`` writes (no crashes)."""
    journal = Journal(saga.spec, saga.machine)
    entries: list[LogRow] = []
    machine = saga.machine
    _, log = journal.created("s", "null", 0.0, lease=LEASE)
    entries += [LogRow(**e) for e in log]
    state, attempt, seq, comp_failed = machine.initial, 1, 1, False
    n = 0
    while not machine.is_terminal(state):
        ok = outcomes[n] if n < len(outcomes) else True
        n += 1
        trigger = "succeed" if ok else "fail"
        if not ok and machine.state(state).kind == "compensation":
            comp_failed = True
        dest = machine.next_state(state, trigger, comp_failed)
        changes, written = journal.transition(
            "s", seq, attempt, state, trigger, dest, "null", None, None, 1.0, LEASE
        )
        entries += [LogRow(**e) for e in written]
        state, attempt, seq = dest, changes["attempt"], changes["seq"]
    return journal, entries


@pytest.mark.parametrize(
    ("tamper", "problem"),
    [
        (lambda log: log[2:], "starts at"),
        (lambda log: [*log[:1], *log[2:]], "while"),
        (lambda log: [*log[:2], *log[3:]], "does not follow"),
        (lambda log: [*log[:1], log[2], log[1], *log[3:]], "while"),
        (lambda log: [attrs.evolve(log[0], status="teleported"), *log[1:]], "unknown status"),
        (lambda log: [attrs.evolve(log[0], step="nowhere"), *log[1:]], "not a step"),
        (lambda log: log[:-2], "machine goes on"),
    ],
)
def test_replay_refuses_a_log_that_is_not_a_path(tamper: Any, problem: str) -> None:
    """A log with an entry dropped, moved, renamed or given an unknown status is
    not a path of the machine: replay says what does not fit."""
    _, log = _log_of(OrderSaga, [])
    assert replay(OrderSaga.machine, log).state == "completed"
    assert replay(OrderSaga.machine, log[:-1]).state == "confirm_order"  # in flight: fine
    with pytest.raises(HistoryMismatch, match=problem):
        replay(OrderSaga.machine, tamper(log))


def test_replay_refuses_a_wrong_turn() -> None:
    """Moves that are each well-formed but not the machine's are refused: after
    reserve_inventory fails the machine refunds the payment first; a log that
    cancels the order instead is not a path of it."""
    _, log = _log_of(OrderSaga, [True, True, False])
    assert replay(OrderSaga.machine, log).state == "failed"
    wrong = [
        attrs.evolve(e, step="create_order")
        if e.step == "charge_payment" and e.status in ("compensating", "compensated")
        else e
        for e in log
    ]
    with pytest.raises(
        HistoryMismatch, match="enters 'cancel_order', but the machine enters 'refund_payment'"
    ):
        replay(OrderSaga.machine, wrong)
