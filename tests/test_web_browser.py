"""The web console in a real headless Chromium (the system's, driven by
Playwright; no browser is downloaded): the list, a saga's page with its
diagram, a real cancel that compensates, a page that follows a running saga,
and hostile stored text that stays text.

The console runs as its own process (``statesaga web`` under uvicorn) on a
free port of 127.0.0.1, and is always stopped. Where Chromium or Playwright is
missing the tests skip, unless ``STATESAGA_REQUIRE_BROWSER`` is set (CI): then
they fail. ``STATESAGA_WEB_SCREENSHOTS=docs`` also saves the README's
screenshots there.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from statesaga import EntryStatus, SagaEngine, SagaStatus
from statesaga.examples.order import OrderRequest, OrderSaga
from statesaga.examples.services import FakeServices
from tests.conftest import empty_database
from tests.web_sagas import Approval, Hostile

ROOT = Path(__file__).resolve().parent.parent
REQUIRED = bool(os.environ.get("STATESAGA_REQUIRE_BROWSER"))
#: How long anything in the browser may take before the test fails (ms).
PATIENCE = 20_000


def _chromium() -> str | None:
    given = os.environ.get("STATESAGA_CHROMIUM")
    if given:
        return given
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _missing(what: str) -> None:
    if REQUIRED:
        pytest.fail(f"{what} (STATESAGA_REQUIRE_BROWSER is set)")
    pytest.skip(what)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def sagas(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, SagaEngine, dict[str, str]]]:
    """A database with sagas of every kind, the engine that made them, and
    their ids by role."""
    with empty_database(tmp_path_factory) as url:
        services = FakeServices()
        engine = SagaEngine(url, sleep=lambda _s: None)
        engine.register(OrderSaga(services), Approval, Hostile)
        ids: dict[str, str] = {}
        ids["completed"] = engine.run(OrderSaga, OrderRequest("customer-1", 42.0)).saga_id
        services.fail("inventory.reserve", times=None)
        ids["compensated"] = engine.run(OrderSaga, OrderRequest("customer-2", 99.5)).saga_id
        services.fail("payments.refund", times=None)
        ids["stuck"] = engine.run(OrderSaga, OrderRequest("customer-4", 12.0)).saga_id
        services.heal()
        services.fail("payments.charge", times=2)
        ids["retried"] = engine.run(OrderSaga, OrderRequest("customer-3", 7.25)).saga_id
        ids["hostile"] = engine.run(Hostile, "input").saga_id
        ids["to_cancel"] = engine.run(Approval, "r-1").saga_id
        ids["to_approve"] = engine.run(Approval, "r-2").saga_id
        try:
            yield url, engine, ids
        finally:
            engine.close()


@pytest.fixture(scope="module")
def console(
    sagas: tuple[str, SagaEngine, dict[str, str]], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """``statesaga web`` serving the database on a free port; its base URL."""
    url = sagas[0]
    said = tmp_path_factory.mktemp("console") / "stderr.txt"
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "STATESAGA_WEB_TOKEN"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    command = [sys.executable, "-c", "from statesaga.cli import main; main()", "web"]
    command += ["--db", url, "--definitions", "tests.web_sagas", "--port", str(port)]
    with said.open("wb") as stderr:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=stderr
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:  # until it answers, or exits, or 30 s
            try:
                with urllib.request.urlopen(base + "/definitions", timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError):
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                process.wait(timeout=15)
                pytest.fail(f"the console did not start: {said.read_text(errors='replace')}")
            time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """The system's Chromium, headless, under Playwright."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed (pip install -e '.[dev]')")
    chromium = _chromium()
    if chromium is None:
        _missing("no Chromium on this machine (apt-get install chromium)")
    with sync_playwright() as p:
        args = ["--no-sandbox"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=args)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh browser page, 1280 px wide; dialogs (an ``alert``) are recorded."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(PATIENCE)
    page.dialogs = []
    page.on("dialog", lambda dialog: (page.dialogs.append(dialog.message), dialog.dismiss()))
    try:
        yield page
    finally:
        context.close()


def _screenshot(page: Any, name: str) -> None:
    folder = os.environ.get("STATESAGA_WEB_SCREENSHOTS")
    if folder:
        page.screenshot(path=str(Path(folder) / name), full_page=True)


def test_list_and_a_saga_page(
    console: str, page: Any, sagas: tuple[str, SagaEngine, dict[str, str]]
) -> None:
    """The list shows every saga with its status counts; a link opens a saga's
    page, which shows its path on the diagram as inline SVG."""
    from playwright.sync_api import expect

    ids = sagas[2]
    page.goto(console + "/")
    expect(page.locator("table.sagas tbody tr")).to_have_count(len(ids))
    expect(page.locator("nav.statuses")).to_contain_text("compensation_failed 1")
    _screenshot(page, "web-console-list.png")
    page.get_by_role("link", name=ids["compensated"]).click()
    expect(page.locator("h1 .status")).to_have_text("failed")
    expect(page.locator(".diagram svg g.node").first).to_be_visible()
    expect(page.locator("table.timeline")).to_contain_text("compensated")
    _screenshot(page, "web-console-saga.png")


def test_a_real_cancel_compensates(
    console: str, page: Any, sagas: tuple[str, SagaEngine, dict[str, str]]
) -> None:
    """Cancelling a waiting saga from its page, confirmed with a reason,
    compensates it: its reservation is released and it ends failed."""
    from playwright.sync_api import expect

    _, engine, ids = sagas
    if not callable(getattr(engine, "cancel", None)):
        pytest.skip("this statesaga has no engine.cancel yet")
    page.goto(console + "/?name=approval")
    page.get_by_role("link", name=ids["to_cancel"]).click()
    expect(page.locator("h1 .status")).to_have_text("started")
    expect(page.locator(".diagram svg")).to_be_visible()
    page.get_by_role("link", name="Cancel…").click()
    page.get_by_label("Why").fill("the customer called")
    page.get_by_role("button", name="Cancel this saga").click()
    expect(page.locator(".done")).to_contain_text("Cancel: recorded")
    expect(page.locator("h1 .status")).to_have_text("failed")
    expect(page.locator("table.timeline")).to_contain_text("compensated")
    expect(page.locator("pre.error").first).to_contain_text("the customer called")

    run = engine.get(ids["to_cancel"])
    assert run.status is SagaStatus.FAILED
    undone = [e.step for e in engine.history(run.saga_id) if e.status is EntryStatus.COMPENSATED]
    assert undone == ["reserve"]


def test_a_saga_page_follows_the_saga(
    console: str, page: Any, sagas: tuple[str, SagaEngine, dict[str, str]]
) -> None:
    """A waiting saga's page, left open, shows it complete once it is signalled
    and driven elsewhere: no reload by hand."""
    from playwright.sync_api import expect

    _, engine, ids = sagas
    saga_id = ids["to_approve"]
    page.goto(console + f"/saga/{saga_id}")
    expect(page.locator("h1 .status")).to_have_text("started")
    engine.signal(saga_id, "approved", {"by": "ann"})
    assert engine.resume(saga_id).status is SagaStatus.COMPLETED
    expect(page.locator("h1 .status")).to_have_text("completed")
    expect(page.locator("#live")).not_to_have_attribute("data-poll", "1")


def test_hostile_text_stays_text(
    console: str, page: Any, sagas: tuple[str, SagaEngine, dict[str, str]]
) -> None:
    """Markup and a script stored in a saga's error and results are shown as
    text: nothing runs, no element of theirs is built, escapes are visible."""
    from playwright.sync_api import expect

    ids = sagas[2]
    for path in ("/", f"/saga/{ids['hostile']}"):
        page.goto(console + path)
        expect(page.locator("main")).to_contain_text("<script>document.title='pwned'</script>")
        assert page.title() != "pwned"
        assert (
            page.evaluate("document.querySelectorAll('main b, main img, main script').length") == 0
        )
    expect(page.locator("main")).to_contain_text("\\x1b[31mred")
    expect(page.locator("main")).to_contain_text("\\u202eevil")
    assert page.dialogs == []
