"""Example sagas, shipped with statesaga so that ``statesaga demo`` runs anywhere.

- ``order``: the seed's order saga (create order, charge payment, reserve
  inventory, confirm), with retries on the payment;
- ``trip``: a six-step trip booking whose results are attrs classes;
- ``transfer``: a money transfer whose debit and credit are transactional
  steps, writing a ledger in the saga database;
- ``services``: in-memory fakes of the services they call, which can be told
  to fail.

The repository's ``definitions/`` package re-exports these modules (one source
of truth): its tests import them from there and ``statesaga diagrams`` draws
them into ``diagrams/``. Run them as a worker with
``statesaga worker --definitions statesaga.examples``.
"""
