"""The dispatcher: fans the feed's changes out to the outbox, then sends what is due.

It runs on a thread of its own with its own event loop: in `billhook serve`
without Redis, and in every `billhook worker` with it. Each pass does, in order:

1. **Fan-out** (when the projections moved, or every second): the changes past
   the outbox's cursor become one delivery per matching endpoint, and the cursor
   moves, in one outbox transaction. The cursor is compare-and-set, so two
   dispatchers never fan a change out twice, and a crash in between loses
   nothing: the changes are read again.
2. **Record** the attempts that ended since the last pass, in one transaction.
3. **Claim** due deliveries, at most `max_in_flight` per endpoint and only the
   head of each workspace's queue, under a lease: another dispatcher (another
   process, another host) skips them; a dispatcher that dies mid-attempt leaves
   them to be claimed again when the lease ends. So every change is delivered at
   least once, in order per workspace, and a duplicate carries the same
   `webhook-id`.

Attempts run concurrently on one `aiohttp.ClientSession`, each bounded by
`[outbound] timeout_s`. (aiohttp, not httpx: httpx's connection pool scans
every connection on each request and response, which held one endpoint under
200 deliveries/s on a core; bench/outbound.py, decision in docs/decisions.md.)
Nothing here can block ingestion: the receiver never waits on the outbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import time
from collections import Counter as Tally
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, TypeVar

import aiohttp

from billhook.config import Settings
from billhook.domain.times import to_us
from billhook.errors import StoreUnavailable
from billhook.observability.metrics import Metrics
from billhook.outbound import retry, signing
from billhook.outbound.endpoints import Endpoint, current
from billhook.outbound.store import Claim, NewDelivery, OutboxStore, Result
from billhook.projections.store import ProjectionStore

logger = logging.getLogger(__name__)

T = TypeVar("T")


def _utcnow() -> datetime:
    return datetime.now(UTC)


# How often the dispatcher looks whether the projections moved (the feed's latency).
POLL_S = 0.01
# How often it claims without a reason to (retries coming due, other processes'
# leases ending, a redelivery asked from the CLI), and re-reads the endpoints.
IDLE_CLAIM_S = 0.25
ENDPOINTS_EVERY_S = 1.0
# Changes read per fan-out step.
FANOUT_BATCH = 1000
# A claim's lease beyond the attempt's timeout: then another dispatcher may send it.
LEASE_MARGIN_S = 5.0
# How much of an answer's body is read (then dropped): enough to reuse the connection.
MAX_ANSWER_BYTES = 65_536
# How often deliveries of endpoints that no longer exist are looked for (and canceled).
SWEEP_EVERY_S = 60.0
# How often delivered and given-up deliveries past `keep_days` are pruned.
PRUNE_EVERY_S = 3600.0
# Wait after the outbox or the projections could not be used.
UNAVAILABLE_SLEEP_S = 1.0


class Dispatcher:
    """Delivers entitlement webhooks from `store`'s feed through `outbox`."""

    def __init__(
        self,
        settings: Settings,
        store: ProjectionStore,
        outbox: OutboxStore,
        *,
        metrics: Metrics | None = None,
        clock: Callable[[], datetime] = _utcnow,
        rand: Callable[[], float] = random.random,
        poll_s: float = POLL_S,
    ) -> None:
        """`rand`: the jitter's source."""
        self._settings = settings
        self._config = settings.outbound
        self._store = store
        self._outbox = outbox
        self._metrics = metrics
        self._clock = clock
        self._rand = rand
        self._poll_s = poll_s
        self._thread = threading.Thread(target=self._run, name="billhook-outbound", daemon=True)
        self._db = ThreadPoolExecutor(max_workers=1, thread_name_prefix="billhook-outbox")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wakeup: asyncio.Event | None = None
        self._stopping = False
        self._endpoints: dict[str, Endpoint] = {}
        self._starts: dict[str, tuple[int, int]] = {}
        self._in_flight: Tally[str] = Tally()
        self._tasks: set[asyncio.Task[None]] = set()
        self._results: list[Result] = []
        self._version: int | None = None
        self._endpoints_at = self._claimed_at = self._pruned_at = 0.0
        self._swept_at = -SWEEP_EVERY_S
        self._next_due_us: int | None = None
        self._claim_now = True
        self._silent: set[str] = set()

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        """Look at the feed and the outbox now; safe from any thread."""
        loop, wakeup = self._loop, self._wakeup
        if loop is not None and wakeup is not None:
            self._claim_now = True
            loop.call_soon_threadsafe(wakeup.set)

    def stop(self) -> None:
        """Finish the attempts in flight (each bounded by its timeout), record them, stop."""
        self._stopping = True
        self.wake()
        self._thread.join(timeout=self._config.timeout_s + 10)
        self._db.shutdown(wait=True)

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wakeup = asyncio.Event()
        # No pool-wide limit: each endpoint's attempts are bounded by max_in_flight.
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=0)
        async with aiohttp.ClientSession(
            connector=connector, trust_env=False, auto_decompress=False
        ) as client:
            while not self._stopping:
                await self._pass(client)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), timeout=self._poll_s)
                self._wakeup.clear()
            if self._tasks:
                await asyncio.wait(self._tasks)
            if self._results:
                await self._call(self._outbox.record, self._results)

    async def _pass(self, client: aiohttp.ClientSession) -> None:
        results, self._results = self._results, []
        room = {
            endpoint: self._config.max_in_flight - self._in_flight[endpoint]
            for endpoint in self._endpoints
        }
        try:
            claims = await self._call(self._step, results, room)
        except StoreUnavailable as e:
            self._results = results + self._results  # recorded by a later pass
            logger.warning(
                "outbound", extra={"fields": {"outcome": "unavailable", "error": str(e)}}
            )
            await asyncio.sleep(UNAVAILABLE_SLEEP_S)
            return
        except Exception as e:  # a bug: keep delivering what can be; the type only
            self._results = results + self._results
            logger.error(
                "outbound", extra={"fields": {"outcome": "failed", "error": type(e).__name__}}
            )
            await asyncio.sleep(UNAVAILABLE_SLEEP_S)
            return
        for claim in claims:
            endpoint = self._endpoints[claim.endpoint]
            self._in_flight[claim.endpoint] += 1
            task = asyncio.create_task(self._attempt(client, claim, endpoint))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn` on the one thread that uses the stores."""
        return await asyncio.get_running_loop().run_in_executor(self._db, fn, *args)

    # -- on the stores' thread ------------------------------------------------------------

    def _step(self, results: list[Result], room: dict[str, int]) -> list[Claim]:
        """Fan out, record `results`, claim up to `room` per endpoint: one pass's work with
        the stores."""
        now = self._clock()
        now_us = to_us(now)
        tick = time.monotonic()
        version = self._store.data_version()
        if version != self._version or tick - self._endpoints_at >= ENDPOINTS_EVERY_S:
            self._version = version
            if self._fan_out(now_us):
                self._claim_now = True
        if results:
            self._outbox.record(results)
            self._claim_now = True
        if tick - self._pruned_at >= PRUNE_EVERY_S:
            self._pruned_at = tick
            self._outbox.prune(now_us - self._config.keep_days * 86_400_000_000)
        due = self._next_due_us is not None and self._next_due_us <= now_us
        if not (self._claim_now or due or tick - self._claimed_at >= IDLE_CLAIM_S):
            return []
        self._claim_now = False
        self._claimed_at = tick
        if due:
            self._next_due_us = None
        limits = {
            endpoint.id: room.get(endpoint.id, self._config.max_in_flight)
            for endpoint in self._endpoints.values()
            if endpoint.secrets and room.get(endpoint.id, self._config.max_in_flight) > 0
        }
        if not limits:
            return []
        lease_us = int((self._config.timeout_s + LEASE_MARGIN_S) * 1_000_000)
        return self._outbox.claim(now_us, limits, lease_us)

    def _refresh_endpoints(self, now_us: int) -> None:
        found = {e.id: e for e in current(self._settings, self._store, self._outbox, now_us)}
        gone = self._endpoints.keys() - found.keys()
        tick = time.monotonic()
        if tick - self._swept_at >= SWEEP_EVERY_S:
            # Also those removed while no dispatcher ran, or redelivered since.
            self._swept_at = tick
            health = self._outbox.health()
            gone |= {e for e, h in health.items() if h.pending and e not in found}
        for gone_id in sorted(gone):
            canceled = self._outbox.cancel(gone_id, now_us)
            logger.info(
                "outbound",
                extra={
                    "fields": {
                        "outcome": "endpoint_removed",
                        "endpoint": gone_id,
                        "canceled": canceled,
                    }
                },
            )
        for endpoint in found.values():
            if not endpoint.secrets and endpoint.id not in self._silent:
                self._silent.add(endpoint.id)  # said once per process
                logger.warning(
                    "outbound",
                    extra={"fields": {"outcome": "no_secret", "endpoint": endpoint.id}},
                )
        self._endpoints = found

    def _fan_out(self, now_us: int) -> bool:
        """Turn the changes past the outbox's cursor into deliveries; whether any were made."""
        made = False
        while True:
            cursor = self._outbox.fanout_cursor()
            rows = [] if cursor is None else self._store.changes_after(cursor, FANOUT_BATCH)
            head = self._store.last_cursor() if cursor is None or not rows else None
            # The endpoints read after the changes: one added before any of them is known.
            self._refresh_endpoints(now_us)
            self._endpoints_at = time.monotonic()
            if head is not None and (cursor is None or not self._endpoints):
                # The outbox starts at the head of the feed; with no endpoint it follows it.
                if head != cursor:
                    self._outbox.enqueue(cursor, head, [], now_us, now_us)
                return made
            if cursor is None or not rows:
                return made
            new: list[NewDelivery] = []
            for endpoint in self._endpoints.values():
                start = self._start_of(endpoint, cursor)
                new += [
                    NewDelivery(endpoint.id, row.seq, row.k, row.workspace, signing.body(row))
                    for row in rows
                    if row.workspace is not None
                    and (row.seq, row.k) > start
                    and endpoint.matches(row.workspace)
                ]
            give_up_us = now_us + self._config.retry_span_s * 1_000_000
            last = (rows[-1].seq, rows[-1].k)
            if self._outbox.enqueue(cursor, last, new, now_us, give_up_us):
                made = made or bool(new)
            if len(rows) < FANOUT_BATCH:
                return made

    def _start_of(self, endpoint: Endpoint, cursor: tuple[int, int]) -> tuple[int, int]:
        """The cursor after which `endpoint` receives changes: an API endpoint, those after
        the event that added it; a configured one, those after it was first seen."""
        if endpoint.since_seq:
            return (endpoint.since_seq, 0)
        start = self._starts.get(endpoint.id)
        if start is None:
            start = self._starts[endpoint.id] = self._outbox.endpoint_start(endpoint.id, cursor)
        return start

    # -- on the event loop ----------------------------------------------------------------

    async def _attempt(
        self, client: aiohttp.ClientSession, claim: Claim, endpoint: Endpoint
    ) -> None:
        started = time.monotonic()
        status: int | None = None
        error: str | None = None
        retry_after: str | None = None
        try:
            headers = signing.headers(claim.webhook_id, self._clock(), claim.body, endpoint.secrets)
            async with (
                asyncio.timeout(self._config.timeout_s),
                client.post(
                    endpoint.url, data=claim.body, headers=headers, allow_redirects=False
                ) as answer,
            ):
                status = answer.status
                retry_after = answer.headers.get("retry-after")
                read = 0
                async for chunk in answer.content.iter_any():
                    read += len(chunk)
                    if read > MAX_ANSWER_BYTES:
                        break
        except TimeoutError:
            status, error = None, "timeout"
        except Exception as e:  # any failure is this attempt's: recorded, never lost
            status, error = None, _error_name(e)
        finished = self._clock()
        now_us = to_us(finished)
        outcome, next_at_us = retry.next_step(
            status,
            attempts=claim.attempts + 1,
            retry_after=retry.retry_after_s(retry_after, finished),
            now_us=now_us,
            give_up_us=claim.give_up_us,
            first_s=self._config.first_retry_s,
            max_s=self._config.max_retry_s,
            rand=self._rand(),
        )
        if status is not None and outcome != retry.DELIVERED:
            error = f"http_{status}"
        if outcome == retry.FAILED and retry.outcome_of(status) == retry.RETRY:
            error = retry.GAVE_UP
        self._results.append(
            Result(
                id=claim.id,
                token=claim.token,
                at_us=now_us,
                status=status,
                error=error,
                duration_ms=int((time.monotonic() - started) * 1000),
                outcome=outcome,
                next_at_us=next_at_us,
            )
        )
        if next_at_us is not None and (self._next_due_us is None or next_at_us < self._next_due_us):
            self._next_due_us = next_at_us
        self._in_flight[claim.endpoint] -= 1
        self._count(claim, status, error, outcome)
        if self._wakeup is not None:
            self._wakeup.set()

    def _count(self, claim: Claim, status: int | None, error: str | None, outcome: str) -> None:
        fields = {
            "outcome": outcome,
            "endpoint": claim.endpoint,
            "delivery": claim.id,
            "workspace": claim.workspace,
            "attempt": claim.attempts + 1,
            "status": status,
        }
        if error is not None:
            fields["error"] = error
        level = logging.INFO if outcome == retry.DELIVERED else logging.WARNING
        logger.log(level, "outbound", extra={"fields": fields})
        if self._metrics is None:
            return
        result = f"{status // 100}xx" if status is not None else (error or "error")
        self._metrics.outbound_attempts.labels(claim.endpoint, result).inc()
        if outcome != retry.RETRY:
            self._metrics.outbound_deliveries.labels(claim.endpoint, outcome).inc()


def _error_name(error: Exception) -> str:
    """A short, secret-free name for why no answer came (never the message: it may quote
    the URL)."""
    if isinstance(error, aiohttp.ClientConnectorError):
        return "connect_error"
    if isinstance(error, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
        return "protocol_error"
    if isinstance(error, aiohttp.InvalidURL | ValueError):
        return "invalid_url"
    if isinstance(error, aiohttp.ClientError | OSError):
        return "transport_error"
    # A bug (ours or a library's): logged by type, and the delivery retried like any failure.
    logger.error(
        "outbound", extra={"fields": {"outcome": "attempt_failed", "error": type(error).__name__}}
    )
    return "internal_error"
