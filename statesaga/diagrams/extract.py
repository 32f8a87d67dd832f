"""Extraction: a definition's spec and state machine become its graph model.

One node per FSM state, one edge per FSM transition, in the machine's order
and with the machine's kinds; the spec adds what the machine does not know
(retry policies, transactionality, timeouts, compensation links), and each
edge gets the short label renderers print on it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from statesaga._machine import SagaMachine, TransitionInfo
from statesaga._spec import TERMINALS, SagaSpec
from statesaga.diagrams.model import Edge, GraphModel, Node

if TYPE_CHECKING:
    from statesaga._definition import Saga


def model_of(saga: type[Saga]) -> GraphModel:
    """The graph model of a saga class (``build_model(cls.spec, cls.machine)``)."""
    return build_model(saga.spec, saga.machine)


def build_model(spec: SagaSpec, machine: SagaMachine) -> GraphModel:
    """Extract the graph model of a definition from its spec and state machine.

    Args:
        spec: the definition's frozen spec.
        machine: the state machine compiled from it.

    Returns:
        One node per state of ``machine`` and one edge per transition, with
        each step's retry policy, transactionality and compensation from
        ``spec``; the model keeps ``machine`` to read sagas' logs with.
    """
    nodes = []
    for st in machine.states:
        if st.kind == "terminal":
            nodes.append(Node(st.name, "terminal", None, None, 0))
            continue
        assert st.step is not None
        s = spec.step(st.step)
        if st.kind == "step":
            node = Node(
                st.name,
                "step",
                s.name,
                s.index,
                s.retry.max_attempts,
                transactional=s.transactional,
                timeout=s.wait.timeout if s.wait else s.timeout,
                compensation=s.compensation.name if s.compensation else None,
                wait=s.wait.event if s.wait else None,
            )
        else:
            assert s.compensation is not None
            node = Node(
                st.name,
                "compensation",
                s.name,
                s.index,
                s.compensation.retry.max_attempts,
                transactional=s.compensation.transactional,
            )
        nodes.append(node)
    attempts = {n.id: n.max_attempts for n in nodes}
    # An operator's retry re-enters the chain where it began, which depends on the
    # saga: the machine has an edge into each compensation; one is drawn, into
    # the chain's top (drawing them all would fan out over a long saga).
    top = next((n.id for n in nodes if n.kind == "compensation"), None)
    edges = tuple(
        Edge(
            t.source,
            t.dest,
            t.kind,
            t.trigger,
            t.condition,
            label(t),
            possible=(t.kind != "retry" or attempts[t.source] > 1)
            and (t.kind != "redo" or t.dest == top)
            # An operator's cancel leads where the step's failure does: drawn only
            # in an overlay of a saga that was cancelled.
            and t.kind != "cancel",
        )
        for t in machine.transitions
    )
    return GraphModel(
        name=spec.name,
        version=spec.version,
        fingerprint=spec.fingerprint,
        deadline=spec.deadline,
        initial=machine.initial,
        nodes=tuple(nodes),
        edges=edges,
        machine=machine,
    )


#: The label of each kind of transition whose label is always the same.
_LABELS: dict[str, str] = {
    "retry": "retry",
    "fail": "fail",
    "in_doubt": "in doubt",
    "timeout": "timed out",
    "cancel": "operator: cancel",
    "resolve": "operator: resolve",
    "redo": "operator: retry",
}


def label(t: TransitionInfo) -> str | None:
    """The text every renderer draws on transition ``t`` (``None``: none).

    A retry loop says only ``retry``: its state already says how many attempts
    it has, and a long label on a loop is what collides with other links.
    """
    if t.kind in _LABELS:
        return _LABELS[t.kind]
    if t.kind == "compensation_failed":
        return "fail" if t.dest in TERMINALS else "fail, go on"
    if t.kind == "finish":
        return "a compensation failed" if t.condition == "compensation_failed" else "all undone"
    return None
