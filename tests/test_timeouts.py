"""Step timeouts, saga deadlines and async handlers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from statesaga import Retry, Saga, SagaEngine, SagaStatus, StepContext, StepTimeout, step


def test_sync_step_over_its_timeout_fails_and_is_retried(engine: SagaEngine) -> None:
    """A sync handler cannot be stopped: it finishes, but an attempt that took longer
    than the timeout is discarded and counts as a failure for the retry policy."""
    attempts: list[int] = []

    class Slow(Saga):
        name = "slow-sync"

        @step(timeout=0.01, retry=Retry(max_attempts=2, retry_on=StepTimeout))
        def call(self, ctx: StepContext) -> int:
            attempts.append(ctx.attempt)
            if ctx.attempt == 1:
                time.sleep(0.05)  # always longer than the timeout
            return ctx.attempt

    engine.register(Slow)
    run = engine.run(Slow, None)
    assert run.status is SagaStatus.COMPLETED and run.results == {"call": 2}
    assert attempts == [1, 2]
    retried = [e for e in engine.history(run.saga_id) if e.status.value == "retrying"]
    assert len(retried) == 1 and "took longer than 0.01s" in (retried[0].error or "")


def test_async_step_is_cancelled_at_its_timeout(engine: SagaEngine) -> None:
    """An async handler is cancelled when its timeout expires."""
    finished: list[bool] = []

    class Hangs(Saga):
        name = "hangs-async"

        @step(timeout=0.02)
        async def call(self, ctx: StepContext) -> None:
            await asyncio.sleep(30)
            finished.append(True)

    engine.register(Hangs)
    started = time.monotonic()
    run = engine.run(Hangs, None)
    assert run.status is SagaStatus.FAILED
    assert run.error is not None and run.error.startswith("StepTimeout:")
    assert finished == [] and time.monotonic() - started < 10


def test_deadline_stops_further_steps_and_compensates(
    new_engine: Callable[..., SagaEngine], db_url: str
) -> None:
    """Once the saga's deadline has passed, the next step does not start: it fails
    with DeadlineExceeded (never retried) and the completed steps are compensated."""
    now = [0.0]
    undone: list[str] = []

    class Slowpoke(Saga):
        name = "deadline"
        deadline = 60.0

        @step
        def first(self, ctx: StepContext) -> str:
            now[0] += 61.0  # this step took a minute
            return "done"

        @first.compensate
        def undo_first(self, ctx: StepContext, result: str) -> None:
            undone.append(result)

        @step(retry=Retry(max_attempts=5))
        def second(self, ctx: StepContext) -> None:
            raise AssertionError("must not start after the deadline")

    engine = new_engine(clock=lambda: now[0])
    engine.register(Slowpoke)
    run = engine.run(Slowpoke, None)
    assert run.status is SagaStatus.FAILED
    assert run.error is not None and "deadline of 60.0s passed before step 'second'" in run.error
    assert undone == ["done"]
    assert [(e.step, e.status.value) for e in engine.history(run.saga_id)][-4:] == [
        ("second", "executing"),
        ("second", "failed"),
        ("first", "compensating"),
        ("first", "compensated"),
    ]


def test_arun_runs_async_handlers_on_the_callers_loop(engine: SagaEngine) -> None:
    """arun keeps the event loop free: async handlers run on the caller's loop, sync
    handlers and database work in a worker thread."""
    loops: list[object] = []

    class Mixed(Saga):
        name = "mixed"

        @step
        async def fetch(self, ctx: StepContext) -> int:
            loops.append(asyncio.get_running_loop())
            await asyncio.sleep(0)
            return 7

        @step
        def double(self, ctx: StepContext) -> int:
            return ctx.results["fetch"] * 2

    engine.register(Mixed)

    async def main() -> tuple[object, SagaStatus, dict[str, int]]:
        run = await engine.arun(Mixed, None)
        return asyncio.get_running_loop(), run.status, dict(run.results)

    loop, status, results = asyncio.run(main())
    assert status is SagaStatus.COMPLETED and results == {"fetch": 7, "double": 14}
    assert loops == [loop]
