"""The console's routes, on Starlette, rendered server-side with Jinja2.

Pages read; only ``POST /action/...`` writes, through the engine's operator
methods. See ``_security`` for who may post and from where.
"""

from __future__ import annotations

import contextlib
import urllib.parse
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import jinja2
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from statesaga._definition import Saga
from statesaga._engine import SagaEngine
from statesaga._errors import SagaNotFound, StateSagaError
from statesaga._status import SagaStatus
from statesaga.web import _queries, _security
from statesaga.web._pages import ACTIONS, definition_svg, read_saga, when
from statesaga.web._security import AUTH_COOKIE, CSRF_COOKIE, CSRF_FIELD, Guard
from statesaga.web._text import inert, pretty_json, pretty_value

HERE = Path(__file__).parent
#: Every page's Content-Security-Policy: no inline script, nothing from elsewhere.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    # Not "no-referrer": with it Chromium posts forms with "Origin: null".
    (b"referrer-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
]
#: The longest reason and actor name accepted from the form.
MAX_REASON = 2000
MAX_ACTOR = 100


def create_app(
    engine_or_url: SagaEngine | str,
    *,
    token: str | None = None,
    read_only: bool = False,
    definitions: Sequence[type[Saga]] = (),
    hosts: Sequence[str] | None = _security.LOOPBACK_NAMES,
) -> Starlette:
    """The console as an ASGI app.

    Args:
        engine_or_url: the engine to read and act through, or a database URL
            (an engine is then made, and closed when the app shuts down).
        token: when given, operator actions need it (given once at ``/login``,
            kept in a cookie). ``statesaga web`` requires one on any address
            but loopback (``binding_problem``).
        read_only: show no actions, and refuse them.
        definitions: saga classes: drawn on the definitions page, and used to
            draw a saga's whole definition under its path and decode its results.
        hosts: the ``Host`` names the app answers to (any port); ``None``: any.
            The default, loopback names, stops DNS-rebinding pages.

    Returns:
        A Starlette application; serve it with uvicorn (``statesaga web``).
    """
    owned = isinstance(engine_or_url, str)
    engine = SagaEngine(engine_or_url) if isinstance(engine_or_url, str) else engine_or_url
    sagas = list(definitions)
    if sagas:
        engine.register(*sagas)
    console = _Console(engine, Guard(token), read_only, sagas)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if owned:
                engine.close()

    app = Starlette(
        routes=[
            Route("/", console.list_page, name="list"),
            Route("/saga/{saga_id:path}", console.saga_page, name="saga"),
            Route("/definitions", console.definitions_page, name="definitions"),
            Route(
                "/action/{action}/{saga_id:path}",
                console.action,
                methods=["GET", "POST"],
                name="action",
            ),
            Route("/login", console.login, methods=["GET", "POST"], name="login"),
            Route("/logout", console.logout, methods=["POST"], name="logout"),
            Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        ],
        exception_handlers={StateSagaError: console.failure},
        lifespan=lifespan,
    )
    app.add_middleware(_Hardened, hosts=None if hosts is None else tuple(hosts))
    app.state.engine = engine
    return app


def _quote(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,  # every value in every page, whatever the file's name
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        inert=inert, when=when, q=_quote, pretty_json=pretty_json, pretty_value=pretty_value
    )
    return env


class _Console:
    """The route handlers and what they share."""

    def __init__(
        self, engine: SagaEngine, guard: Guard, read_only: bool, sagas: list[type[Saga]]
    ) -> None:
        self.engine = engine
        self.guard = guard
        self.read_only = read_only
        self.sagas = sagas
        self.templates = Jinja2Templates(env=_environment())

    # -- rendering ---------------------------------------------------------

    def render(
        self, request: Request, template: str, status_code: int = 200, **context: Any
    ) -> Response:
        """A page, with what every page needs; sets the CSRF cookie if missing."""
        cookie = request.cookies.get(CSRF_COOKIE)
        fresh = cookie is None
        if cookie is None:
            cookie = self.guard.new_csrf_cookie()
        context.update(
            read_only=self.read_only,
            needs_login=self.guard.needs_login,
            logged_in=self.guard.logged_in(request.cookies.get(AUTH_COOKIE)),
            csrf_field=CSRF_FIELD,
            csrf=self.guard.csrf_field(cookie),
            statuses=[s.value for s in SagaStatus],
        )
        response = self.templates.TemplateResponse(
            request, template, context, status_code=status_code
        )
        if fresh:
            response.set_cookie(CSRF_COOKIE, cookie, httponly=True, samesite="strict")
        return response

    def message(self, request: Request, status_code: int, title: str, text: str) -> Response:
        """A page that only says something (``text`` is shown inert)."""
        return self.render(request, "message.html", status_code, title=title, text=text)

    async def failure(self, request: Request, exc: Exception) -> Response:
        """A statesaga error while reading (no schema, a schema of another version...)."""
        if isinstance(exc, SagaNotFound):
            return self.message(request, 404, "No such saga", str(exc))
        return self.message(request, 503, "The database cannot be read", str(exc))

    # -- pages -------------------------------------------------------------

    async def list_page(self, request: Request) -> Response:
        """Sagas by status, filtered, a page at a time, with counts."""
        filters = _queries.Filters.parse(dict(request.query_params))
        page = await run_in_threadpool(_queries.read_page, self.engine.store, filters)
        names = await run_in_threadpool(_queries.names, self.engine.store)
        end = filters.offset + len(page.rows)
        return self.render(
            request,
            "list.html",
            filters=filters,
            page=page,
            names=names,
            first=filters.offset + 1,
            end=end,
            previous=_link(filters, max(0, filters.offset - _queries.PAGE_SIZE))
            if filters.offset > 0
            else None,
            next=_link(filters, end) if end < page.total else None,
            status_link=lambda status: _link(filters, 0, status=status),
            clear=_link(_queries.Filters(status=filters.status), 0),
            live=any(r.status in (SagaStatus.STARTED, SagaStatus.COMPENSATING) for r in page.rows),
        )

    async def saga_page(self, request: Request) -> Response:
        """One saga: its state, actions, path on the diagram, log, input and results."""
        saga_id = request.path_params["saga_id"]
        view = await run_in_threadpool(read_saga, self.engine, saga_id, self.sagas)
        did = ACTIONS.get(request.query_params.get("did", ""))
        return self.render(request, "saga.html", view=view, did=did)

    async def definitions_page(self, request: Request) -> Response:
        """The definitions the console was given, each with its diagram."""
        drawn = [(s, await run_in_threadpool(definition_svg, s)) for s in self.sagas]
        return self.render(request, "definitions.html", drawn=drawn)

    # -- actions -----------------------------------------------------------

    async def action(self, request: Request) -> Response:
        """``GET``: the confirmation form; ``POST``: do it, then back to the saga."""
        action = ACTIONS.get(request.path_params["action"])
        saga_id: str = request.path_params["saga_id"]
        if action is None:
            return self.message(request, 404, "No such action", "Unknown operator action.")
        if self.read_only:
            return self.message(
                request, 403, "Read-only console", "This console was started with --read-only."
            )
        context: dict[str, Any] = {
            "action": action,
            "saga_id": saga_id,
            "problem": None,
            "reason": "",
        }
        if request.method == "GET":
            return self.render(request, "action.html", **context)
        form = await request.form()
        if not _security.same_origin(
            request.headers.get("origin"), request.headers.get("host"), request.url.scheme
        ) or not self.guard.csrf_ok(request.cookies.get(CSRF_COOKIE), _field(form, CSRF_FIELD)):
            return self.message(
                request,
                403,
                "Refused",
                "The form expired or did not come from this console: reload the page and "
                "try again.",
            )
        if not self.guard.logged_in(request.cookies.get(AUTH_COOKIE)):
            return self.message(
                request,
                403,
                "Refused",
                "Operator actions need the console's token: log in with it first.",
            )
        reason = _field(form, "reason").strip()[:MAX_REASON]
        context["reason"] = reason
        if action.reason and not reason:
            context["problem"] = f"Say why ({action.name} needs a reason)."
            return self.render(request, "action.html", 400, **context)
        name = _field(form, "actor").strip()[:MAX_ACTOR]
        actor = f"web:{name}" if name else "web"
        method = getattr(self.engine, action.name, None)
        if not callable(method):
            context["problem"] = (
                f"This statesaga's engine has no {action.name}() yet: operator actions "
                "need a newer statesaga."
            )
            return self.render(request, "action.html", 501, **context)

        def call() -> None:
            if action.reason:
                method(saga_id, reason, actor=actor)
            else:
                method(saga_id, actor=actor)

        try:
            await run_in_threadpool(call)
        except SagaNotFound as exc:
            return self.message(request, 404, "No such saga", str(exc))
        except StateSagaError as exc:  # OperatorRefused, ConcurrentUpdate, ...
            context["problem"] = str(exc)
            return self.render(request, "action.html", 409, **context)
        return RedirectResponse(f"/saga/{_quote(saga_id)}?did={action.name}", 303)

    # -- the token ---------------------------------------------------------

    async def login(self, request: Request) -> Response:
        """``GET``: the token form; ``POST``: check it, set the session cookie."""
        target = _local(request.query_params.get("next", "/"))
        if not self.guard.needs_login:
            return RedirectResponse(target, 303)
        if request.method == "GET":
            return self.render(request, "login.html", target=target, problem=None)
        form = await request.form()
        if not self.guard.csrf_ok(request.cookies.get(CSRF_COOKIE), _field(form, CSRF_FIELD)):
            return self.render(
                request, "login.html", 403, target=target, problem="The form expired: try again."
            )
        if not self.guard.token_matches(_field(form, "token")):
            return self.render(
                request, "login.html", 403, target=target, problem="That is not the token."
            )
        response = RedirectResponse(_local(_field(form, "next") or target), 303)
        response.set_cookie(
            AUTH_COOKIE, self.guard.session_value(), httponly=True, samesite="strict"
        )
        return response

    async def logout(self, request: Request) -> Response:
        """Forget the session cookie."""
        form = await request.form()
        if not self.guard.csrf_ok(request.cookies.get(CSRF_COOKIE), _field(form, CSRF_FIELD)):
            return self.message(request, 403, "Refused", "The form expired: reload the page.")
        response = RedirectResponse("/", 303)
        response.delete_cookie(AUTH_COOKIE)
        return response


def _field(form: Any, name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


def _local(target: str) -> str:
    """``target`` if it is a path on this console, else ``/`` (no open redirect)."""
    if target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/"


def _link(filters: _queries.Filters, offset: int, **changes: Any) -> str:
    query = filters.query(offset=offset, **changes)
    return "/?" + urllib.parse.urlencode(query) if query else "/"


class _Hardened:
    """Security headers on every response, and the ``Host`` check (see ``_security``)."""

    def __init__(self, app: ASGIApp, hosts: tuple[str, ...] | None) -> None:
        self.app = app
        self.hosts = None if hosts is None else frozenset(h.strip("[]").lower() for h in hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.hosts is not None and _host_name(scope) not in self.hosts:
            response = Response(
                "This console answers only on its own address.", 421, media_type="text/plain"
            )
            await response(scope, receive, self._sending(send))
            return
        await self.app(scope, receive, self._sending(send))

    @staticmethod
    def _sending(send: Send) -> Send:
        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        return sending


def _host_name(scope: Scope) -> str:
    """The name in the request's ``Host`` header, without its port."""
    host = ""
    for key, value in scope.get("headers", []):
        if key == b"host":
            host = value.decode("latin-1").lower()
            break
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.partition(":")[0]
