"""A worker process for the multi-process tests: ``python -m tests.worker_child``.

It registers ``Tracked`` and runs ``engine.worker(...).run()`` until SIGTERM
(graceful) or SIGKILL. Every handler appends ``START`` and ``END`` lines with
its process id, saga, step and wall-clock time to a file of its own process
(``effects-<pid>.log``), written with one unbuffered ``write`` each, so what a
killed process did is still there for the parent to read.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from statesaga import Saga, SagaEngine, StepContext, step

#: How long each handler takes, in seconds; the saga id ``slow-*`` makes ``hold`` take longer.
PAUSE_ENV = "STATESAGA_WORKER_PAUSE"
SLOW_ENV = "STATESAGA_WORKER_SLOW"
#: The folder of the effect logs, for a ``Tracked()`` made by another program
#: (``statesaga recover --definitions tests.worker_child``).
EFFECTS_ENV = "STATESAGA_WORKER_EFFECTS"


class Effects:
    """The effect log of this process."""

    def __init__(self, folder: Path) -> None:
        self.fd = os.open(
            folder / f"effects-{os.getpid()}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND
        )

    def write(self, what: str, ctx: StepContext) -> None:
        line = f"{what} {os.getpid()} {ctx.saga_id} {ctx.step} {ctx.attempt} {time.time():.6f}\n"
        os.write(self.fd, line.encode())


class Tracked(Saga):
    """Three steps that record when they start and end."""

    name = "tracked"

    def __init__(self, effects: Effects | None = None) -> None:
        folder = os.environ.get(EFFECTS_ENV)
        self.effects = effects or (Effects(Path(folder)) if folder else None)
        self.pause = float(os.environ.get(PAUSE_ENV, "0.001"))
        self.slow = float(os.environ.get(SLOW_ENV, "2.0"))

    def _work(self, ctx: StepContext, slow: bool = False) -> str:
        assert self.effects is not None
        self.effects.write("START", ctx)
        time.sleep(self.slow if slow and ctx.saga_id.startswith("slow") else self.pause)
        self.effects.write("END", ctx)
        return ctx.idempotency_key

    @step
    def reserve(self, ctx: StepContext) -> str:
        return self._work(ctx)

    @reserve.compensate
    def release(self, ctx: StepContext, result: str) -> None:
        self._work(ctx)

    @step
    def hold(self, ctx: StepContext) -> str:
        return self._work(ctx, slow=True)

    @step
    def finish(self, ctx: StepContext) -> str:
        return self._work(ctx)


def read_effects(folder: Path) -> list[tuple[str, int, str, str, int, float]]:
    """Every line every worker wrote: (START|END, pid, saga, step, attempt, time)."""
    lines = []
    for path in sorted(folder.glob("effects-*.log")):
        for line in path.read_text().splitlines():
            what, pid, saga, stp, attempt, at = line.split()
            lines.append((what, int(pid), saga, stp, int(attempt), float(at)))
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("effects", type=Path)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--lease", type=float, default=2.0)
    parser.add_argument("--grace", type=float, default=30.0)
    args = parser.parse_args(argv)
    engine = SagaEngine(args.url, lease=args.lease, heartbeat=args.lease / 4)
    engine.register(Tracked(Effects(args.effects)))
    worker = engine.worker(concurrency=args.concurrency, poll=0.05, grace=args.grace)
    print("READY", flush=True)
    worker.run()
    engine.close()
    print("STOPPED", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
