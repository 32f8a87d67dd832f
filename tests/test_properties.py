"""Property tests: random failure plans over the example sagas obey the saga invariants."""

from __future__ import annotations

import uuid

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from definitions import order, trip
from definitions.order import OrderRequest, OrderSaga
from definitions.services import FakeServices
from definitions.trip import TripRequest, TripSaga
from statesaga import EntryStatus, SagaEngine, SagaSpec, SagaStatus
from statesaga.testing import check_saga, outcomes

ORDER_OPS = order.OPERATIONS
TRIP_OPS = trip.OPERATIONS

#: Each example runs a fresh saga id on the shared engine, so the fixture may be shared.
shared_engine = settings(suppress_health_check=[HealthCheck.function_scoped_fixture])

failures = st.one_of(st.just(0), st.integers(1, 3), st.none())


def plans(ops: dict[str, str]) -> st.SearchStrategy[dict[str, int | None]]:
    return st.fixed_dictionaries({name: failures for name in ops})


def expected_outcomes(
    spec: SagaSpec, plan: dict[str, int | None]
) -> tuple[SagaStatus, list[tuple[str, EntryStatus]]]:
    """What the saga must do under ``plan``, worked out independently of the engine."""

    def fails_for_good(times: int | None, max_attempts: int) -> bool:
        return times is None or times >= max_attempts

    out: list[tuple[str, EntryStatus]] = []
    for s in spec.steps:
        if fails_for_good(plan[s.name], s.retry.max_attempts):
            out.append((s.name, EntryStatus.FAILED))
            comp_failed = False
            for done in reversed(spec.steps[: s.index]):
                if done.compensation is None:
                    continue
                bad = fails_for_good(
                    plan[done.compensation.name], done.compensation.retry.max_attempts
                )
                comp_failed |= bad
                out.append(
                    (done.name, EntryStatus.COMPENSATION_FAILED if bad else EntryStatus.COMPENSATED)
                )
            status = SagaStatus.COMPENSATION_FAILED if comp_failed else SagaStatus.FAILED
            return status, out
        out.append((s.name, EntryStatus.COMPLETED))
    return SagaStatus.COMPLETED, out


#: The services of the saga instance registered on each engine, by engine owner
#: and saga class: an engine registers one instance per definition, and the
#: examples of one test share the test's engine.
_services: dict[tuple[str, type], FakeServices] = {}


def services_on(engine: SagaEngine, saga_cls: type) -> FakeServices:
    """The services of ``saga_cls``'s instance on ``engine``, registered on first use."""
    key = (engine.owner, saga_cls)
    if key not in _services:
        _services[key] = FakeServices()
        engine.register(saga_cls(_services[key]))
    return _services[key]


def run_plan(
    engine: SagaEngine,
    saga_cls: type,
    ops: dict[str, str],
    plan: dict[str, int | None],
    request: object,
) -> None:
    services = services_on(engine, saga_cls)
    services.heal()
    for handler, times in plan.items():
        if times != 0:
            services.fail(ops[handler], times=times)
    run = engine.run(saga_cls, request, saga_id=uuid.uuid4().hex)
    history = engine.history(run.saga_id)
    check_saga(saga_cls.spec, run.status, history)
    status, expected = expected_outcomes(saga_cls.spec, plan)
    assert run.status is status
    assert outcomes(history) == expected
    # Each step's effect happened at most once per idempotency key, and a step
    # that never completed left no compensation behind.
    for op in ops.values():
        assert all(n == 1 for n in services.count(op).values())


@shared_engine
@given(plan=plans(ORDER_OPS))
def test_order_saga_under_random_failures(engine: SagaEngine, plan: dict[str, int | None]) -> None:
    """For any failure plan the order saga ends in the status the plan implies, its
    log shows exactly the implied completions and reverse-order compensations, and
    the invariants hold."""
    run_plan(engine, OrderSaga, ORDER_OPS, plan, OrderRequest("c-1", 42.0))


@shared_engine
@given(plan=plans(TRIP_OPS))
def test_trip_saga_under_random_failures(engine: SagaEngine, plan: dict[str, int | None]) -> None:
    """The same for the six-step trip saga (within budget, so only the plan fails it)."""
    run_plan(engine, TripSaga, TRIP_OPS, plan, TripRequest("ann", "Lisbon", 2, 10_000.0))
