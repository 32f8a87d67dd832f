"""The README's toolkit example runs as written, and a broken saga fails it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from statesaga.testing import InvariantViolation

README = Path(__file__).resolve().parent.parent / "README.md"


def example() -> str:
    (block,) = [
        b
        for b in re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
        if "assert_saga_correct(" in b
    ]
    return block


def test_one_line_example_passes_the_order_saga(statesaga_url: str) -> None:
    """The 'Testing your sagas' example is short and passes the order saga on the
    plugin's database."""
    code = example()
    assert len(code.strip().splitlines()) < 20
    namespace: dict[str, object] = {}
    exec(compile(code, "README.md", "exec"), namespace)
    namespace["test_order_saga"](statesaga_url)  # type: ignore[operator]


def test_one_line_example_fails_a_broken_saga(statesaga_url: str) -> None:
    """The same test, run on the order saga with a refund that is not idempotent,
    fails with the counterexample the README shows."""
    code = example().replace(
        "from definitions.order import OrderRequest, OrderSaga",
        "from definitions.order import OrderRequest\n"
        "from tests.toolkit_sagas import DoubleRefund as OrderSaga",
    )
    namespace: dict[str, object] = {}
    exec(compile(code, "README.md", "exec"), namespace)
    with pytest.raises(InvariantViolation) as caught:
        namespace["test_order_saga"](statesaga_url)  # type: ignore[operator]
    first = str(caught.value).splitlines()[0]
    assert first in README.read_text()


def test_readme_gives_the_measured_speed() -> None:
    """The section gives scenarios per second for the order and trip sagas."""
    text = README.read_text()
    section = text[text.index("## Testing your sagas") : text.index("## Performance")]
    assert "SPEED_TABLE" not in section
    for saga in ("order", "trip"):
        assert re.search(rf"\| {saga} \(.*\) \| \d+ \| .* \| \d+ / \d+ \|", section), saga
