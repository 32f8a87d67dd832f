"""The statuses of a saga and of its log entries."""

from __future__ import annotations

import enum


class SagaStatus(enum.StrEnum):
    """A saga's status, as stored and reported."""

    STARTED = "started"
    COMPENSATING = "compensating"
    COMPLETED = "completed"
    FAILED = "failed"
    COMPENSATION_FAILED = "compensation_failed"
    RESOLVED = "resolved"

    @property
    def is_terminal(self) -> bool:
        """Whether the saga is done (completed, failed, compensation_failed, resolved)."""
        return self not in (SagaStatus.STARTED, SagaStatus.COMPENSATING)


class EntryStatus(enum.StrEnum):
    """The status of one saga log entry: the seed's ``SagaLogEntry.Status``, plus
    the two that tell a failed attempt that will be retried from a final failure.

    ``executing``/``compensating`` start an attempt (stamped when it really
    starts); ``completed``/``compensated`` end it well; ``retrying``/
    ``compensation_retrying`` end it failed, with another attempt to come after
    the retry delay; ``failed``/``compensation_failed`` end it failed for good;
    ``failed_in_doubt`` ends a step's attempt failed for good after its handler
    may have acted (a timeout, an error the step lists as in doubt, ``InDoubt``):
    the step's own compensation runs next; ``waiting`` parks a wait step's
    attempt until its event arrives (the same attempt goes on then);
    ``timed_out`` ends a wait whose event did not come in time (it
    compensates); the operator's: ``cancelled`` ends a step's attempt before it
    runs and compensates, ``paused``/``unpaused`` stop and let go on (no
    outcome), ``retried`` takes a ``compensation_failed`` saga back into its
    compensations, ``resolved`` closes one handled by hand (each entry's result
    says who and why); ``interrupted`` ends it neither
    (Ctrl-C, shutdown, a cancelled task): the same attempt is made again when a
    runner takes the saga.
    """

    EXECUTING = "executing"
    COMPLETED = "completed"
    RETRYING = "retrying"
    FAILED = "failed"
    FAILED_IN_DOUBT = "failed_in_doubt"
    COMPENSATING = "compensating"
    COMPENSATED = "compensated"
    COMPENSATION_RETRYING = "compensation_retrying"
    COMPENSATION_FAILED = "compensation_failed"
    INTERRUPTED = "interrupted"
    WAITING = "waiting"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    PAUSED = "paused"
    UNPAUSED = "unpaused"
    RESOLVED = "resolved"
    RETRIED = "retried"
