"""The thin-event follower: a thread that answers Stripe thin events from the API.

It reads the log past its own position (:class:`billhook.sync.thin.ThinSync`),
fetches what new thin events point at and appends the snapshots, on its own
thread: the receiver never waits for a provider call, and a slow or failing
Stripe delays only these snapshots. Woken with the projector; a timer wakes it
too, and drives the retries of failed fetches. Its position is not stored: on
start it reads the log, whose snapshots name the thin events they answer.

Several `billhook worker` processes each run one; a lease in Redis lets only
one of them fetch at a time (the others keep reading the log, ready to take
over), so thin events about one object are still fetched once.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable

import redis

from billhook.config import Settings
from billhook.errors import LogUnavailable
from billhook.providers.stripe.client import StripeSource
from billhook.sync.thin import EventLogPort, StripeObjects, ThinSync

logger = logging.getLogger(__name__)

# How often the follower looks at the log without a wake-up (and retries due fetches).
POLL_INTERVAL_S = 1.0
# Rest after a step that read new log: under load, wake-ups coalesce into one read of
# many events instead of a read (and a thread switch with the receiver) per event.
MIN_GAP_S = 0.05
# The Redis key of the workers' fetching lease, and how long a holder keeps it unrenewed.
LEASE_KEY = "billhook:thin:lease"
LEASE_TTL_S = 30


class RedisLease:
    """Held by one process at a time: true when this one holds it (taken or renewed)."""

    def __init__(self, client: redis.Redis, *, key: str = LEASE_KEY, ttl_s: int = LEASE_TTL_S):
        self._client = client
        self._key = key
        self._ttl_s = ttl_s
        self._token = f"{os.getpid()}-{uuid.uuid4().hex}"

    def __call__(self) -> bool:
        try:
            if self._client.set(self._key, self._token, nx=True, ex=self._ttl_s):
                return True
            if self._client.get(self._key) in (self._token, self._token.encode()):
                self._client.expire(self._key, self._ttl_s)
                return True
        except redis.RedisError:
            pass  # without Redis no one is known to hold it: wait, rather than fetch twice
        return False


def stripe_objects(settings: Settings) -> StripeObjects | None:
    """The Stripe API as thin events need it, or None without an API key."""
    if not settings.stripe.api_key:
        return None
    return StripeSource(settings.stripe.api_key.reveal(), settings.stripe.api_base)


class ThinFollower:
    """Runs :meth:`ThinSync.step` on its own thread whenever woken (and on a timer)."""

    def __init__(
        self,
        log: EventLogPort,
        settings: Settings,
        *,
        source: StripeObjects | None = None,
        interval_s: float = POLL_INTERVAL_S,
        lease: Callable[[], bool] | None = None,
    ) -> None:
        self.sync = ThinSync(log, source if source is not None else stripe_objects(settings))
        self._lease = lease
        self._interval_s = interval_s
        self._wake = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="billhook-thin", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self, seq: int | None = None) -> None:
        """Say there is new log; cheap and safe from any thread."""
        # Once per accepted event: skip the lock `Event.set` takes when the flag is up
        # already (the step after the follower clears it reads the new event anyway).
        if not self._wake.is_set():
            self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stopping:
            self._wake.wait(self._interval_s)
            self._wake.clear()
            if self._stopping:
                return
            position = self.sync.ledger.position
            try:
                if self._lease is not None and not self._lease():
                    self.sync.catch_up()  # another process fetches; keep up with the log
                    self._rest_if_read(position)
                    continue
                step = self.sync.step()
            except LogUnavailable as e:
                logger.warning(
                    "thin", extra={"fields": {"outcome": "unavailable", "error": str(e)}}
                )
                time.sleep(self._interval_s)
                continue
            except Exception as e:  # a bug: keep the thread alive, name the type only
                logger.error(
                    "thin", extra={"fields": {"outcome": "failed", "error": type(e).__name__}}
                )
                time.sleep(self._interval_s)
                continue
            if step.unfetched:
                fields = {"outcome": "no_api_key", "objects": step.unfetched}
                logger.warning("thin", extra={"fields": fields})
            if step.fetched:
                fields = {"outcome": "fetched", "objects": step.fetched, "appended": step.appended}
                logger.info("thin", extra={"fields": fields})
            for failed in step.failed:
                fields = {
                    "outcome": "retrying",
                    "object_type": failed.target.kind,
                    "object_id": failed.target.id,
                    "thin_events": failed.waiting,
                    "error": failed.error,
                }
                logger.warning("thin", extra={"fields": fields})
            self._rest_if_read(position)

    def _rest_if_read(self, position: int) -> None:
        if self.sync.ledger.position != position and not self._stopping:
            time.sleep(MIN_GAP_S)
