"""A Hypothesis state machine that starts, fails, crashes and resumes sagas.

Subclass it for your saga in one line and collect its ``TestCase``::

    class OrderMachine(
        SagaStateMachine,
        saga=lambda: OrderSaga(FakeServices()),
        inputs=st.builds(OrderRequest),
        effects=lambda saga: saga.services.effect_counts(),
    ):
        pass

    TestOrderSaga = OrderMachine.TestCase

Every saga run with a crash is compared with a model: the same operations
without crashes. The machine runs each crash scenario's failure plan once
without the crash, keeps what that did to the services, and requires the
services to have seen exactly as much once no saga is left stranded. A run in
which no handler ran to its end (the application's tables missing, say) fails
instead of passing with nothing tested.

Stateful tests cannot use pytest fixtures, so each run makes its own
database: a temporary SQLite file, or the database named by the
``STATESAGA_TEST_URL`` environment variable (sagas get unique ids there).
Override ``setup`` (or pass ``setup=``) to create the application's tables.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, ClassVar

import attrs
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from sqlalchemy.engine import Engine

from statesaga._definition import Saga
from statesaga.testing._checks import examine, vacuous
from statesaga.testing._outcome import Outcome
from statesaga.testing._scenario import InjectedFault, Scenario
from statesaga.testing.harness import SagaHarness
from statesaga.testing.invariants import InvariantViolation
from statesaga.testing.strategies import explored_scenarios


@attrs.frozen
class _Config:
    """What a subclass's class keywords gave."""

    saga: Callable[[], Saga]
    effects: Callable[[Any], Any] | None
    state: Callable[[Any], Any] | None
    setup: Callable[[Engine], Any] | None
    errors: tuple[type[Exception], ...]


@attrs.frozen
class _Stranded:
    """A saga a crash left stranded, and what it would have done without the crash."""

    input: Any
    outcome: Outcome
    baseline: Outcome


class SagaStateMachine(RuleBasedStateMachine):
    """Starts sagas under random failures, crashes them, delivers duplicate starts,
    recovers, and checks every saga invariant and the effects of the crash-free
    model after each step.

    Class keywords:
        saga: the saga class (instantiated without arguments) or a zero-argument
            factory returning a saga instance (one per run of the machine).
        inputs: a strategy for the saga's input.
        effects: optional; ``effects(saga_instance)`` returns what its services
            have done so far (see ``SagaHarness``).
        state: optional; ``state(saga_instance)`` returns a snapshot of its
            services' observable state (see ``explore``).
        errors: the exception types injected faults raise (default
            ``InjectedFault``); give the ones your steps' ``retry_on`` lists so
            that their retries are exercised.
        setup: optional; ``setup(engine)`` creates the application's tables in
            the test database (or override the ``setup`` method).
    """

    config: ClassVar[_Config]
    saga_type: ClassVar[type[Saga]]
    inputs: ClassVar[st.SearchStrategy[Any]]

    def __init_subclass__(
        cls,
        saga: Any = None,
        inputs: st.SearchStrategy[Any] | None = None,
        effects: Callable[[Any], Any] | None = None,
        state: Callable[[Any], Any] | None = None,
        errors: Sequence[type[Exception]] = (InjectedFault,),
        setup: Callable[[Engine], Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init_subclass__(**kwargs)
        if saga is None:
            return
        cls.config = _Config(saga, effects, state, setup, tuple(errors))
        probe = saga if isinstance(saga, type) else type(saga())
        cls.saga_type = probe
        cls.inputs = inputs if inputs is not None else st.none()
        # Scenarios from explore's space (up to two faults): every crash lands
        # where its plan gets, each handler is as likely to be the one it lands
        # in, and a failing run shrinks fast, to a smallest scenario.
        plans = explored_scenarios(probe, cls.config.errors, max_faults=2, crash=False).map(
            lambda scenario: dict(scenario.plan)
        )
        crashing = explored_scenarios(probe, cls.config.errors, crash=True)

        # Rules need the saga's own strategies, so they are made per subclass.
        def first_run(self: SagaStateMachine, input: Any) -> None:
            outcome = self.harness.run(input, Scenario())
            found = vacuous(outcome)
            if found is not None:
                raise found.error()
            self._record(input, outcome)

        def run_saga(self: SagaStateMachine, input: Any, plan: dict[str, Any]) -> None:
            self._record(input, self.harness.run(input, Scenario(plan)))

        def crash_and_resume(self: SagaStateMachine, input: Any, scenario: Scenario) -> None:
            baseline = self._baseline(input, scenario)
            outcome = self.harness.run(input, scenario)
            self.seen.update(outcome.effects)
            self._compare(outcome, baseline)
            self._record(input, outcome)

        def crash_and_leave(self: SagaStateMachine, input: Any, scenario: Scenario) -> None:
            baseline = self._baseline(input, scenario)
            outcome = self.harness.run(input, scenario, resume=False)
            self.seen.update(outcome.effects)
            if outcome.status.is_terminal:  # the crash came after the last commit
                self._compare(outcome, baseline)
                self._record(input, outcome)
            else:
                self.stranded.append(_Stranded(input, outcome, baseline))

        cls.first_run = initialize(input=cls.inputs)(first_run)
        cls.run_saga = rule(input=cls.inputs, plan=plans)(run_saga)
        cls.crash_and_resume = rule(input=cls.inputs, scenario=crashing)(crash_and_resume)
        cls.crash_and_leave = rule(input=cls.inputs, scenario=crashing)(crash_and_leave)

    def __init__(self) -> None:
        super().__init__()
        config = self.config
        saga = config.saga()
        effects = state = None
        if config.effects is not None:
            effects = partial(config.effects, saga)
        if config.state is not None:
            state = partial(config.state, saga)
        url = os.environ.get("STATESAGA_TEST_URL") or None
        self.harness = SagaHarness(saga, url, effects, state=state, setup=self.setup)
        self.finished: list[tuple[Any, Outcome]] = []
        self.stranded: list[_Stranded] = []
        #: What the services saw from the sagas run with crashes, and what the
        #: model (the same failure plans without crashes) says they should see.
        self.seen: Counter[str] = Counter()
        self.model: Counter[str] = Counter()
        self.handlers_ran = 0

    def setup(self, engine: Engine) -> None:
        """Create the application's own tables in the test database; called once
        per run of the machine, before any saga. Calls the ``setup`` class
        keyword by default."""
        if self.config.setup is not None:
            self.config.setup(engine)

    def _baseline(self, input: Any, scenario: Scenario) -> Outcome:
        """The crash-free run of ``scenario``'s plan, checked; the model adds its effects."""
        baseline = self.harness.run(input, Scenario(scenario.plan))
        self._check(baseline)
        self.model.update(baseline.effects)
        return baseline

    def _compare(self, outcome: Outcome, baseline: Outcome) -> None:
        found = examine(self.saga_type, outcome, baseline)
        if found is not None:
            raise found.error()

    def _check(self, outcome: Outcome) -> None:
        self.handlers_ran += sum(call.ran for call in outcome.calls)
        found = examine(self.saga_type, outcome, None)
        if found is not None:
            raise found.error()

    def _record(self, input: Any, outcome: Outcome) -> None:
        self._check(outcome)
        self.finished.append((input, outcome))

    @rule()
    def deliver_duplicates(self) -> None:
        """Deliver the last start requests once more: nothing may run again."""
        engine = self.harness.engine
        for input, outcome in self.finished[-3:]:
            again = engine.run(self.harness.saga, input, saga_id=outcome.saga_id)
            assert not again.created, f"a duplicate start of {outcome.saga_id} created a saga"
            assert again.status is outcome.status
            assert engine.history(outcome.saga_id) == outcome.history, "a duplicate start ran"

    @rule()
    def recover(self) -> None:
        """A new process recovers every saga a crash left behind; each ends as
        it would have without the crash."""
        stranded, self.stranded = self.stranded, []
        recovered = self.harness.recover()
        if recovered:
            self.seen.update(recovered[0].effects)  # the whole recovery's
        by_id = {outcome.saga_id: outcome for outcome in recovered}
        for left in stranded:
            outcome = by_id[left.outcome.saga_id]
            # Effects are checked all together, against the model, by the invariant.
            outcome = attrs.evolve(outcome, effects=left.baseline.effects)
            self._compare(outcome, left.baseline)
            self._record(left.input, outcome)

    @invariant()
    def effects_match_the_crash_free_model(self) -> None:
        """Once no saga is stranded, the services saw what the same failure
        plans without crashes made them see."""
        if self.stranded or self.seen == self.model:
            return
        ops = sorted(op for op in {*self.seen, *self.model} if self.seen[op] != self.model[op])
        raise InvariantViolation(
            "with crashes the services saw otherwise than the same failure plans without "
            "crashes (a handler acted again when it ran again: pass ctx.idempotency_key to "
            "the service); without the crashes → with them:\n"
            + "\n".join(f"  {op}: {self.model[op]} → {self.seen[op]}" for op in ops)
        )

    @invariant()
    def finished_sagas_are_terminal(self) -> None:
        """Every saga that finished is in a terminal state in the database."""
        for _, outcome in self.finished[-3:]:
            assert self.harness.engine.get(outcome.saga_id).status.is_terminal

    def teardown(self) -> None:
        try:
            if self.stranded:
                self.recover()
            if self.finished and not self.handlers_ran:
                raise InvariantViolation(
                    f"no handler ran to its end in {len(self.finished)} saga runs: nothing "
                    "was tested (set up the application's tables in setup())"
                )
        finally:
            self.harness.close()


SagaStateMachine.__module__ = "statesaga.testing"  # its public home
