"""The webhook receiver: verify, dedupe, append, fsync, then 2xx (docs/api.md).

The handlers raise billhook's own errors; `billhook.api.errors` turns them into the
answers of docs/api.md's webhook table, in one place (the app's exception
middleware, which sees whatever a route raises).

The two routes are pure ASGI endpoints: a delivery is the hottest request
billhook serves, and Starlette's request/response wrapping (a Request, a
Response, a per-request exception wrapper) cost the event loop about a tenth
of its time per delivery (issue #17).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from starlette.datastructures import Headers
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from billhook.api.body import receive_limited, scope_header
from billhook.config import Secret, Settings
from billhook.domain.records import EventRecord
from billhook.errors import ProviderNotConfigured
from billhook.log.committer import GroupCommitter
from billhook.observability.metrics import Metrics
from billhook.observability.telemetry import log_fields
from billhook.providers.polar.webhook import polar_record, verify_polar
from billhook.providers.stripe.webhook import stripe_record, verify_stripe

# The headers of every answer the receiver gives itself (its errors are the app's).
_JSON = (b"content-type", b"application/json")


class Receiver:
    """`POST /webhooks/stripe` and `POST /webhooks/polar`.

    `now` gives Unix seconds for the signature tolerance; `on_appended` is
    called with the new head seq after each accepted event (the projector's
    wake-up).
    """

    def __init__(
        self,
        settings: Settings,
        committer: GroupCommitter,
        *,
        now: Callable[[], float] = time.time,
        on_appended: Callable[[int], None] | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._settings = settings
        self._committer = committer
        self._now = now
        self._on_appended = on_appended
        self._live = settings.mode == "live"
        self._metrics = metrics

    @property
    def routes(self) -> list[Route]:
        """Routes relative to `/webhooks` (the app mounts them there)."""
        return [
            Route("/stripe", Endpoint(self.stripe), methods=["POST"]),
            Route("/polar", Endpoint(self.polar), methods=["POST"]),
        ]

    async def stripe(self, scope: Scope, receive: Receive) -> bytes:
        secrets = self._secrets("stripe")
        body = await self._body(scope, receive)
        verify_stripe(
            body,
            scope_header(scope, b"stripe-signature"),
            secrets,
            now=self._now(),
            tolerance_s=self._settings.signature_tolerance_s,
        )
        return await self._append(scope, stripe_record(body.decode("utf-8")))

    async def polar(self, scope: Scope, receive: Receive) -> bytes:
        secrets = self._secrets("polar")
        body = await self._body(scope, receive)
        headers = Headers(scope=scope)
        signed_at = verify_polar(
            body,
            headers,
            secrets,
            now=self._now(),
            tolerance_s=self._settings.signature_tolerance_s,
        )
        record = polar_record(body.decode("utf-8"), headers["webhook-id"], signed_at)
        return await self._append(scope, record)

    def _secrets(self, provider: str) -> tuple[Secret, ...]:
        secrets = self._settings.webhook_secrets(provider)
        if not secrets:
            raise ProviderNotConfigured(f"no webhook secret is configured for {provider}")
        return secrets

    async def _body(self, scope: Scope, receive: Receive) -> bytes:
        return await receive_limited(scope, receive, self._settings.max_body_bytes)

    async def _append(self, scope: Scope, record: EventRecord) -> bytes:
        """Append `record`; the body of the 200 answer."""
        fields = log_fields(scope)
        fields.update(provider=record.provider, type=record.type, event_id=record.event_id)
        appended = await self._committer.append(record)
        status = "duplicate" if appended.duplicate else "accepted"
        fields.update(outcome=status, seq=appended.seq)
        if record.livemode is not None and bool(record.livemode) != self._live:
            fields["mode_mismatch"] = True
        if self._metrics is not None:
            self._metrics.webhooks.labels(record.provider, status).inc()
        if not appended.duplicate and self._on_appended is not None:
            self._on_appended(appended.seq)
        # Rendered by hand: this is the hottest answer billhook gives.
        return b'{"status":"%s","seq":%d}' % (status.encode(), appended.seq)


class Endpoint:
    """A pure ASGI app that answers 200 with the JSON body `handle` returns.

    Whatever `handle` raises goes up to the app's exception middleware, which
    answers it exactly as it would a Starlette endpoint's error.
    """

    def __init__(self, handle: Callable[[Scope, Receive], Awaitable[bytes]]) -> None:
        self._handle = handle

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await self._handle(scope, receive)
        headers = [(b"content-length", b"%d" % len(body)), _JSON]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
