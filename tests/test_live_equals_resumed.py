"""Live = resumed: a handler is handed the same arguments whether or not the
process crashed and another resumed the saga (issue #10, case 5).

For each example saga in ``definitions/``, any failure plan, and any crash
point (before or after any commit), every handler call of the crashed-and-
resumed run receives arguments equal to those of the same handler in the run
without a crash: input, results of earlier steps, idempotency key, and for a
compensation the result it undoes (or ``NOT_COMPLETED``).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from definitions import order, trip
from definitions.order import OrderRequest, OrderSaga
from definitions.services import FakeServices
from definitions.transfer import TransferRequest, TransferSaga, open_accounts
from definitions.trip import TripRequest, TripSaga
from statesaga import Hooks, SagaEngine, SagaStatus, StepContext
from tests.conftest import empty_database

#: Each example saga, an input for it, and the service operations of its handlers.
SAGAS: dict[str, tuple[type, Any, dict[str, str]]] = {
    "order": (OrderSaga, OrderRequest("c-1", 42.0), order.OPERATIONS),
    "trip": (TripSaga, TripRequest("ada", "Lisbon", 3, 5000.0), trip.OPERATIONS),
    "transfer": (
        TransferSaga,
        None,  # made per example, with accounts of its own
        {"screen_transfer": "screening.check", "notify_parties": "mail.send"},
    ),
}


class Crash(BaseException):
    """A simulated crash: not an interruption the runner would log, just gone."""


class Recorder(Hooks):
    """Records each handler call's arguments (the attempt number aside, which a
    re-run after a crash raises on purpose); crashes at the ``crash``-th commit point."""

    def __init__(self, crash: int | None = None) -> None:
        self.calls: list[tuple[str, str]] = []
        self.left = crash

    def call(
        self, saga_id: str, state: str, attempt: int, fn: Callable[..., Any], args: tuple[Any, ...]
    ) -> Any:
        ctx: StepContext = args[1]
        seen = (ctx.step, ctx.input, dict(ctx.results), ctx.idempotency_key, *args[2:])
        self.calls.append((state, repr(seen)))
        return fn(*args)

    def point(self, point: str, saga_id: str, state: str, attempt: int) -> None:
        if self.left is not None:
            self.left -= 1
            if self.left == 0:
                raise Crash(f"{point} of {state}")


def run_once(
    url: str,
    name: str,
    plan: dict[str, int | None],
    crash: int | None,
    request: Any,
    saga_id: str,
) -> tuple[SagaStatus, list[tuple[str, str]]]:
    saga_cls, _, ops = SAGAS[name]
    services = FakeServices()
    for handler, times in plan.items():
        if times:
            services.fail(ops[handler], times=times)
    recorder = Recorder(crash)
    saga = saga_cls(services)
    with SagaEngine(url) as engine:
        engine.register(saga)
        engine.hooks = recorder
        try:
            run = engine.run(saga, request, saga_id=saga_id)
        except Crash:
            with SagaEngine(url) as resumer:
                resumer.register(saga)
                resumer.hooks = recorder
                recorder.left = None
                run = resumer.resume(saga_id)
    return run.status, recorder.calls


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[str, dict[str, int | None], int]:
    name = draw(st.sampled_from(sorted(SAGAS)))
    ops = SAGAS[name][2]
    # A handler fails always or never: a planned failure that a crashed attempt
    # used up would change the outcome, which is not what this property is about.
    plan = draw(st.fixed_dictionaries({h: st.sampled_from([0, None]) for h in ops}))
    return name, plan, draw(st.integers(1, 24))


@pytest.fixture(scope="module")
def databases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A second database, for the runs without a crash (the same saga id is used
    in both runs, so that ids derived from it agree)."""
    with empty_database(tmp_path_factory) as url:
        yield url


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(scenario=scenarios())
def test_every_handler_call_gets_the_same_arguments_after_a_crash(
    db_url: str,
    databases: str,
    scenario: tuple[str, dict[str, int | None], int],
) -> None:
    name, plan, crash = scenario
    request = SAGAS[name][1]
    if name == "transfer":
        source, target = f"a-{uuid.uuid4().hex}", f"b-{uuid.uuid4().hex}"
        for url in (db_url, databases):
            with SagaEngine(url) as engine:
                open_accounts(engine.store.engine, {source: 100, target: 0})
        request = TransferRequest(source, target, 30)
    saga_id = uuid.uuid4().hex
    status, baseline = run_once(databases, name, plan, None, request, saga_id)
    crashed_status, calls = run_once(db_url, name, plan, crash, request, saga_id)
    assert crashed_status is status
    expected: dict[str, set[str]] = {}
    for state, args in baseline:
        expected.setdefault(state, set()).add(args)
    for state, args in calls:
        assert state in expected, f"{state} ran only in the crashed run"
        assert args in expected[state], (
            f"{state} was handed {args!r} after the crash; without it: {expected[state]}"
        )
    assert {s for s, _ in calls} == set(expected), "a handler that ran without the crash did not"
