"""A real crash test: processes running order sagas are killed with SIGKILL.

A child process (``tests/crash_child.py``) recovers what its predecessor left
and starts new order sagas until the test kills it with SIGKILL at a random
moment; this repeats several times, then a last child recovers without being
killed. Every handler call is recorded durably by the child, so after the run
the test compares three independent records -- what the children reported,
the saga log in the database, and the effects the handlers really had -- and
checks that every saga whose creation committed ended terminal, that no
completed step or compensation ran again, that compensations ran in reverse
order, and that each crash cost at most one extra run of the one handler that
was in flight.

Runs on SQLite (a temporary file) and, with ``STATESAGA_TEST_URL`` set, on
PostgreSQL. ``STATESAGA_CRASH_SEED`` replays a run; ``STATESAGA_CRASH_KILLS``
changes the number of kills (default 10).
"""

from __future__ import annotations

import collections
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path

import attrs
import pytest
import sqlalchemy as sa

from definitions.order import OrderSaga
from statesaga import EntryStatus, LogEntry, SagaEngine, SagaSpec, SagaStatus
from statesaga.store import SagaRow
from statesaga.testing import check_saga, format_timeline, outcomes
from tests.crash_child import CLOCK_ENV, PAUSE_ENV, expected_outcomes, plan_for

ROOT = Path(__file__).resolve().parents[1]
KILLS = int(os.environ.get("STATESAGA_CRASH_KILLS", "10"))
#: Seconds a handler sleeps before and after recording its effect.
PAUSE = "0.002"
#: Generous bound on any one wait for a child (it normally takes well under a second).
CHILD_TIMEOUT = 60.0

COMPENSATIONS = frozenset(
    s.compensation.name for s in OrderSaga.spec.steps if s.compensation is not None
)
ENTERED = (EntryStatus.EXECUTING, EntryStatus.COMPENSATING)
SUCCEEDED = (EntryStatus.COMPLETED, EntryStatus.COMPENSATED)

# (saga id, handler, attempt): one invocation of a step or compensation handler.
Attempt = tuple[str, str, int]


@attrs.define
class Child:
    """One child process and what it reported."""

    number: int
    pid: int
    lines: list[str]
    returncode: int
    stderr: str

    def ids(self, word: str) -> list[str]:
        return [line.split()[1] for line in self.lines if line.startswith(word + " ")]


@attrs.frozen
class Kill:
    """One SIGKILL: when it was sent, and the sagas the database held unfinished right after."""

    number: int
    pid: int
    anchor: str
    delay: float
    incomplete: tuple[SagaRow, ...]

    @property
    def begun(self) -> list[Attempt]:
        """The handler invocations recorded as begun and not finished at the kill.

        Sagas recorded by ``start`` and not yet run have attempt 0; a saga whose
        last attempt failed and waits for the next one has its due time set (its
        row keeps the failed attempt's number until the next begins). The child
        drives one saga at a time, so at most one saga may have a begun attempt.
        """
        return [
            (r.saga_id, r.state, r.attempt)
            for r in self.incomplete
            if r.attempt >= 1 and r.due_at is None
        ]

    @property
    def in_flight(self) -> Attempt | None:
        """The handler invocation the kill interrupted, if one had been recorded as begun."""
        return self.begun[0] if self.begun else None


@attrs.frozen
class Effect:
    """One recorded handler call (the child's ``effects`` table)."""

    id: int
    saga_id: str
    handler: str
    attempt: int
    outcome: str
    pid: int


def run_child(
    number: int,
    url: str,
    effects: Path,
    tmp: Path,
    *args: str,
    kill_after: tuple[str, float] | None = None,
) -> Child:
    """Run a child to its end, or kill it ``delay`` seconds after it printed ``anchor``.

    The anchor ``COMPENSATION`` is the first ``CALL`` line of a compensation handler.
    """
    # Child n's clock runs n minutes ahead: each child is a process started after
    # its killed predecessors' leases (30 s) ran out, without waiting for them to.
    env = dict(os.environ, **{PAUSE_ENV: PAUSE, CLOCK_ENV: str(60 * number)})
    errors = tmp / f"child-{number}.err"
    with errors.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.crash_child", url, str(effects), *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
        assert proc.stdout is not None
        stdout = proc.stdout
        lines: list[str] = []
        seen = threading.Event()
        anchor = kill_after[0] if kill_after else None

        def read() -> None:
            for line in stdout:
                lines.append(line.rstrip("\n"))
                if anchor is not None and anchor in (line.strip(), compensation_call(line)):
                    seen.set()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            if kill_after is not None:
                deadline = time.monotonic() + CHILD_TIMEOUT
                while not seen.wait(0.01):
                    if proc.poll() is not None or time.monotonic() > deadline:
                        break
                if seen.is_set():
                    time.sleep(kill_after[1])
                if seen.is_set() and proc.poll() is None:
                    os.kill(proc.pid, signal.SIGKILL)
            returncode = proc.wait(timeout=CHILD_TIMEOUT)
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
        reader.join(timeout=CHILD_TIMEOUT)
        stdout.close()
    child = Child(number, proc.pid, lines, returncode, errors.read_text())
    expected = -signal.SIGKILL if kill_after else 0
    assert child.returncode == expected, (
        f"child {number} ended with {child.returncode}, expected {expected}\n"
        f"stdout tail: {lines[-5:]}\nstderr:\n{child.stderr}"
    )
    assert not child.ids("SKIPPED"), f"child {number} could not resume: {child.lines}"
    return child


def compensation_call(line: str) -> str | None:
    """``COMPENSATION`` if ``line`` reports a call of a compensation handler."""
    parts = line.split()
    if len(parts) == 4 and parts[0] == "CALL" and parts[2] in COMPENSATIONS:
        return "COMPENSATION"
    return None


def wait_for_backends(db: sa.engine.Engine, application_name: str) -> None:
    """Wait until PostgreSQL has finished every session of a killed child.

    A session whose client died rolls back (or, if its COMMIT arrived, commits)
    and ends; only then does the database show what the crash left.
    """
    deadline = time.monotonic() + CHILD_TIMEOUT
    query = sa.text("SELECT count(*) FROM pg_stat_activity WHERE application_name = :name")
    while True:
        with db.connect() as conn:
            if not conn.execute(query, {"name": application_name}).scalar():
                return
        assert time.monotonic() < deadline, "the killed child's sessions did not end"
        time.sleep(0.01)


def read_effects(path: Path) -> list[Effect]:
    db = sqlite3.connect(path)
    try:
        rows = db.execute(
            "SELECT id, saga_id, handler, attempt, outcome, pid FROM effects ORDER BY id"
        ).fetchall()
    finally:
        db.close()
    return [Effect(*row) for row in rows]


def handler_of(spec: SagaSpec, entry: LogEntry) -> str:
    """The step or compensation an entry is about (compensation entries name their step)."""
    if entry.status in (
        EntryStatus.EXECUTING,
        EntryStatus.COMPLETED,
        EntryStatus.RETRYING,
        EntryStatus.FAILED,
    ):
        return entry.step
    comp = spec.step(entry.step).compensation
    assert comp is not None, entry
    return comp.name


def logged_attempts(
    spec: SagaSpec, saga_id: str, history: list[LogEntry]
) -> tuple[dict[Attempt, str | None], list[Attempt]]:
    """Each attempt the log records as begun, in log order, with its outcome.

    The outcome is ``ok``, ``error``, or ``None`` for an attempt a crash cut
    short. Checks the log's own accounting on the way: attempts of a handler
    are numbered 1, 2, 3... in log order; an outcome closes the attempt begun
    just before it; an attempt cut short is followed directly by the next
    attempt of the same handler (the resume re-runs it with a higher number).
    """
    where = f"saga {saga_id}, log:\n{format_timeline(history)}"
    attempts: dict[Attempt, str | None] = {}
    interrupted: list[Attempt] = []
    last: dict[str, int] = {}
    open_: Attempt | None = None
    for entry in history:
        handler = handler_of(spec, entry)
        key = (saga_id, handler, entry.attempt)
        if entry.status in ENTERED:
            assert entry.attempt == last.get(handler, 0) + 1, f"{handler} #{entry.attempt}: {where}"
            if open_ is not None:
                assert open_[1:] == (handler, entry.attempt - 1), (
                    f"{open_} was cut short but {handler} #{entry.attempt} came next: {where}"
                )
                interrupted.append(open_)
            last[handler] = entry.attempt
            attempts[key] = None
            open_ = key
        else:
            assert open_ == key, f"{entry.status.value} of {key}, but {open_} was open: {where}"
            attempts[key] = "ok" if entry.status in SUCCEEDED else "error"
            open_ = None
    assert open_ is None, f"a terminal saga has {open_} still open: {where}"
    return attempts, interrupted


def check_effects(
    saga_id: str,
    attempts: dict[Attempt, str | None],
    effects: list[Effect],
    crashes: dict[Attempt, set[int]],
    history: list[LogEntry],
) -> None:
    """The effects the handlers had agree with the log, crash by crash.

    - every effect belongs to an attempt the log recorded as begun (so no
      handler ran without its attempt being recorded first, and none ran again
      after its step or compensation was recorded done);
    - every attempt the log closed with an outcome had exactly one effect, with
      that outcome;
    - an attempt a crash cut short had at most one effect, made by the killed
      process: one crash, at most one extra run;
    - effects happened in the order the log records the attempts (so the world
      saw the compensations in reverse order too).
    """
    where = f"saga {saga_id}; effects {effects}; log:\n{format_timeline(history)}"
    by_attempt: dict[Attempt, list[Effect]] = collections.defaultdict(list)
    for e in effects:
        by_attempt[(e.saga_id, e.handler, e.attempt)].append(e)
    for key, found in by_attempt.items():
        assert key in attempts, f"{key} had an effect but the log never began it: {where}"
        assert len(found) == 1, f"{key} ran {len(found)} times: {where}"
    for key, outcome in attempts.items():
        found = by_attempt.get(key, [])
        if outcome is not None:
            assert [e.outcome for e in found] == [outcome], f"{key} logged {outcome}: {where}"
        elif found:
            assert found[0].pid in crashes.get(key, set()), (
                f"{key} was cut short, but its effect came from pid {found[0].pid}, "
                f"not from a process killed during it ({crashes.get(key)}): {where}"
            )
    order = [key for key in attempts if key in by_attempt]
    assert [(e.saga_id, e.handler, e.attempt) for e in effects] == order, where
    # The same, counted per handler as the issue puts it: one run per attempt
    # the log closed, plus at most one per crash that hit the handler in flight.
    runs = collections.Counter(e.handler for e in effects)
    closed = collections.Counter(h for (_, h, _), o in attempts.items() if o is not None)
    hit = collections.Counter(h for (s, h, _a) in crashes if s == saga_id)
    for handler, n in runs.items():
        assert n <= closed[handler] + hit[handler], f"{handler} ran {n} times: {where}"
        ok = sum(e.outcome == "ok" for e in effects if e.handler == handler)
        assert ok <= 1 + hit[handler], f"{handler} succeeded {ok} times: {where}"


def snapshot(observer: SagaEngine) -> tuple[SagaRow, ...]:
    """The unfinished sagas, read with no connection left open afterwards."""
    observer.store.ensure_schema()
    rows = tuple(observer.store.incomplete())
    observer.store.engine.dispose()
    return rows


def describe_kill(kill: Kill, child: Child, effects: Iterable[Effect]) -> str:
    flight = kill.in_flight
    waiting = sum(r.attempt == 0 for r in kill.incomplete)
    if flight is None:
        where = "no handler in flight"
    else:
        done = any((e.saga_id, e.handler, e.attempt) == flight for e in effects)
        where = (
            f"in flight: {flight[0]} {flight[1]} #{flight[2]} "
            f"({'after' if done else 'before'} its effect)"
        )
    if not any(line.startswith("RECOVERED ") for line in child.lines):
        phase = "in its recovery"
    elif "READY" not in child.lines:
        phase = "in its first batch"
    else:
        phase = "in new sagas"
    return (
        f"kill {kill.number}: {kill.delay:.3f}s after {kill.anchor}, {phase}, child attempted "
        f"{len(child.ids('ATTEMPT'))} sagas; {len(kill.incomplete)} unfinished at the kill "
        f"({waiting} not yet run); {where}"
    )


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_no_saga_and_keeps_the_invariants(
    db_url: str, new_engine: Callable[..., SagaEngine], tmp_path: Path
) -> None:
    """Killing a process that runs order sagas with SIGKILL, several times at
    random moments (in its recovery, in handlers, in commits, between sagas),
    and recovering in a fresh process, loses no saga and breaks no invariant.

    Proves, whatever moment each kill lands:

    - none lost: every saga a child saw created, and every saga any handler
      ran for, is in the database and terminal; no saga exists that no child
      tried to create; a saga's status never changed after a child saw it end;
    - each saga ends in the status and with the step/compensation outcomes its
      failure plan implies (as if it had never crashed) and passes
      ``check_saga`` (steps in order, compensations in reverse order);
    - the log's attempt numbers grow by one per retry and per resume, and the
      attempts cut short are exactly the ones in flight at the kills;
    - the recorded effects match the log: no completed step or compensation
      ran again, every logged outcome had exactly one effect, and each crash
      cost at most one extra run, of the handler it interrupted.
    """
    seed = int(os.environ.get("STATESAGA_CRASH_SEED") or random.SystemRandom().randrange(2**32))
    print(f"\nSTATESAGA_CRASH_SEED={seed} ({KILLS} kills)")
    rng = random.Random(seed)
    effects_path = tmp_path / "effects.db"
    observer = new_engine()  # reads the database between kills, and at the end
    observer.register(OrderSaga)
    postgres = observer.store.dialect == "postgresql"
    child_url = db_url
    application_name = f"statesaga_crash_{uuid.uuid4().hex[:12]}"
    if postgres:
        child_url = (
            sa.engine.make_url(db_url)
            .update_query_dict({"application_name": application_name})
            .render_as_string(hide_password=False)
        )

    children: list[Child] = []
    kills: list[Kill] = []
    first = 1
    started_at = time.monotonic()
    for number in range(1, KILLS + 1):
        # Where to kill: at a random moment after READY (anywhere in new sagas),
        # early (likely in its recovery), or shortly after a compensation began
        # (in that compensation, its commit, or just after: time spent compensating
        # is too short a share for purely random kills to hit it reliably).
        pick = rng.random()
        if number > 1 and pick < 0.25:
            anchor, delay = "RECOVERING", rng.uniform(0.0, 0.15)
        elif pick < 0.6:
            anchor, delay = "COMPENSATION", rng.uniform(0.0, 0.008)
        else:
            anchor, delay = "READY", rng.uniform(0.0, 0.5)
        child = run_child(
            number,
            child_url,
            effects_path,
            tmp_path,
            "--first",
            str(first),
            kill_after=(anchor, delay),
        )
        children.append(child)
        if postgres:
            wait_for_backends(observer.store.engine, application_name)
        kills.append(Kill(number, child.pid, anchor, delay, snapshot(observer)))
        # Next, retry every saga whose creation this child was not seen to
        # finish (the creation may have committed: start is idempotent), then go on.
        attempted = child.ids("ATTEMPT")
        unconfirmed = sorted(set(attempted) - set(child.ids("STARTED")))
        if unconfirmed:
            first = int(unconfirmed[0].removeprefix("saga-"))
        elif attempted:
            first = int(max(attempted).removeprefix("saga-")) + 1
    last = run_child(KILLS + 1, child_url, effects_path, tmp_path, "--recover-only")
    children.append(last)
    if postgres:
        wait_for_backends(observer.store.engine, application_name)
    elapsed = time.monotonic() - started_at

    effects = read_effects(effects_path)
    for kill, child in zip(kills, children[:-1], strict=True):
        print(describe_kill(kill, child, effects))

    # -- none lost --------------------------------------------------------
    spec = OrderSaga.spec
    rows = {r.saga_id: r for r in observer.store.list(limit=1_000_000)}
    attempted = {sid for c in children for sid in c.ids("ATTEMPT")}
    started = [
        line.split()[1:] for c in children for line in c.lines if line.startswith("STARTED ")
    ]
    assert set(rows) <= attempted, f"sagas no child tried to create: {set(rows) - attempted}"
    missing = {sid for sid, _ in started} - set(rows)
    assert not missing, f"sagas a child saw created are lost: {sorted(missing)}"
    ran = {e.saga_id for e in effects}
    assert ran <= set(rows), f"handlers ran for sagas that are lost: {sorted(ran - set(rows))}"
    created = collections.Counter(sid for sid, how in started if how == "created")
    existing = sum(how == "existing" for _, how in started)
    assert all(n == 1 for n in created.values()), f"created twice: {created.most_common(3)}"
    for c in children:
        for line in c.lines:
            if line.startswith("STARTED ") and line.endswith(" existing"):
                sid = line.split()[1]
                earlier = {s for other in children[: c.number - 1] for s in other.ids("ATTEMPT")}
                assert sid in earlier, f"child {c.number} found {sid} existing, never tried before"
    unfinished = {sid: r.status for sid, r in rows.items() if not SagaStatus(r.status).is_terminal}
    assert not unfinished, f"sagas not terminal after recovery: {unfinished}"
    for c in children:
        for line in c.lines:
            if line.startswith("DONE "):
                _, sid, status = line.split()
                assert rows[sid].status == status, f"{sid} ended {status}, now {rows[sid].status}"
    assert len(kills) == KILLS >= 4, "the test needs several kills"
    ready_rounds = sum(k.anchor == "READY" for k in kills)
    assert len(rows) >= 4 * ready_rounds, "each child killed after READY ran a batch first"

    # -- each saga: outcome, invariants, attempts, effects -----------------
    crashes: dict[Attempt, set[int]] = collections.defaultdict(set)
    for kill in kills:
        assert len(kill.begun) <= 1, f"kill {kill.number}: several sagas in flight: {kill.begun}"
        if kill.in_flight is not None:
            crashes[kill.in_flight].add(kill.pid)
    effects_of: dict[str, list[Effect]] = collections.defaultdict(list)
    for e in effects:
        effects_of[e.saga_id].append(e)
    interrupted: list[Attempt] = []
    statuses: collections.Counter[str] = collections.Counter()
    for sid, row in sorted(rows.items()):
        history = observer.history(sid)
        status = SagaStatus(row.status)
        statuses[status.value] += 1
        check_saga(spec, status, history)
        want_status, want_outcomes = expected_outcomes(spec, plan_for(sid))
        assert (status, outcomes(history)) == (want_status, want_outcomes), (
            f"{sid} with plan {dict(plan_for(sid))}:\n{format_timeline(history)}"
        )
        attempts, cut = logged_attempts(spec, sid, history)
        interrupted.extend(cut)
        check_effects(sid, attempts, effects_of[sid], crashes, history)
    assert sorted(interrupted) == sorted(crashes), (
        "the attempts the log shows cut short are not the ones in flight at the kills: "
        f"log {sorted(interrupted)}, kills {sorted(crashes)}"
    )

    recovered = next(line for line in last.lines if line.startswith("RECOVERED "))
    reruns = sum(
        1 for e in effects if (e.saga_id, e.handler, e.attempt) in crashes and e.outcome == "ok"
    )
    print(
        f"{observer.store.dialect}: {len(rows)} sagas {dict(statuses)}, "
        f"{len(attempted) - len(rows)} never created, {existing} found existing on a retried "
        f"start; {len(effects)} handler calls; "
        f"{len(crashes)} attempts cut short by the {KILLS} kills, {reruns} of them after a "
        f"successful effect (run twice); last child {recovered.lower()}; "
        f"{elapsed:.1f}s"
    )
