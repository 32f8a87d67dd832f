"""The order service's saga: async steps that call (simulated) remote services.

A worker in any process runs it: the app's own (its lifespan), or
``statesaga worker --definitions examples.orders_api.sagas``.
"""

from __future__ import annotations

import asyncio
import os

import attrs

from statesaga import Retry, Saga, StepContext, step


@attrs.frozen
class PlaceOrder:
    """What a client posts."""

    customer_id: str
    total: float


class Payments:
    """A stand-in for a payment provider's async client, kept for the saga's life:
    it only works on the event loop it was first used on, as real clients do."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None

    async def call(self, what: str, key: str) -> str:
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        if loop is not self._loop:
            raise RuntimeError("client used from another event loop")
        await asyncio.sleep(0.005)  # the network
        return f"{what}:{key}"


class PlaceOrderSaga(Saga):
    """Reserve stock, charge the card, confirm; undo in reverse on failure."""

    name = "place-order"
    input_type = PlaceOrder

    def __init__(self, payments: Payments | None = None) -> None:
        self.payments = payments or Payments()

    @step
    async def reserve_stock(self, ctx: StepContext) -> str:
        return await self.payments.call("reserve", ctx.idempotency_key)

    @reserve_stock.compensate
    async def release_stock(self, ctx: StepContext, reservation: str) -> None:
        await self.payments.call("release", ctx.idempotency_key)

    @step(retry=Retry(max_attempts=3, initial_delay=0.5))
    async def charge_card(self, ctx: StepContext) -> str:
        return await self.payments.call("charge", ctx.idempotency_key)

    @charge_card.compensate
    async def refund_card(self, ctx: StepContext, charge: str) -> None:
        await self.payments.call("refund", ctx.idempotency_key)

    @step
    async def confirm(self, ctx: StepContext) -> int:
        await self.payments.call("confirm", ctx.idempotency_key)
        return os.getpid()  # which process ran it, for the curious
