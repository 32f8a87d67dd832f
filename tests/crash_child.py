"""The child process of the SIGKILL crash test (``tests/test_crash_sigkill.py``).

Run as ``python -m tests.crash_child DB_URL EFFECTS_DB --first N`` from the
repository root. It recovers whatever a killed predecessor left, then starts
order sagas ``saga-NNNN`` from index ``N`` upwards, forever, until it is killed.
With ``--recover-only`` it recovers and exits.

Every handler call of the order saga (steps and compensations, failing calls
included) goes through ``DurableServices``, which appends a row to the
``EFFECTS_DB`` SQLite file (autocommit, ``synchronous=FULL``) *before* it
returns or raises: the effect log survives SIGKILL, so the parent can count
how often each handler really ran per idempotency key and attempt.

Each saga fails as ``plan_for`` says, derived from its index, so both the
forward path and the compensation path are crashed into. Only failure plans
whose outcome cannot depend on where a crash lands are used: a step fails
either always or on its first call only (and only where its retry policy
allows a second attempt); a compensation fails always.

It reports on stdout, one flushed line per event:

``RECOVERING`` / ``RECOVERED n`` / ``SKIPPED id reason``
    around its initial ``recover()``;
``ATTEMPT id``
    just before ``start``/``run`` of a saga (its creation may or may not commit);
``STARTED id created|existing``
    when ``start`` (or ``run``: after the whole saga) returned, so the saga
    certainly exists (``existing``: an earlier process had created it);
``DONE id status``
    when the saga is terminal;
``CALL id handler attempt``
    when a handler calls its service (before the effect is recorded);
``READY``
    after the recovery and the first batch of new sagas;
``EXIT``
    at the end of ``--recover-only``.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

from definitions.order import OPERATIONS, OrderRequest, OrderSaga
from definitions.services import FakeServices, ServiceError
from statesaga import EntryStatus, Hooks, SagaEngine, SagaSpec, SagaStatus, StepContext

#: Failure plans, cycled by saga index: handler -> how many of its first calls
#: fail (``None``: all of them). Missing handlers never fail.
PLANS: tuple[Mapping[str, int | None], ...] = (
    {},  # happy
    {"charge_payment": 1},  # one retry, then completes
    {"reserve_inventory": None},  # refund, cancel -> failed
    {"reserve_inventory": None, "refund_payment": None},  # cancel still runs -> compensation_failed
    {"confirm_order": None},  # release, refund, cancel -> failed
    {"charge_payment": None},  # three attempts, cancel -> failed
    {"confirm_order": None, "release_reservation": None, "cancel_order": None},
    {"charge_payment": 1, "confirm_order": None, "refund_payment": None},
)

#: Sagas per batch. Even batches are recorded with ``start`` and then driven
#: with ``resume`` (so a kill leaves several sagas not yet run); odd batches use ``run``.
BATCH = 4

#: Seconds a handler sleeps before and again after recording its effect, so
#: kills land inside handlers, on both sides of the effect.
PAUSE_ENV = "STATESAGA_CRASH_PAUSE"
#: Seconds this child's clock runs ahead of the wall clock (set by the parent).
CLOCK_ENV = "STATESAGA_CRASH_CLOCK_OFFSET"

EFFECTS_SCHEMA = """
CREATE TABLE IF NOT EXISTS effects (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    saga_id TEXT NOT NULL,
    handler TEXT NOT NULL,
    operation TEXT NOT NULL,
    key TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    outcome TEXT NOT NULL,  -- 'ok' or 'error'
    pid INTEGER NOT NULL,
    at REAL NOT NULL
)
"""


def saga_id(index: int) -> str:
    return f"saga-{index:04d}"


def saga_index(sid: str) -> int:
    return int(sid.removeprefix("saga-"))


def plan_for(sid: str) -> Mapping[str, int | None]:
    """The failure plan of saga ``sid``."""
    return PLANS[saga_index(sid) % len(PLANS)]


def request_for(sid: str) -> OrderRequest:
    i = saga_index(sid)
    return OrderRequest(customer_id=f"c-{i}", total=10.0 + i)


def expected_outcomes(
    spec: SagaSpec, plan: Mapping[str, int | None]
) -> tuple[SagaStatus, list[tuple[str, EntryStatus]]]:
    """The status and final outcomes (``statesaga.testing.outcomes``) ``plan`` implies.

    Worked out from the plan alone; crashes must not change it, which is why
    the plans only fail a step always or on its first call (if it may retry),
    and a compensation always.
    """

    def fails_for_good(handler: str, max_attempts: int) -> bool:
        times = plan.get(handler, 0)
        if times is None:
            return True
        if times and times >= max_attempts:
            # Whether the retries run out would depend on how many failed
            # calls a crash kept from being recorded.
            raise ValueError(f"{handler}: failing {times} times is not crash-independent")
        return False

    out: list[tuple[str, EntryStatus]] = []
    for s in spec.steps:
        if not fails_for_good(s.name, s.retry.max_attempts):
            out.append((s.name, EntryStatus.COMPLETED))
            continue
        out.append((s.name, EntryStatus.FAILED))
        comp_failed = False
        for done in reversed(spec.steps[: s.index]):
            comp = done.compensation
            if comp is None:
                continue
            bad = fails_for_good(comp.name, comp.retry.max_attempts)
            comp_failed |= bad
            out.append(
                (done.name, EntryStatus.COMPENSATION_FAILED if bad else EntryStatus.COMPENSATED)
            )
        return (SagaStatus.COMPENSATION_FAILED if comp_failed else SagaStatus.FAILED), out
    return SagaStatus.COMPLETED, out


def open_effects(path: str) -> sqlite3.Connection:
    """The effect log: autocommit, ``synchronous=FULL``. Handlers may run in a
    worker thread of ``recover()`` (one at a time), so any thread may use it."""
    db = sqlite3.connect(path, isolation_level=None, timeout=30, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute(EFFECTS_SCHEMA)
    return db


class DurableServices(FakeServices):
    """The order saga's fake services, recording every call durably before it ends.

    ``EffectHooks`` tells it which handler invocation (saga, state, attempt) is
    calling; a call fails as the saga's plan says, counting the calls already
    recorded for its idempotency key (so a failure plan survives crashes).
    """

    def __init__(self, path: str, pause: float) -> None:
        super().__init__()
        self.db = open_effects(path)
        self.pause = pause
        self.pid = os.getpid()
        self.current: tuple[str, str, int] | None = None  # saga, handler, attempt

    def call(self, operation: str, key: str, **fields: Any) -> str:
        assert self.current is not None, "a service was called outside a handler"
        sid, handler, attempt = self.current
        assert key == f"{sid}:{handler}", (key, self.current)
        assert OPERATIONS[handler] == operation, (handler, operation)
        say(f"CALL {sid} {handler} {attempt}")
        time.sleep(self.pause)
        times = plan_for(sid).get(handler, 0)
        (before,) = self.db.execute("SELECT count(*) FROM effects WHERE key = ?", (key,)).fetchone()
        fails = times is None or before < times
        self.db.execute(
            "INSERT INTO effects (saga_id, handler, operation, key, attempt, outcome, pid, at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                sid,
                handler,
                operation,
                key,
                attempt,
                "error" if fails else "ok",
                self.pid,
                time.time(),
            ),
        )
        time.sleep(self.pause)
        if fails:
            raise ServiceError(f"{operation} is unavailable (planned, call {before + 1})")
        return super().call(operation, key, **fields)


class EffectHooks(Hooks):
    """Tells ``DurableServices`` which handler invocation is running."""

    def __init__(self, services: DurableServices) -> None:
        self.services = services

    def call(
        self, saga_id: str, state: str, attempt: int, fn: Callable[..., Any], args: tuple[Any, ...]
    ) -> Any:
        ctx = args[1]
        assert isinstance(ctx, StepContext)
        assert (ctx.saga_id, ctx.attempt) == (saga_id, attempt), (ctx, state, attempt)
        handler = ctx.idempotency_key.rsplit(":", 1)[1]
        self.services.current = (saga_id, handler, ctx.attempt)
        try:
            return fn(*args)
        finally:
            self.services.current = None


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("effects")
    parser.add_argument("--first", type=int, default=1, help="index of the first new saga")
    parser.add_argument("--limit", type=int, default=100_000, help="new sagas at most")
    parser.add_argument("--recover-only", action="store_true")
    args = parser.parse_args(argv)

    services = DurableServices(args.effects, float(os.environ.get(PAUSE_ENV, "0.002")))
    saga = OrderSaga(services)
    offset = float(os.environ.get(CLOCK_ENV, "0"))
    engine = SagaEngine(args.url, clock=lambda: time.time() + offset)
    engine.register(saga)
    engine.hooks = EffectHooks(services)

    say("RECOVERING")
    report = engine.recover()
    for skipped in report.skipped:
        say(f"SKIPPED {skipped.saga_id} {skipped.reason}")
    say(f"RECOVERED {len(report.resumed)}")
    if args.recover_only:
        engine.close()
        say("EXIT")
        return 0

    for number, first in enumerate(range(args.first, args.first + args.limit, BATCH)):
        ids = [saga_id(i) for i in range(first, first + BATCH)]
        if (first // BATCH) % 2 == 0:
            for sid in ids:
                say(f"ATTEMPT {sid}")
                run = engine.start(saga, request_for(sid), saga_id=sid)
                say(f"STARTED {sid} {'created' if run.created else 'existing'}")
            for sid in ids:
                run = engine.resume(sid)
                say(f"DONE {sid} {run.status.value}")
        else:
            for sid in ids:
                say(f"ATTEMPT {sid}")
                run = engine.run(saga, request_for(sid), saga_id=sid)
                say(f"STARTED {sid} {'created' if run.created else 'existing'}")
                say(f"DONE {sid} {run.status.value}")
        if number == 0:
            say("READY")
    return 0


if __name__ == "__main__":
    sys.exit(main())
