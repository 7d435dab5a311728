"""dramatiq on Redis: the broker, and the coalesced wake-up the receiver sends.

The log is the queue: a message only says "there is new log". At most one
wake-up is pending per projection: the receiver sets a Redis key with NX
before sending, and the actor deletes it before catching up, so an event that
arrives during a catch-up sends the next message. Dramatiq with Redis moves
only a few thousand messages a second; the receiver takes more events than
that, so one message per event would be the bottleneck.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.errors import DramatiqError

from billhook.config import redis_url_problem
from billhook.errors import ConfigError

logger = logging.getLogger(__name__)

# dramatiq's key prefix in Redis.
NAMESPACE = "billhook"
# Set while a wake-up message for the projections is queued and not yet started.
PENDING_KEY = "billhook:wake:projections"
# A pending flag older than this is stale (its message was lost): send again.
PENDING_TTL_S = 30
# Pause after a Redis error before the waker tries again.
RETRY_PAUSE_S = 1.0
# Least time between two attempts: under load, at most ~200 Redis round trips a
# second from the web process, whatever the event rate.
MIN_INTERVAL_S = 0.005


def make_broker(url: str) -> RedisBroker:
    """The broker on Redis at `url`; ConfigError naming `redis.url` when the URL is unusable
    (`billhook check-config` reports the same)."""
    problem = redis_url_problem(url)
    if problem is not None:
        raise ConfigError(f"redis.url: {problem}")
    # dramatiq's RedisBroker.__init__ carries no annotations.
    return RedisBroker(  # type: ignore[no-untyped-call]
        url=url, namespace=NAMESPACE, socket_timeout=2, socket_connect_timeout=2
    )


class RedisWaker:
    """Sends at most one pending wake-up, from a thread of its own.

    `wake()` is safe and cheap to call from the event loop for every event;
    the thread turns bursts of calls into one Redis round trip and at most one
    message.
    """

    def __init__(
        self,
        client: redis.Redis,
        send: Callable[[], object],
        on_sent: Callable[[], None] | None = None,
    ) -> None:
        self._client = client
        self._send = send
        self._on_sent = on_sent
        self._wanted = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="billhook-waker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping = True
        self._wanted.set()
        self._thread.join(timeout=5)

    def wake(self, seq: int | None = None) -> None:
        self._wanted.set()

    def _send_or_clear(self) -> None:
        try:
            self._send()
        except DramatiqError:
            # A flag without its message would hold every wake-up back until it expires.
            self._client.delete(PENDING_KEY)
            raise

    def _run(self) -> None:
        while True:
            self._wanted.wait()
            if self._stopping:
                return
            self._wanted.clear()
            time.sleep(MIN_INTERVAL_S)
            try:
                if self._client.set(PENDING_KEY, "1", nx=True, ex=PENDING_TTL_S):
                    self._send_or_clear()
                    if self._on_sent is not None:
                        self._on_sent()
            except (redis.RedisError, DramatiqError) as e:
                # Nothing is lost: the worker's timer catches up from the log meanwhile.
                fields = {"outcome": "redis_error", "error": type(e).__name__}
                logger.warning("wake-up", extra={"fields": fields})
                time.sleep(RETRY_PAUSE_S)
                self._wanted.set()
