"""Who may act, and from where: the operator token, CSRF, the binding rule.

The console's pages only read; its actions (cancel, retry, resolve, pause,
unpause) change sagas, so each is guarded three ways:

* **The token.** When the console has a token, an action needs a session
  cookie that only the token opens (``/login``): the cookie holds an HMAC of
  the token, compared in constant time, ``HttpOnly`` and ``SameSite=Strict``.
  ``binding_problem`` is the rule for when a token is required: on any address
  other than loopback, unless the console is read-only.
* **CSRF.** A double-submit token, signed: a random cookie, and in each form
  an HMAC of it under a secret of this process. A page on another site can
  neither read the cookie nor compute the field; a request whose ``Origin``
  is not the console's own is refused before that.
* **DNS rebinding.** On loopback the console answers only requests addressed
  to a loopback name (``Host``), so a hostile page whose domain resolves to
  127.0.0.1 cannot read it or post to it from the victim's browser.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets

#: The cookie that proves the operator gave the token.
AUTH_COOKIE = "statesaga_auth"
#: The cookie half of the double-submit CSRF token.
CSRF_COOKIE = "statesaga_csrf"
#: The form field that carries the signed half.
CSRF_FIELD = "csrf"
#: The shortest token accepted: a guessable token guards nothing.
MIN_TOKEN_LENGTH = 16
#: The names a loopback console answers to (with any port).
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]", "::1")


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or name to bind) is reachable only from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


def binding_problem(host: str, token: str | None, read_only: bool) -> str | None:
    """Why the console must not listen on ``host``, or ``None`` when it may.

    Beyond loopback anyone who reaches the port can load the pages, so actions
    need a token there; without one the console starts only ``--read-only``.
    """
    if token is not None and len(token) < MIN_TOKEN_LENGTH:
        return (
            f"the token is {len(token)} characters long; use at least {MIN_TOKEN_LENGTH} "
            "(for example: python -c 'import secrets; print(secrets.token_urlsafe())')"
        )
    if is_loopback(host) or read_only or token is not None:
        return None
    return (
        f"--host {host} is reachable from other machines, and operator actions there "
        "need a token: set STATESAGA_WEB_TOKEN or give --token-file FILE, or add --read-only"
    )


class Guard:
    """The console's secrets: the token's session value and the CSRF key."""

    def __init__(self, token: str | None) -> None:
        self.token = token
        # Forms of an earlier process (a restart) no longer validate: reload the page.
        self._csrf_key = secrets.token_bytes(32)

    @property
    def needs_login(self) -> bool:
        """Whether actions need the token's session cookie."""
        return self.token is not None

    def session_value(self) -> str:
        """What the auth cookie holds once the token was given."""
        assert self.token is not None
        return hmac.new(self.token.encode(), b"statesaga web session", hashlib.sha256).hexdigest()

    def token_matches(self, given: str) -> bool:
        """Whether ``given`` is the token (in constant time)."""
        return self.token is not None and hmac.compare_digest(given.encode(), self.token.encode())

    def logged_in(self, cookie: str | None) -> bool:
        """Whether the auth cookie ``cookie`` opens actions (always, without a token)."""
        if self.token is None:
            return True
        return cookie is not None and hmac.compare_digest(cookie, self.session_value())

    @staticmethod
    def new_csrf_cookie() -> str:
        """A fresh random value for the CSRF cookie."""
        return secrets.token_urlsafe(32)

    def csrf_field(self, cookie: str) -> str:
        """The form field that goes with the CSRF cookie ``cookie``."""
        return hmac.new(self._csrf_key, cookie.encode(), hashlib.sha256).hexdigest()

    def csrf_ok(self, cookie: str | None, field: str | None) -> bool:
        """Whether a posted form's field matches its CSRF cookie."""
        if not cookie or not field:
            return False
        return hmac.compare_digest(self.csrf_field(cookie), field)


def same_origin(origin: str | None, host: str | None, scheme: str) -> bool:
    """Whether a request's ``Origin`` (if it sent one) is the console itself."""
    if origin is None:
        return True  # no Origin (old browsers, curl): the CSRF token still decides
    return host is not None and origin == f"{scheme}://{host}"
