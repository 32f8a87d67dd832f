"""Waiting sagas across real processes (issue #12): every process is killed with
SIGKILL while the sagas wait, new ones start, signals arrive before and after
the restart (one twice), and every saga ends exactly as its signals say.

Workers are ``python -m tests.waits_child worker`` and the outside world
``python -m tests.waits_child send`` (a webhook handler in a process of its
own); each is started on the test's database (SQLite, or PostgreSQL with
``STATESAGA_TEST_URL``) and always killed when the test ends. Nothing here
asserts a duration: every wait is a poll with a generous bound against hangs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from statesaga import EntryStatus, SagaEngine, SagaStatus, SignalRefused
from statesaga.testing import check_saga
from tests._children import PATIENCE, Children
from tests.waits_child import EFFECTS_ENV, Approval, Deadline


class Processes(Children):
    """The child processes of one test; all are killed when it ends."""

    def __init__(self, url: str, effects: Path) -> None:
        super().__init__()
        self.url = url
        self.env = dict(os.environ, **{EFFECTS_ENV: str(effects)})

    def _start(self, *args: str) -> subprocess.Popen[str]:
        return self.start(["tests.waits_child", *args], self.env)

    def worker(self) -> int:
        """Start a worker; return its pid once it said READY."""
        proc = self._start("worker", self.url)
        poll_until(lambda: "READY" in self.output[proc.pid], "a worker to be ready")
        return proc.pid

    def send(self, *signals: tuple[str | None, str | None, str, str]) -> list[str]:
        """Send (saga id, key, approver, event id) signals from a process of their
        own; its receipts, one line each."""
        proc = self._start("send", self.url, *(json.dumps(s) for s in signals))
        assert proc.wait(timeout=PATIENCE) == 0, self.output[proc.pid]
        self.readers[-1].join(timeout=PATIENCE)
        return self.output[proc.pid]


@pytest.fixture
def processes(db_url: str, tmp_path: Path) -> Iterator[Processes]:
    crew = Processes(db_url, tmp_path)
    try:
        yield crew
    finally:
        crew.kill_all()


def poll_until(done: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + PATIENCE
    while not done():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.05)


def parked(engine: SagaEngine) -> set[str]:
    """The sagas parked at a wait now: waiting, let go."""
    with engine.store.engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT saga_id FROM statesaga_sagas WHERE waiting_for IS NOT NULL "
                "AND owner IS NULL AND status = 'started'"
            )
        )
        return {r[0] for r in rows}


def effects(folder: Path) -> list[tuple[int, str, str, int, str]]:
    """Every handler run every process recorded: (pid, saga, step, attempt, what)."""
    out = []
    for path in sorted(folder.glob("effects-*.log")):
        for line in path.read_text().splitlines():
            pid, saga, stp, attempt, what = line.split(" ", 4)
            out.append((int(pid), saga, stp, int(attempt), what))
    return out


def test_sagas_wait_through_a_sigkill_of_every_process_and_end_as_signalled(
    processes: Processes, new_engine: Callable[..., SagaEngine], tmp_path: Path
) -> None:
    """Twelve sagas wait for an approval, one more for a signal that never comes.
    One saga's approval comes, by key, before it even starts. Four are approved by
    id; at once every worker is SIGKILLed (some of the four may be mid-handler,
    mid-commit or done). With no process running, four more are approved by key
    and one of the first four's approvals is sent again. New workers start; the
    last four are approved from another process, with one of the earlier ones
    repeated. Every saga completes with the approver its first signal named, each
    approval is consumed once and none is left over, each handler of a signal saw
    that signal, and the saga nobody signals gives up and compensates."""
    starter = new_engine()
    starter.register(Approval())
    starter.register(Deadline())
    starter.upgrade()
    ids = [f"a-{i}" for i in range(12)]

    # Before anything runs: the approval of ``early`` arrives, by its key.
    early = processes.send((None, "k-early", "early-bird", "ev-early"))
    assert early == ["ev-early stored=True woken="], early

    first = [processes.worker(), processes.worker()]
    for saga_id in [*ids, "early"]:
        starter.start(Approval, saga_id.removeprefix("a-"), saga_id=saga_id)
    starter.start(Deadline, None, saga_id="deadline")
    poll_until(lambda: set(ids) <= parked(starter), "twelve sagas to park at their wait")

    # Approvals by id, and at once every process dies.
    for i in range(4):
        starter.signal(ids[i], "order.approved", {"by": f"id-{i}"}, event_id=f"ev-{i}")
    processes.kill_all()
    assert all(p.returncode == -signal.SIGKILL for p in processes.procs if p.pid in first)

    # Nobody is running: approvals by key are stored, and a repeat is dropped or
    # refused (its saga may already be past the wait), never consumed twice.
    for i in range(4, 8):
        got = starter.signal_key("order.approved", f"k-{i}", {"by": f"key-{i}"}, event_id=f"ev-{i}")
        assert got.stored
    try:
        again = starter.signal(ids[0], "order.approved", {"by": "again"}, event_id="ev-0")
        assert not again.stored
    except SignalRefused:
        pass

    for _ in range(2):
        processes.worker()
    late = processes.send(
        *[(ids[i], None, f"late-{i}", f"ev-{i}") for i in range(8, 12)],
        (None, "k-5", "again", "ev-5"),
    )
    assert [line.split()[1] for line in late[:4]] == ["stored=True"] * 4, late
    assert late[4].startswith("ev-5 stored=False") or "refused" in late[4], late

    def ended() -> bool:
        return all(starter.get(s).status.is_terminal for s in [*ids, "early", "deadline"])

    poll_until(ended, "every saga to end")

    expected = {ids[i]: f"id-{i}" for i in range(4)}
    expected |= {ids[i]: f"key-{i}" for i in range(4, 8)}
    expected |= {ids[i]: f"late-{i}" for i in range(8, 12)}
    expected["early"] = "early-bird"
    ran = effects(tmp_path)
    for saga_id, by in expected.items():
        run = starter.get(saga_id)
        assert run.status is SagaStatus.COMPLETED, (saga_id, run.error)
        assert run.results["approved"] == by
        assert run.results["close"] == f"closed by {by}"
        history = starter.history(saga_id)
        check_saga(Approval.spec, SagaStatus.COMPLETED, history)
        done = [e for e in history if e.step == "approved" and e.status is EntryStatus.COMPLETED]
        assert len(done) == 1, history
        # A handler cut short by the kill may run again, but only ever on its signal.
        seen = {what for _, s, stp, _, what in ran if s == saga_id and stp == "approved"}
        assert seen == {by}, (saga_id, seen)

    deadline = starter.get("deadline")
    assert deadline.status is SagaStatus.FAILED
    assert "never" in (deadline.error or "")
    history = starter.history("deadline")
    check_saga(Deadline.spec, SagaStatus.FAILED, history)
    assert [e.status for e in history if e.step == "never"][-1] is EntryStatus.TIMED_OUT
    assert any(s == "deadline" and what == "compensated" for _, s, _, _, what in ran)

    # Every approval stored was consumed once, by the saga it was for; none is left.
    assert starter.pending_signals() == []
    with starter.store.engine.connect() as conn:
        consumed = dict(
            conn.execute(sa.text("SELECT event_id, consumed_by FROM statesaga_signals")).all()
        )
    assert consumed == {
        **{f"ev-{i}": ids[i] for i in range(12)},
        "ev-early": "early",
    }
