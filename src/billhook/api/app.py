"""The web process: the receiver, the entitlement API and the ops routes (`billhook.api.ops`).

Without Redis it also runs the embedded projector. Every connection it opens
is its own: the receiver's writer, the projector's reader and store, and the
API's read-only store.

What a slow or hostile client may hold is bounded in `billhook.api.deadlines`:
the body's deadline is a middleware here, the headers' is uvicorn's protocol.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Mount, Router

from billhook.api.admin import AdminReports
from billhook.api.changes import ChangeFeed
from billhook.api.checkout import CheckoutRoute
from billhook.api.console import Console
from billhook.api.deadlines import BodyDeadline
from billhook.api.endpoints import OutboundAdmin
from billhook.api.entitlements import EntitlementApi
from billhook.api.errors import exception_handlers
from billhook.api.impact import DEFAULT_RETENTION_DAYS, ImpactRecorder
from billhook.api.openapi import OpenApiRoute
from billhook.api.ops import DEFAULT_LAG_BOUNDS, PROBE_BUSY_TIMEOUT_S, LagBounds, Ops
from billhook.api.refresh import BackgroundRefresh, RefreshRoute, RemoteRefresh
from billhook.api.webhooks import Receiver
from billhook.config import Settings
from billhook.log.backend import Log, open_log
from billhook.log.committer import GroupCommitter
from billhook.log.sqlite import DEFAULT_BUSY_TIMEOUT_S, Checkpointer, EventLog
from billhook.observability.metrics import Metrics
from billhook.observability.telemetry import RequestTelemetry
from billhook.outbound.dispatcher import Dispatcher
from billhook.outbound.store import OutboxStore, open_outbox
from billhook.projections.backend import open_live
from billhook.projections.impact import open_impact
from billhook.projections.store import ProjectionStore
from billhook.providers.clients import sources
from billhook.runners.actors import declare
from billhook.runners.broker import RedisWaker, make_broker
from billhook.runners.embedded import EmbeddedProjector, wait_until_projected

logger = logging.getLogger(__name__)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def create_app(
    settings: Settings,
    *,
    log: Log | None = None,
    now: Callable[[], float] = time.time,
    clock: Callable[[], datetime] = _utcnow,
    ready_bounds: LagBounds = DEFAULT_LAG_BOUNDS,
) -> Starlette:
    """Build the web app. A `log` passed in stays the caller's to close.

    `now` (Unix seconds) drives signature tolerance; `clock` drives
    entitlement time rules. Tests inject both. `ready_bounds`: how far
    projections may trail the log before `/readyz` fails.
    """
    # First, before any file is opened: an unusable Redis URL stops the start (ConfigError).
    broker = make_broker(settings.redis_url.reveal()) if settings.redis_url else None
    owns_log = log is None
    event_log = log if log is not None else open_log(settings)
    reader_log, probe_log, checkpointer = _companions(event_log, settings)
    api_store = open_live(settings, listen=True)
    metrics = Metrics()
    # Checks are reads, not log events: their counts live beside the projection, not in it.
    impact_store = open_impact(settings)
    impact = ImpactRecorder(impact_store, clock=clock, retention_days=DEFAULT_RETENTION_DAYS)
    committer = GroupCommitter(event_log)
    # Entitlement webhooks: their outbox, and (without Redis) their dispatcher here.
    outbox = open_outbox(settings)
    dispatcher: Dispatcher | None = None
    closables: list[Log | ProjectionStore | OutboxStore] = [reader_log, probe_log, api_store]
    broker_ping: Callable[[], object] | None = None
    # With Redis, refreshes run as actors in workers; without, here.
    remote: RemoteRefresh | None = None
    background: EmbeddedProjector | RedisWaker
    if broker is not None:
        # Workers project; this process only says "there is new log".
        actors = declare(broker, runtime=None)
        background = RedisWaker(broker.client, actors.project.send, on_sent=metrics.wakeups.inc)
        broker_ping = broker.client.ping
        remote = RemoteRefresh(send=actors.refresh.send, client=broker.client)
    else:
        projector_log = _another(event_log, settings)
        projector_store = open_live(settings)
        closables += [projector_log, projector_store]
        background = EmbeddedProjector(projector_log, projector_store, settings, clock=clock)
        dispatcher_store = open_live(settings, listen=True)
        closables.append(dispatcher_store)
        dispatcher = Dispatcher(settings, dispatcher_store, outbox, metrics=metrics)
    receiver = Receiver(settings, committer, now=now, on_appended=background.wake, metrics=metrics)

    async def wait_for(seq: int) -> None:
        await wait_until_projected(api_store, seq, background.wake)

    def on_decision(workspace: str, action: str, decision: str, reason: str | None) -> None:
        metrics.count_check(decision, reason)
        impact.record(workspace, action, decision, reason)

    api = EntitlementApi(
        settings,
        api_store,
        reader_log,
        append=committer.append,
        wait_for=wait_for,
        now=clock,
        on_decision=on_decision,
        # A time rule flagged the answer: the provider's closing or renewal event was missed.
        on_flagged=lambda workspace: background_refresh(workspace),
    )

    provider_sources = sources(settings)
    refresh = RefreshRoute(
        settings,
        api_store,
        provider_sources,
        append=committer.append,
        wait_for=wait_for,
        answer=api.current_body,
        now=clock,
        head=reader_log.head_seq,
        remote=remote,
    )
    background_refresh = BackgroundRefresh(refresh.in_background)
    checkout = CheckoutRoute(
        settings,
        api_store,
        provider_sources,
        append=committer.append,
        wait_for=wait_for,
        now=clock,
        head=reader_log.head_seq,
    )

    feed = ChangeFeed(settings, api_store)
    admin = AdminReports(
        settings,
        api_store,
        reader_log,
        impact_store,
        now=clock,
        retention_days=impact.retention_days,
    )
    console = Console(
        settings, api, api_store, admin, append=committer.append, wait_for=wait_for, now=clock
    )
    outbound_admin = OutboundAdmin(
        settings, api_store, outbox, append=committer.append, wait_for=wait_for, now=clock
    )
    ops = Ops(
        metrics,
        outbox=outbox,
        reader=reader_log,
        store=api_store,
        probe=probe_log,
        committer=committer,
        broker_ping=broker_ping,
        bounds=ready_bounds,
    )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        background.start()
        if dispatcher is not None:
            dispatcher.start()
        impact.start()
        if checkpointer is not None:
            checkpointer.start()
        try:
            yield
        finally:
            await committer.aclose()
            if checkpointer is not None:
                checkpointer.stop()
                checkpointer.log.close()
            background.stop()
            if dispatcher is not None:
                dispatcher.stop()
            impact.stop()
            impact_store.close()
            for closable in [*closables, outbox, *provider_sources.values()]:
                closable.close()
            if owns_log:
                event_log.close()

    # Two mounts: a request is matched against one prefix, then a handful of routes.
    # No router redirects a near miss (`/webhooks/stripe/`): Starlette would build the
    # Location from the caller's Host header. A path no route serves is a 404.
    routes = [
        Mount("/webhooks", app=Router(receiver.routes, redirect_slashes=False)),
        Mount(
            "/v1",
            app=Router(
                [
                    *api.routes,
                    *refresh.routes,
                    *checkout.routes,
                    *feed.routes,
                    *admin.routes,
                    *outbound_admin.routes,
                ],
                redirect_slashes=False,
            ),
        ),
        *ops.routes,
        *OpenApiRoute(settings).routes,
        # HTML for people, outside the API document (the console's app hides its routes).
        Mount("/console", app=console.app),
    ]
    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(RequestTelemetry, metrics=metrics, routes=routes),
            Middleware(BodyDeadline, timeout_s=settings.request_timeout_s),
        ],
        exception_handlers=exception_handlers(),
        lifespan=lifespan,
    )
    app.router.redirect_slashes = False
    app.state.log = event_log
    app.state.settings = settings
    app.state.metrics = metrics
    return app


def _another(
    log: Log, settings: Settings, *, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S
) -> Log:
    """A connection of its own to the same log as `log` (which a test may have passed in)."""
    if isinstance(log, EventLog):
        return EventLog(log.path, busy_timeout_s=busy_timeout_s)
    return open_log(settings, busy_timeout_s=busy_timeout_s)


def _companions(log: Log, settings: Settings) -> tuple[Log, Log, Checkpointer | None]:
    """The API's reader of `log`, the readiness probe's, and SQLite's WAL checkpointer."""
    reader = _another(log, settings)
    probe = _another(log, settings, busy_timeout_s=PROBE_BUSY_TIMEOUT_S)
    if not isinstance(log, EventLog):
        return reader, probe, None
    # Commits never checkpoint the WAL themselves; a thread with its own connection does.
    log.defer_checkpoints()
    # The probe's rare durable write must not checkpoint the WAL on the readiness thread either.
    probe.defer_checkpoints()
    return reader, probe, Checkpointer(EventLog(log.path))
