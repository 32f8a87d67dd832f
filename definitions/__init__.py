"""Example sagas: the seed's order saga, a trip booking and a money transfer.

Each module here re-exports its namesake in ``statesaga.examples`` (the one
source, shipped in the wheel so that ``statesaga demo`` works after a pip
install). The tests import them from here, and ``statesaga diagrams`` draws the
sagas this package exports into ``diagrams/`` (``[tool.statesaga]`` in
pyproject.toml names it).
"""
