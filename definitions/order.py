"""The seed's order saga: create order, charge payment, reserve inventory, confirm.

The source is ``statesaga.examples.order``, which ships with statesaga; this module
re-exports it, so the repository's tests and ``diagrams/`` use the same classes.
"""

from statesaga.examples.order import *  # noqa: F403
from statesaga.examples.order import __all__ as __all__
