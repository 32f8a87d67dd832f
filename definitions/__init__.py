"""Example sagas: the seed's order saga and a trip booking saga.

The demo (``statesaga demo``), the diagrams and the tests import them.
"""
