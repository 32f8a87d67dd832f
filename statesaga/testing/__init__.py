"""Tools to test sagas: invariant checks on saga logs.

``check_saga`` verifies a finished saga's log against the saga invariants and
fails with the log drawn as a timeline.
"""

from statesaga.testing.invariants import InvariantViolation, check_saga, format_timeline, outcomes

__all__ = ["InvariantViolation", "check_saga", "format_timeline", "outcomes"]
