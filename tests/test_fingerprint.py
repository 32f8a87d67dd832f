"""The structural fingerprint covers what a stored saga depends on, result types included.

A completed step's result is stored and rebuilt, on resume, as the type its
handler is annotated to return; its compensation is handed that. So a changed
result type is a changed structure: without a version bump, a saga started on
the old definition is refused on resume, like any other structural change.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Optional

import attrs
import pytest

from statesaga import Hooks, ResumeError, Saga, SagaEngine, SagaStatus, StepContext, step
from statesaga.testing import SimulatedCrash
from tests.test_recover import rows


@attrs.frozen
class Receipt:
    """What the payment service returns."""

    rid: str
    amount: int


handed: list[Any] = []


class PayV1(Saga):
    name = "pay"
    version = 1

    @step
    def charge(self, ctx: StepContext) -> Receipt:
        return Receipt("r1", 5)

    @charge.compensate
    def refund(self, ctx: StepContext, receipt: Receipt) -> None:
        handed.append(receipt)

    @step
    def ship(self, ctx: StepContext) -> None:
        raise RuntimeError("no courier")


class PayV1ReturnsStr(Saga):
    """``PayV1`` with ``charge`` annotated ``-> str``, and no version bump."""

    name = "pay"
    version = 1

    @step
    def charge(self, ctx: StepContext) -> str:
        return "r1"

    @charge.compensate
    def refund(self, ctx: StepContext, receipt: str) -> None:
        handed.append(receipt)

    @step
    def ship(self, ctx: StepContext) -> None:
        raise RuntimeError("no courier")


def _pay(result: Any, undo_result: Any = None) -> type[Saga]:
    """A one-step-and-a-bit saga whose ``charge`` returns ``result`` and whose
    ``refund`` returns ``undo_result`` (annotations as given)."""

    def charge(self: Any, ctx: Any) -> None: ...

    def refund(self: Any, ctx: Any, receipt: Any) -> None: ...

    def ship(self: Any, ctx: Any) -> None: ...

    charge.__annotations__ = {"return": result}
    refund.__annotations__ = {"return": undo_result}
    decl = step(charge)
    return type(
        "Pay",
        (Saga,),
        {"name": "pay", "charge": decl, "refund": decl.compensate(refund), "ship": step(ship)},
    )


def test_the_fingerprint_follows_result_types() -> None:
    """Changing a step's or a compensation's annotated result type changes the
    fingerprint, type arguments included; the same types give the same one,
    whichever way a union is spelt."""
    fp = {
        key: _pay(*types).spec.fingerprint
        for key, types in {
            "receipt": (Receipt,),
            "receipt again": (Receipt,),
            "str": (str,),
            "none": (None,),
            "list[int]": (list[int],),
            "list[str]": (list[str],),
            "X | None": (Receipt | None,),
            "Optional[X]": (Optional[Receipt],),  # noqa: UP045 - the other spelling is the point
            "undo -> int": (Receipt, int),
        }.items()
    }
    assert fp["receipt"] == fp["receipt again"] == PayV1.spec.fingerprint
    assert fp["X | None"] == fp["Optional[X]"]
    assert len({fp[k] for k in fp if k not in ("receipt again", "Optional[X]")}) == 7


def test_result_types_count_by_qualified_name_not_module() -> None:
    """A result type is named by its qualified name: the same definition gives
    the same fingerprint whether its module is imported under its name or run
    as ``__main__`` (where its classes live in another module object)."""
    Elsewhere = type("Receipt", (), {"__module__": "__main__", "__qualname__": "Receipt"})
    Nested = type("Receipt", (), {"__qualname__": "Outer.Receipt"})
    assert _pay(Elsewhere).spec.fingerprint == _pay(Receipt).spec.fingerprint
    assert _pay(Nested).spec.fingerprint != _pay(Receipt).spec.fingerprint


class _CrashInShip(Hooks):
    """Kills the run as ``ship`` starts: ``charge`` has completed, its result stored."""

    def call(self, saga_id, state, attempt, fn, args):  # type: ignore[no-untyped-def]
        if state == "ship":
            raise SimulatedCrash("killed before shipping")
        return fn(*args)


def _started_v1(new_engine: Callable[..., SagaEngine], saga_id: str) -> None:
    """A v1 saga whose ``charge`` completed (a ``Receipt`` stored), stopped by a crash."""
    engine = new_engine(sleep=lambda _s: None)
    engine.hooks = _CrashInShip()
    engine.register(PayV1)
    with pytest.raises(SimulatedCrash):
        engine.run(PayV1, None, saga_id=saga_id)
    assert engine.get(saga_id).status is SagaStatus.STARTED
    engine.store.engine.dispose()


def test_a_changed_result_type_without_a_version_bump_is_refused_on_resume(
    new_engine: Callable[..., SagaEngine],
) -> None:
    """v1 started (``charge`` returned a ``Receipt``); the code now says
    ``charge -> str`` under the same version. Recovery refuses the saga with
    the reason, resuming it is refused too, nothing runs, and its row and log
    stay exactly as they were: its compensation is never handed the receipt's
    text as a string."""
    handed.clear()
    _started_v1(new_engine, "paid")
    assert PayV1ReturnsStr.spec.fingerprint != PayV1.spec.fingerprint

    # A process that starts after the dead one's lease (30 s by default) ran out.
    fresh = new_engine(clock=lambda: time.time() + 60, sleep=lambda _s: None)
    fresh.register(PayV1ReturnsStr)
    before = rows(fresh, "paid")
    report = fresh.recover()
    assert not report.resumed
    [refused] = report.skipped
    assert isinstance(refused, ResumeError) and refused.saga_id == "paid"
    assert f"fingerprint {PayV1.spec.fingerprint}" in refused.reason
    assert "changed without a version bump" in refused.reason
    with pytest.raises(ResumeError, match="changed without a version bump"):
        fresh.resume("paid")
    assert rows(fresh, "paid") == before
    assert handed == []


def test_the_same_saga_resumes_on_the_definition_it_started_on(
    new_engine: Callable[..., SagaEngine],
) -> None:
    """The control: with v1 itself registered, the same saga resumes, and its
    compensation is handed the ``Receipt`` the step returned."""
    handed.clear()
    _started_v1(new_engine, "paid-ok")
    fresh = new_engine(clock=lambda: time.time() + 60, sleep=lambda _s: None)
    fresh.register(PayV1)
    report = fresh.recover()
    assert [r.status for r in report.resumed] == [SagaStatus.FAILED] and not report.skipped
    assert handed == [Receipt("r1", 5)]
