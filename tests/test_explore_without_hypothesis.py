"""explore and assert_saga_correct work where Hypothesis is not installed; only
sampling a space too large to run whole needs it, and says so."""

from __future__ import annotations

from tests.test_testing_without_hypothesis import run_without_hypothesis


def test_explore_runs_without_hypothesis() -> None:
    """In an interpreter where Hypothesis cannot be imported, assert_saga_correct
    explores the order saga (every crash point of its fault-free run) whole and
    does not import Hypothesis."""
    proc = run_without_hypothesis(
        """
        import sys
        from definitions.order import OrderRequest, OrderSaga
        from definitions.services import FakeServices
        from statesaga.testing import assert_saga_correct

        services = FakeServices()
        report = assert_saga_correct(
            OrderSaga(services), OrderRequest("c-1", 10.0),
            effects=services.effect_counts, state=services.snapshot, max_faults=0,
        )
        assert report.ok and not report.sampled, report
        assert sys.modules["hypothesis"] is None
        print(report.scenarios)
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout) == 1 + 3 * 4  # the baseline, 3 points of 4 handlers


def test_sampling_says_it_needs_hypothesis() -> None:
    """A space larger than max_scenarios needs Hypothesis to be sampled: without
    it, explore says what to install or which option to raise."""
    proc = run_without_hypothesis(
        """
        from definitions.order import OrderRequest, OrderSaga
        from statesaga.testing import explore

        try:
            explore(OrderSaga(), OrderRequest("c-1", 10.0), max_scenarios=10)
        except ModuleNotFoundError as exc:
            print(exc)
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert "statesaga[test]" in proc.stdout and "max_scenarios" in proc.stdout
