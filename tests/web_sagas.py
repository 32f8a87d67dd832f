"""Sagas for the web console's tests (importable by a console process through
``--definitions tests.web_sagas``)."""

from __future__ import annotations

from statesaga import Saga, Signal, StepContext, step, wait
from statesaga.examples.order import OrderSaga

__all__ = ["HOSTILE", "Approval", "Hostile", "OrderSaga"]  # OrderSaga: its diagram, in full

#: Stored text that must reach a page inert: markup, a script, rich text,
#: a terminal escape, a bidirectional override, a zero-width space, a NUL-free
#: carriage return.
HOSTILE = (
    "<script>document.title='pwned'</script><b>bold</b><img src=x onerror=alert(1)>"
    " \x1b[31mred\x1b[0m \u202eevil\u202c zero\u200bwidth cr\rhere"
)


class Hostile(Saga):
    """Fails with hostile text in its error; its input carries some too."""

    name = "hostile"

    @step
    def prepare(self, ctx: StepContext) -> str:
        return HOSTILE

    @prepare.compensate
    def unprepare(self, ctx: StepContext, _result: str) -> None:
        pass

    @step
    def explode(self, ctx: StepContext) -> None:
        raise RuntimeError(HOSTILE)


class Approval(Saga):
    """Reserves, then waits for an approval: it stays ``started`` until signalled."""

    name = "approval"

    @step
    def reserve(self, ctx: StepContext) -> str:
        return f"reservation-{ctx.input}"

    @reserve.compensate
    def release(self, ctx: StepContext, reservation: str) -> None:
        pass

    @wait("approved", timeout=86400)
    def approved(self, ctx: StepContext, signal: Signal) -> str:
        return str(signal.payload)

    @step
    def ship(self, ctx: StepContext) -> None:
        pass
