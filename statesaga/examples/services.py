"""Small in-memory fakes of the services the example sagas call.

Each fake deduplicates on the idempotency key it is given, records every
effect it makes, and can be told to fail: ``services.fail("payments.charge",
times=2)`` makes the next two charges raise ``ServiceError``; ``times=None``
makes every call fail.

``services.snapshot()`` is their observable state — what is in force now — for
``statesaga.testing.explore(state=...)``: a saga that fails must leave it as
it found it.
"""

from __future__ import annotations

import zlib
from collections import Counter
from typing import Any

__all__ = ["FakeServices", "ServiceError", "ServiceTimeout"]

#: Operations that take back another's record (named in one of their fields), and which.
UNDOES = {
    "orders.cancel": "orders.create",
    "payments.refund": "payments.charge",
    "inventory.release": "inventory.reserve",
    "flights.cancel": "flights.book",
    "hotels.cancel": "hotels.book",
    "cars.return": "cars.rent",
}
_UNDOABLE = set(UNDOES.values())


class ServiceError(Exception):
    """A (simulated) failure of a remote service."""


class ServiceTimeout(ServiceError):
    """A (simulated) call that acted but whose answer never came: in doubt."""


class FakeServices:
    """The fakes, sharing one effect log and one failure plan."""

    def __init__(self) -> None:
        self.records: dict[str, dict[str, Any]] = {}
        self.effects: list[tuple[str, str]] = []  # (operation, key), in order
        self._failures: dict[str, int | None] = {}
        self._after_acting: set[str] = set()
        self._counts: Counter[str] = Counter()
        self._in_force: Counter[str] = Counter()
        self._undone: set[str] = set()

    def fail(self, operation: str, times: int | None = 1, *, after_acting: bool = False) -> None:
        """Make the next ``times`` calls of ``operation`` fail (``None``: all of them):
        before acting with ``ServiceError``, or ``after_acting`` with
        ``ServiceTimeout`` (the effect is made, the answer lost)."""
        self._failures[operation] = times
        if after_acting:
            self._after_acting.add(operation)
        else:
            self._after_acting.discard(operation)

    def heal(self) -> None:
        """Forget every planned failure."""
        self._failures.clear()
        self._after_acting.clear()

    def call(self, operation: str, key: str, **fields: Any) -> str:
        """Perform ``operation`` once per ``key``; return the record id."""
        failing = False
        if operation in self._failures:
            left = self._failures[operation]
            if left is None or left > 0:
                if left is not None:
                    self._failures[operation] = left - 1
                failing = True
                if operation not in self._after_acting:
                    raise ServiceError(f"{operation} is unavailable")
        record_id = _record_id(operation, key)
        if record_id not in self.records:
            self.records[record_id] = {"operation": operation, "key": key, **fields}
            self.effects.append((operation, key))
            self._counts[operation] += 1
            self._track(operation, record_id, fields)
        if failing:
            raise ServiceTimeout(f"{operation} timed out (it may have acted)")
        return record_id

    def find(self, operation: str, key: str) -> str | None:
        """The record ``operation`` made for ``key``, if any: how a compensation
        handed ``NOT_COMPLETED`` finds what an in-doubt step did."""
        record_id = _record_id(operation, key)
        return record_id if record_id in self.records else None

    def _track(self, operation: str, record_id: str, fields: dict[str, Any]) -> None:
        if operation in _UNDOABLE:
            self._in_force[operation] += 1
            return
        target = UNDOES.get(operation)
        if target is None:
            return
        for value in fields.values():
            record = self.records.get(value) if isinstance(value, str) else None
            if record is not None and record["operation"] == target and value not in self._undone:
                self._undone.add(value)
                self._in_force[target] -= 1
                return
        self._in_force[f"{operation} with nothing to undo"] += 1

    def snapshot(self) -> Counter[str]:
        """What is in force: records some operation can take back and none did, by
        operation, and take-backs that found nothing to take back. Effects that
        nothing takes back (a mail sent, a ticket issued) are not in it."""
        return +self._in_force

    def effect_counts(self) -> Counter[str]:
        """How many effects each operation made (``Counter`` of ``effects``' operations)."""
        return Counter(self._counts)

    def count(self, operation: str) -> Counter[str]:
        """How many effects ``operation`` made, per key."""
        return Counter(key for op, key in self.effects if op == operation)


def _record_id(operation: str, key: str) -> str:
    return f"{operation.partition('.')[0]}-{zlib.crc32(key.encode()):08x}"
