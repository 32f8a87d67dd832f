"""Overlays of stored sagas: a saga read through the engine, matched to the
definition it ran on by name, version and fingerprint."""

from __future__ import annotations

from collections.abc import Iterable

from statesaga._definition import Saga
from statesaga._discovery import qualname
from statesaga._engine import SagaEngine
from statesaga._errors import NotRegistered
from statesaga.diagrams.extract import model_of
from statesaga.diagrams.model import GraphModel


class DefinitionNotFound(NotRegistered):
    """None of the definitions given is the one a stored saga ran on.

    Attributes:
        name: the saga's definition name.
        version: its version.
        fingerprint: its structural fingerprint.
    """

    def __init__(self, saga_id: str, name: str, version: int, fingerprint: str, problem: str):
        Exception.__init__(
            self,
            f"saga {saga_id!r} ran on {name} v{version} (fingerprint {fingerprint}), but "
            f"{problem}; point --definitions at the package that defines that version",
        )
        self.saga_id = saga_id
        self.name = name
        self.version = version
        self.fingerprint = fingerprint


def instance_model(engine: SagaEngine, saga_id: str, sagas: Iterable[type[Saga]]) -> GraphModel:
    """The graph model of the saga ``saga_id``, with the path it took laid over it.

    Args:
        engine: the engine on the store that holds the saga.
        saga_id: the saga's id.
        sagas: candidate definitions; the one with the saga's name, version
            and fingerprint is drawn.

    Raises:
        SagaNotFound: the store has no such saga.
        DefinitionNotFound: no candidate has the saga's name and version, or
            its fingerprint differs (the definition changed since the saga started).
        HistoryMismatch: the saga's log does not fit the definition.
    """
    run = engine.get(saga_id)
    sagas = list(sagas)
    found = [s for s in sagas if (s.spec.name, s.spec.version) == (run.name, run.version)]
    if not found:
        known = ", ".join(s.spec.key for s in sagas) or "none"
        raise DefinitionNotFound(
            saga_id, run.name, run.version, run.fingerprint, f"no definition given has it ({known})"
        )
    saga = found[0]
    if saga.spec.fingerprint != run.fingerprint:
        raise DefinitionNotFound(
            saga_id,
            run.name,
            run.version,
            run.fingerprint,
            f"{qualname(saga)} has fingerprint {saga.spec.fingerprint} (its steps changed "
            "without a version bump)",
        )
    return model_of(saga).with_path(
        engine.history(saga_id), run.status.value, saga_id=saga_id, error=run.error
    )
