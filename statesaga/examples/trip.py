"""A trip booking saga: flight, hotel, car, payment, tickets, itinerary.

Six steps; the last two (issuing tickets and mailing the itinerary) happen
after the money is taken and have no compensation. A step's result is an
attrs class, rebuilt from JSON when the saga resumes.
"""

from __future__ import annotations

import attrs

from statesaga import Retry, Saga, StepContext, step
from statesaga.examples.services import FakeServices

__all__ = ["OPERATIONS", "Booking", "TripRequest", "TripSaga"]


@attrs.frozen
class TripRequest:
    """What the traveller asked for."""

    traveller: str
    destination: str
    nights: int
    budget: float


@attrs.frozen
class Booking:
    """A provider's confirmation."""

    provider: str
    reference: str
    price: float


#: The service operation each handler calls (tests plan failures with it).
OPERATIONS = {
    "book_flight": "flights.book",
    "book_hotel": "hotels.book",
    "rent_car": "cars.rent",
    "charge_card": "payments.charge",
    "issue_tickets": "tickets.issue",
    "send_itinerary": "mail.send",
    "cancel_flight": "flights.cancel",
    "cancel_hotel": "hotels.cancel",
    "return_car": "cars.return",
    "refund_card": "payments.refund",
}


class TripSaga(Saga):
    """Book a whole trip, or none of it."""

    name = "trip"
    version = 1
    input_type = TripRequest

    def __init__(self, services: FakeServices | None = None) -> None:
        self.services = services or FakeServices()

    def _book(self, ctx: StepContext, operation: str, price: float) -> Booking:
        ref = self.services.call(operation, ctx.idempotency_key, traveller=ctx.input.traveller)
        return Booking(operation.split(".")[0], ref, price)

    @step(retry=Retry(max_attempts=3, initial_delay=0.01))
    def book_flight(self, ctx: StepContext) -> Booking:
        return self._book(ctx, "flights.book", 320.0)

    @book_flight.compensate
    def cancel_flight(self, ctx: StepContext, booking: Booking) -> None:
        self.services.call("flights.cancel", ctx.idempotency_key, reference=booking.reference)

    @step
    def book_hotel(self, ctx: StepContext) -> Booking:
        return self._book(ctx, "hotels.book", 90.0 * ctx.input.nights)

    @book_hotel.compensate(retry=Retry(max_attempts=3))
    def cancel_hotel(self, ctx: StepContext, booking: Booking) -> None:
        self.services.call("hotels.cancel", ctx.idempotency_key, reference=booking.reference)

    @step
    def rent_car(self, ctx: StepContext) -> Booking:
        return self._book(ctx, "cars.rent", 40.0 * ctx.input.nights)

    @rent_car.compensate
    def return_car(self, ctx: StepContext, booking: Booking) -> None:
        self.services.call("cars.return", ctx.idempotency_key, reference=booking.reference)

    @step
    def charge_card(self, ctx: StepContext) -> str:
        total = sum(b.price for b in ctx.results.values() if isinstance(b, Booking))
        if total > ctx.input.budget:
            raise ValueError(f"trip costs {total:.2f}, over the budget of {ctx.input.budget:.2f}")
        return self.services.call("payments.charge", ctx.idempotency_key, amount=total)

    @charge_card.compensate
    def refund_card(self, ctx: StepContext, payment_id: str) -> None:
        self.services.call("payments.refund", ctx.idempotency_key, payment_id=payment_id)

    @step
    def issue_tickets(self, ctx: StepContext) -> str:
        return self.services.call("tickets.issue", ctx.idempotency_key)

    @step
    def send_itinerary(self, ctx: StepContext) -> None:
        self.services.call("mail.send", ctx.idempotency_key, to=ctx.input.traveller)
