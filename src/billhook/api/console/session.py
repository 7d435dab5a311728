"""The console's session cookie and CSRF tokens: HMAC-SHA256, no state on the server.

A cookie is `<payload>.<signature>`: the payload is base64url JSON
`{"n": nonce, "a": admin, "e": expiry}`. A visitor gets an anonymous one (for
the sign-in form's CSRF token); signing in with an admin token replaces it
with a new nonce (no fixation) and `a` true. Every form carries
`csrf = HMAC(key, "csrf:" + nonce)`, checked on every POST.

The key is derived from the admin tokens unless one is given: every process
and host with the same config signs alike, a restart keeps sessions, and
rotating or removing an admin token ends every session (docs/console.md).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from billhook.config import Secret

# The session cookie's name.
COOKIE = "billhook_console"
# How long a signed-in session lasts.
SESSION_S = 8 * 3600
# How long an anonymous (signed-out) cookie lasts.
ANONYMOUS_S = 3600
# What the derived key signs for, so it is of no use anywhere else.
KEY_PURPOSE = b"billhook console session v1"


def derive_key(admin_tokens: Sequence[Secret]) -> bytes:
    """The signing key of a deployment: an HMAC of the purpose under every admin token.

    Without admin tokens nobody can sign in; a random key then keeps even the
    anonymous cookies unforgeable."""
    if not admin_tokens:
        return secrets.token_bytes(32)
    material = b"\0".join(t.reveal().encode() for t in admin_tokens)
    return hmac.new(material, KEY_PURPOSE, hashlib.sha256).digest()


@dataclass(frozen=True)
class Session:
    nonce: str
    admin: bool
    expires: int


class Signer:
    """Signs and checks session cookies and CSRF tokens with one key."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def _mac(self, data: bytes) -> str:
        digest = hmac.new(self._key, data, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def new(self, *, admin: bool, now: int) -> Session:
        return Session(
            secrets.token_urlsafe(18), admin, now + (SESSION_S if admin else ANONYMOUS_S)
        )

    def dump(self, session: Session) -> str:
        body = json.dumps({"n": session.nonce, "a": session.admin, "e": session.expires})
        payload = base64.urlsafe_b64encode(body.encode()).rstrip(b"=").decode()
        return f"{payload}.{self._mac(payload.encode())}"

    def load(self, cookie: str | None, *, now: int) -> Session | None:
        """The session a cookie carries; None when absent, forged, malformed or expired."""
        if not cookie or cookie.count(".") != 1:
            return None
        payload, signature = cookie.split(".")
        if not hmac.compare_digest(signature, self._mac(payload.encode())):
            return None
        try:
            raw = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            session = Session(str(raw["n"]), raw["a"] is True, int(raw["e"]))
        except (ValueError, KeyError, TypeError):
            return None
        return session if session.expires > now else None

    def csrf(self, session: Session) -> str:
        return self._mac(b"csrf:" + session.nonce.encode())

    def csrf_ok(self, session: Session, presented: str | None) -> bool:
        return presented is not None and hmac.compare_digest(presented, self.csrf(session))
