"""Sagas for the toolkit's tests: an async order saga, and one saga per planted bug.

Each broken saga is the order saga with one handler changed, and has a name
of its own, so that every bug is caught on its own (a changed compensation
still looks up what its step may have done when handed ``NOT_COMPLETED``).
"""

from __future__ import annotations

import asyncio
import uuid

import sqlalchemy as sa

from definitions.order import OrderRequest, OrderSaga
from definitions.services import FakeServices, ServiceError
from statesaga import Retry, Saga, StepContext, step


class DoubleRefund(OrderSaga):
    """Bug: the refund is not idempotent (a new refund each time it runs)."""

    name = "order-double-refund"

    def refund_payment(self, ctx: StepContext, payment_id: str) -> None:
        if (payment := self._made(ctx, "payments.charge", payment_id)) is not None:
            self.services.call("payments.refund", uuid.uuid4().hex, payment_id=payment)


class UnkeyedCharge(OrderSaga):
    """Bug: the charge ignores ctx.idempotency_key, so a re-run charges twice."""

    name = "order-unkeyed-charge"

    def charge_payment(self, ctx: StepContext) -> str:
        return self.services.call("payments.charge", uuid.uuid4().hex, amount=ctx.input.total)


class ReleaseIgnoresResult(OrderSaga):
    """Bug: the release ignores the reservation its step returned and releases an
    id of its own making, so the reservation stays."""

    name = "order-release-ignores-result"

    def release_reservation(self, ctx: StepContext, reservation_id: str) -> None:
        made_up = f"inventory-{ctx.saga_id[:8]}"
        self.services.call("inventory.release", ctx.idempotency_key, reservation=made_up)


class OutOfStock(Exception):
    """The warehouse has too few of an item."""


class ReserveThenCheck(OrderSaga):
    """Bug: the reservation is made before the stock is checked; an order over
    the stock fails the step, and the reservation it made stays (the failing step
    is not compensated)."""

    name = "order-reserve-then-check"
    stock = 5

    def reserve_inventory(self, ctx: StepContext) -> str:
        reservation = self.services.call(
            "inventory.reserve", ctx.idempotency_key, sku=ctx.input.sku, quantity=ctx.input.quantity
        )
        if ctx.input.quantity > self.stock:
            raise OutOfStock(f"only {self.stock} of {ctx.input.sku} in stock")
        return reservation


class RefundRaisesWhenDone(OrderSaga):
    """Bug: the refund raises when the payment is already refunded, instead of
    treating 'nothing to undo' as done."""

    name = "order-refund-raises-when-done"

    def refund_payment(self, ctx: StepContext, payment_id: str) -> None:
        if (payment := self._made(ctx, "payments.charge", payment_id)) is None:
            return
        refunded = any(
            r["operation"] == "payments.refund" and r.get("payment_id") == payment
            for r in self.services.records.values()
        )
        if refunded:
            raise ServiceError(f"payment {payment} is already refunded")
        self.services.call("payments.refund", uuid.uuid4().hex, payment_id=payment)


class AsyncOrderSaga(Saga):
    """The order saga with async handlers, as an asyncio application writes it."""

    name = "order-async"
    version = 1
    input_type = OrderRequest

    def __init__(self, services: FakeServices | None = None) -> None:
        self.services = services or FakeServices()
        self.loops: set[asyncio.AbstractEventLoop] = set()

    async def _call(self, operation: str, key: str, **fields: object) -> str:
        self.loops.add(asyncio.get_running_loop())
        await asyncio.sleep(0)  # a real client yields to the loop here
        return self.services.call(operation, key, **fields)

    @step
    async def create_order(self, ctx: StepContext) -> str:
        return await self._call("orders.create", ctx.idempotency_key, total=ctx.input.total)

    @create_order.compensate
    async def cancel_order(self, ctx: StepContext, order_id: str) -> None:
        await self._call("orders.cancel", ctx.idempotency_key, order_id=order_id)

    @step(retry=Retry(max_attempts=3, initial_delay=0.01))
    async def charge_payment(self, ctx: StepContext) -> str:
        return await self._call("payments.charge", ctx.idempotency_key, amount=ctx.input.total)

    @charge_payment.compensate
    async def refund_payment(self, ctx: StepContext, payment_id: str) -> None:
        await self._call("payments.refund", ctx.idempotency_key, payment_id=payment_id)

    @step
    async def reserve_inventory(self, ctx: StepContext) -> str:
        return await self._call("inventory.reserve", ctx.idempotency_key, sku=ctx.input.sku)

    @reserve_inventory.compensate
    async def release_reservation(self, ctx: StepContext, reservation_id: str) -> None:
        await self._call("inventory.release", ctx.idempotency_key, reservation=reservation_id)

    @step
    async def confirm_order(self, ctx: StepContext) -> None:
        order_id = ctx.results["create_order"]
        await self._call("orders.confirm", ctx.idempotency_key, order_id=order_id)


class AsyncDoubleRefund(AsyncOrderSaga):
    """Bug: the async saga's refund is not idempotent, as ``DoubleRefund``'s."""

    name = "order-async-double-refund"

    async def refund_payment(self, ctx: StepContext, payment_id: str) -> None:
        await self._call("payments.refund", uuid.uuid4().hex, payment_id=payment_id)


# -- a saga that needs the application's own table --------------------------------


def ledger_table(name: str, metadata: sa.MetaData) -> sa.Table:
    """A ledger: one line per idempotency key."""
    return sa.Table(
        name,
        metadata,
        sa.Column("key", sa.String(200), primary_key=True),
        sa.Column("amount", sa.Integer, nullable=False),
    )


ledger_metadata = sa.MetaData()
ledger = ledger_table("toolkit_ledger", ledger_metadata)


class LedgerSaga(Saga):
    """Writes ledger lines through ctx.connection: it needs the ``toolkit_ledger``
    table, which the application creates (a test's ``setup``)."""

    name = "ledger"
    version = 1
    table = ledger

    @step(transactional=True)
    def post(self, ctx: StepContext) -> str:
        assert ctx.connection is not None
        ctx.connection.execute(self.table.insert().values(key=ctx.idempotency_key, amount=5))
        return ctx.idempotency_key

    @post.compensate(transactional=True)
    def reverse(self, ctx: StepContext, key: str) -> None:
        assert ctx.connection is not None
        ctx.connection.execute(self.table.insert().values(key=ctx.idempotency_key, amount=-5))

    @step
    def notify(self, ctx: StepContext) -> None:
        pass


class NeverSetUpLedgerSaga(LedgerSaga):
    """The ledger saga writing to a table no test creates (not even in a database
    shared by several runs)."""

    name = "ledger-never-set-up"
    table = ledger_table("toolkit_never_created", sa.MetaData())


def create_ledger(engine: sa.Engine) -> None:
    """The application's setup for ``LedgerSaga``."""
    ledger_metadata.create_all(engine)


def ledger_total(engine: sa.Engine) -> dict[str, int]:
    """The ledger's balance (the state ``LedgerSaga`` changes)."""
    with engine.connect() as conn:
        total = conn.execute(sa.select(sa.func.coalesce(sa.func.sum(ledger.c.amount), 0)))
        return {"balance": int(total.scalar_one())}


# -- a saga whose retries need the application's own error type ---------------------


class Flaky(ServiceError):
    """A transient error the payment client raises."""


class RetryOnFlaky(OrderSaga):
    """The order saga whose charge is retried only on ``Flaky`` errors."""

    name = "order-retry-on-flaky"

    @step(retry=Retry(max_attempts=3, retry_on=(Flaky,)))
    def charge_payment(self, ctx: StepContext) -> str:
        return self.services.call("payments.charge", ctx.idempotency_key, amount=ctx.input.total)

    @charge_payment.compensate
    def refund_payment(self, ctx: StepContext, payment_id: str) -> None:
        self.services.call("payments.refund", ctx.idempotency_key, payment_id=payment_id)
