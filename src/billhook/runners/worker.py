"""`billhook worker`: dramatiq actors on Redis, plus catch-up on start and on a timer,
and the dispatcher of entitlement webhooks (billhook.outbound.dispatcher).

The timer makes the log, not Redis, the source of truth: a lost message, a
flushed or restarted Redis only delays projections until the next tick.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from types import FrameType

import dramatiq

from billhook.config import Settings
from billhook.errors import LogUnavailable, StoreUnavailable
from billhook.log.backend import Log, open_log
from billhook.outbound.dispatcher import Dispatcher
from billhook.outbound.store import open_outbox
from billhook.projections.backend import open_live
from billhook.projections.projector import catch_up, log_batch
from billhook.projections.store import ProjectionStore
from billhook.providers.clients import sources
from billhook.runners.actors import PROJECTIONS_QUEUE, REFRESH_QUEUE, Runtime, declare
from billhook.runners.broker import make_broker
from billhook.runners.embedded import fire_due
from billhook.runners.faults import crash_point
from billhook.runners.replay import rebuild_if_outdated
from billhook.runners.thin import RedisLease, ThinFollower

logger = logging.getLogger(__name__)

# How often a worker catches up from the log without being told to.
CATCH_UP_INTERVAL_S = 2.0
# How long an idle dramatiq consumer waits for a message before polling again:
# the wake-up latency after a quiet spell.
WORKER_TIMEOUT_MS = 100


def _catch_up(log: Log, store: ProjectionStore) -> None:
    try:
        catch_up(log, store, on_batch=log_batch)
        # The change feed's changes no event causes: time rules due by now.
        fire_due(log, store, datetime.now(UTC))
    except (LogUnavailable, StoreUnavailable) as e:
        logger.warning("catch-up", extra={"fields": {"outcome": "unavailable", "error": str(e)}})


def run_worker(
    settings: Settings,
    *,
    threads: int = 1,
    interval_s: float = CATCH_UP_INTERVAL_S,
    install_signals: Callable[[Callable[[], None]], None] | None = None,
) -> None:
    """Run until SIGTERM or SIGINT."""
    broker = make_broker(settings.redis_url.reveal())
    dramatiq.set_broker(broker)
    log = open_log(settings)
    store = open_live(settings, before_commit=lambda: crash_point("before_commit"))
    providers = sources(settings)
    declare(broker, Runtime(log=log, store=store, settings=settings, sources=providers))
    stopping = threading.Event()
    (install_signals or _install_signals)(stopping.set)
    rebuild_thread = threading.Thread(
        target=rebuild_if_outdated,
        args=(log, store, settings),
        name="billhook-rebuild",
        daemon=True,
    )
    rebuild_thread.start()
    _catch_up(log, store)
    # worker_timeout: how long an idle consumer blocks before it looks again (default 1 s).
    worker = dramatiq.Worker(
        broker,
        queues={PROJECTIONS_QUEUE, REFRESH_QUEUE},
        worker_threads=threads,
        worker_timeout=WORKER_TIMEOUT_MS,
    )
    worker.start()
    # Stripe thin events: every worker follows the log, the lease holder fetches.
    thin = ThinFollower(log, settings, lease=RedisLease(broker.client))
    thin.start()
    # Entitlement webhooks: every worker dispatches; the outbox's leases keep them apart.
    outbox = open_outbox(settings)
    dispatcher_store = open_live(settings, listen=True)
    dispatcher = Dispatcher(settings, dispatcher_store, outbox)
    dispatcher.start()
    logger.info("worker", extra={"fields": {"outcome": "started", "threads": threads}})
    try:
        while not stopping.wait(interval_s):
            _catch_up(log, store)
    finally:
        dispatcher.stop()
        dispatcher_store.close()
        outbox.close()
        thin.stop()
        worker.stop()
        broker.close()
        for source in providers.values():
            source.close()
        store.close()
        log.close()
        logger.info("worker", extra={"fields": {"outcome": "stopped"}})


def _install_signals(stop: Callable[[], None]) -> None:
    def handle(signum: int, frame: FrameType | None) -> None:
        stop()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
