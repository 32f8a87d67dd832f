"""The registry through the public API: explicit, never replaced behind the user's back.

An engine runs only what was registered with it; registering the very same
class or instance again is a no-op, anything else under the same name and
version is a ``DefinitionConflict``; running an unregistered saga is
``NotRegistered``; something that is not a saga is an ``InvalidDefinition`` (a
``TypeError``), never a raw ``AttributeError``.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest

from definitions.order import OrderRequest, OrderSaga
from definitions.services import FakeServices
from statesaga import (
    DefinitionConflict,
    InvalidDefinition,
    NotRegistered,
    Saga,
    SagaEngine,
    SagaStatus,
    SchemaMissing,
    StateSagaError,
    StepContext,
    step,
)

REQUEST = OrderRequest("c-1", 42.0)


class Ping(Saga):
    name = "ping"

    @step
    def ping(self, ctx: StepContext) -> str:
        return "pong"


class PingAgain(Saga):
    """Another class with Ping's name, version and structure."""

    name = "ping"

    @step
    def ping(self, ctx: StepContext) -> str:
        return "pong, again"


class PingChanged(Saga):
    """Ping's name and version with another structure."""

    name = "ping"

    @step
    def ping(self, ctx: StepContext) -> str:
        return "pong"

    @step
    def pong(self, ctx: StepContext) -> None: ...


class PingV2(Saga):
    name = "ping"
    version = 2

    @step
    def ping(self, ctx: StepContext) -> str:
        return "pong v2"


class Base(Saga, abstract=True):
    """An intermediate base without steps."""


def nothing_written(engine: SagaEngine) -> bool:
    """No saga was stored: not even the schema was created."""
    try:
        return engine.list() == []
    except SchemaMissing:
        return True


# -- registering twice --------------------------------------------------------


def test_registering_the_same_class_twice_is_a_no_op(engine: SagaEngine) -> None:
    """The same class again (in one call or two) changes nothing."""
    engine.register(Ping)
    engine.register(Ping, Ping)
    assert engine.run(Ping).results == {"ping": "pong"}
    assert re.search(r"definitions: ping@v1>$", repr(engine))


def test_registering_the_same_instance_twice_is_a_no_op(engine: SagaEngine) -> None:
    """The same instance again changes nothing: its clients stay the handlers'."""
    services = FakeServices()
    saga = OrderSaga(services)
    engine.register(saga)
    engine.register(saga)
    assert engine.run(saga, REQUEST).status is SagaStatus.COMPLETED
    assert len(services.effects) == 4


def test_registering_the_class_after_an_instance_is_refused(engine: SagaEngine) -> None:
    """The issue's case: the class after an instance would replace the instance
    (and its service clients) by a default-built one. It is refused, naming both
    and the fix, and the instance stays registered: its services see the effects."""
    services = FakeServices()
    engine.register(OrderSaga(services))
    with pytest.raises(DefinitionConflict) as caught:
        engine.register(OrderSaga)
    message = str(caught.value)
    assert caught.value.key == "order@v1"
    assert (
        "order@v1 is already registered as an instance of statesaga.examples.order.OrderSaga"
    ) in message
    assert "registering the class statesaga.examples.order.OrderSaga would replace it" in message
    assert "the clients it was built with by an instance built without arguments" in message
    assert "register one object per name and version" in message

    assert engine.run(OrderSaga, REQUEST).status is SagaStatus.COMPLETED
    assert len(services.effects) == 4, "the registered instance's services saw nothing"


def test_registering_an_instance_after_the_class_is_refused(engine: SagaEngine) -> None:
    """An instance after its class would replace the default-built instance."""
    engine.register(OrderSaga)
    with pytest.raises(DefinitionConflict, match="is already registered as the class") as caught:
        engine.register(OrderSaga(FakeServices()))
    assert "register the instance instead of the class, once" in str(caught.value)


def test_registering_another_instance_is_refused(engine: SagaEngine) -> None:
    """A second instance of the same class would replace the first one's clients."""
    first, second = FakeServices(), FakeServices()
    engine.register(OrderSaga(first))
    with pytest.raises(DefinitionConflict, match="would replace it and the clients"):
        engine.register(OrderSaga(second))
    engine.run(OrderSaga, REQUEST)
    assert len(first.effects) == 4 and second.effects == []


def test_another_class_with_the_same_name_and_version_is_refused(engine: SagaEngine) -> None:
    """Two classes with one name, version and structure: the second is refused,
    and the message tells to rename or re-version one."""
    engine.register(Ping)
    with pytest.raises(DefinitionConflict) as caught:
        engine.register(PingAgain)
    message = str(caught.value)
    assert "another class with the same name and version" in message
    assert "give one of them another name or version" in message
    assert engine.run(Ping).results == {"ping": "pong"}


def test_a_changed_structure_keeps_the_fingerprint_message(engine: SagaEngine) -> None:
    """Another structure under the same name and version names both fingerprints
    and says to bump the version."""
    engine.register(Ping)
    with pytest.raises(DefinitionConflict) as caught:
        engine.register(PingChanged)
    message = str(caught.value)
    assert Ping.spec.fingerprint in message and PingChanged.spec.fingerprint in message
    assert "bump the version of the changed definition" in message


def test_versions_side_by_side_still_register(engine: SagaEngine) -> None:
    """Another version is not a conflict."""
    engine.register(Ping, PingV2)
    assert engine.run(PingV2).results == {"ping": "pong v2"}
    assert engine.run(Ping).results == {"ping": "pong"}


# -- running --------------------------------------------------------------------


@pytest.mark.parametrize("how", ["run", "start", "arun", "astart"])
def test_an_unregistered_saga_is_not_run(engine: SagaEngine, how: str) -> None:
    """run/start/arun/astart of an unregistered saga raise NotRegistered naming the
    fix, write nothing, and register nothing."""

    def call() -> Any:
        if how == "run":
            return engine.run(OrderSaga, REQUEST)
        if how == "start":
            return engine.start(OrderSaga, REQUEST)
        if how == "arun":
            return asyncio.run(engine.arun(OrderSaga, REQUEST))
        return asyncio.run(engine.astart(OrderSaga, REQUEST))

    with pytest.raises(NotRegistered) as caught:
        call()
    assert "engine.register(OrderSaga) first" in str(caught.value)
    assert (caught.value.name, caught.value.version) == ("order", 1)
    assert nothing_written(engine)
    with pytest.raises(NotRegistered):
        call()  # the failed call registered nothing either


def test_an_unregistered_instance_is_not_run(engine: SagaEngine) -> None:
    """An instance is not registered by running it either."""
    services = FakeServices()
    with pytest.raises(NotRegistered, match=r"engine\.register\(OrderSaga\) first"):
        engine.run(OrderSaga(services), REQUEST)
    assert services.effects == [] and nothing_written(engine)


def test_the_registered_class_and_instance_run(engine: SagaEngine) -> None:
    """What was registered runs: the class, and the instance."""
    engine.register(Ping)
    assert engine.run(Ping).status is SagaStatus.COMPLETED
    services = FakeServices()
    saga = OrderSaga(services)
    engine.register(saga)
    assert engine.run(saga, REQUEST).status is SagaStatus.COMPLETED
    assert len(services.effects) == 4


def test_the_class_of_a_registered_instance_runs_on_that_instance(engine: SagaEngine) -> None:
    """Passing the class of a registered instance is allowed, and the instance's
    handlers run — never a default-built one."""
    services = FakeServices()
    engine.register(OrderSaga(services))
    engine.start(OrderSaga, OrderRequest("c-2", 1.0), saga_id="later")
    assert engine.run(OrderSaga, REQUEST).status is SagaStatus.COMPLETED
    assert engine.resume("later").status is SagaStatus.COMPLETED
    assert len(services.effects) == 8


def test_running_another_instance_is_refused(engine: SagaEngine) -> None:
    """Another instance than the registered one is refused, not swapped in (its
    clients would be the handlers'), and nothing runs."""
    registered, other = FakeServices(), FakeServices()
    engine.register(OrderSaga(registered))
    with pytest.raises(DefinitionConflict) as caught:
        engine.run(OrderSaga(other), REQUEST)
    assert "not the registered one" in str(caught.value)
    assert "pass the registered instance, or the class OrderSaga, which runs on it" in str(
        caught.value
    )
    assert registered.effects == [] and other.effects == [] and nothing_written(engine)
    engine.run(OrderSaga, REQUEST)
    assert len(registered.effects) == 4 and other.effects == []


def test_running_an_instance_where_the_class_is_registered_is_refused(
    engine: SagaEngine,
) -> None:
    """With the class registered, an instance of it is not swapped in either."""
    engine.register(OrderSaga)
    services = FakeServices()
    with pytest.raises(DefinitionConflict, match="pass the class OrderSaga"):
        engine.start(OrderSaga(services), REQUEST)
    assert nothing_written(engine)


def test_running_another_class_under_a_registered_name_is_refused(engine: SagaEngine) -> None:
    """Another class with the registered name and version, same structure or not,
    does not run in the registered one's place."""
    engine.register(Ping)
    with pytest.raises(DefinitionConflict, match="another class with the same name"):
        engine.run(PingAgain)
    with pytest.raises(DefinitionConflict, match="bump the version"):
        engine.run(PingChanged)
    assert nothing_written(engine)


# -- not a saga -----------------------------------------------------------------


NOT_SAGAS: list[tuple[str, Any, str]] = [
    ("a class", int, "register() was given the class int, which is not a saga"),
    ("an instance", object(), "register() was given <object object at"),
    ("an abstract class", Base, "register() was given an abstract saga class"),
    ("the base class", Saga, "register() was given an abstract saga class"),
]


@pytest.mark.parametrize(("what", "thing", "says"), NOT_SAGAS, ids=[c[0] for c in NOT_SAGAS])
def test_registering_what_is_not_a_saga(
    engine: SagaEngine, what: str, thing: Any, says: str
) -> None:
    """register() of a non-saga (or of a saga class without steps) is a
    StateSagaError and a TypeError naming the thing and the fix."""
    with pytest.raises(InvalidDefinition) as caught:
        engine.register(thing)
    assert isinstance(caught.value, TypeError) and isinstance(caught.value, StateSagaError)
    assert says in str(caught.value)
    assert "pass a" in str(caught.value)


@pytest.mark.parametrize("thing", [object, object(), 42, "order", None])
@pytest.mark.parametrize("how", ["run", "start"])
def test_running_what_is_not_a_saga(engine: SagaEngine, thing: Any, how: str) -> None:
    """run()/start() of a non-saga is a StateSagaError and a TypeError naming the
    thing and the fix, never a raw AttributeError; nothing is written."""
    with pytest.raises(InvalidDefinition) as caught:
        getattr(engine, how)(thing, None)
    assert isinstance(caught.value, TypeError)
    assert f"{how}() was given " in str(caught.value)
    assert "pass a subclass of statesaga.Saga with @step methods" in str(caught.value)
    assert nothing_written(engine)
