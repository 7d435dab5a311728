"""The embedded projector: the default when no Redis is configured.

A thread in the web process applies new log events to `projections.db`. The
receiver wakes it after each commit; a timer wakes it too, so nothing depends
on a wake-up arriving.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from billhook.config import Settings
from billhook.domain.times import iso_to_us, to_us
from billhook.errors import LogUnavailable, StoreUnavailable
from billhook.log.backend import Log
from billhook.projections.projector import catch_up, log_batch
from billhook.projections.store import ProjectionStore
from billhook.runners.replay import rebuild_if_outdated
from billhook.runners.thin import ThinFollower

logger = logging.getLogger(__name__)


def _utcnow() -> datetime:
    return datetime.now(UTC)


# How often the projector looks at the log even without a wake-up.
POLL_INTERVAL_S = 1.0
# Rest between two catch-ups that found work: under load, wake-ups coalesce into
# larger batches (fewer transactions, fewer thread switches with the receiver).
MIN_GAP_S = 0.01
# How long an admin write waits to see itself projected before answering anyway.
WAIT_FOR_TIMEOUT_S = 5.0


class EmbeddedProjector:
    """Runs `catch_up` on its own thread whenever woken."""

    def __init__(
        self,
        log: Log,
        store: ProjectionStore,
        settings: Settings,
        *,
        interval_s: float = POLL_INTERVAL_S,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        """`clock`: when time rules fire (the change feed's changes no event causes)."""
        self._log = log
        self._clock = clock
        self._settings = settings
        self._store = store
        self._interval_s = interval_s
        self._wake = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="billhook-projector", daemon=True)
        # Stripe thin events are answered from the API on a thread of their own.
        self._thin = ThinFollower(log, settings)

    def start(self) -> None:
        self._thread.start()
        self._thin.start()

    def wake(self, seq: int | None = None) -> None:
        """Say there is new log; cheap and safe from any thread."""
        # Called once per accepted event. `Event.set` takes a lock and notifies even when
        # the flag is up already; then the projector has not cleared it yet, and the
        # catch-up that follows its clearing reads this event (committed before the call).
        if not self._wake.is_set():
            self._wake.set()
        self._thin.wake()

    def stop(self) -> None:
        self._thin.stop()
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        try:
            rebuild_if_outdated(self._log, self._store, self._settings)
        except (LogUnavailable, StoreUnavailable) as e:
            logger.warning(
                "projector", extra={"fields": {"outcome": "rebuild_failed", "error": str(e)}}
            )
        while not self._stopping:
            self._wake.wait(self._interval_s)
            self._wake.clear()
            try:
                result = catch_up(self._log, self._store, on_batch=log_batch)
                fire_due(self._log, self._store, self._clock())
            except (LogUnavailable, StoreUnavailable) as e:
                logger.warning(
                    "projector", extra={"fields": {"outcome": "unavailable", "error": str(e)}}
                )
                time.sleep(self._interval_s)
                continue
            except Exception as e:  # a bug: the batch rolled back; keep the thread alive
                # The type only: a message may quote a payload. Lag and /readyz show the stall.
                logger.error(
                    "projector", extra={"fields": {"outcome": "failed", "error": type(e).__name__}}
                )
                time.sleep(self._interval_s)
                continue
            if result.applied or result.skipped or result.quarantined:
                time.sleep(MIN_GAP_S)


def fire_due(log: Log, store: ProjectionStore, now: datetime) -> int:
    """Fire the time rules due by `now`, or by just before the first event not yet
    projected was received (a replay fires those while applying that event, at the same
    position). Cheap when nothing is due: one read."""
    due = store.next_timer()
    if due is None or due > to_us(now):
        return 0
    until = to_us(now)
    pending = log.received_after(store.checkpoint())
    if pending is not None:
        until = min(until, iso_to_us(pending) - 1)
    return store.fire_due(until) if due <= until else 0


async def wait_until_projected(store: ProjectionStore, seq: int, wake: Callable[[], None]) -> None:
    """Return once `store` has applied `seq`, or after a bounded wait."""
    wake()
    deadline = time.monotonic() + WAIT_FOR_TIMEOUT_S
    while store.checkpoint() < seq and time.monotonic() < deadline:
        await asyncio.sleep(0.002)
