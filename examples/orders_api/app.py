"""An order service on FastAPI: ``POST /orders`` starts a saga and answers 202
with its id at once; workers run it; ``GET /orders/{id}`` reads it.

Run it (two app processes and one more worker, all on one PostgreSQL)::

    export STATESAGA_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test
    statesaga db upgrade --db $STATESAGA_URL
    uvicorn examples.orders_api.app:app --workers 2 &
    statesaga worker --db $STATESAGA_URL --definitions examples.orders_api.sagas --concurrency 32
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, HTTPException

from examples.orders_api.sagas import PlaceOrder, PlaceOrderSaga
from statesaga import SagaEngine, SagaNotFound

engine = SagaEngine(os.environ.get("STATESAGA_URL", "sqlite:///orders.db"))
engine.register(PlaceOrderSaga())


@contextlib.asynccontextmanager
async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
    # The app's own worker: async handlers run as tasks on this event loop.
    async with engine.worker(concurrency=32):
        yield
    engine.close()


app = FastAPI(lifespan=lifespan)


@app.post("/orders", status_code=202)
async def place_order(customer_id: str, total: float) -> dict[str, str]:
    """Start the saga (committed when this returns) and answer at once."""
    run = await engine.astart(PlaceOrderSaga, PlaceOrder(customer_id, total))
    return {"saga_id": run.saga_id, "status": run.status.value}


@app.get("/orders/{saga_id}")
async def get_order(saga_id: str) -> dict[str, Any]:
    """Where the saga is now."""
    try:
        run = await asyncio.to_thread(engine.get, saga_id)
    except SagaNotFound as exc:
        raise HTTPException(404, str(exc)) from exc
    return {"saga_id": run.saga_id, "status": run.status.value, "results": dict(run.results)}
