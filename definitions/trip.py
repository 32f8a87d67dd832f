"""A trip booking saga: flight, hotel, car, payment, tickets, itinerary.

The source is ``statesaga.examples.trip``, which ships with statesaga; this module
re-exports it, so the repository's tests and ``diagrams/`` use the same classes.
"""

from statesaga.examples.trip import *  # noqa: F403
from statesaga.examples.trip import __all__ as __all__
