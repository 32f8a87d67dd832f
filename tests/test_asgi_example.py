"""The README's web app, for real: ``examples/orders_api`` served by uvicorn in a
subprocess on 127.0.0.1, with a second process running ``statesaga worker``.

``POST /orders`` answers 202 with a saga id before the saga runs; the app's own
worker (in its lifespan) and the separate worker process run the sagas; every
one completes. Both processes are always stopped (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from statesaga import SagaEngine

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

ROOT = Path(__file__).resolve().parents[1]
PATIENCE = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def request(method: str, url: str) -> tuple[int, dict[str, object]]:
    req = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Started processes; each is stopped at the end (SIGTERM, then SIGKILL)."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_the_web_app_starts_sagas_that_workers_finish(
    db_url: str, processes: list[subprocess.Popen[bytes]]
) -> None:
    """20 orders posted to a real ASGI server: each answer is 202 with the saga's
    id; the app's worker and a ``statesaga worker`` process finish them all; an
    unknown id is a 404; both processes stop cleanly on SIGTERM."""
    env = dict(os.environ, STATESAGA_URL=db_url, PYTHONPATH=str(ROOT))
    cli = Path(sys.executable).with_name("statesaga")
    subprocess.run(
        [str(cli), "db", "upgrade", "--db", db_url],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        timeout=PATIENCE,
    )
    port = free_port()
    processes.append(
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "examples.orders_api.app:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
            cwd=ROOT,
            env=env,
        )
    )
    processes.append(
        subprocess.Popen(
            [
                str(cli),
                "worker",
                "--db",
                db_url,
                "--definitions",
                "examples.orders_api.sagas",
                "--concurrency",
                "8",
            ],
            cwd=ROOT,
            env=env,
        )
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + PATIENCE
    while True:
        try:
            status, _ = request("GET", f"{base}/orders/nothing-here")
            break
        except (urllib.error.URLError, ConnectionError):
            assert time.monotonic() < deadline, "the app never came up"
            time.sleep(0.1)
    assert status == 404

    ids = []
    for i in range(20):
        status, body = request("POST", f"{base}/orders?customer_id=c-{i}&total={i + 1}.5")
        assert status == 202, body
        assert body["status"] == "started"
        ids.append(str(body["saga_id"]))
    done: dict[str, dict[str, object]] = {}
    while len(done) < len(ids):
        assert time.monotonic() < deadline + PATIENCE, f"finished {len(done)} of {len(ids)}"
        for sid in ids:
            if sid not in done:
                status, body = request("GET", f"{base}/orders/{sid}")
                if body["status"] == "completed":
                    done[sid] = body
        time.sleep(0.05)
    assert all(isinstance(b["results"], dict) and "confirm" in b["results"] for b in done.values())
    for proc in processes:
        proc.send_signal(signal.SIGTERM)
    app_exit, worker_exit = (proc.wait(timeout=PATIENCE) for proc in processes)
    # uvicorn shuts down gracefully (the lifespan's worker stops), then re-raises
    # the signal it caught, as recent versions do.
    assert app_exit in (0, -signal.SIGTERM) and worker_exit == 0
    engine = SagaEngine(db_url)
    try:
        with engine.store.engine.connect() as conn:
            held = conn.execute(
                sa.text("SELECT count(*) FROM statesaga_sagas WHERE owner IS NOT NULL")
            ).scalar_one()
        assert held == 0, "both processes let go of every saga"
    finally:
        engine.close()
