"""Who may use the API: the bearer token (``--token``)."""

from __future__ import annotations

import secrets

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

bearer = HTTPBearer(auto_error=False, description="the token the server was started with (--token)")


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
