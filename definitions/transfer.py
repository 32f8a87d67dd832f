"""A money transfer whose ledger lives in the saga database: transactional steps.

The source is ``statesaga.examples.transfer``, which ships with statesaga; this module
re-exports it, so the repository's tests and ``diagrams/`` use the same classes.
"""

from statesaga.examples.transfer import *  # noqa: F403
from statesaga.examples.transfer import __all__ as __all__
