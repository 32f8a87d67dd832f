"""Saga definitions: the ``Saga`` base class, the ``step`` decorator and retry policies.

A saga class is compiled into a frozen ``SagaSpec`` the moment it is created; a
malformed class raises ``InvalidDefinition`` at import time, naming the problem.
"""

from __future__ import annotations

import hashlib
import inspect
import keyword
import typing
from collections.abc import Callable
from typing import Any, ClassVar, overload

import attrs

from statesaga._errors import InvalidDefinition

Handler = Callable[..., Any]

#: Names a step or compensation may not take: the terminal states, the machine's
#: triggers, and the attributes every saga class carries.
TERMINALS = ("completed", "failed", "compensation_failed")
TRIGGERS = ("succeed", "retry", "fail")
RESERVED_NAMES = frozenset(
    {
        *TERMINALS,
        *TRIGGERS,
        "state",
        "trigger",
        "spec",
        "machine",
        "name",
        "version",
        "input_type",
        "deadline",
    }
)


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


@attrs.frozen
class CompensationSpec:
    """A compensation as compiled: its name (also its FSM state) and handler."""

    name: str
    step: str
    handler: Handler
    retry: Retry
    transactional: bool = False
    is_async: bool = False


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
    """

    name: str
    index: int
    handler: Handler
    retry: Retry
    transactional: bool
    timeout: float | None
    result_type: Any
    compensation: CompensationSpec | None
    is_async: bool = False


@attrs.frozen
class SagaSpec:
    """The frozen, validated form of a saga class.

    Attributes:
        name: the stable type name stored with each saga.
        version: the definition's version.
        input_type: the type inputs must have, or ``None`` for any JSON value.
        steps: the steps in execution order.
        fingerprint: a hash of the structure (steps, compensations, flags) that
            resume checks so a saga never continues on a different flow.
        deadline: seconds from the saga's start after which no further step
            starts (the saga compensates instead), or ``None``.
    """

    name: str
    version: int
    input_type: type | None
    steps: tuple[StepSpec, ...]
    fingerprint: str
    deadline: float | None = None

    def step(self, name: str) -> StepSpec:
        """The step called ``name``; ``KeyError`` if there is none."""
        for s in self.steps:
            if s.name == name:
                return s
        raise KeyError(name)

    @property
    def key(self) -> str:
        """``name@vversion``, as shown in messages and listings."""
        return f"{self.name}@v{self.version}"


#: Steps declared but not yet compiled, to catch a name declared twice in one
#: class body (the second definition silently replaces the first in the namespace).
#: Strong references: the replaced declaration must survive until the class is made.
_pending: list[_StepDecl] = []


class _CompensationDecl:
    """What ``@some_step.compensate`` leaves in the class body."""

    def __init__(
        self, step: _StepDecl, fn: Handler, retry: Retry | None, transactional: bool
    ) -> None:
        self.step = step
        self.fn = fn
        self.retry = retry
        self.transactional = transactional

    def __get__(self, obj: object, owner: type | None = None) -> Any:
        return self if obj is None else self.fn.__get__(obj, owner)


class _StepDecl:
    """What ``@step`` leaves in the class body until the class compiles it."""

    def __init__(
        self, fn: Handler, retry: Retry | None, transactional: bool, timeout: float | None
    ) -> None:
        self.fn = fn
        self.retry = retry
        self.transactional = transactional
        self.timeout = timeout
        self.compensations: list[_CompensationDecl] = []
        self.owner: type | None = None
        _pending.append(self)

    def __set_name__(self, owner: type, name: str) -> None:
        self.owner = owner

    def __get__(self, obj: object, owner: type | None = None) -> Any:
        return self if obj is None else self.fn.__get__(obj, owner)

    @overload
    def compensate(self, fn: Handler, /) -> _CompensationDecl: ...
    @overload
    def compensate(
        self, fn: None = None, /, *, retry: Retry | None = None, transactional: bool = False
    ) -> Callable[[Handler], _CompensationDecl]: ...

    def compensate(
        self,
        fn: Handler | None = None,
        /,
        *,
        retry: Retry | None = None,
        transactional: bool = False,
    ) -> _CompensationDecl | Callable[[Handler], _CompensationDecl]:
        """Declare the compensation of this step: ``(self, ctx, result) -> None``.

        Use as ``@my_step.compensate`` or with options,
        ``@my_step.compensate(retry=Retry(...), transactional=True)``; a
        transactional compensation gets ``ctx.connection`` like a transactional step.
        """

        def wrap(f: Handler) -> _CompensationDecl:
            if self.owner is not None:
                raise InvalidDefinition(
                    self.owner.__qualname__,
                    f"compensation {f.__name__!r} is declared for step {self.fn.__name__!r} "
                    f"outside the class body of {self.owner.__qualname__}; declare a "
                    "compensation beside its step, or in a subclass override the "
                    "compensation method by name",
                )
            decl = _CompensationDecl(self, f, retry, transactional)
            self.compensations.append(decl)
            return decl

        return wrap if fn is None else wrap(fn)


@overload
def step(fn: Handler, /) -> _StepDecl: ...
@overload
def step(
    *, retry: Retry | None = None, transactional: bool = False, timeout: float | None = None
) -> Callable[[Handler], _StepDecl]: ...


def step(
    fn: Handler | None = None,
    /,
    *,
    retry: Retry | None = None,
    transactional: bool = False,
    timeout: float | None = None,
) -> _StepDecl | Callable[[Handler], _StepDecl]:
    """Declare a saga step: a method ``(self, ctx) -> result``.

    Steps run in the order they are declared. Use as ``@step`` or with options::

        @step(retry=Retry(max_attempts=5, initial_delay=0.2))
        def charge_payment(self, ctx) -> str: ...

    Args:
        fn: the handler (when used without parentheses).
        retry: the step's retry policy; one attempt if omitted.
        transactional: run inside the transaction that records the step's
            completion, with ``ctx.connection`` for writes that must commit with it.
        timeout: seconds one attempt may take (see the README on what a timeout
            can and cannot stop).
    """

    def wrap(f: Handler) -> _StepDecl:
        return _StepDecl(f, retry, transactional, timeout)

    return wrap if fn is None else wrap(fn)


class Saga:
    """Base class of saga definitions.

    Subclasses declare steps with ``@step`` (in execution order), compensations
    with ``@the_step.compensate``, and may set ``name``, ``version``,
    ``input_type`` and ``deadline`` (seconds). The class is validated and
    compiled when it is created: ``spec`` holds the frozen ``SagaSpec`` and
    ``machine`` the state machine.

    An intermediate base class without steps is declared with
    ``class Base(Saga, abstract=True)``.
    """

    name: ClassVar[str]
    version: ClassVar[int] = 1
    input_type: ClassVar[type | None] = None
    deadline: ClassVar[float | None] = None
    spec: ClassVar[SagaSpec]
    machine: ClassVar[Any]

    def __init_subclass__(cls, abstract: bool = False, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if abstract:
            return
        if "name" not in cls.__dict__:
            cls.name = cls.__name__
        cls.spec = compile_spec(cls)
        # Imported here: the machine module imports this one.
        from statesaga._machine import SagaMachine

        cls.machine = SagaMachine(cls.spec)


def _check_signature(saga: str, what: str, fn: Handler, params: tuple[str, ...]) -> None:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError) as exc:  # pragma: no cover - builtins only
        raise InvalidDefinition(saga, f"{what} has no inspectable signature: {exc}") from exc
    positional = [
        p
        for p in sig.parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]
    extra = [
        p.name for p in sig.parameters.values() if p.kind is p.KEYWORD_ONLY and p.default is p.empty
    ]
    variadic = any(p.kind is p.VAR_POSITIONAL for p in sig.parameters.values())
    if (len(positional) != len(params) and not variadic) or extra:
        wanted = ", ".join(params)
        raise InvalidDefinition(
            saga, f"{what} must take ({wanted}), but its signature is {fn.__name__}{sig}"
        )


def _check_name(saga: str, what: str, name: str) -> None:
    if name in RESERVED_NAMES:
        raise InvalidDefinition(
            saga,
            f"{what} {name!r} clashes with a name the state machine reserves "
            f"({', '.join(sorted(RESERVED_NAMES))}); rename it",
        )
    if name.startswith("_") or not name.isidentifier() or keyword.iskeyword(name):
        raise InvalidDefinition(saga, f"{what} {name!r} must be a public identifier")


def _return_type(fn: Handler) -> Any:
    try:
        hints = typing.get_type_hints(fn)
    except Exception:
        # Unresolvable forward references: fall back to the raw annotation.
        hints = getattr(fn, "__annotations__", {})
    ret = hints.get("return")
    return None if ret in (None, type(None), Any) else ret


def compile_spec(cls: type) -> SagaSpec:
    """Validate a saga class and compile it into a ``SagaSpec``.

    Raises:
        InvalidDefinition: naming the first problem found.
    """
    label = cls.__qualname__
    name = getattr(cls, "name", label)
    version = getattr(cls, "version", 1)
    input_type = getattr(cls, "input_type", None)
    if not isinstance(name, str) or not name:
        raise InvalidDefinition(label, f"name must be a non-empty string, got {name!r}")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise InvalidDefinition(label, f"version must be an integer >= 1, got {version!r}")
    if input_type is not None and not isinstance(input_type, type):
        raise InvalidDefinition(label, f"input_type must be a class, got {input_type!r}")
    deadline = getattr(cls, "deadline", None)
    if deadline is not None and (not isinstance(deadline, int | float) or deadline <= 0):
        raise InvalidDefinition(
            label, f"deadline must be a number of seconds > 0, got {deadline!r}"
        )

    # Steps are inherited. A subclass may add steps after its base's, or
    # override a step's or compensation's handler with a plain method of the
    # same name (the step keeps its options).
    declared: dict[str, _StepDecl | _CompensationDecl] = {}
    overrides: dict[str, Handler] = {}
    for klass in reversed(cls.__mro__):
        for attr, value in vars(klass).items():
            if isinstance(value, _StepDecl | _CompensationDecl):
                declared[attr] = value
                overrides.pop(attr, None)
            elif attr in declared and inspect.isfunction(value):
                overrides[attr] = value
    decls = [(a, d) for a, d in declared.items() if isinstance(d, _StepDecl)]
    comps = [(a, c) for a, c in declared.items() if isinstance(c, _CompensationDecl)]
    if not decls:
        raise InvalidDefinition(label, "declares no steps; decorate at least one method with @step")

    _check_duplicates(cls, label, {id(d) for _, d in decls})
    step_names = {id(d): attr for attr, d in decls}
    seen: dict[str, str] = {}
    for attr, d in decls:
        _check_name(label, "step", attr)
        if d.fn.__name__ != attr:
            raise InvalidDefinition(
                label,
                f"step {d.fn.__name__!r} is bound to the class attribute {attr!r}; "
                "declare each step once, under its own name",
            )
        seen[attr] = "step"
    comp_of: dict[str, _CompensationDecl] = {}
    for attr, c in comps:
        _check_name(label, "compensation", attr)
        owner = step_names.get(id(c.step))
        if owner is None:
            raise InvalidDefinition(
                label,
                f"compensation {attr!r} compensates step {c.step.fn.__name__!r}, "
                "which is not a step of this saga",
            )
        if attr in seen:
            raise InvalidDefinition(label, f"name {attr!r} is used twice; names must be unique")
        if owner in comp_of:
            raise InvalidDefinition(
                label,
                f"step {owner!r} has two compensations ({comp_of[owner].fn.__name__!r} and "
                f"{attr!r}); keep one",
            )
        seen[attr] = "compensation"
        comp_of[owner] = c
    # A compensation declared on a step of another class, or overwritten.
    for attr, d in decls:
        for c in d.compensations:
            if declared.get(c.fn.__name__) is not c:
                raise InvalidDefinition(
                    label,
                    f"compensation {c.fn.__name__!r} of step {attr!r} is defined twice "
                    "or under another name; define it once",
                )

    steps = []
    for index, (attr, d) in enumerate(decls):
        handler = overrides.get(attr, d.fn)
        _check_signature(label, f"step {attr!r}", handler, ("self", "ctx"))
        if d.timeout is not None and d.timeout <= 0:
            raise InvalidDefinition(label, f"step {attr!r}: timeout must be > 0 seconds")
        comp = None
        if attr in comp_of and index == len(decls) - 1:
            raise InvalidDefinition(
                label,
                f"step {attr!r} is the last step, so its compensation "
                f"{comp_of[attr].fn.__name__!r} could never run (only steps completed before "
                "a failing one are compensated); remove it or add a step after it",
            )
        if attr in comp_of:
            c = comp_of[attr]
            cname = c.fn.__name__
            undo = overrides.get(cname, c.fn)
            _check_signature(label, f"compensation {cname!r}", undo, ("self", "ctx", "result"))
            comp = CompensationSpec(
                cname,
                attr,
                undo,
                c.retry or NO_RETRY,
                c.transactional,
                inspect.iscoroutinefunction(undo),
            )
        steps.append(
            StepSpec(
                name=attr,
                index=index,
                handler=handler,
                retry=d.retry or NO_RETRY,
                transactional=d.transactional,
                timeout=d.timeout,
                result_type=_return_type(handler),
                compensation=comp,
                is_async=inspect.iscoroutinefunction(handler),
            )
        )
    fingerprint = _fingerprint(name, version, steps)
    return SagaSpec(name, version, input_type, tuple(steps), fingerprint, deadline)


def _check_duplicates(cls: type, label: str, kept: set[int]) -> None:
    prefix = f"{cls.__qualname__}."
    mine = [
        d
        for d in _pending
        if d.fn.__module__ == cls.__module__ and d.fn.__qualname__ == prefix + d.fn.__name__
    ]
    _pending[:] = [d for d in _pending if all(d is not m for m in mine)]
    for d in mine:
        if id(d) not in kept:
            raise InvalidDefinition(
                label,
                f"{d.fn.__name__!r} is declared twice in the class body; names of steps "
                "and compensations must be unique",
            )


def _fingerprint(name: str, version: int, steps: list[StepSpec]) -> str:
    parts = [name, str(version)]
    for s in steps:
        comp = "-"
        if s.compensation:
            comp = s.compensation.name + ("/tx" if s.compensation.transactional else "")
        parts.append(f"{s.name}/{comp}/{'tx' if s.transactional else 'local'}")
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]
