"""The frozen form of a saga definition: specs, retry policies, the machine's vocabulary.

Every other module reads a definition through these classes: the definition
module compiles a saga class into a ``SagaSpec``, the machine module builds its
state machine from it, the runner drives it, the diagrams draw it. Keeping them
here, free of behaviour, is what lets those modules import in one direction.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import attrs

from statesaga._status import SagaStatus

Handler = Callable[..., Any]

#: The terminal states of every saga machine (``compensation_failed`` and
#: ``resolved`` only where some compensation exists to fail).
TERMINALS = ("completed", "failed", "compensation_failed", "resolved")
#: The triggers an operator fires: stop a running saga going forward (it
#: compensates), close a ``compensation_failed`` saga handled by hand, or take it
#: back into its compensations to try them again.
OPERATOR_TRIGGERS = ("cancel", "resolve", "retry_compensations")
#: The machine's triggers: an attempt succeeded, failed and is retried, failed for
#: good, or (a step with a compensation) failed for good after it may have acted;
#: a wait step's event did not come in time.
TRIGGERS = ("succeed", "retry", "fail", "fail_in_doubt", "expire", *OPERATOR_TRIGGERS)

#: What an FSM state is: a step, a compensation, or a terminal.
StateKind = Literal["step", "compensation", "terminal"]
#: What an FSM transition means in the saga.
TransitionKind = Literal[
    "forward",
    "complete",
    "retry",
    "fail",
    "in_doubt",
    "timeout",
    "compensate",
    "compensation_failed",
    "finish",
    "cancel",
    "resolve",
    "redo",
]


class _NotCompleted:
    """What a compensation is handed when its step did not complete (it failed
    in doubt): ``NOT_COMPLETED``, falsy; compare with ``is``."""

    def __repr__(self) -> str:
        return "NOT_COMPLETED"

    def __bool__(self) -> bool:
        return False


#: What a compensation is handed instead of a result when its step did not
#: complete: the step failed in doubt (a timeout, an error it lists as in doubt,
#: ``InDoubt``), so its effect may or may not exist. The compensation must undo
#: whatever exists and tolerate that nothing does (look it up by
#: ``ctx.idempotency_key``'s step key, which the step's attempts used too).
NOT_COMPLETED: Any = _NotCompleted()


def status_of(kind: StateKind, state: str) -> SagaStatus:
    """The saga status of a saga in ``state`` (a state of kind ``kind``)."""
    if kind == "terminal":
        return SagaStatus(state)
    return SagaStatus.COMPENSATING if kind == "compensation" else SagaStatus.STARTED


def _positive(_inst: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if value <= 0:
        raise ValueError(f"Retry.{attribute.name} must be > 0, got {value!r}")


def _not_negative(_inst: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if value < 0:
        raise ValueError(f"Retry.{attribute.name} must be >= 0, got {value!r}")


def _exception_types(value: Any) -> tuple[type[BaseException], ...]:
    types = tuple(value) if isinstance(value, list | tuple) else (value,)
    for t in types:
        if not (isinstance(t, type) and issubclass(t, BaseException)):
            raise TypeError(f"Retry.retry_on takes exception classes, got {t!r}")
    return types


@attrs.frozen
class Retry:
    """How often a step or compensation is tried, and how long to wait in between.

    Attempt ``n`` (from 1) that fails with one of ``retry_on`` is followed by
    attempt ``n + 1`` after ``min(initial_delay * multiplier ** (n - 1), max_delay)``
    seconds, until ``max_attempts`` attempts were made.

    Attributes:
        max_attempts: attempts in all, the first included (1 = no retry).
        initial_delay: seconds before the second attempt.
        multiplier: growth factor of the delay between attempts.
        max_delay: upper bound of any one delay, in seconds.
        retry_on: exception types worth retrying; any other fails at once.
    """

    max_attempts: int = attrs.field(default=3, validator=_positive)
    initial_delay: float = attrs.field(default=0.0, validator=_not_negative)
    multiplier: float = attrs.field(default=2.0, validator=_positive)
    max_delay: float = attrs.field(default=60.0, validator=_not_negative)
    retry_on: tuple[type[BaseException], ...] = attrs.field(
        default=(Exception,), converter=_exception_types
    )

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt ``attempt`` (counted from 1)."""
        return float(min(self.initial_delay * self.multiplier ** (attempt - 1), self.max_delay))

    def should_retry(self, error: BaseException, attempt: int) -> bool:
        """Whether failed attempt ``attempt`` with ``error`` is followed by another."""
        return attempt < self.max_attempts and isinstance(error, self.retry_on)


#: The policy of a step or compensation that declares none: one attempt.
NO_RETRY = Retry(max_attempts=1)


def _handler_repr(fn: Handler) -> str:
    return getattr(fn, "__qualname__", repr(fn))


def _handler_repr_or_none(fn: Handler | None) -> str:
    return "None" if fn is None else _handler_repr(fn)


@attrs.frozen
class CompensationSpec:
    """A compensation as compiled: its name (also its FSM state) and handler.

    Attributes:
        name: the compensation's name, also its FSM state.
        step: the step it undoes.
        handler: the function ``(self, ctx, result) -> None``.
        retry: its retry policy.
        transactional: whether it runs inside the transaction that records it.
        is_async: whether the handler is ``async def``.
    """

    name: str
    step: str
    handler: Handler = attrs.field(repr=_handler_repr)
    retry: Retry
    transactional: bool = False
    is_async: bool = False


@attrs.frozen
class WaitSpec:
    """What a wait step waits for.

    Attributes:
        event: the event's name (``payment.confirmed``).
        timeout: seconds from when the saga reaches the wait until it gives up
            (a definite failure: it compensates), or ``None`` to wait for good.
        key: how the correlation key is computed from the step's context (the
            input and earlier results), for ``engine.signal_key``; ``None``: the
            wait is signalled by saga id only.
    """

    event: str
    timeout: float | None = None
    key: Callable[[Any], object] | None = attrs.field(default=None, repr=_handler_repr_or_none)


@attrs.frozen
class StepSpec:
    """A step as compiled.

    Attributes:
        name: the step's name, also its FSM state.
        index: its position, from 0.
        handler: the function ``(self, ctx) -> result``.
        retry: its retry policy.
        transactional: whether it runs inside the transaction that records its completion.
        timeout: seconds one attempt may take, or ``None``.
        result_type: the handler's return annotation, used to rebuild stored results.
        compensation: its compensation, or ``None``.
        is_async: whether the handler is ``async def``.
        in_doubt: exception types whose failure leaves the step in doubt (its
            handler may have acted), besides timeouts and ``InDoubt``.
        compensate_failed: every failure of the step is in doubt.
        wait: for a wait step, what it waits for; its handler is
            ``(self, ctx, signal) -> result``.
    """

    name: str
    index: int
    handler: Handler = attrs.field(repr=_handler_repr)
    retry: Retry
    transactional: bool
    timeout: float | None
    result_type: Any
    compensation: CompensationSpec | None
    is_async: bool = False
    in_doubt: tuple[type[BaseException], ...] = ()
    compensate_failed: bool = False
    wait: WaitSpec | None = None


@attrs.frozen
class SagaSpec:
    """The frozen, validated form of a saga class.

    Attributes:
        name: the stable type name stored with each saga.
        version: the definition's version.
        input_type: the type inputs must have, or ``None`` for any JSON value.
        steps: the steps in execution order.
        fingerprint: a hash of the structure (steps, compensations, flags, and
            the handlers' annotated result types) that resume checks so a saga
            never continues on a different flow.
        deadline: seconds from the saga's start after which no further step
            starts (the saga compensates instead), or ``None``.
    """

    name: str
    version: int
    input_type: type | None
    steps: tuple[StepSpec, ...] = attrs.field(repr=lambda steps: f"<{len(steps)} steps>")
    fingerprint: str
    deadline: float | None = None
    _by_name: dict[str, StepSpec] = attrs.field(
        init=False, repr=False, eq=False, hash=False, alias="_by_name"
    )

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {s.name: s for s in self.steps})

    def step(self, name: str) -> StepSpec:
        """The step called ``name``; ``KeyError`` if there is none."""
        return self._by_name[name]

    @property
    def key(self) -> str:
        """``name@vversion``, as shown in messages and listings."""
        return f"{self.name}@v{self.version}"
