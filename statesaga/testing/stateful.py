"""A Hypothesis state machine that starts, fails, crashes and resumes sagas.

Subclass it for your saga in one line and collect its ``TestCase``::

    class OrderMachine(SagaStateMachine, saga=OrderSaga, inputs=st.builds(OrderRequest)):
        pass

    TestOrderSaga = OrderMachine.TestCase

Stateful tests cannot use pytest fixtures, so each run makes its own
database: a temporary SQLite file, or a PostgreSQL database named by the
``STATESAGA_TEST_URL`` environment variable (sagas get unique ids there).
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from statesaga._definition import Saga
from statesaga.testing.harness import Outcome, SagaHarness, Scenario
from statesaga.testing.invariants import check_saga
from statesaga.testing.strategies import crash_points, failure_plans


class SagaStateMachine(RuleBasedStateMachine):
    """Starts sagas under random failures, crashes them, delivers duplicate starts,
    recovers, and checks every saga invariant after each step.

    Class keywords:
        saga: the saga class (instantiated without arguments) or a zero-argument
            factory returning a saga instance.
        inputs: a strategy for the saga's input.
        effects: optional; ``effects(saga_instance)`` returns what its services
            have done so far (see ``SagaHarness``).
    """

    saga_factory: ClassVar[Any]
    saga_type: ClassVar[type[Saga]]
    inputs: ClassVar[st.SearchStrategy[Any]]
    effects: ClassVar[Any] = None

    def __init_subclass__(
        cls,
        saga: Any = None,
        inputs: st.SearchStrategy[Any] | None = None,
        effects: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init_subclass__(**kwargs)
        if saga is None:
            return
        cls.saga_factory = staticmethod(saga)
        probe = saga if isinstance(saga, type) else type(saga())
        cls.saga_type = probe
        cls.inputs = inputs if inputs is not None else st.none()
        cls.effects = staticmethod(effects) if effects is not None else None
        plans = failure_plans(probe)
        crashes = crash_points(probe)

        # Rules need the saga's own strategies, so they are made per subclass.
        def run_saga(self: SagaStateMachine, input: Any, plan: dict[str, Any]) -> None:
            self._record(input, self.harness.run(input, Scenario(plan)))

        def crash_and_resume(
            self: SagaStateMachine, input: Any, plan: dict[str, Any], crash: Any
        ) -> None:
            self._record(input, self.harness.run(input, Scenario(plan, crash)))

        def crash_and_leave(
            self: SagaStateMachine, input: Any, plan: dict[str, Any], crash: Any
        ) -> None:
            outcome = self.harness.run(input, Scenario(plan, crash), resume=False)
            if outcome.status.is_terminal:
                self._record(input, outcome)
            else:
                self.stranded.append(outcome.saga_id)

        cls.run_saga = rule(input=cls.inputs, plan=plans)(run_saga)
        cls.crash_and_resume = rule(input=cls.inputs, plan=plans, crash=crashes)(crash_and_resume)
        cls.crash_and_leave = rule(input=cls.inputs, plan=plans, crash=crashes)(crash_and_leave)

    def __init__(self) -> None:
        super().__init__()
        saga = self.saga_factory()
        effects = None
        if self.effects is not None:
            effects = lambda: type(self).effects(saga)  # noqa: E731
        self.harness = SagaHarness(saga, os.environ.get("STATESAGA_TEST_URL") or None, effects)
        self.finished: list[tuple[Any, Outcome]] = []
        self.stranded: list[str] = []

    def _record(self, input: Any, outcome: Outcome) -> None:
        self.harness.check(outcome)
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
        """A new process recovers every saga a crash left behind."""
        self.harness.engine.close()
        self.harness.engine = self.harness._engine()
        report = self.harness.engine.recover()
        assert not report.skipped, [str(e) for e in report.skipped]
        mine = set(self.stranded)
        recovered = {r.saga_id for r in report.resumed} & mine
        assert recovered == mine, f"not recovered: {sorted(mine - recovered)}"
        for saga_id in self.stranded:
            run = self.harness.engine.get(saga_id)
            check_saga(self.saga_type.spec, run.status, self.harness.engine.history(saga_id))
        self.stranded.clear()

    @invariant()
    def finished_sagas_are_terminal(self) -> None:
        """Every saga that finished is in a terminal state in the database."""
        for _, outcome in self.finished[-3:]:
            assert self.harness.engine.get(outcome.saga_id).status.is_terminal

    def teardown(self) -> None:
        if self.stranded:
            self.recover()
        self.harness.close()


SagaStateMachine.__module__ = "statesaga.testing"  # its public home
