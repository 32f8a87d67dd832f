"""The README's examples run as written."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_testing_example_runs_and_is_short() -> None:
    """The 'Testing your sagas' example is under 20 lines and its property test passes."""
    (example,) = [b for b in python_blocks() if "check_against_baseline" in b]
    assert len(example.strip().splitlines()) < 20
    namespace: dict[str, object] = {}
    exec(compile(example, "README.md", "exec"), namespace)
    try:
        namespace["test_order_saga"]()  # type: ignore[operator]
    finally:
        namespace["harness"].close()  # type: ignore[attr-defined]
