"""statesaga.testing and the pytest plugin work where Hypothesis is not installed.

pytest loads the plugin in every run of every environment statesaga is
installed in, test extra or not. Each test runs a fresh interpreter in which
importing Hypothesis fails as it does when it is not installed.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import statesaga.testing
from tests.test_public_api import PUBLIC

BLOCK_HYPOTHESIS = """\
import sys
sys.modules["hypothesis"] = None  # `import hypothesis` now raises ModuleNotFoundError
"""


def run_without_hypothesis(code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter where Hypothesis cannot be imported."""
    return subprocess.run(
        [sys.executable, "-W", "error", "-c", BLOCK_HYPOTHESIS + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_plugin_and_toolkit_import_without_hypothesis() -> None:
    """The plugin and statesaga.testing import silently, and every public name
    that does not need Hypothesis is there."""
    proc = run_without_hypothesis(
        """
        import statesaga.testing
        import statesaga.testing.pytest_plugin as plugin
        assert callable(plugin.statesaga_engine)
        missing = [
            n for n in statesaga.testing.__all__
            if n != "SagaStateMachine" and not hasattr(statesaga.testing, n)
        ]
        assert not missing, missing
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == proc.stderr == ""


def test_hypothesis_names_say_what_to_install() -> None:
    """Without Hypothesis, SagaStateMachine fails on use with an error naming the extra."""
    proc = run_without_hypothesis(
        """
        import statesaga.testing
        try:
            statesaga.testing.SagaStateMachine
        except ModuleNotFoundError as exc:
            print(exc)
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert "statesaga[test]" in proc.stdout


def test_public_names_unchanged_with_hypothesis() -> None:
    """With Hypothesis installed every name in statesaga.testing.__all__ resolves,
    SagaStateMachine included, and __all__ is the list test_public_api pins."""
    assert sorted(statesaga.testing.__all__) == PUBLIC["statesaga.testing"]
    from statesaga.testing import SagaStateMachine
    from statesaga.testing.stateful import SagaStateMachine as defined

    assert SagaStateMachine is defined
    for name in statesaga.testing.__all__:
        assert getattr(statesaga.testing, name) is not None
