"""The web console's routes (Starlette's TestClient, no browser): the pages,
what they show, the token, CSRF, the Host check, read-only mode, and stored
text shown inert. The browser test is tests/test_web_browser.py."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest

pytest.importorskip("starlette")
pytest.importorskip("httpx2")  # what starlette.testclient uses

from click.testing import CliRunner
from starlette.testclient import TestClient

import statesaga
from statesaga import SagaEngine, SagaStatus, StateSagaError
from statesaga.cli import main
from statesaga.web import binding_problem, create_app, is_loopback
from tests.web_sagas import HOSTILE, Approval, Hostile

TOKEN = "correct-horse-battery-staple"
LOCAL = "http://127.0.0.1"


@pytest.fixture(autouse=True)
def registered(engine: SagaEngine) -> None:
    """The test's engine knows the test sagas."""
    engine.register(Approval, Hostile)


@pytest.fixture
def console(engine: SagaEngine) -> Iterator[Callable[..., TestClient]]:
    """Make a TestClient on a console over the test's engine (any options of
    ``create_app``); each is closed at the end."""
    made: list[TestClient] = []

    def make(**options: Any) -> TestClient:
        options.setdefault("definitions", [Approval, Hostile])
        client = TestClient(create_app(engine, **options), base_url=LOCAL)
        made.append(client.__enter__())
        return client

    yield make
    for client in made:
        client.__exit__(None, None, None)


def csrf_of(page: str) -> str:
    """The CSRF field of a page's forms."""
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
    assert found, "the page has no CSRF field"
    return found.group(1)


def waiting(engine: SagaEngine, n: int = 1) -> str:
    """Start and run ``n`` Approval sagas to their wait; the last one's id."""
    saga_id = ""
    for i in range(n):
        run = engine.run(Approval, i)
        assert run.status is SagaStatus.STARTED and run.state == "approved"
        saga_id = run.saga_id
    return saga_id


# -- pages -------------------------------------------------------------------


def test_list_shows_sagas_by_status_with_counts_and_filters(
    engine: SagaEngine, console: Callable[..., TestClient]
) -> None:
    """The list counts sagas by status, and filters by status, name and text in
    the error (ignoring case)."""
    waiting(engine, 2)
    failed = engine.run(Hostile, "in").saga_id
    client = console()
    page = client.get("/").text
    assert re.search(r"started <span class=\"count\">2</span>", page)
    assert re.search(r"failed <span class=\"count\">1</span>", page)
    assert re.search(r"all <span class=\"count\">3</span>", page)
    only_failed = client.get("/", params={"status": "failed"}).text
    assert failed in only_failed and "approval@v1" not in only_failed
    by_name = client.get("/", params={"name": "approval"}).text
    assert failed not in by_name and by_name.count("approval@v1") == 2
    by_error = client.get("/", params={"error": "BOLD</B>"}).text
    assert failed in by_error and "approval@v1" not in by_error
    nothing = client.get("/", params={"error": "no such text"}).text
    assert "No sagas match these filters" in nothing


def test_list_pages_through_many_sagas(
    engine: SagaEngine, console: Callable[..., TestClient]
) -> None:
    """Fifty sagas a page, newest first, with a link to the older ones."""
    ids = [engine.start(Approval, i).saga_id for i in range(53)]
    client = console()
    first = client.get("/").text
    assert "1-50 of 53" in first and 'rel="next"' in first
    second = client.get("/", params={"offset": 50}).text
    assert "51-53 of 53" in second and 'rel="prev"' in second and 'rel="next"' not in second
    shown = set(re.findall(r"/saga/([0-9a-f-]+)\"", first + second))
    assert shown == set(ids)


def test_saga_page_shows_its_timeline_path_input_and_results(
    engine: SagaEngine, console: Callable[..., TestClient]
) -> None:
    """A saga's page: status, the state it waits in, the timeline, its path as
    inline SVG, its input and its results; it refreshes itself while it runs."""
    saga_id = waiting(engine)
    page = console().get(f"/saga/{saga_id}").text
    assert "reservation-0" in page  # reserve's result
    assert "Waits for" in page and "<code>approved</code>" in page
    assert "<svg" in page and "</svg>" in page
    assert 'data-poll="1"' in page
    assert page.count('class="entry-') >= 2  # executing, completed, ...


def test_a_finished_saga_does_not_poll(
    engine: SagaEngine, console: Callable[..., TestClient]
) -> None:
    """A saga that ended is shown once: its page does not keep reloading."""
    saga_id = engine.run(Hostile, "x").saga_id
    page = console().get(f"/saga/{saga_id}").text
    assert "data-poll" not in page


def test_a_saga_drawn_without_its_definition(
    engine: SagaEngine, console: Callable[..., TestClient]
) -> None:
    """Without --definitions a saga is drawn over what its log tells, and says so."""
    saga_id = waiting(engine)
    page = console(definitions=[]).get(f"/saga/{saga_id}").text
    assert "<svg" in page and "drawn over what its log tells" in page


def test_unknown_saga_is_404(engine: SagaEngine, console: Callable[..., TestClient]) -> None:
    """A saga id that is not stored is a 404 page."""
    waiting(engine)
    response = console().get("/saga/no-such-saga")
    assert response.status_code == 404 and "no-such-saga" in response.text


def test_definitions_page_draws_each(console: Callable[..., TestClient]) -> None:
    """The definitions page shows each definition given, with its diagram."""
    page = console().get("/definitions").text
    assert "approval" in page and "hostile" in page
    assert page.count("<svg") == 2


def test_hostile_stored_text_is_inert(
    engine: SagaEngine, console: Callable[..., TestClient]
) -> None:
    """Markup, scripts, terminal escapes and invisible characters stored in a
    saga's input, results and error reach the pages escaped: no element of
    theirs, no raw control or bidi character, in the list, the saga's page
    (its timeline and its diagram) or an action's confirmation."""
    saga_id = engine.run(Hostile, HOSTILE).saga_id
    client = console()
    pages = [
        client.get("/").text,
        client.get("/", params={"error": "<script>"}).text,
        client.get(f"/saga/{saga_id}").text,
        client.get(f"/action/cancel/{saga_id}").text,
    ]
    for page in pages:
        assert "<script>document" not in page
        assert "<b>bold" not in page
        assert "<img src=x" not in page
        for raw in ("\x1b", "\u202e", "\u200b", "\r"):
            assert raw not in page
    list_page, _, saga_page, _ = pages
    assert "&lt;script&gt;document.title" in list_page
    assert "&lt;b&gt;bold&lt;/b&gt;" in saga_page
    assert "\\x1b[31mred" in saga_page and "\\u202eevil" in saga_page
    svg = saga_page[saga_page.index("<svg") : saga_page.index("</svg>")]
    assert "<script" not in svg and "onerror" not in svg.replace("onerror=alert", "")


def test_every_response_is_hardened(console: Callable[..., TestClient]) -> None:
    """Pages forbid inline script and framing, and are not cached."""
    response = console().get("/")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["x-content-type-options"] == "nosniff"


def test_other_host_names_are_refused(
    engine: SagaEngine, console: Callable[..., TestClient]
) -> None:
    """On loopback the console answers only loopback names: a page of another
    domain that resolves to 127.0.0.1 (DNS rebinding) gets nothing."""
    waiting(engine)
    client = console()
    assert client.get("/", headers={"host": "evil.example:8080"}).status_code == 421
    assert client.get("/", headers={"host": "localhost:8080"}).status_code == 200
    assert client.get("/", headers={"host": "[::1]:8080"}).status_code == 200


# -- actions -----------------------------------------------------------------


class Recorder:
    """Stands in for an engine's operator method: records its calls."""

    def __init__(self, raises: Exception | None = None) -> None:
        self.calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
        self.raises = raises

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        self.calls.append((args, kwargs))
        if self.raises is not None:
            raise self.raises


def post_action(client: TestClient, action: str, saga_id: str, **form: str) -> tuple[int, str]:
    """Open the action's confirmation, then post it with its CSRF field."""
    confirm = client.get(f"/action/{action}/{saga_id}")
    data = {"csrf": csrf_of(confirm.text), **form}
    response = client.post(f"/action/{action}/{saga_id}", data=data, follow_redirects=False)
    return response.status_code, response.text


def test_an_action_is_confirmed_then_done_with_who_and_why(
    engine: SagaEngine, console: Callable[..., TestClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An action asks for confirmation (and a reason, for cancel), then calls the
    engine with the reason and ``actor='web:NAME'``, and goes back to the saga."""
    saga_id = waiting(engine)
    cancel = Recorder()
    monkeypatch.setattr(engine, "cancel", cancel, raising=False)
    client = console()
    confirm = client.get(f"/action/cancel/{saga_id}")
    assert confirm.status_code == 200 and "compensates" in confirm.text
    status, _ = post_action(client, "cancel", saga_id, reason="")
    assert status == 400 and not cancel.calls  # a reason is required
    status, _ = post_action(client, "cancel", saga_id, reason="customer asked", actor="ann")
    assert status == 303
    assert cancel.calls == [((saga_id, "customer asked"), {"actor": "web:ann"})]


def test_a_refused_action_says_why(
    engine: SagaEngine, console: Callable[..., TestClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engine's refusal (``OperatorRefused``) is shown on the confirmation, as 409."""
    saga_id = waiting(engine)
    refused = getattr(statesaga, "OperatorRefused", None)
    error = (
        refused("pause", saga_id, "it is <paused> already")
        if refused is not None
        else StateSagaError("cannot pause: it is <paused> already")
    )
    monkeypatch.setattr(engine, "pause", Recorder(error), raising=False)
    status, text = post_action(console(), "pause", saga_id)
    assert status == 409 and "&lt;paused&gt; already" in text


def test_an_engine_without_the_action_says_so(
    engine: SagaEngine, console: Callable[..., TestClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An engine that has no such operator method yet is a clear 501, not a crash."""
    saga_id = waiting(engine)
    monkeypatch.setattr(engine, "unpause", None, raising=False)  # as if it had none
    status, text = post_action(console(), "unpause", saga_id)
    assert status == 501 and "has no unpause() yet" in text


def test_an_action_without_the_token_is_refused(
    engine: SagaEngine, console: Callable[..., TestClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a token (as on any non-loopback address), an action without it is
    refused (403) and the engine is not called; a wrong token does not log in;
    the right one does, and then the action goes through."""
    saga_id = waiting(engine)
    cancel = Recorder()
    monkeypatch.setattr(engine, "cancel", cancel, raising=False)
    client = console(token=TOKEN, hosts=None)
    confirm = client.get(f"/action/cancel/{saga_id}").text
    assert "Log in</a> first" in confirm and 'name="reason"' not in confirm
    csrf = csrf_of(client.get("/login").text)
    refused = client.post(
        f"/action/cancel/{saga_id}", data={"csrf": csrf, "reason": "x"}, follow_redirects=False
    )
    assert refused.status_code == 403 and "token" in refused.text
    wrong = client.post("/login", data={"csrf": csrf, "token": "guess"}, follow_redirects=False)
    assert wrong.status_code == 403
    client.cookies.set("statesaga_auth", "forged")
    forged = client.post(
        f"/action/cancel/{saga_id}", data={"csrf": csrf, "reason": "x"}, follow_redirects=False
    )
    assert forged.status_code == 403
    assert not cancel.calls
    client.cookies.delete("statesaga_auth")
    login = client.post(
        "/login",
        data={"csrf": csrf, "token": TOKEN, "next": f"/action/cancel/{saga_id}"},
        follow_redirects=False,
    )
    assert login.status_code == 303 and login.headers["location"] == f"/action/cancel/{saga_id}"
    status, _ = post_action(client, "cancel", saga_id, reason="with the token")
    assert status == 303 and len(cancel.calls) == 1


def test_csrf_is_required(
    engine: SagaEngine, console: Callable[..., TestClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A post without the form's CSRF field, with another cookie's field, or from
    another site's page (``Origin``) is refused, and the engine is not called."""
    saga_id = waiting(engine)
    pause = Recorder()
    monkeypatch.setattr(engine, "pause", pause, raising=False)
    client = console()
    csrf = csrf_of(client.get(f"/action/pause/{saga_id}").text)
    url = f"/action/pause/{saga_id}"
    assert client.post(url, data={}, follow_redirects=False).status_code == 403
    other = console()
    other_csrf = csrf_of(other.get(url).text)
    assert client.post(url, data={"csrf": other_csrf}, follow_redirects=False).status_code == 403
    cross = client.post(
        url, data={"csrf": csrf}, headers={"origin": "https://evil.example"}, follow_redirects=False
    )
    assert cross.status_code == 403
    assert not pause.calls
    same = client.post(url, data={"csrf": csrf}, headers={"origin": LOCAL}, follow_redirects=False)
    assert same.status_code == 303 and len(pause.calls) == 1


def test_read_only_shows_and_takes_no_action(
    engine: SagaEngine, console: Callable[..., TestClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``read_only``: no action buttons, and the action routes refuse (403)."""
    saga_id = waiting(engine)
    cancel = Recorder()
    monkeypatch.setattr(engine, "cancel", cancel, raising=False)
    client = console(read_only=True)
    page = client.get(f"/saga/{saga_id}").text
    assert "/action/" not in page and "read-only" in page
    assert client.get(f"/action/cancel/{saga_id}").status_code == 403
    posted = client.post(f"/action/cancel/{saga_id}", data={"reason": "x"})
    assert posted.status_code == 403 and "--read-only" in posted.text and not cancel.calls


def test_login_never_redirects_elsewhere(console: Callable[..., TestClient]) -> None:
    """``next`` that is not a path on the console goes to ``/`` (no open redirect)."""
    client = console(token=TOKEN)
    csrf = csrf_of(client.get("/login").text)
    for target in ("//evil.example/", "https://evil.example/", "/\\evil.example"):
        response = client.post(
            "/login", data={"csrf": csrf, "token": TOKEN, "next": target}, follow_redirects=False
        )
        assert response.headers["location"] == "/"


def test_real_cancel_compensates(engine: SagaEngine, console: Callable[..., TestClient]) -> None:
    """With the engine's operator API: cancelling a waiting saga from the console
    compensates it (its reservation released), and its page shows that."""
    if not hasattr(engine, "cancel"):
        pytest.skip("engine.cancel is not there yet")
    saga_id = waiting(engine)
    client = console()
    status, _ = post_action(client, "cancel", saga_id, reason="no longer wanted", actor="ops")
    assert status == 303
    engine.recover()
    run = engine.get(saga_id)
    assert run.status is SagaStatus.FAILED
    page = client.get(f"/saga/{saga_id}").text
    assert "compensated" in page and "no longer wanted" in page and "web:ops" in page


# -- where it listens ------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("localhost", True),
        ("::1", True),
        ("[::1]", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.10", False),
        ("console.example", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    """Only loopback addresses (and ``localhost``) count as loopback; a name
    could resolve to anything."""
    assert is_loopback(host) is loopback


def test_binding_rule() -> None:
    """Beyond loopback: a token, or read-only; a short token never."""
    assert binding_problem("127.0.0.1", None, False) is None
    assert "STATESAGA_WEB_TOKEN" in (binding_problem("0.0.0.0", None, False) or "")
    assert binding_problem("0.0.0.0", None, True) is None
    assert binding_problem("0.0.0.0", TOKEN, False) is None
    assert "at least 16" in (binding_problem("127.0.0.1", "short", False) or "")


def test_the_command_refuses_to_listen_beyond_loopback_without_a_token(
    db_url: str, engine: SagaEngine, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """``statesaga web --host 0.0.0.0`` without a token exits 2 and serves
    nothing; with --token-file or --read-only it goes on to serve."""
    waiting(engine)
    served: list[dict[str, Any]] = []
    monkeypatch.setattr(
        "statesaga.cli._web.serve", lambda db, sagas, **kw: served.append(kw), raising=True
    )
    monkeypatch.delenv("STATESAGA_WEB_TOKEN", raising=False)
    runner = CliRunner()
    args = ["web", "--db", db_url, "--host", "0.0.0.0", "--definitions", "tests.web_sagas"]
    refused = runner.invoke(main, args)
    assert refused.exit_code == 2 and "need a token" in refused.output and not served
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    ok = runner.invoke(main, [*args, "--token-file", str(token_file)])
    assert ok.exit_code == 0, ok.output
    assert served[-1]["token"] == TOKEN and served[-1]["host"] == "0.0.0.0"
    read_only = runner.invoke(main, [*args, "--read-only"])
    assert read_only.exit_code == 0 and served[-1]["read_only"] is True
    monkeypatch.setenv("STATESAGA_WEB_TOKEN", "short")
    short = runner.invoke(main, args)
    assert short.exit_code == 2 and "at least 16" in short.output
