"""A money transfer whose ledger lives in the saga database: transactional steps.

Debiting and crediting are ``transactional=True`` steps (and compensations):
each writes the account balances and a ledger line through ``ctx.connection``,
inside the transaction that records the step's completion. A crash can never
leave money moved without the saga knowing, nor the saga advanced without
the money moved: local effects happen exactly once. The screening step calls
an outside service (a fake) and is at-least-once like any remote call.
"""

from __future__ import annotations

import attrs
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from statesaga import Saga, StepContext, step
from statesaga.examples.services import FakeServices

__all__ = [
    "InsufficientFunds",
    "TransferRequest",
    "TransferSaga",
    "accounts",
    "balances",
    "ledger",
    "metadata",
    "open_accounts",
]

metadata = sa.MetaData()
accounts = sa.Table(
    "bank_accounts",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("balance", sa.Integer, nullable=False),
)
ledger = sa.Table(
    "bank_ledger",
    metadata,
    # The idempotency key of the step that wrote the line: one line per step, ever.
    sa.Column("key", sa.String(200), primary_key=True),
    sa.Column("account", sa.String(64), nullable=False),
    sa.Column("amount", sa.Integer, nullable=False),
)


class InsufficientFunds(Exception):
    """The source account cannot cover the transfer."""


@attrs.frozen
class TransferRequest:
    """Move ``amount`` cents from ``source`` to ``target``."""

    source: str
    target: str
    amount: int


def open_accounts(engine: Engine, balances: dict[str, int]) -> None:
    """Create the bank tables in ``engine``'s database and open the accounts."""
    metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(accounts.insert(), [{"id": k, "balance": v} for k, v in balances.items()])


def balances(engine: Engine) -> dict[str, int]:
    """Every account's balance."""
    with engine.connect() as conn:
        return {row.id: row.balance for row in conn.execute(sa.select(accounts))}


def _post(conn: Connection, key: str, account: str, amount: int) -> None:
    moved = conn.execute(
        accounts.update()
        .where(accounts.c.id == account, accounts.c.balance + amount >= 0)
        .values(balance=accounts.c.balance + amount)
    )
    if moved.rowcount != 1:
        raise InsufficientFunds(f"account {account} cannot cover {-amount}")
    conn.execute(ledger.insert().values(key=key, account=account, amount=amount))


class TransferSaga(Saga):
    """Debit, screen, credit, notify; a failure moves the money back."""

    name = "transfer"
    version = 1
    input_type = TransferRequest

    def __init__(self, services: FakeServices | None = None, limit: int = 1_000_000) -> None:
        self.services = services or FakeServices()
        self.limit = limit

    @step(transactional=True)
    def debit_source(self, ctx: StepContext) -> str:
        assert ctx.connection is not None
        _post(ctx.connection, ctx.idempotency_key, ctx.input.source, -ctx.input.amount)
        return ctx.idempotency_key

    @debit_source.compensate(transactional=True)
    def refund_source(self, ctx: StepContext, debit_key: str) -> None:
        assert ctx.connection is not None
        _post(ctx.connection, ctx.idempotency_key, ctx.input.source, ctx.input.amount)

    @step
    def screen_transfer(self, ctx: StepContext) -> str:
        if ctx.input.amount > self.limit:
            raise PermissionError(f"transfers over {self.limit} need a manual review")
        return self.services.call("screening.check", ctx.idempotency_key)

    @step(transactional=True)
    def credit_target(self, ctx: StepContext) -> str:
        assert ctx.connection is not None
        _post(ctx.connection, ctx.idempotency_key, ctx.input.target, ctx.input.amount)
        return ctx.idempotency_key

    @credit_target.compensate(transactional=True)
    def reverse_credit(self, ctx: StepContext, credit_key: str) -> None:
        assert ctx.connection is not None
        _post(ctx.connection, ctx.idempotency_key, ctx.input.target, -ctx.input.amount)

    @step
    def notify_parties(self, ctx: StepContext) -> None:
        self.services.call("mail.send", ctx.idempotency_key, to=ctx.input.target)
