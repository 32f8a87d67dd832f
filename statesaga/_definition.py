"""Saga definitions: the ``Saga`` base class and the ``step`` decorator.

A saga class is compiled into a frozen ``SagaSpec`` the moment it is created; a
malformed class raises ``InvalidDefinition`` at import time, naming the problem.
"""

from __future__ import annotations

import inspect
import keyword
from collections.abc import Callable
from typing import Any, ClassVar, overload

from statesaga._errors import InvalidDefinition
from statesaga._fingerprint import fingerprint, return_type
from statesaga._machine import SagaMachine
from statesaga._spec import (
    NO_RETRY,
    TERMINALS,
    TRIGGERS,
    CompensationSpec,
    Handler,
    Retry,
    SagaSpec,
    StepSpec,
    WaitSpec,
)

#: Names a step or compensation may not take: the terminal states, the machine's
#: triggers, and the attributes every saga class carries.
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
        self,
        fn: Handler,
        retry: Retry | None,
        transactional: bool,
        timeout: float | None,
        in_doubt: Any = (),
        compensate_failed: bool = False,
    ) -> None:
        self.fn = fn
        self.retry = retry
        self.transactional = transactional
        self.timeout = timeout
        self.in_doubt = in_doubt
        self.compensate_failed = compensate_failed
        self.wait: WaitSpec | None = None
        self.compensations: list[_CompensationDecl] = []
        self.owner: type | None = None

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
    *,
    retry: Retry | None = None,
    transactional: bool = False,
    timeout: float | None = None,
    in_doubt: type[BaseException] | tuple[type[BaseException], ...] = (),
    compensate_failed: bool = False,
) -> Callable[[Handler], _StepDecl]: ...


def step(
    fn: Handler | None = None,
    /,
    *,
    retry: Retry | None = None,
    transactional: bool = False,
    timeout: float | None = None,
    in_doubt: type[BaseException] | tuple[type[BaseException], ...] = (),
    compensate_failed: bool = False,
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
            can and cannot stop). A timeout is a failure *in doubt*.
        in_doubt: exception types after which the handler may have acted (the
            request went out, no answer came: ``httpx.ReadTimeout``,
            ``ConnectionError``). A step that fails for good in doubt — so
            listed, timed out, or by ``raise InDoubt(...)`` — has its own
            compensation run first, handed ``NOT_COMPLETED``; it needs one.
        compensate_failed: every failure of the step is in doubt.
    """

    def wrap(f: Handler) -> _StepDecl:
        return _StepDecl(f, retry, transactional, timeout, in_doubt, compensate_failed)

    return wrap if fn is None else wrap(fn)


def wait(
    event: str,
    *,
    timeout: float | None = None,
    key: Callable[[Any], object] | None = None,
    retry: Retry | None = None,
) -> Callable[[Handler], _StepDecl]:
    """Declare a wait step: the saga stops here, holding no thread, until the event
    ``event`` is signalled — ``(self, ctx, signal) -> result``, where ``signal``
    is the ``Signal`` (its ``payload``) and what it returns is the step's result::

        @wait("payment.confirmed", timeout=3600, key=lambda ctx: ctx.results["charge"])
        def payment_confirmed(self, ctx, signal) -> str:
            return signal.payload["payment_id"]

    It is a step like any other: it may have a compensation, it runs in order,
    and its handler may fail (and be retried by ``retry``; the event is then
    handed to the next attempt).

    Args:
        event: the event's name.
        timeout: seconds from reaching the wait until it gives up: a definite
            failure (logged ``timed_out``) that compensates; ``None``: no limit.
        key: how the correlation key is computed from the context (the input and
            earlier results), so that ``engine.signal_key(event, key, ...)`` finds
            the saga; without one it is signalled by saga id.
        retry: the handler's retry policy.
    """

    def wrap(f: Handler) -> _StepDecl:
        decl = _StepDecl(f, retry, True, None)
        decl.wait = WaitSpec(event, timeout, key)  # checked when the class is compiled
        return decl

    return wrap


def _line(fn: Handler) -> int:
    code = getattr(fn, "__code__", None)
    return code.co_firstlineno if code is not None else 0


class _ClassBody(dict[str, Any]):
    """A saga class body's namespace: a step or compensation name used twice is an
    error, not a silent replacement (``enum`` does the same for member names)."""

    def __init__(self, cls_name: str) -> None:
        super().__init__()
        self.cls_name = cls_name

    def __setitem__(self, key: str, value: Any) -> None:
        old = self.get(key)
        if isinstance(old, _StepDecl | _CompensationDecl) and old is not value:
            what = "step" if isinstance(old, _StepDecl) else "compensation"
            new = getattr(value, "fn", value)
            raise InvalidDefinition(
                self.cls_name,
                f"{key!r} is declared twice in the class body (the {what} at line "
                f"{_line(old.fn)}, then again at line {_line(new)}); the second would "
                "silently replace the first: give each step and compensation its own name",
            )
        super().__setitem__(key, value)


class _SagaMeta(type):
    """Checks the class body for reused names while it is being executed."""

    @classmethod
    def __prepare__(mcs, name: str, bases: tuple[type, ...], /, **kwargs: Any) -> _ClassBody:
        return _ClassBody(name)


class Saga(metaclass=_SagaMeta):
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
    machine: ClassVar[SagaMachine]

    def __init_subclass__(cls, abstract: bool = False, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if abstract:
            return
        if "name" not in cls.__dict__:
            cls.name = cls.__name__
        cls.spec = compile_spec(cls)
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
        if d.wait is not None:
            _check_wait(label, attr, d.wait)
            _check_signature(label, f"wait step {attr!r}", handler, ("self", "ctx", "signal"))
        else:
            _check_signature(label, f"step {attr!r}", handler, ("self", "ctx"))
        if d.timeout is not None and d.timeout <= 0:
            raise InvalidDefinition(label, f"step {attr!r}: timeout must be > 0 seconds")
        in_doubt = _in_doubt_types(label, attr, d.in_doubt)
        if (in_doubt or d.compensate_failed) and attr not in comp_of:
            option = "compensate_failed=True" if d.compensate_failed else "in_doubt=..."
            raise InvalidDefinition(
                label,
                f"step {attr!r} has {option} but no compensation: a failure in doubt "
                "would leave its effect in place; add a compensation (it is handed "
                "NOT_COMPLETED when the step did not complete)",
            )
        comp = None
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
                result_type=return_type(handler),
                compensation=comp,
                is_async=inspect.iscoroutinefunction(handler),
                in_doubt=in_doubt,
                compensate_failed=bool(d.compensate_failed),
                wait=d.wait,
            )
        )
    structure = fingerprint(name, version, steps)
    return SagaSpec(name, version, input_type, tuple(steps), structure, deadline)


def _check_wait(label: str, step: str, spec: WaitSpec) -> None:
    event, timeout, key = spec.event, spec.timeout, spec.key
    if not isinstance(event, str) or not event or len(event) > 200 or not event.isprintable():
        raise InvalidDefinition(
            label,
            f"wait step {step!r}: the event name must be printable text of 1 to 200 "
            f"characters, got {event!r}",
        )
    if timeout is not None and (not isinstance(timeout, int | float) or timeout <= 0):
        raise InvalidDefinition(
            label, f"wait step {step!r}: timeout must be > 0 seconds or None, got {timeout!r}"
        )
    if key is not None and not callable(key):
        raise InvalidDefinition(
            label, f"wait step {step!r}: key must be a function of the context, got {key!r}"
        )


def _in_doubt_types(label: str, step: str, value: Any) -> tuple[type[BaseException], ...]:
    types = tuple(value) if isinstance(value, list | tuple) else (value,)
    for t in types:
        if not (isinstance(t, type) and issubclass(t, BaseException)):
            raise InvalidDefinition(
                label, f"step {step!r}: in_doubt takes exception classes, got {t!r}"
            )
    return types
