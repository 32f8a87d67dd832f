"""Small in-memory fakes of the services the example sagas call.

The source is ``statesaga.examples.services``, which ships with statesaga; this module
re-exports it, so the repository's tests and ``diagrams/`` use the same classes.
"""

from statesaga.examples.services import *  # noqa: F403
from statesaga.examples.services import __all__ as __all__
