"""Transactional steps: the transfer saga moves money exactly once, crash or not."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from definitions.services import FakeServices
from definitions.transfer import TransferRequest, TransferSaga, balances, ledger, open_accounts
from statesaga import SagaStatus
from statesaga.testing import CRASH_POINTS, Crash, Fault, SagaHarness, Scenario, check_saga
from statesaga.testing.strategies import scenarios

STATES = [s.name for s in TransferSaga.machine.states if s.kind != "terminal"]


@pytest.fixture
def harness(db_url: str) -> Iterator[SagaHarness]:
    with SagaHarness(TransferSaga(FakeServices()), db_url) as h:
        open_accounts(h.engine.store.engine, {"alice": 1_000, "bob": 0})
        yield h


def test_transfer_moves_money(harness: SagaHarness) -> None:
    """A happy transfer debits one account and credits the other, one ledger line each."""
    out = harness.run(TransferRequest("alice", "bob", 300))
    assert out.status is SagaStatus.COMPLETED
    assert balances(harness.engine.store.engine) == {"alice": 700, "bob": 300}


def test_insufficient_funds_fails_without_moving_anything(harness: SagaHarness) -> None:
    """A debit the account cannot cover fails the saga and leaves balances as they were."""
    out = harness.run(TransferRequest("alice", "bob", 5_000))
    assert out.status is SagaStatus.FAILED and "cannot cover" in str(out.history[-1].error)
    assert balances(harness.engine.store.engine) == {"alice": 1_000, "bob": 0}


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=100)
@given(
    fails=st.dictionaries(
        st.sampled_from(STATES),
        st.builds(Fault, times=st.one_of(st.just(1), st.none())),
        max_size=3,
    ),
    crash=st.one_of(
        st.none(),
        st.builds(Crash, point=st.sampled_from(CRASH_POINTS), state=st.sampled_from(STATES)),
    ),
)
def test_money_is_conserved_and_moved_once(
    harness: SagaHarness, fails: dict[str, Fault], crash: Crash | None
) -> None:
    """Under any failures and any crash point, a completed transfer moved the money
    exactly once and a failed one moved it back; whatever the outcome (even a
    compensation that failed for good), the balances changed by exactly the ledger
    lines written, one per step or compensation the log records as done."""
    engine = harness.engine.store.engine
    before = balances(engine)
    out = harness.run(TransferRequest("alice", "bob", 10), plan=fails, crash=crash)
    check_saga(TransferSaga.spec, out.status, out.history)
    after = balances(harness.engine.store.engine)
    if out.status is SagaStatus.COMPLETED:
        assert after == {"alice": before["alice"] - 10, "bob": before["bob"] + 10}
    elif out.status is SagaStatus.FAILED:
        assert after == before
    with harness.engine.store.engine.connect() as conn:
        lines = conn.execute(
            sa.select(ledger.c.key, ledger.c.account, ledger.c.amount).where(
                ledger.c.key.startswith(out.saga_id)
            )
        ).all()
    keys = {line.key.split(":", 1)[1] for line in lines}
    for account in after:
        moved = sum(line.amount for line in lines if line.account == account)
        assert after[account] - before[account] == moved
    done = {
        e.step
        if e.status.value == "completed"
        else TransferSaga.spec.step(e.step).compensation.name
        for e in out.history
        if e.status.value in ("completed", "compensated")
    }
    assert keys == done & {"debit_source", "credit_target", "refund_source", "reverse_credit"}


@pytest.fixture
def bank(db_url: str) -> Iterator[SagaHarness]:
    """A harness whose effects are the bank's ledger lines, with a rich account."""
    harness: SagaHarness

    def ledger_kinds() -> Counter[str]:
        with harness.engine.store.engine.connect() as conn:
            rows = conn.execute(sa.select(ledger.c.account, ledger.c.amount)).all()
        return Counter(f"{account} {'+' if amount > 0 else '-'}" for account, amount in rows)

    with SagaHarness(TransferSaga(FakeServices()), db_url, ledger_kinds) as harness:
        open_accounts(harness.engine.store.engine, {"alice": 10**9, "bob": 0})
        yield harness


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=100)
@given(scenario=scenarios(TransferSaga))
def test_transfer_passes_every_scenario(bank: SagaHarness, scenario: Scenario) -> None:
    """The toolkit's scenarios over the transfer saga: a crash anywhere and duplicate
    starts leave the same outcome and the same ledger lines as the failures alone."""
    bank.check_against_baseline(TransferRequest("alice", "bob", 10), scenario)
