"""The web process: the receiver, the entitlement API and the ops routes.

Without Redis it also runs the embedded projector. Every connection it opens
is its own: the receiver's writer, the projector's reader and store, and the
API's read-only store.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import redis
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from ingest.committer import GroupCommitter
from ingest.errors import LogUnavailable
from ingest.http import exception_handlers
from ingest.log import Checkpointer, EventLog
from ingest.metrics import Metrics
from ingest.receiver import Receiver
from ingest.settings import Settings
from projections.api import EntitlementApi
from projections.errors import StoreUnavailable
from projections.http import exception_handlers as projection_exception_handlers
from projections.store import PROJECTION_VERSION, ProjectionStore
from worker.actors import declare
from worker.broker import RedisWaker, make_broker
from worker.embedded import EmbeddedProjector, wait_until_projected
from worker.openapi import OpenApiRoute
from worker.providers import sources
from worker.refresh import RefreshRoute, RemoteRefresh

# /readyz fails when projections trail the log head by more than this many events.
READY_MAX_LAG = 1000


def _utcnow() -> datetime:
    return datetime.now(UTC)


async def healthz(request: Request) -> Response:
    """The process is alive and its event loop answers."""
    return JSONResponse({"status": "ok"})


def create_app(
    settings: Settings,
    *,
    log: EventLog | None = None,
    now: Callable[[], float] = time.time,
    clock: Callable[[], datetime] = _utcnow,
) -> Starlette:
    """Build the web app. A `log` passed in stays the caller's to close.

    `now` (Unix seconds) drives signature tolerance; `clock` drives
    entitlement time rules. Tests inject both.
    """
    owns_log = log is None
    event_log = log if log is not None else EventLog(settings.events_path)
    log_path: Path = event_log.path
    reader_log = EventLog(log_path)
    # Commits never checkpoint the WAL themselves; a thread with its own connection does.
    event_log.defer_checkpoints()
    checkpointer_log = EventLog(log_path)
    checkpointer = Checkpointer(checkpointer_log)
    api_store = ProjectionStore(settings.projections_path, settings)
    metrics = Metrics()
    committer = GroupCommitter(event_log)
    closables: list[EventLog | ProjectionStore] = [reader_log, checkpointer_log, api_store]
    broker_ping: Callable[[], object] | None = None
    # With Redis, refreshes run as actors in workers; without, here.
    remote: RemoteRefresh | None = None
    background: EmbeddedProjector | RedisWaker
    if settings.redis_url:
        # Workers project; this process only says "there is new log".
        broker = make_broker(settings.redis_url.reveal())
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

    def observe() -> tuple[int, int]:
        # The reader's connection: the writer's lock is held through each fsync.
        head = reader_log.head_seq()
        seq, skipped, quarantined = api_store.stats()
        metrics.log_head.set(head)
        metrics.projection_seq.set(seq)
        metrics.projection_lag.set(max(head - seq, 0))
        metrics.quarantined.set(quarantined)
        metrics.skipped.set(skipped)
        return head, seq

    async def metrics_route(request: Request) -> Response:
        # When a store cannot be read the counters still answer; gauges keep their last values.
        with contextlib.suppress(LogUnavailable, StoreUnavailable):
            observe()
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def readyz(request: Request) -> Response:
        checks: dict[str, str] = {}
        try:
            head, seq = observe()
            checks["log"] = "ok"
            checks["projections"] = (
                "ok" if head - seq <= READY_MAX_LAG else f"lagging by {head - seq}"
            )
        except LogUnavailable:
            checks["log"] = "unavailable"
        except StoreUnavailable:
            checks["projections"] = "unavailable"
        if broker_ping is not None:
            try:
                await asyncio.to_thread(broker_ping)
                checks["broker"] = "ok"
            except redis.RedisError:
                checks["broker"] = "unavailable"
        ready = all(value == "ok" for value in checks.values())
        body: dict[str, object] = {"status": "ready" if ready else "not_ready", "checks": checks}
        with contextlib.suppress(StoreUnavailable):
            stored = api_store.version()
            if stored != PROJECTION_VERSION:
                # Informational: the old projection keeps serving until the rebuild swaps.
                body["rebuilding"] = {"from_version": stored, "to_version": PROJECTION_VERSION}
        return JSONResponse(body, status_code=200 if ready else 503)

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

    app = Starlette(
        # Two mounts: a request is matched against one prefix, then a handful of routes.
        routes=[
            Mount("/webhooks", routes=receiver.routes),
            Mount("/v1", routes=[*api.routes, *refresh.routes]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics_route, methods=["GET"]),
            *OpenApiRoute(settings).routes,
        ],
        exception_handlers={**exception_handlers(), **projection_exception_handlers()},
        lifespan=lifespan,
    )
    app.state.log = event_log
    app.state.settings = settings
    app.state.metrics = metrics
    return app
