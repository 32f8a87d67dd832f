"""Persistence: the schema and the SQL store. All SQL statesaga runs lives here."""

from statesaga.store._connect import make_engine
from statesaga.store._rows import LogRecord, LogRow, NewSaga, SagaChanges, SagaRow
from statesaga.store.sql import SqlStore, Transaction

__all__ = [
    "LogRecord",
    "LogRow",
    "NewSaga",
    "SagaChanges",
    "SagaRow",
    "SqlStore",
    "Transaction",
    "make_engine",
]

# Public names report the package a user imports them from.
for _name in __all__:
    globals()[_name].__module__ = __name__
del _name
