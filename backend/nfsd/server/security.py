"""Who may use the API: the bearer token (``--token``), and never a web page in the artist's browser.

A server on 127.0.0.1 is reachable from every page the browser opens. Two guards close that:

- DNS rebinding: a page on ``evil.example`` whose name later resolves to 127.0.0.1 sends requests
  with ``Host: evil.example``. Only loopback names and addresses, the ``--host`` the server listens on
  and ``--allow-host`` names are accepted (421 otherwise).
- Cross-site requests: a page may POST a form to any address (a CORS "simple request"). Requests that
  change state (not GET/HEAD/OPTIONS) with an ``Origin`` other than the server's own, or
  ``Sec-Fetch-Site: cross-site``, get 403. Clients that send neither header (the add-on, curl,
  Python) are not browsers and pass. No CORS headers are ever sent, so pages cannot read answers.
"""

from __future__ import annotations

import ipaddress
import secrets
import urllib.parse

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.responses import JSONResponse

from ..limits import quote
from .config import ServerConfig, is_loopback_host

bearer = HTTPBearer(auto_error=False, description="the token the server was started with (--token)")

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::"})


def token_ok(request: Request, credentials: HTTPAuthorizationCredentials | None) -> bool:
    """True when the server has no token, or the request carries it (compared in constant time)."""
    expected = request.app.state.config.token
    if not expected:
        return True
    given = credentials.credentials.encode() if credentials else b""
    return secrets.compare_digest(given, expected.encode())


def require_token(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
    """The dependency of every route but ``GET /health``: 401 without the server's token."""
    if not token_ok(request, credentials):
        raise HTTPException(401, "missing or wrong token: send 'Authorization: Bearer <token>' with the token "
                                 "the server was started with (--token)",
                            headers={"WWW-Authenticate": "Bearer"})


def _hostname(netloc: str) -> str | None:
    """``"Example.com:7870"`` -> ``"example.com"``, ``"[::1]:7870"`` -> ``"::1"``; None when malformed."""
    try:
        parts = urllib.parse.urlsplit("//" + netloc)
        parts.port  # noqa: B018 -- raises ValueError on a bad port
    except ValueError:
        return None
    return parts.hostname if parts.hostname and not parts.username and not parts.path else None


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


class BrowserGuard:
    """ASGI middleware: 421 for a ``Host`` that is not a name of this server, 403 for a cross-site
    state-changing request (see the module's docstring). Runs before routing and token checks."""

    def __init__(self, app, config: ServerConfig):
        self.app = app
        self.names = {n.lower().strip("[]") for n in config.allow_hosts}
        listen = config.host.lower().strip("[]")
        if listen not in WILDCARD_HOSTS:
            self.names.add(listen)
        # Listening on every interface: the machine's own addresses are valid names. An address is
        # never a rebinding vector (rebinding needs a name the attacker controls).
        self.any_address = listen in WILDCARD_HOSTS or not is_loopback_host(listen)

    def host_allowed(self, host: str) -> bool:
        name = _hostname(host)
        if name is None:
            return False
        return is_loopback_host(name) or name in self.names or (self.any_address and _is_ip(name))

    def refusal(self, scope) -> tuple[int, str] | None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get("host")
        if host is not None and not self.host_allowed(host):
            return 421, (f"this server does not answer to the name {quote(host)}: use http://127.0.0.1:<port>, "
                         "or start it with --allow-host NAME to be reached by that name")
        if scope["method"] in SAFE_METHODS:
            return None
        if headers.get("sec-fetch-site", "").lower() == "cross-site":
            return 403, "cross-site request refused: web pages may not drive this server"
        origin = headers.get("origin")
        if origin is not None:
            parts = urllib.parse.urlsplit(origin)
            if parts.scheme not in ("http", "https") or host is None or parts.netloc.lower() != host.lower():
                return 403, (f"request from the web page {quote(origin)} refused: web pages may not drive this "
                             "server (clients other than browsers send no Origin header)")
        return None

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            refused = self.refusal(scope)
            if refused is not None:
                status, detail = refused
                await JSONResponse({"detail": detail}, status_code=status)(scope, receive, send)
                return
        await self.app(scope, receive, send)
