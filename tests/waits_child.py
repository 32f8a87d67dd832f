"""Processes for the wait tests: ``python -m tests.waits_child worker|send ...``.

``worker`` registers ``Approval`` and ``Deadline`` and runs
``engine.worker(...).run()`` until SIGTERM or SIGKILL. Every handler appends a
line (its process id, saga, step, attempt and what it saw) to a file of its own
process (``effects-<pid>.log``) with one unbuffered ``write``, so what a killed
process did is still there for the parent to read.

``send`` is the outside world in a process of its own (a webhook handler): it
sends the signals given as JSON on its command line and prints each receipt.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from statesaga import Saga, SagaEngine, Signal, SignalRefused, StepContext, step, wait

#: The folder of the effect logs (unset: handlers record nothing).
EFFECTS_ENV = "STATESAGA_WAITS_EFFECTS"


def record(ctx: StepContext, what: str) -> None:
    folder = os.environ.get(EFFECTS_ENV)
    if not folder:
        return
    line = f"{os.getpid()} {ctx.saga_id} {ctx.step} {ctx.attempt} {what}\n"
    fd = os.open(
        Path(folder) / f"effects-{os.getpid()}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND
    )
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


class Approval(Saga):
    """Open, wait for an approval (by saga id or by the key ``k-<input>``), close."""

    name = "approval"

    @step
    def open(self, ctx: StepContext) -> str:
        record(ctx, "-")
        return f"k-{ctx.input}"

    @open.compensate
    def reopen(self, ctx: StepContext, key: str) -> None:
        record(ctx, "compensated")

    @wait("order.approved", timeout=3600, key=lambda ctx: ctx.results["open"])
    def approved(self, ctx: StepContext, signal: Signal) -> str:
        record(ctx, str(signal.payload["by"]))
        time.sleep(0.05)  # a kill can land inside the handler
        return str(signal.payload["by"])

    @step
    def close(self, ctx: StepContext) -> str:
        record(ctx, ctx.results["approved"])
        return f"closed by {ctx.results['approved']}"


class Deadline(Saga):
    """Open, then wait 2 s for a signal that never comes: it gives up and compensates."""

    name = "deadline"

    @step
    def open(self, ctx: StepContext) -> str:
        record(ctx, "-")
        return "opened"

    @open.compensate
    def undo(self, ctx: StepContext, result: str) -> None:
        record(ctx, "compensated")

    @wait("never", timeout=2)
    def never(self, ctx: StepContext, signal: Signal) -> None:
        record(ctx, "signalled")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("role", choices=["worker", "send"])
    parser.add_argument("url")
    parser.add_argument(
        "signals", nargs="*", help="send: [saga_id or null, key or null, by, event_id]"
    )
    parser.add_argument("--lease", type=float, default=1.5)
    args = parser.parse_args(argv)
    engine = SagaEngine(args.url, lease=args.lease, heartbeat=args.lease / 4)
    engine.register(Approval())
    engine.register(Deadline())
    if args.role == "worker":
        worker = engine.worker(concurrency=4, poll=0.05, grace=5)
        print("READY", flush=True)
        worker.run()
        engine.close()
        print("STOPPED", flush=True)
        return 0
    for text in args.signals:
        saga_id, key, by, event_id = json.loads(text)
        try:
            if saga_id is not None:
                got = engine.signal(saga_id, "order.approved", {"by": by}, event_id=event_id)
            else:
                got = engine.signal_key("order.approved", key, {"by": by}, event_id=event_id)
            print(f"{event_id} stored={got.stored} woken={','.join(got.woken)}", flush=True)
        except SignalRefused as exc:
            print(f"{event_id} refused: {exc}", flush=True)
    engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
