"""The colours of every drawing, for DOT and Mermaid alike.

One hue per meaning, each as a strong line and a light fill: blue the forward
path, orange the compensation chain, red a failure, dark red a compensation
that failed, green completion, purple a saga still running. Both renderers read
them from here, so a picture says the same thing in either format.
"""

from __future__ import annotations

from collections.abc import Mapping

from statesaga._spec import TransitionKind

TEXT = "#202124"
#: Secondary text and retry loops.
GREY = "#5f6368"
#: Lines of what an overlay shows the saga never reached.
FAINT = "#c4c7c5"
#: Text of what it never reached.
MUTED = "#9aa0a6"
WHITE = "white"

BLUE, BLUE_FILL = "#1a73e8", "#e8f0fe"
ORANGE, ORANGE_FILL = "#e37400", "#fef3e0"
GREEN, GREEN_FILL = "#188038", "#e6f4ea"
RED, RED_FILL = "#d93025", "#fce8e6"
DARK_RED, DARK_RED_FILL = "#a50e0e", "#f6d5d3"
PURPLE, PURPLE_FILL = "#9334e6", "#f3e8fd"

#: Line and fill of a step and of a compensation.
STATE_COLOURS: Mapping[str, tuple[str, str]] = {
    "step": (BLUE, BLUE_FILL),
    "compensation": (ORANGE, ORANGE_FILL),
}
#: Line and fill of each terminal.
TERMINAL_COLOURS: Mapping[str, tuple[str, str]] = {
    "completed": (GREEN, GREEN_FILL),
    "failed": (RED, RED_FILL),
    "compensation_failed": (DARK_RED, DARK_RED_FILL),
    "resolved": (GREY, "#f1f3f4"),
}
#: Line and fill of a state an overlay shows the saga entered, by its outcome.
OUTCOME_COLOURS: Mapping[str, tuple[str, str]] = {
    "completed": (GREEN, "#ceead6"),
    "failed": (RED, "#f6aea9"),
    "compensated": (ORANGE, "#fde0b8"),
    "compensation_failed": (DARK_RED, "#f6aea9"),
    "running": (PURPLE, PURPLE_FILL),
    "waiting": (PURPLE, PURPLE_FILL),
}
#: Line of each kind of transition.
EDGE_COLOUR: Mapping[TransitionKind, str] = {
    "forward": BLUE,
    "complete": BLUE,
    "retry": GREY,
    "fail": RED,
    "in_doubt": RED,
    "timeout": RED,
    # The operator's, drawn apart from the saga's own.
    "cancel": PURPLE,
    "resolve": PURPLE,
    "redo": PURPLE,
    "compensate": ORANGE,
    "compensation_failed": DARK_RED,
    "finish": ORANGE,
}


def status_colour(status: str | None) -> str:
    """The colour of a saga's status in a title: its terminal's, or purple while it runs."""
    line, _ = TERMINAL_COLOURS.get(status or "", (PURPLE, PURPLE_FILL))
    return line
