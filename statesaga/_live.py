"""A saga while a runner drives it, and what its handlers are handed of it.

What a live run hands a handler is exactly what a resumed run would: results
as the codec rebuilds them from the log, and for a value that can change in
place a fresh copy each time, so no handler sees another's edits.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator, Mapping
from typing import Any

from statesaga import _codec as codec
from statesaga._registry import Definition
from statesaga._spec import SagaSpec
from statesaga._views import SagaRun, snapshot
from statesaga.store import Transaction


class LiveRun:
    """One saga while a runner drives it: where it is and what it has."""

    __slots__ = (
        "attempt",
        "awaiting",
        "comp_failed",
        "deadline_at",
        "defn",
        "due_at",
        "epoch",
        "error",
        "failures",
        "halt",
        "input",
        "input_shared",
        "loop",
        "outcome",
        "parked",
        "parks",
        "results",
        "saga_id",
        "seq",
        "state",
        "texts",
        "tx",
        "wait_until",
    )

    def __init__(
        self,
        defn: Definition,
        saga_id: str,
        input: Any,
        state: str,
        attempt: int,
        seq: int,
        created_at: float,
        epoch: int,
    ) -> None:
        self.defn = defn
        self.saga_id = saga_id
        self.input = input
        self.input_shared = codec.frozen(input)  # handed as it is (else a copy each time)
        self.state = state
        self.attempt = attempt
        self.seq = seq
        self.results: dict[str, Any] = {}  # as a resume would rebuild them
        self.texts: dict[str, str] = {}  # their JSON, for copies of mutable ones
        self.failures = 0  # failed attempts of the current state, for its retry policy
        self.comp_failed = False
        self.error: str | None = None
        self.outcome: str | None = None  # JSON result or error text of the last attempt
        self.due_at: float | None = None
        self.tx: Transaction | None = None
        self.loop: asyncio.AbstractEventLoop | None = None  # where async handlers run
        self.epoch = epoch  # the lease epoch this runner holds it at: its writes' fence
        self.parks = False  # let go of the saga during a retry delay instead of sleeping
        self.parked = False  # it was let go to wait out a retry delay
        self.halt: threading.Event | None = None  # set: start no new attempt, let it go
        self.awaiting = False  # the next attempt in ``state`` has not begun yet
        self.wait_until: float | None = None  # at a wait step: when it gives up
        deadline = defn.spec.deadline
        self.deadline_at = None if deadline is None else created_at + deadline

    def snapshot(self) -> SagaRun:
        """The run as the caller sees it."""
        return snapshot(
            self.defn.spec, self.defn.machine, self.saga_id, self.state, self.results, self.error
        )

    def handed_input(self) -> Any:
        """``ctx.input``: the input, or a copy of it when it can change in place."""
        return self.input if self.input_shared else handed(self.input, self.defn.spec.input_type)


def handed(value: Any, type_: Any) -> Any:
    """What a handler is handed of a stored value: the value itself when it cannot
    change in place, else a fresh copy (decoded from its JSON), so that what one
    handler does to it is never seen by another — as after a resume."""
    return value if codec.frozen(value) else codec.loads(codec.dumps(value), type_)


class Results(Mapping[str, Any]):
    """``ctx.results``: read-only, each value handed as ``handed`` does."""

    __slots__ = ("_run", "_spec")

    def __init__(self, run: LiveRun, spec: SagaSpec) -> None:
        self._run = run
        self._spec = spec

    def __getitem__(self, step: str) -> Any:
        value = self._run.results[step]
        if codec.frozen(value):
            return value
        return codec.loads(self._run.texts[step], self._spec.step(step).result_type)

    def __iter__(self) -> Iterator[str]:
        return iter(self._run.results)

    def __len__(self) -> int:
        return len(self._run.results)

    def __repr__(self) -> str:
        return f"<results {dict(self)!r}>"
