"""Diagrams of sagas: spec → graph model → DOT | SVG/PNG | Mermaid.

A definition is first extracted into a plain graph model (``model_of``): one
node per state of its state machine, one edge per transition, of the machine's
own kinds. Renderers read that model: ``to_dot`` (DOT source through the
``graphviz`` package, no binary needed), ``render``/``write`` (SVG and PNG
through ``pygraphviz``'s bundled Graphviz, or a ``dot`` binary), and
``to_mermaid`` (a Mermaid ``flowchart``, for Markdown). One saga's actual path is
data laid over the same model (``GraphModel.with_path``, or ``instance_model``
straight from a store), read through the journal's parser of the saga log, so
every renderer draws it too::

    from statesaga.diagrams import instance_model, model_of, write

    write(model_of(OrderSaga), "order.svg")
    write(instance_model(engine, saga_id, [OrderSaga]), "that-order.svg")

``generate`` keeps a folder of every saga's drawings up to date (the
``statesaga diagrams`` command; ``--check`` in CI).

Inside: ``model`` (the data), ``extract`` (definition → model), ``overlay``
(saga log → what became of each state), ``palette`` (the colours), ``dot``,
``mermaid`` and ``render`` (the renderers), ``sources``, ``scripted`` and
``generate`` (where drawings come from and go).

``HistoryMismatch`` is ``statesaga.HistoryMismatch``, importable from here too.
"""

from statesaga._discovery import find_sagas
from statesaga._errors import HistoryMismatch as HistoryMismatch
from statesaga.diagrams.dot import to_dot
from statesaga.diagrams.extract import build_model, model_of
from statesaga.diagrams.generate import Report, generate
from statesaga.diagrams.mermaid import to_mermaid
from statesaga.diagrams.model import Edge, GraphModel, Node, PathStep
from statesaga.diagrams.render import RenderError, render, render_dot, write
from statesaga.diagrams.scripted import ScriptedFailure, scripted_run
from statesaga.diagrams.sources import DefinitionNotFound, instance_model

__all__ = [
    "DefinitionNotFound",
    "Edge",
    "GraphModel",
    "Node",
    "PathStep",
    "RenderError",
    "Report",
    "ScriptedFailure",
    "build_model",
    "find_sagas",
    "generate",
    "instance_model",
    "model_of",
    "render",
    "render_dot",
    "scripted_run",
    "to_dot",
    "to_mermaid",
    "write",
]

# Public names report the package a user imports them from. HistoryMismatch is
# not among them: it is statesaga's own, and reports ``statesaga``.
for _name in __all__:
    globals()[_name].__module__ = __name__
del _name
