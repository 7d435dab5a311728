"""The web process: the receiver, the entitlement API and the ops routes (`billhook.api.ops`).

Without Redis it also runs the embedded projector. Every connection it opens
is its own: the receiver's writer, the projector's reader and store, and the
API's read-only store.

It also bounds what a slow or hostile client can hold (`uvicorn_options`):
how long a request's headers and body may take to arrive, how large its
headers may be, and how many connections are open at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Mount, Router
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from billhook.api.checkout import CheckoutRoute
from billhook.api.entitlements import EntitlementApi
from billhook.api.errors import RequestTimeout, exception_handlers
from billhook.api.openapi import OpenApiRoute
from billhook.api.ops import DEFAULT_LAG_BOUNDS, PROBE_BUSY_TIMEOUT_S, LagBounds, Ops
from billhook.api.refresh import RefreshRoute, RemoteRefresh
from billhook.api.webhooks import Receiver
from billhook.config import Settings
from billhook.log.committer import GroupCommitter
from billhook.log.sqlite import Checkpointer, EventLog
from billhook.observability.metrics import Metrics
from billhook.observability.telemetry import RequestTelemetry
from billhook.projections.store import ProjectionStore
from billhook.providers.clients import sources
from billhook.runners.actors import declare
from billhook.runners.broker import RedisWaker, make_broker
from billhook.runners.embedded import EmbeddedProjector, wait_until_projected

logger = logging.getLogger(__name__)

# Most bytes a request line and its headers may take (h11's default is 16 KiB); httptools
# alone buffers any amount. Provider deliveries and API calls send a few hundred.
MAX_HEADER_BYTES = 64 * 1024


def _utcnow() -> datetime:
    return datetime.now(UTC)


def create_app(
    settings: Settings,
    *,
    log: EventLog | None = None,
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
    event_log = log if log is not None else EventLog(settings.events_path)
    log_path: Path = event_log.path
    reader_log = EventLog(log_path)
    # Commits never checkpoint the WAL themselves; a thread with its own connection does.
    event_log.defer_checkpoints()
    checkpointer_log = EventLog(log_path)
    checkpointer = Checkpointer(checkpointer_log)
    probe_log = EventLog(log_path, busy_timeout_s=PROBE_BUSY_TIMEOUT_S)
    # Its rare durable probe must not checkpoint the WAL on the readiness thread either.
    probe_log.defer_checkpoints()
    api_store = ProjectionStore(settings.projections_path, settings)
    metrics = Metrics()
    committer = GroupCommitter(event_log)
    closables: list[EventLog | ProjectionStore] = [
        reader_log,
        checkpointer_log,
        probe_log,
        api_store,
    ]
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
        projector_log = EventLog(log_path)
        projector_store = ProjectionStore(settings.projections_path, settings)
        closables += [projector_log, projector_store]
        background = EmbeddedProjector(projector_log, projector_store, settings)
    receiver = Receiver(settings, committer, now=now, on_appended=background.wake, metrics=metrics)

    async def wait_for(seq: int) -> None:
        await wait_until_projected(api_store, seq, background.wake)

    api = EntitlementApi(
        settings,
        api_store,
        reader_log,
        append=committer.append,
        wait_for=wait_for,
        now=clock,
        on_decision=metrics.count_check,
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
    checkout = CheckoutRoute(
        settings,
        api_store,
        provider_sources,
        append=committer.append,
        wait_for=wait_for,
        now=clock,
        head=reader_log.head_seq,
    )

    ops = Ops(
        metrics,
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
        checkpointer.start()
        try:
            yield
        finally:
            await committer.aclose()
            checkpointer.stop()
            background.stop()
            for closable in [*closables, *provider_sources.values()]:
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
            app=Router([*api.routes, *refresh.routes, *checkout.routes], redirect_slashes=False),
        ),
        *ops.routes,
        *OpenApiRoute(settings).routes,
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


class BodyDeadline:
    """Bounds how long a request's body may take once its headers are in (pure ASGI).

    Each `receive` that waits for more of the body waits at most until
    `timeout_s` after the request reached the app; past that it raises
    RequestTimeout, answered 408 `request_timeout` with `Connection: close`
    (never a 5xx: a webhook sender just retries). Once the body is complete,
    `receive` (then a wait for the disconnect) is not bounded: a slow handler
    is not a slow client. A handler that never reads the body is covered by
    RequestDeadlineProtocol once its answer is sent.
    """

    def __init__(self, app: ASGIApp, timeout_s: float) -> None:
        self._app = app
        self._timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        deadline = asyncio.get_running_loop().time() + self._timeout_s
        body_complete = False

        async def bounded_receive() -> Message:
            nonlocal body_complete
            if body_complete:
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise RequestTimeout(self._timeout_s) from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_complete = True
            return message

        await self._app(scope, bounded_receive, send)


class RequestDeadlineProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with a deadline and a size limit on request headers.

    uvicorn bounds neither: any byte received cancels its keep-alive timer, a
    connection that sends nothing is never timed out, and httptools buffers a
    header of any length. Here a request's line and headers must be complete
    within `timeout_s` of the moment the server starts waiting for them (the
    connection opened, or the previous answer was sent). Past that, a
    connection that sent part of a request is answered 408 `request_timeout`
    and closed; one that sent nothing of a new request (idle, or still
    trickling a body answered early) is closed. Headers over MAX_HEADER_BYTES
    are answered 431 `headers_too_large`. The app sees a request only once its
    headers are in; from then on its body is BodyDeadline's.
    """

    # Seconds a request's headers may take; `bounded_protocol` sets it.
    timeout_s: float = 10.0
    _timer: asyncio.TimerHandle | None = None
    # Bytes read since the current request began, until its headers are complete; else -1.
    _header_bytes = -1

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._wait_for_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_waiting()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._header_bytes < 0 or self.transport.is_closing():
            return
        # Whole reads are counted: the read a request begins in may also end an earlier body.
        self._header_bytes += len(data)
        if self._header_bytes > MAX_HEADER_BYTES:
            detail = f"the request line and headers are over {MAX_HEADER_BYTES} bytes"
            self._refuse(431, "headers_too_large", detail)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_bytes = 0

    def on_headers_complete(self) -> None:
        self._header_bytes = -1
        self._stop_waiting()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        # A queued (pipelined) request already has its headers; otherwise the next is awaited.
        awaits_next = not self.pipeline
        super().on_response_complete()
        if awaits_next and not self.transport.is_closing():
            self._wait_for_headers()

    def _wait_for_headers(self) -> None:
        self._stop_waiting()
        self._timer = self.loop.call_later(self.timeout_s, self._timed_out)

    def _stop_waiting(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _timed_out(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        if self._header_bytes < 0:
            self.transport.close()
            return
        detail = f"the request headers did not arrive within {self.timeout_s:g} s"
        self._refuse(408, "request_timeout", detail)

    def _refuse(self, status: int, error: str, detail: str) -> None:
        """Answer `status` in the app's error shape, outside any app, and close.

        While an earlier (pipelined) request is still being answered, only close:
        bytes written now would land inside that answer.
        """
        logger.info("connection cut", extra={"fields": {"status": status, "error": error}})
        if self.cycle is not None and not self.cycle.response_complete:
            self.transport.close()
            return
        body = json.dumps({"error": error, "detail": detail}).encode()
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n\r\n",
            body,
        ]
        self.transport.write(b"".join(head))
        self.transport.close()


def bounded_protocol(timeout_s: float) -> type[RequestDeadlineProtocol]:
    """RequestDeadlineProtocol with its header deadline set to `timeout_s`."""
    return type("RequestDeadlineProtocol", (RequestDeadlineProtocol,), {"timeout_s": timeout_s})


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """The uvicorn settings that bound slow and numerous clients (`billhook serve` uses them).

    Past `max_connections` open connections uvicorn answers each new request
    503 (plain text) and closes it; the request timeouts keep slow clients
    from holding those places for long.
    """
    return {
        "http": bounded_protocol(settings.request_timeout_s),
        "limit_concurrency": settings.max_connections,
    }
