"""Who drives which saga, and when: claims, leases and the timers runners wait on.

A runner takes sagas with ``claim`` — ``FOR UPDATE SKIP LOCKED`` on PostgreSQL,
the write lock on SQLite — and keeps them with ``extend``. Each claim raises the
saga's ``lease_epoch``, which fences off the writes of whoever held it before.
Between claims a runner sleeps until ``next_due``, or until ``listen`` wakes it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from statesaga.store._base import StoreBase
from statesaga.store._filters import DefinitionKey, incomplete, of_definitions
from statesaga.store._listen import Listener
from statesaga.store._rows import LogRow, SagaRow
from statesaga.store.schema import log, sagas

logger = logging.getLogger("statesaga")

#: The PostgreSQL channel a new runnable saga is announced on.
CHANNEL = "statesaga_runnable"


class Claims(StoreBase):
    """Claims sagas for runners, keeps and lets go of their leases, and tells
    runners when to look again."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        #: Claim statements by shape (see ``claiming``).
        self._claim_statements: dict[tuple[Any, ...], sa.Update] = {}

    def claim(
        self,
        owner: str,
        until: float,
        now: float,
        definitions: Iterable[DefinitionKey],
        *,
        limit: int = 1,
        saga_id: str | None = None,
        due_only: bool = True,
        exclude: Iterable[str] = (),
        connection: Connection | None = None,
    ) -> list[SagaRow]:
        """Take runnable sagas: unfinished, of one of ``definitions``, their lease
        free or expired, and (with ``due_only``) due. Each taken saga's lease
        epoch grows by one, which fences off whoever held it before.

        Args:
            owner: the claiming runner's id.
            until: the new leases' expiry.
            now: the time leases and due times are compared with.
            definitions: the definitions the runner can drive.
            limit: at most this many.
            saga_id: only this saga.
            due_only: skip sagas waiting out a retry delay.
            exclude: never these sagas.
            connection: claim in this open transaction (see ``transaction``);
                ``None``: in a transaction of its own.

        Returns:
            The claimed rows, as they are now.
        """
        keys = list(definitions)
        if not keys or limit < 1:
            return []
        take, params = self.claiming(owner, until, now, keys, limit, saga_id, due_only, exclude)
        if connection is not None:
            return [SagaRow(*r) for r in connection.execute(take, params)]
        with self._writing() as conn:
            return [SagaRow(*r) for r in conn.execute(take, params)]

    def claiming(
        self,
        owner: str,
        until: float,
        now: float,
        keys: Sequence[DefinitionKey],
        limit: int = 1,
        saga_id: str | None = None,
        due_only: bool = True,
        exclude: Iterable[str] = (),
    ) -> tuple[sa.Update, dict[str, Any]]:
        """The statement ``claim`` runs and its parameters (arguments as there).

        Building the statement costs a few milliseconds of Python, more than
        running it: it is built once per shape (definitions, options, excluded
        sagas) and kept, its values bound at execution.
        """
        skip = tuple(sorted(exclude))
        shape = (tuple(keys), due_only, saga_id is not None, skip)
        take = self._claim_statements.get(shape)
        if take is None:
            take = _claim_statement(*shape)
            if len(self._claim_statements) > 64:  # shapes are few; never grow without bound
                self._claim_statements.clear()
            self._claim_statements[shape] = take
        params = {"c_owner": owner, "c_until": until, "c_now": now, "c_limit": limit}
        if saga_id is not None:
            params["c_saga_id"] = saga_id
        return take, params

    def logs(self, saga_ids: Iterable[str], connection: Connection) -> dict[str, list[LogRow]]:
        """The logs of ``saga_ids`` (oldest entry first), read on ``connection``: the
        claim's own transaction, so that its runner rebuilds them without a round trip."""
        ids = list(saga_ids)
        found: dict[str, list[LogRow]] = {saga_id: [] for saga_id in ids}
        if ids:
            for r in connection.execute(_LOGS, {"c_ids": ids}):
                found[r.saga_id].append(LogRow(*r))
        return found

    def extend(self, owner: str, until: float) -> dict[str, str | None]:
        """Extend every lease ``owner`` holds to ``until``; return the sagas it still
        holds, each with the operator's request on it (if any)."""
        keep = (
            sagas.update()
            .where(sagas.c.owner == owner, incomplete())
            .values(lease_until=until)
            .returning(sagas.c.saga_id, sagas.c.request)
        )
        with self._writing() as conn:
            return {r[0]: r[1] for r in conn.execute(keep)}

    def release(self, owner: str, saga_ids: Iterable[str]) -> None:
        """Let go of the leases ``owner`` holds on ``saga_ids`` (they become
        claimable at once; their epoch is left as it is)."""
        ids = list(saga_ids)
        if not ids:
            return
        free = (
            sagas.update()
            .where(sagas.c.owner == owner, sagas.c.saga_id.in_(ids))
            .values(owner=None, lease_until=None)
        )
        with self._writing() as conn:
            conn.execute(free)

    def _release_all(self, owner: str) -> None:
        """Let go of every lease ``owner`` holds, as best it can (the store is closing:
        a failure is logged, and the leases then run out on their own)."""
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    sagas.update()
                    .where(sagas.c.owner == owner)
                    .values(owner=None, lease_until=None)
                )
        except Exception as exc:
            logger.warning("statesaga: could not let go of the sagas %s holds: %s", owner, exc)

    def db_time(self) -> float | None:
        """The database server's clock, in UNIX seconds (``None`` on SQLite, which
        runs on the application's own machine and clock)."""
        if self.dialect != "postgresql":
            return None
        with self._reading() as conn:
            return float(
                conn.execute(sa.text("SELECT EXTRACT(EPOCH FROM clock_timestamp())")).scalar_one()
            )

    def listen(self, wake: Callable[[], None]) -> Listener | None:
        """Call ``wake()`` whenever a runnable saga is announced (PostgreSQL's
        ``LISTEN``); ``None`` on a database that cannot announce (SQLite: poll)."""
        if self.dialect != "postgresql":
            return None
        return Listener(self.engine, CHANNEL, wake)

    def next_due(self, definitions: Iterable[DefinitionKey]) -> float | None:
        """When the earliest saga of ``definitions`` waiting out a delay is due."""
        keys = list(definitions)
        if not keys:
            return None
        q = sa.select(sa.func.min(sagas.c.due_at)).where(
            incomplete(), sagas.c.due_at.is_not(None), of_definitions(keys)
        )
        with self._reading() as conn:
            found = conn.execute(q).scalar()
        return None if found is None else float(found)


def _claim_statement(
    keys: tuple[DefinitionKey, ...], due_only: bool, one: bool, skip: tuple[str, ...]
) -> sa.Update:
    """A claim of one shape, its values as bind parameters (``c_owner``,
    ``c_until``, ``c_now``, ``c_limit``, ``c_saga_id``: not a column's name, which
    SQLAlchemy keeps for the values an UPDATE sets)."""
    now = sa.bindparam("c_now", type_=sa.Float)
    limit = sa.bindparam("c_limit", type_=sa.Integer)
    conditions = [
        incomplete(),
        sa.or_(sagas.c.owner.is_(None), sagas.c.lease_until < now),
        of_definitions(keys),
        # A paused saga is left alone until an operator unpauses it.
        sa.or_(sagas.c.request.is_(None), sagas.c.request != "paused"),
    ]
    if one:
        conditions.append(sagas.c.saga_id == sa.bindparam("c_saga_id", type_=sa.String))
    if skip:
        conditions.append(sagas.c.saga_id.not_in(skip))
    # Two parts, each served by its own partial index, so that parked sagas cost
    # nothing until due: sagas at a wait step once due (signalled, or given up),
    # earliest first; then the others, oldest first.
    woken = sa.select(sagas.c.saga_id).where(
        *conditions, sagas.c.waiting_for.is_not(None), sagas.c.due_at <= now
    )
    woken = woken.order_by(sagas.c.due_at).limit(limit).with_for_update(skip_locked=True)
    ready = sa.select(sagas.c.saga_id).where(*conditions, sagas.c.waiting_for.is_(None))
    if due_only:  # not waiting out a retry delay
        ready = ready.where(sa.or_(sagas.c.due_at.is_(None), sagas.c.due_at <= now))
    ready = ready.order_by(sagas.c.created_at).limit(limit).with_for_update(skip_locked=True)
    parts = [sa.select(q.subquery().c.saga_id) for q in (woken, ready)]
    pick = sa.union_all(*parts).limit(limit)
    return (
        sagas.update()
        .where(sagas.c.saga_id.in_(pick.scalar_subquery()))
        .values(
            owner=sa.bindparam("c_owner", type_=sa.String),
            lease_until=sa.bindparam("c_until", type_=sa.Float),
            lease_epoch=sagas.c.lease_epoch + 1,
        )
        .returning(*sagas.c)
    )


#: The logs of the sagas a claim took (``Claims.logs``).
_LOGS = (
    sa.select(log)
    .where(log.c.saga_id.in_(sa.bindparam("c_ids", expanding=True)))
    .order_by(log.c.saga_id, log.c.seq)
)
