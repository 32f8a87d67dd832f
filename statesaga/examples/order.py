"""The seed's order saga: create order, charge payment, reserve inventory, confirm.

On a failure the completed steps are compensated in reverse order: the
reservation is released, the payment refunded, the order cancelled. Confirming
is the last step and has no compensation.

A call that times out may still have acted (``ServiceTimeout``): the steps list
it as *in doubt*, so a step that fails for good that way is compensated too,
first. Its compensation is then handed ``NOT_COMPLETED`` instead of a result,
and looks up by the step's idempotency key what the step may have done.
"""

from __future__ import annotations

import attrs

from statesaga import NOT_COMPLETED, Retry, Saga, StepContext, step
from statesaga.examples.services import FakeServices, ServiceTimeout

__all__ = ["OPERATIONS", "OrderRequest", "OrderSaga"]


@attrs.frozen
class OrderRequest:
    """What the customer ordered."""

    customer_id: str
    total: float
    sku: str = "sku-1"
    quantity: int = 1


#: The service operation each handler calls (tests plan failures with it).
OPERATIONS = {
    "create_order": "orders.create",
    "charge_payment": "payments.charge",
    "reserve_inventory": "inventory.reserve",
    "confirm_order": "orders.confirm",
    "cancel_order": "orders.cancel",
    "refund_payment": "payments.refund",
    "release_reservation": "inventory.release",
}


class OrderSaga(Saga):
    """Order placement across the order, payment and inventory services."""

    name = "order"
    version = 1
    input_type = OrderRequest

    def __init__(self, services: FakeServices | None = None) -> None:
        self.services = services or FakeServices()

    def _made(self, ctx: StepContext, operation: str, record: str) -> str | None:
        """The record to undo: the step's result, or for a step that failed in
        doubt whatever its idempotency key made (``None``: nothing)."""
        if record is NOT_COMPLETED:
            return self.services.find(operation, ctx.step_key)
        return record

    @step(in_doubt=ServiceTimeout)
    def create_order(self, ctx: StepContext) -> str:
        req: OrderRequest = ctx.input
        return self.services.call(
            "orders.create", ctx.idempotency_key, customer=req.customer_id, total=req.total
        )

    @create_order.compensate
    def cancel_order(self, ctx: StepContext, order_id: str) -> None:
        if (order := self._made(ctx, "orders.create", order_id)) is not None:
            self.services.call("orders.cancel", ctx.idempotency_key, order_id=order)

    @step(retry=Retry(max_attempts=3, initial_delay=0.01), in_doubt=ServiceTimeout)
    def charge_payment(self, ctx: StepContext) -> str:
        return self.services.call("payments.charge", ctx.idempotency_key, amount=ctx.input.total)

    @charge_payment.compensate
    def refund_payment(self, ctx: StepContext, payment_id: str) -> None:
        if (payment := self._made(ctx, "payments.charge", payment_id)) is not None:
            self.services.call("payments.refund", ctx.idempotency_key, payment_id=payment)

    @step(in_doubt=ServiceTimeout)
    def reserve_inventory(self, ctx: StepContext) -> str:
        req: OrderRequest = ctx.input
        return self.services.call(
            "inventory.reserve", ctx.idempotency_key, sku=req.sku, quantity=req.quantity
        )

    @reserve_inventory.compensate
    def release_reservation(self, ctx: StepContext, reservation_id: str) -> None:
        if (reservation := self._made(ctx, "inventory.reserve", reservation_id)) is not None:
            self.services.call("inventory.release", ctx.idempotency_key, reservation=reservation)

    @step
    def confirm_order(self, ctx: StepContext) -> None:
        self.services.call(
            "orders.confirm", ctx.idempotency_key, order_id=ctx.results["create_order"]
        )
