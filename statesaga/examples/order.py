"""The seed's order saga: create order, charge payment, reserve inventory, confirm.

On a failure the completed steps are compensated in reverse order: the
reservation is released, the payment refunded, the order cancelled. Confirming
is the last step and has no compensation.
"""

from __future__ import annotations

import attrs

from statesaga import Retry, Saga, StepContext, step
from statesaga.examples.services import FakeServices

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

    @step
    def create_order(self, ctx: StepContext) -> str:
        req: OrderRequest = ctx.input
        return self.services.call(
            "orders.create", ctx.idempotency_key, customer=req.customer_id, total=req.total
        )

    @create_order.compensate
    def cancel_order(self, ctx: StepContext, order_id: str) -> None:
        self.services.call("orders.cancel", ctx.idempotency_key, order_id=order_id)

    @step(retry=Retry(max_attempts=3, initial_delay=0.01))
    def charge_payment(self, ctx: StepContext) -> str:
        return self.services.call("payments.charge", ctx.idempotency_key, amount=ctx.input.total)

    @charge_payment.compensate
    def refund_payment(self, ctx: StepContext, payment_id: str) -> None:
        self.services.call("payments.refund", ctx.idempotency_key, payment_id=payment_id)

    @step
    def reserve_inventory(self, ctx: StepContext) -> str:
        req: OrderRequest = ctx.input
        return self.services.call(
            "inventory.reserve", ctx.idempotency_key, sku=req.sku, quantity=req.quantity
        )

    @reserve_inventory.compensate
    def release_reservation(self, ctx: StepContext, reservation_id: str) -> None:
        self.services.call("inventory.release", ctx.idempotency_key, reservation=reservation_id)

    @step
    def confirm_order(self, ctx: StepContext) -> None:
        self.services.call(
            "orders.confirm", ctx.idempotency_key, order_id=ctx.results["create_order"]
        )
