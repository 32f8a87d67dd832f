"""The definitions an engine knows: registered saga classes, by name and version.

A saga row names the definition it started on (name, version, fingerprint);
the registry answers which registered definition drives it, and why none can.
"""

from __future__ import annotations

from typing import Any

import attrs

from statesaga._definition import Saga
from statesaga._errors import DefinitionConflict, NotRegistered, ResumeError
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
    """

    spec: SagaSpec
    machine: SagaMachine
    saga: Any
    journal: Journal

    @classmethod
    def of(cls, saga: Any) -> Definition:
        """The definition of a saga instance."""
        spec: SagaSpec = type(saga).spec
        machine: SagaMachine = type(saga).machine
        return cls(spec, machine, saga, Journal(spec, machine))

    @property
    def key(self) -> DefinitionKey:
        """What a saga row names it by: name, version, fingerprint."""
        return (self.spec.name, self.spec.version, self.spec.fingerprint)


class Registry:
    """Saga definitions by name and version; several versions live side by side."""

    def __init__(self) -> None:
        self._definitions: dict[tuple[str, int], Definition] = {}

    def __repr__(self) -> str:
        return ", ".join(self.names()) or "none"

    def names(self) -> list[str]:
        """``name@vN`` of each registered definition, sorted."""
        return sorted(d.spec.key for d in self._definitions.values())

    def keys(self) -> list[DefinitionKey]:
        """What the rows of the registered definitions' sagas say."""
        return [d.key for d in self._definitions.values()]

    def add(self, saga: type[Saga] | Saga) -> Definition:
        """Register a saga class (instantiated without arguments) or instance.

        Raises:
            DefinitionConflict: another definition is registered under the same
                name and version with a different structure.
        """
        defn = Definition.of(saga() if isinstance(saga, type) else saga)
        spec = defn.spec
        known = self._definitions.get((spec.name, spec.version))
        if known is not None and known.spec.fingerprint != spec.fingerprint:
            raise DefinitionConflict(spec.key, known.spec.fingerprint, spec.fingerprint)
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

    def for_saga(self, saga: type[Saga] | Saga) -> Definition:
        """The definition to start ``saga`` with: an instance is registered (so its
        clients are the handlers'), a class is registered on first use."""
        cls = saga if isinstance(saga, type) else type(saga)
        spec: SagaSpec = cls.spec
        defn = self._definitions.get((spec.name, spec.version))
        if defn is None or defn.spec.fingerprint != spec.fingerprint or not isinstance(saga, type):
            defn = self.add(saga)
        return defn

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
