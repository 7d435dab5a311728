"""The ops routes, no token: `/healthz`, `/readyz` and `/metrics` (docs/api.md).

`/readyz` answers 200 only when all its checks pass:
- `log`: the event log can be written now. A batch committed within the last
  second shows it; otherwise a dedicated connection takes the write lock and
  lets it go, with a short busy timeout; while the committer's last batch
  failed (a full disk, a read-only filesystem), it instead commits a write
  that touches no event, so readiness returns as soon as the log can take
  writes again, without waiting for a provider's retry.
- `projections`: the projector trails the log head by at most `LagBounds`.
- `broker` (only with Redis configured): Redis answers PING.
Otherwise 503, every failing check named in `failing` and explained in `checks`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import redis
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from billhook.domain.times import to_us
from billhook.errors import LogUnavailable, StoreUnavailable
from billhook.log.backend import Log
from billhook.log.committer import GroupCommitter
from billhook.observability.metrics import Metrics
from billhook.outbound.store import OutboxStore
from billhook.projections.store import PROJECTION_VERSION, ProjectionStore

# How long the readiness probe waits for the log's write lock: a commit holds it for
# milliseconds, so anything longer is someone else holding it.
PROBE_BUSY_TIMEOUT_S = 0.5
# A commit this recent shows the log writable without a probe: under a steady stream
# of deliveries the probe would only contend with the writer for its lock.
RECENT_COMMIT_S = 1.0


@dataclass(frozen=True)
class LagBounds:
    """How far projections may trail the log head and still be ready.

    `events`: events appended but not yet applied. `seconds`: the age of the
    oldest of them (so a stalled projector shows even when few events arrive).
    """

    events: int = 1000
    seconds: float = 60.0


# The bounds a deployment gets: 1,000 events, or an oldest pending event a minute old.
DEFAULT_LAG_BOUNDS = LagBounds()


@dataclass(frozen=True)
class Observation:
    """The log head and the projection's position, as one /metrics or /readyz sees them."""

    head: int
    seq: int
    lag_events: int
    lag_seconds: float


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _age_s(received_at: str | None, now: datetime) -> float:
    if received_at is None:
        return 0.0
    moment = datetime.fromisoformat(received_at)
    return max((now - moment).total_seconds(), 0.0)


async def healthz(request: Request) -> Response:
    """The process is alive and its event loop answers."""
    return JSONResponse({"status": "ok"})


class Ops:
    """Observes the log, the projections and the broker for `/metrics` and `/readyz`.

    `reader` and `store` are read-only uses of connections the app owns;
    `probe` is a connection of the ops routes' own on the log (closed by the
    app), used for nothing but :meth:`~billhook.log.sqlite.EventLog.probe_writable`. `now` must be
    the clock the log stamps `received_at` with (wall time).
    """

    def __init__(
        self,
        metrics: Metrics,
        *,
        reader: Log,
        store: ProjectionStore,
        probe: Log,
        committer: GroupCommitter,
        broker_ping: Callable[[], object] | None = None,
        bounds: LagBounds = DEFAULT_LAG_BOUNDS,
        now: Callable[[], datetime] = _utcnow,
        outbox: OutboxStore | None = None,
    ) -> None:
        self._metrics = metrics
        self._outbox = outbox
        self._reader = reader
        self._store = store
        self._probe = probe
        self._committer = committer
        self._broker_ping = broker_ping
        self._bounds = bounds
        self._now = now

    @property
    def routes(self) -> list[Route]:
        return [
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", self.readyz, methods=["GET"]),
            Route("/metrics", self.metrics, methods=["GET"]),
        ]

    def observe(self) -> Observation:
        """Read positions and set the gauges. Raises LogUnavailable or StoreUnavailable."""
        # The reader's connection: the writer's lock is held through each fsync.
        head = self._reader.head_seq()
        seq, skipped, quarantined = self._store.stats()
        lag_events = max(head - seq, 0)
        lag_seconds = 0.0
        if lag_events:
            lag_seconds = _age_s(self._reader.received_after(seq), self._now())
        m = self._metrics
        m.log_head.set(head)
        m.projection_seq.set(seq)
        m.projection_lag.set(lag_events)
        m.projection_lag_seconds.set(lag_seconds)
        m.quarantined.set(quarantined)
        m.skipped.set(skipped)
        return Observation(head, seq, lag_events, lag_seconds)

    async def metrics(self, request: Request) -> Response:
        # When a store cannot be read the counters still answer; gauges keep their last values.
        # In a thread: a PostgreSQL log or store that is unreachable makes each read wait.
        with contextlib.suppress(LogUnavailable, StoreUnavailable):
            await asyncio.to_thread(self.observe)
        with contextlib.suppress(StoreUnavailable):
            await asyncio.to_thread(self.observe_outbound)
        return Response(generate_latest(self._metrics.registry), media_type=CONTENT_TYPE_LATEST)

    def observe_outbound(self) -> list[str]:
        """Set the outbound gauges; the endpoints marked failing. Raises StoreUnavailable."""
        if self._outbox is None:
            return []
        counts = self._outbox.counts()
        oldest = self._outbox.oldest_pending_us()
        now_us = to_us(self._now())
        self._metrics.outbound_pending.set(counts.get("pending", 0) + counts.get("sending", 0))
        age = 0.0 if oldest is None else max(now_us - oldest, 0) / 1_000_000
        self._metrics.outbound_oldest_pending.set(age)
        health = self._outbox.health()
        return sorted(e for e, h in health.items() if h.failing_since_us is not None)

    async def readyz(self, request: Request) -> Response:
        checks = {
            # In threads: the probe may wait PROBE_BUSY_TIMEOUT_S for the write lock, and
            # an unreachable PostgreSQL makes reads wait; the event loop never does.
            "log": await asyncio.to_thread(self._log_check),
            "projections": await asyncio.to_thread(self._projections_check),
        }
        if self._broker_ping is not None:
            checks["broker"] = await self._broker_check(self._broker_ping)
        failing = sorted(name for name, value in checks.items() if value != "ok")
        body: dict[str, object] = {"status": "not_ready" if failing else "ready", "checks": checks}
        if failing:
            body["failing"] = failing
        with contextlib.suppress(StoreUnavailable):
            # Informational too: a failing endpoint never makes billhook unready to ingest.
            if failing_endpoints := await asyncio.to_thread(self.observe_outbound):
                body["outbound"] = {"failing_endpoints": failing_endpoints}
        with contextlib.suppress(StoreUnavailable):
            stored = await asyncio.to_thread(self._store.version)
            if stored != PROJECTION_VERSION:
                # Informational: the old projection keeps serving until the rebuild swaps.
                body["rebuilding"] = {"from_version": stored, "to_version": PROJECTION_VERSION}
        return JSONResponse(body, status_code=503 if failing else 200)

    def _log_check(self) -> str:
        committer = self._committer
        committed_at = committer.committed_at
        recent = committed_at is not None and time.monotonic() - committed_at < RECENT_COMMIT_S
        if recent and not committer.failing:
            return "ok"
        try:
            self._probe.probe_writable(durable=committer.failing)
        except LogUnavailable as e:
            # SQLite's reason ("database is locked", "database or disk is full"): no paths.
            return f"unavailable: {e}"
        return "ok"

    def _projections_check(self) -> str:
        try:
            seen = self.observe()
        except (LogUnavailable, StoreUnavailable):
            return "unavailable"
        bounds = self._bounds
        if seen.lag_events > bounds.events or seen.lag_seconds > bounds.seconds:
            return f"lagging by {seen.lag_events} events ({seen.lag_seconds:.1f} s)"
        return "ok"

    @staticmethod
    async def _broker_check(ping: Callable[[], object]) -> str:
        try:
            await asyncio.to_thread(ping)
        except redis.RedisError:
            return "unavailable"
        return "ok"
