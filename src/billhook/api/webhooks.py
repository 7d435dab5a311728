"""The webhook receiver: verify, dedupe, append, fsync, then 2xx (docs/api.md).

The handlers raise billhook's own errors; `billhook.api.errors` turns them into the
answers of docs/api.md's webhook table, in one place.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from billhook.api.body import read_limited
from billhook.config import Secret, Settings
from billhook.domain.records import EventRecord
from billhook.errors import ProviderNotConfigured
from billhook.log.committer import GroupCommitter
from billhook.observability.metrics import Metrics
from billhook.observability.telemetry import log_fields
from billhook.providers.polar.webhook import polar_record, verify_polar
from billhook.providers.stripe.webhook import stripe_record, verify_stripe


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
            Route("/stripe", self.stripe, methods=["POST"]),
            Route("/polar", self.polar, methods=["POST"]),
        ]

    async def stripe(self, request: Request) -> Response:
        secrets = self._secrets("stripe")
        body = await self._body(request)
        verify_stripe(
            body,
            request.headers.get("stripe-signature"),
            secrets,
            now=self._now(),
            tolerance_s=self._settings.signature_tolerance_s,
        )
        return await self._append(request, stripe_record(body.decode("utf-8")))

    async def polar(self, request: Request) -> Response:
        secrets = self._secrets("polar")
        body = await self._body(request)
        signed_at = verify_polar(
            body,
            request.headers,
            secrets,
            now=self._now(),
            tolerance_s=self._settings.signature_tolerance_s,
        )
        record = polar_record(body.decode("utf-8"), request.headers["webhook-id"], signed_at)
        return await self._append(request, record)

    def _secrets(self, provider: str) -> tuple[Secret, ...]:
        secrets = self._settings.webhook_secrets(provider)
        if not secrets:
            raise ProviderNotConfigured(f"no webhook secret is configured for {provider}")
        return secrets

    async def _body(self, request: Request) -> bytes:
        return await read_limited(request, self._settings.max_body_bytes)

    async def _append(self, request: Request, record: EventRecord) -> Response:
        fields = log_fields(request.scope)
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
        body = b'{"status":"%s","seq":%d}' % (status.encode(), appended.seq)
        return Response(body, media_type="application/json")
