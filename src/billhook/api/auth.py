"""Bearer tokens for the `/v1` API: read scope and admin scope (docs/api.md)."""

from __future__ import annotations

import hmac
from collections.abc import Sequence

from starlette.requests import Request

from billhook.api.body import scope_header
from billhook.config import AuthSettings, Secret
from billhook.errors import ApiError


def _matches(presented: bytes, tokens: Sequence[Secret]) -> bool:
    # Compare against every token, without stopping early, so timing says nothing.
    found = False
    for token in tokens:
        found |= hmac.compare_digest(presented, token.reveal().encode())
    return found


class TokenGate:
    """Checks a request's `Authorization: Bearer …` against the configured tokens."""

    def __init__(self, auth: AuthSettings) -> None:
        self._admin = auth.admin_tokens
        self._read = (*auth.api_tokens, *auth.admin_tokens)

    def is_admin(self, token: str) -> bool:
        """Whether `token` is one of the admin tokens (the console's sign-in)."""
        return bool(token) and _matches(token.encode("utf-8", "replace"), self._admin)

    def require(self, request: Request, *, admin: bool = False) -> None:
        """Raise 401 without a known token, 403 for a read token on an admin route."""
        header = scope_header(request.scope, b"authorization") or ""
        scheme, _, token = header.partition(" ")
        presented = token.strip().encode("latin-1")
        if scheme.lower() != "bearer" or not presented or not _matches(presented, self._read):
            raise ApiError(401, "unauthorized", "a valid bearer token is required")
        if admin and not _matches(presented, self._admin):
            raise ApiError(403, "forbidden", "this route needs an admin token")
