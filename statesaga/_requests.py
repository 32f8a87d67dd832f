"""An operator's request, carried out by the runner that holds the saga.

``cancel`` and ``pause`` reach a saga another process drives as requests on
its row (``statesaga._operating``); the runner holding it learns of them with
its lease heartbeat (or its claim) and carries them out here, between two
attempts: the attempt in flight when it was asked records its outcome first.
"""

from __future__ import annotations

from collections.abc import Callable

from statesaga import _codec as codec
from statesaga._errors import SagaCancelled
from statesaga._handlers import describe
from statesaga._leases import Leases
from statesaga._live import LiveRun
from statesaga.store import SqlStore


class Requests:
    """Carrying out operator requests (its method is the runner's)."""

    store: SqlStore
    leases: Leases
    clock: Callable[[], float]
    _fire: Callable[[LiveRun, str], None]
    _observe: Callable[[LiveRun, str, str, str], None]

    def _carry_out(self, run: LiveRun, request: str, kind: str) -> bool:
        """Carry out an operator's request on the saga, between two attempts (the
        one in flight when it was asked has recorded its outcome): ``cancel`` a
        saga going forward (it compensates), ``pause`` it (it is let go, and no
        runner takes it until unpaused). Returns whether the run goes on elsewhere
        than it would have (the loop looks again)."""
        row = self.store.get(run.saga_id)
        by = row.request_by if row is not None else None
        why = row.request_reason if row is not None else None
        self.leases.note_request(run.saga_id, None)
        if request == "cancel" and kind == "step":
            run.outcome = describe(SagaCancelled(run.saga_id, by, why))
            run.error = run.outcome
            self._fire(run, "cancel")
            self.store.settle_request(run.saga_id, "cancel")
            return True
        if request == "pause":
            note = codec.dumps({"actor": by, "reason": why})
            changes, entry = run.defn.journal.paused(
                run.saga_id,
                run.seq,
                run.state,
                run.attempt,
                run.error,
                note,
                self.clock(),
                run.wait_until,
            )
            self.store.advance(run.saga_id, (run.seq, run.epoch), changes, [entry])
            run.seq = changes["seq"]
            self.store.settle_request(run.saga_id, "pause", then="paused")
            self.leases.drop(run.saga_id)
            self._observe(run, run.state, "pause", run.state)
            run.parked = True
            run.awaiting = True
            return True
        if request == "cancel":
            self.store.settle_request(run.saga_id, "cancel")  # compensating already
        return False
