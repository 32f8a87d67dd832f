"""Persistence: the schema and the SQL store. All SQL statesaga runs lives here."""

from statesaga.store.sql import LogRow, SagaRow, SqlStore, Transaction, make_engine

__all__ = ["LogRow", "SagaRow", "SqlStore", "Transaction", "make_engine"]
