"""Small in-memory fakes of the services the example sagas call.

Each fake deduplicates on the idempotency key it is given, records every
effect it makes, and can be told to fail: ``services.fail("payments.charge",
times=2)`` makes the next two charges raise ``ServiceError``; ``times=None``
makes every call fail.
"""

from __future__ import annotations

import zlib
from collections import Counter
from typing import Any

__all__ = ["FakeServices", "ServiceError"]


class ServiceError(Exception):
    """A (simulated) failure of a remote service."""


class FakeServices:
    """The fakes, sharing one effect log and one failure plan."""

    def __init__(self) -> None:
        self.records: dict[str, dict[str, Any]] = {}
        self.effects: list[tuple[str, str]] = []  # (operation, key), in order
        self._failures: dict[str, int | None] = {}

    def fail(self, operation: str, times: int | None = 1) -> None:
        """Make the next ``times`` calls of ``operation`` fail (``None``: all of them)."""
        self._failures[operation] = times

    def heal(self) -> None:
        """Forget every planned failure."""
        self._failures.clear()

    def call(self, operation: str, key: str, **fields: Any) -> str:
        """Perform ``operation`` once per ``key``; return the record id."""
        if operation in self._failures:
            left = self._failures[operation]
            if left is None or left > 0:
                if left is not None:
                    self._failures[operation] = left - 1
                raise ServiceError(f"{operation} is unavailable")
        record_id = f"{operation.partition('.')[0]}-{zlib.crc32(key.encode()):08x}"
        if record_id not in self.records:
            self.records[record_id] = {"operation": operation, **fields}
            self.effects.append((operation, key))
        return record_id

    def count(self, operation: str) -> Counter[str]:
        """How many effects ``operation`` made, per key."""
        return Counter(key for op, key in self.effects if op == operation)
