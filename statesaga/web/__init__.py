"""The operator console: ``statesaga web``, or ``create_app`` in any ASGI server.

A server-rendered console on Starlette and Jinja2 (the ``web`` extra:
``pip install 'statesaga[web]'``): sagas by status with filters and counts,
one saga's page (its timeline, its path on the diagram, its input, results and
errors, kept up to date while it runs by a few lines of script), the
definitions with their diagrams, and the operator actions (cancel, retry,
resolve, pause, unpause) behind a confirmation form.

Security, in short (``_security`` has the long form):

* it listens on 127.0.0.1 by default and, there, answers only requests
  addressed to a loopback name (no DNS rebinding);
* on any other address ``statesaga web`` refuses to start without a token
  (``STATESAGA_WEB_TOKEN`` or ``--token-file``) unless ``--read-only``; with a
  token, every action needs it, whatever the address;
* every form carries a signed double-submit CSRF token, and a post whose
  ``Origin`` is another site's is refused;
* every stored string is escaped (Jinja autoescape) and shown inert
  (control and invisible characters as escapes); diagrams are re-serialised
  from an allowlist; a Content-Security-Policy forbids inline script;
* ``read_only=True`` shows no actions and refuses them.
"""

from statesaga.web._app import create_app
from statesaga.web._security import binding_problem, is_loopback

__all__ = ["binding_problem", "create_app", "is_loopback"]
