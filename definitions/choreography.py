"""The seed's order flow as a choreography: orders, payments and inventory participants.

The source is ``statesaga.examples.choreography``, which ships with statesaga; this
module re-exports it, so the repository's tests and ``diagrams/choreography/`` use
the same classes.
"""

from statesaga.examples.choreography import *  # noqa: F403
from statesaga.examples.choreography import __all__ as __all__
