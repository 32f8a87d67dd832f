"""The definitions an engine knows: registered sagas, by name and version.

Registration is explicit and final: a name and version is registered once, as
a class or as an instance, and nothing replaces it behind the user's back —
not registering the class after an instance (whose clients the handlers use),
not running another instance, not running a class never registered. Each is
an error that says what is registered and what to do.

A saga row names the definition it started on (name, version, fingerprint);
the registry answers which registered definition drives it, and why none can.
"""

from __future__ import annotations

from typing import Any

import attrs

from statesaga._definition import Saga
from statesaga._errors import DefinitionConflict, InvalidDefinition, NotRegistered, ResumeError
from statesaga._journal import Journal
from statesaga._machine import SagaMachine
from statesaga._spec import SagaSpec
from statesaga.store import SagaRow

#: What a saga row names its definition by: name, version, fingerprint.
DefinitionKey = tuple[str, int, str]


@attrs.frozen
class Definition:
    """A registered saga definition: what a runner needs to drive its sagas.

    Attributes:
        spec: the frozen definition.
        machine: its state machine.
        saga: the instance whose methods are the handlers.
        journal: its log protocol.
        source: what was registered: the class (``saga`` was built from it
            without arguments) or the instance (``saga`` itself).
    """

    spec: SagaSpec
    machine: SagaMachine
    saga: Any
    journal: Journal
    source: Any

    @classmethod
    def of(cls, given: type[Saga] | Saga) -> Definition:
        """The definition of a saga class (built without arguments) or instance."""
        saga_class = saga_class_of(given, "register")
        saga = given() if isinstance(given, type) else given
        spec: SagaSpec = saga_class.spec
        machine: SagaMachine = saga_class.machine
        return cls(spec, machine, saga, Journal(spec, machine), given)

    @property
    def key(self) -> DefinitionKey:
        """What a saga row names it by: name, version, fingerprint."""
        return (self.spec.name, self.spec.version, self.spec.fingerprint)


def saga_class_of(given: object, action: str) -> type[Saga]:
    """The saga class of ``given``, a concrete saga class or an instance of one.

    Raises:
        InvalidDefinition: ``given`` is neither (a ``TypeError``), or its class is
            abstract; says what to pass to ``action`` instead.
    """
    cls = given if isinstance(given, type) else type(given)
    if not issubclass(cls, Saga):
        what = f"the class {cls.__qualname__}" if given is cls else f"{given!r}"
        raise InvalidDefinition(
            cls.__qualname__,
            f"{action}() was given {what}, which is not a saga: pass a subclass of "
            "statesaga.Saga with @step methods, or an instance of one",
        )
    if getattr(cls, "spec", None) is None:
        raise InvalidDefinition(
            cls.__qualname__,
            f"{action}() was given an abstract saga class (declared abstract=True, no "
            "steps of its own): pass a concrete subclass with @step methods",
        )
    return cls


def _described(given: type[Saga] | Saga) -> str:
    """How a conflict message names what was (or would be) registered."""
    cls = given if isinstance(given, type) else type(given)
    name = f"{cls.__module__}.{cls.__qualname__}"
    return f"the class {name}" if given is cls else f"an instance of {name} (at {id(given):#x})"


class Registry:
    """Saga definitions by name and version; several versions live side by side.

    A name and version is registered once, as a class or as an instance, and
    never replaced: registering the very same object again is a no-op, anything
    else under that name and version is a ``DefinitionConflict``.
    """

    def __init__(self) -> None:
        self._definitions: dict[tuple[str, int], Definition] = {}

    def __repr__(self) -> str:
        return ", ".join(self.names()) or "none"

    def names(self) -> list[str]:
        """``name@vN`` of each registered definition, sorted."""
        return sorted(d.spec.key for d in self._definitions.values())

    def definitions(self) -> list[Definition]:
        """The registered definitions."""
        return list(self._definitions.values())

    def keys(self) -> list[DefinitionKey]:
        """What the rows of the registered definitions' sagas say."""
        return [d.key for d in self._definitions.values()]

    def add(self, given: type[Saga] | Saga) -> Definition:
        """Register a saga class (instantiated without arguments) or instance.

        Raises:
            InvalidDefinition: ``given`` is not a concrete saga class or instance.
            DefinitionConflict: something else is registered under the same name
                and version: another structure, another class, or (with the same
                class) another instance, or the class where an instance is.
        """
        spec = saga_class_of(given, "register").spec
        known = self._definitions.get((spec.name, spec.version))
        if known is not None:
            if known.source is given:
                return known
            raise self._conflict(known, given)
        defn = Definition.of(given)
        self._definitions[(spec.name, spec.version)] = defn
        return defn

    def spec(self, name: str, version: int | None = None) -> SagaSpec:
        """The definition ``name`` (its newest version, or ``version``).

        Raises:
            NotRegistered: none is registered under that name (and version).
        """
        versions = sorted(v for (n, v) in self._definitions if n == name)
        wanted = versions[-1] if version is None and versions else version
        defn = self._definitions.get((name, wanted or 0))
        if defn is None:
            raise NotRegistered(name, version, self.names())
        return defn.spec

    def for_saga(self, given: type[Saga] | Saga, action: str = "run") -> Definition:
        """The registered definition to start ``given`` with; nothing is registered.

        ``given`` may be what was registered (the class, or the instance), or the
        class of a registered instance: that instance's handlers run, never a
        default-built one.

        Raises:
            InvalidDefinition: ``given`` is not a concrete saga class or instance.
            NotRegistered: its name and version are not registered.
            DefinitionConflict: something else is registered under them (another
                structure, another class, another instance of the class).
        """
        cls = saga_class_of(given, action)
        spec = cls.spec
        defn = self._definitions.get((spec.name, spec.version))
        if defn is None:
            raise NotRegistered(spec.name, spec.version, self.names(), saga_class=cls)
        source = defn.source
        if source is given or (given is cls and type(source) is cls):
            return defn
        raise self._conflict(defn, given, running=True)

    @staticmethod
    def _conflict(
        known: Definition, given: type[Saga] | Saga, *, running: bool = False
    ) -> DefinitionConflict:
        """Why ``given`` cannot be registered (or run) where ``known`` is."""
        key = known.spec.key
        cls = given if isinstance(given, type) else type(given)
        if cls.spec.fingerprint != known.spec.fingerprint:
            return DefinitionConflict.changed(key, known.spec.fingerprint, cls.spec.fingerprint)
        source = known.source
        name = cls.__name__
        if running:
            # Nothing is registered by running: say what would run instead.
            doing = f"run was given {_described(given)}"
            if type(source) is cls:
                problem = f"{doing}, not the registered one (its handlers use other clients)"
                fix = f"pass the registered instance, or the class {name}, which runs on it"
            elif source is cls:
                problem = f"{doing}, not the instance registered with the class"
                fix = f"pass the class {name}, or register your instance instead of the class"
            else:
                problem = f"{doing}, another class with the same name and version"
                fix = "give one of them another name or version"
        else:
            doing = f"registering {_described(given)}"
            if type(source) is cls:
                problem = f"{doing} would replace it and the clients it was built with"
                if given is cls:
                    problem += " by an instance built without arguments"
                fix = (
                    "register one object per name and version (run(...) with the class "
                    "uses the registered instance), or give the other one another version"
                )
            elif source is cls:
                problem = f"{doing} would replace the instance built from it without arguments"
                fix = "register the instance instead of the class, once"
            else:
                problem = f"{doing}, another class with the same name and version, would replace it"
                fix = "give one of them another name or version"
        return DefinitionConflict(
            key, f"{key} is already registered as {_described(source)}; {problem}; {fix}"
        )

    def matching(self, row: SagaRow) -> Definition | None:
        """The registered definition a saga row started on, if it is registered."""
        defn = self._definitions.get((row.name, row.version))
        if defn is None or defn.spec.fingerprint != row.fingerprint:
            return None
        return defn

    def of_row(self, row: SagaRow) -> Definition:
        """The definition that drives the saga of ``row``.

        Raises:
            ResumeError: its name and version are not registered, or the
                registered one has another fingerprint; says what to register.
        """
        defn = self._definitions.get((row.name, row.version))
        if defn is None:
            others = sorted(v for (n, v) in self._definitions if n == row.name)
            have = ", ".join(f"v{v}" for v in others) or "none"
            raise ResumeError(
                row.saga_id,
                f"it needs {row.name} v{row.version} (fingerprint {row.fingerprint}), "
                f"which is not registered (registered versions of {row.name}: {have}); "
                f"register that version beside the others",
            )
        if defn.spec.fingerprint != row.fingerprint:
            raise ResumeError(
                row.saga_id,
                f"it started on {row.name} v{row.version} with fingerprint {row.fingerprint}, "
                f"but the registered v{row.version} has fingerprint {defn.spec.fingerprint} "
                "(its steps changed without a version bump); register the definition it "
                "started on",
            )
        return defn
