"""The open-loop load generator of the latency benchmarks: signed events at a fixed rate.

    python -m bench.loadgen PLAN_JSON

Run by bench/visibility.py, pinned to the load generator's core. Every
delivery (`load_sub`) is built and signed before the clock starts; event `i` is
sent at `start + i / rate` whatever happened to the ones before it (open loop,
as wrk2 would) on up to `connections` keep-alive connections of aiohttp
(httpx costs about a millisecond of CPU per request: one core could not keep
1,000/s).

With `watch`, one poller GETs the entitlements of `ws_probe` (no event is
about it) on its own connection, resting `poll_interval_s` between polls while
any ack is pending: an answer's `as_of_seq` is the projection checkpoint it
was read at, so every ack with `seq <= as_of_seq` is visible by then, its
latency the poll answer's arrival minus the ack's (resolution: one poll cycle,
reported). One event in SAMPLE_EVERY is read back from its own workspace,
whose change must show.

With `follow` (bench/feed_lag.py), a follower reads `/v1/changes/stream`
from the head (its cursor from `GET /v1/changes?after=now`, taken before the
first send) on its own connection and notes when each change arrives; a change
of an event carries the event's `seq`, which its ack gave, so each acked event
gets `seen_ms` (ack → seen) and `sent_seen_ms` (send → seen), and its change
is compared with what the event says.

With `sink` (bench/outbound.py), the load generator's process is also the
endpoint billhook delivers entitlement webhooks to: an aiohttp.web server on
`sink.port` that verifies every request with `standardwebhooks` (about 10 µs
each: cheap enough at these rates), notes when it arrived by `data.seq` (the
follower's bookkeeping: ack → delivered instead of ack → seen) and answers 204,
after `sink.delay_s` if given. With `sink.expect` and no load (`rate` 0), it
only receives until that many distinct `webhook-id`s arrived. Everything
measured is printed as one JSON object.
"""

# aiohttp is installed by the harness when missing (bench/harness.py `ensure_module`).
# mypy: disable-error-code="import-not-found"

from __future__ import annotations

import asyncio
import contextlib
import gc
import heapq
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp
import uvloop
from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from bench.harness import PROBE_WORKSPACE, WEBHOOK_PATH, bearer, mismatch
from bench.visibility import load_sub
from billhook.testing.stripe import stripe_headers

# How long to wait after the last send for acks and visibility before giving up.
DRAIN_TIMEOUT_S = 30.0
# One acknowledged event in this many is read back from its own workspace.
SAMPLE_EVERY = 20
# Failures kept verbatim for the report.
KEEP_ERRORS = 5
# The path the sink serves (`[[outbound.endpoints]] url` ends with it).
SINK_PATH = "/hooks"
# A sink with nothing to send waits this long for its first delivery (billhook starting,
# fanning a backlog out), then this long after each one before it gives up on the rest.
SINK_FIRST_TIMEOUT_S = 120.0
SINK_IDLE_TIMEOUT_S = 30.0


@dataclass
class Outcome:
    """Everything measured, as printed; latencies in ms."""

    sent: int = 0
    acked: int = 0
    non_2xx: int = 0
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    first_send_s: float = 0.0
    last_send_s: float = 0.0
    top_seq: int = 0
    ack_ms: list[float] = field(default_factory=list)
    visible_ms: list[float] = field(default_factory=list)
    send_lag_ms: list[float] = field(default_factory=list)
    unresolved: int = 0
    polls: int = 0
    poll_errors: int = 0
    poll_rtt_ms: list[float] = field(default_factory=list)
    poll_cycle_ms: list[float] = field(default_factory=list)
    sampled: int = 0
    sample_failures: list[str] = field(default_factory=list)
    load_cpu_s: float = 0.0
    load_wall_s: float = 0.0
    # With `follow`: the change feed's stream, as the follower saw it.
    seen_ms: list[float] = field(default_factory=list)
    sent_seen_ms: list[float] = field(default_factory=list)
    changes_seen: int = 0
    foreign_changes: int = 0
    duplicate_changes: int = 0
    unseen: int = 0
    seen_before_ack: int = 0
    stream_errors: list[str] = field(default_factory=list)
    change_failures: list[str] = field(default_factory=list)
    # With `sink`: the requests it received (all, refused, a `webhook-id` again), when the
    # first and the last arrived (perf_counter s), and its process's CPU in between.
    deliveries: int = 0
    rejected: int = 0
    duplicate_ids: int = 0
    unique_ids: int = 0
    first_delivery_s: float = 0.0
    last_delivery_s: float = 0.0
    sink_cpu_s: float = 0.0

    def failed(self, what: str) -> None:
        if len(self.error_samples) < KEEP_ERRORS:
            self.error_samples.append(what)


class Watcher:
    """Acknowledged events waiting to become visible, resolved by polling `as_of_seq`."""

    def __init__(self, plan: dict[str, Any], reads: aiohttp.ClientSession, out: Outcome) -> None:
        self.plan, self.reads, self.out = plan, reads, out
        self.pending: list[tuple[int, float, int]] = []  # (seq, ack time, event index)
        self.arrived = asyncio.Event()
        self.samples: set[asyncio.Task[None]] = set()

    def acked(self, seq: int, at: float, i: int) -> None:
        heapq.heappush(self.pending, (seq, at, i))
        self.arrived.set()

    async def _get(self, workspace: str) -> Any:
        async with self.reads.get(f"/v1/workspaces/{workspace}/entitlements") as r:
            body = await r.read()
            return json.loads(body) if r.status == 200 else r.status

    async def poll(self) -> None:
        sent = time.perf_counter()
        try:
            answer = await self._get(PROBE_WORKSPACE)
            as_of = int(answer["as_of_seq"])
        except (aiohttp.ClientError, ValueError, KeyError, TypeError):
            as_of = -1
        answered = time.perf_counter()
        self.out.polls += 1
        self.out.poll_rtt_ms.append((answered - sent) * 1000)
        if as_of < 0:
            self.out.poll_errors += 1
        while self.pending and self.pending[0][0] <= as_of:
            _, acked_at, i = heapq.heappop(self.pending)
            self.out.visible_ms.append((answered - acked_at) * 1000)
            if i % SAMPLE_EVERY == 0:
                task = asyncio.create_task(self.read_back(i))
                self.samples.add(task)
                task.add_done_callback(self.samples.discard)

    async def read_back(self, i: int) -> None:
        """Event `i`'s workspace must show its change (or a later event's: more seats)."""
        sub = load_sub(i, self.plan["workspaces"])
        self.out.sampled += 1
        try:
            answer = await self._get(sub.workspace)
        except (aiohttp.ClientError, ValueError) as e:
            answer = repr(e)
        seats = answer.get("seats") if isinstance(answer, dict) else None
        purchased = seats.get("purchased", 0) if isinstance(seats, dict) else 0
        if not isinstance(purchased, int) or purchased < sub.quantity:
            self.out.sample_failures.append(f"event {i}: {sub.workspace} answered {answer!r}")
        elif purchased == sub.quantity and (differs := mismatch(answer, sub.expected())):
            self.out.sample_failures.append(f"event {i}: {sub.workspace}: {differs}")

    async def run(self, stop: asyncio.Event) -> None:
        """Poll while anything is pending, until `stop` is set and nothing is left."""
        last: float | None = None
        while not (stop.is_set() and not self.pending):
            if not self.pending:
                self.arrived.clear()
                waits = {asyncio.create_task(self.arrived.wait()), asyncio.create_task(stop.wait())}
                _, idle = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                for task in idle:
                    task.cancel()
                last = None
                continue
            await self.poll()
            now = time.perf_counter()
            if last is not None:
                self.out.poll_cycle_ms.append((now - last) * 1000)
            last = now
            await asyncio.sleep(self.plan["poll_interval_s"])
        await asyncio.gather(*self.samples)


class Follower:
    """Follows `/v1/changes/stream` from the head: when each change (by `seq`) arrived."""

    def __init__(self, plan: dict[str, Any], session: aiohttp.ClientSession, out: Outcome) -> None:
        self.plan, self.session, self.out = plan, session, out
        self.seen: dict[int, tuple[float, dict[str, Any]]] = {}  # seq -> (arrival, change)
        self.acks: dict[int, tuple[float, float, int]] = {}  # seq -> (send, ack, event index)
        self.connected = asyncio.Event()

    def acked(self, seq: int, sent: float, acked: float, i: int) -> None:
        self.acks[seq] = (sent, acked, i)

    async def head(self) -> str:
        async with self.session.get("/v1/changes", params={"after": "now"}) as r:
            r.raise_for_status()
            cursor: str = (await r.json())["next"]
            return cursor

    async def run(self) -> None:
        """Read the stream until cancelled; a failure is recorded (and ends the follower)."""
        try:
            headers = {"Last-Event-ID": await self.head(), "Accept": "text/event-stream"}
            async with self.session.get("/v1/changes/stream", headers=headers) as r:
                r.raise_for_status()
                self.connected.set()
                kind, data = "message", []
                async for raw in r.content:
                    line = raw.decode().rstrip("\r\n")
                    if line:
                        field_name, _, value = line.partition(":")
                        value = value.removeprefix(" ")
                        if field_name == "event":
                            kind = value
                        elif field_name == "data":
                            data.append(value)
                        continue
                    if kind == "change" and data:
                        self.arrived(time.perf_counter(), json.loads("\n".join(data)))
                    kind, data = "message", []
        except (aiohttp.ClientError, ValueError, KeyError, TypeError) as e:
            self.out.stream_errors.append(repr(e)[:200])
        finally:
            self.connected.set()

    def arrived(self, at: float, change: dict[str, Any]) -> None:
        self.out.changes_seen += 1
        seq = int(change["seq"])
        if seq in self.seen:
            self.out.duplicate_changes += 1
        else:
            self.seen[seq] = (at, change)

    def all_seen(self) -> bool:
        return self.seen.keys() >= self.acks.keys()

    def settle(self) -> None:
        """Each acked event's latencies, and whether its change says what the event said."""
        for seq, (sent, acked, i) in sorted(self.acks.items()):
            found = self.seen.get(seq)
            if found is None:
                self.out.unseen += 1
                continue
            at, change = found
            self.out.seen_ms.append((at - acked) * 1000)
            self.out.sent_seen_ms.append((at - sent) * 1000)
            self.out.seen_before_ack += at < acked
            sub = load_sub(i, self.plan["workspaces"])
            differs = (
                f"workspace_id is {change.get('workspace_id')!r}"
                if change.get("workspace_id") != sub.workspace
                else mismatch(change, sub.expected())
            )
            if differs and len(self.out.change_failures) < KEEP_ERRORS:
                self.out.change_failures.append(f"event {i} (seq {seq}): {differs}")
        self.out.foreign_changes = len(self.seen.keys() - self.acks.keys())


class Sink:
    """The endpoint billhook delivers to: verifies each request, notes it, answers 204.

    `on_change(arrival, data)` sees the `data` (the change) of each verified
    request; a request that does not verify is answered 400 and counted.
    """

    def __init__(
        self,
        config: dict[str, Any],
        out: Outcome,
        on_change: Callable[[float, dict[str, Any]], None] | None = None,
    ) -> None:
        self.port: int = config["port"]
        self.delay_s: float = config.get("delay_s", 0.0)
        self.verifier = Webhook(config["secret"])
        self.out, self.on_change = out, on_change
        self.ids: set[str] = set()
        self.listening = asyncio.Event()
        self.arrival = asyncio.Event()
        self._cpu_first = 0.0

    async def hook(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        at = time.perf_counter()
        self.out.deliveries += 1
        try:
            message = self.verifier.verify(body, dict(request.headers))
            webhook_id = request.headers["webhook-id"]
            data = message["data"]
        except (WebhookVerificationError, KeyError, TypeError, ValueError) as e:
            self.out.rejected += 1
            self.out.failed(f"delivery refused: {type(e).__name__}")
            return web.Response(status=400)
        if not self.ids:
            self.out.first_delivery_s, self._cpu_first = at, time.process_time()
        self.out.last_delivery_s = at
        self.out.sink_cpu_s = time.process_time() - self._cpu_first
        if webhook_id in self.ids:
            self.out.duplicate_ids += 1
        else:
            self.ids.add(webhook_id)
            self.out.unique_ids = len(self.ids)
        if self.on_change is not None:
            self.on_change(at, data)
        self.arrival.set()
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        return web.Response(status=204)

    async def run(self) -> None:
        """Serve until cancelled; a failure to listen is recorded (and ends the sink)."""
        app = web.Application()
        app.router.add_post(SINK_PATH, self.hook)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            await web.TCPSite(runner, "127.0.0.1", self.port).start()
            self.listening.set()
            await asyncio.Event().wait()
        except OSError as e:
            self.out.stream_errors.append(f"the sink could not listen: {e!r}"[:200])
        finally:
            self.listening.set()
            await runner.cleanup()

    async def until(self, expect: int) -> None:
        """Return once `expect` distinct `webhook-id`s arrived, or none came for a while."""
        timeout = SINK_FIRST_TIMEOUT_S
        while len(self.ids) < expect:
            self.arrival.clear()
            try:
                await asyncio.wait_for(self.arrival.wait(), timeout)
            except TimeoutError:
                return
            timeout = SINK_IDLE_TIMEOUT_S


async def receive(plan: dict[str, Any], out: Outcome) -> None:
    """Sink only (no load): receive until `sink.expect` deliveries arrived (the benchmark
    starts billhook once the sink's port listens)."""
    sink = Sink(plan["sink"], out)
    serving = asyncio.create_task(sink.run())
    await sink.listening.wait()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    if not serving.done():
        await sink.until(int(plan["sink"]["expect"]))
        # Duplicates come late (an attempt that outlived its timeout); give them a moment.
        await asyncio.sleep(plan["sink"].get("linger_s", 1.0))
    serving.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await serving
    out.load_cpu_s = time.process_time() - cpu0
    out.load_wall_s = time.perf_counter() - wall0


async def deliver(
    session: aiohttp.ClientSession,
    request: tuple[bytes, dict[str, str]],
    i: int,
    watcher: Watcher | None,
    out: Outcome,
    follower: Follower | None = None,
) -> None:
    body, headers = request
    started = time.perf_counter()
    try:
        async with session.post(WEBHOOK_PATH, data=body, headers=headers) as r:
            answer = await r.read()
            acked = time.perf_counter()
            status = r.status
        seq = int(json.loads(answer)["seq"]) if 200 <= status < 300 else None
    except (aiohttp.ClientError, ValueError, KeyError, TypeError) as e:
        out.errors += 1
        out.failed(f"event {i}: {e!r}")
        return
    if seq is None:
        out.non_2xx += 1
        out.failed(f"event {i}: status {status}: {answer[:200]!r}")
        return
    out.acked += 1
    out.ack_ms.append((acked - started) * 1000)
    out.top_seq = max(out.top_seq, seq)
    if watcher is not None:
        watcher.acked(seq, acked, i)
    if follower is not None:
        follower.acked(seq, started, acked, i)


def build(plan: dict[str, Any]) -> list[tuple[bytes, dict[str, str]]]:
    """Every delivery of the run, signed now."""
    signed_at = int(time.time())
    requests = []
    for i in range(int(plan["rate"] * plan["duration"])):
        event_id = f"evt_{plan['run_id']}_load_{i:08d}"
        body = load_sub(i, plan["workspaces"]).body("updated", plan["created"] + 1 + i, event_id)
        requests.append((body, stripe_headers(body, plan["secret"], signed_at)))
    return requests


async def run(plan: dict[str, Any], out: Outcome) -> None:
    requests = build(plan)
    # The request list is large and lives to the end: keep the collector from walking it.
    gc.collect()
    gc.freeze()
    connector = aiohttp.TCPConnector(limit=plan["connections"])
    async with (
        aiohttp.ClientSession(plan["url"], connector=connector) as deliveries,
        aiohttp.ClientSession(
            plan["url"], headers=bearer(plan["token"]), connector=aiohttp.TCPConnector(limit=4)
        ) as reads,
        contextlib.AsyncExitStack() as stack,
    ):
        # The stream stays open for the whole run: no timeout of aiohttp's may end it.
        # With `sink`, the follower's bookkeeping takes its changes from the sink instead.
        stream = (
            await stack.enter_async_context(
                aiohttp.ClientSession(
                    plan["url"],
                    headers=bearer(plan["token"]),
                    timeout=aiohttp.ClientTimeout(total=None, sock_read=None),
                )
            )
            if plan.get("follow") or plan.get("sink")
            else None
        )
        watcher = Watcher(plan, reads, out) if plan["watch"] else None
        stop = asyncio.Event()
        watching = asyncio.create_task(watcher.run(stop)) if watcher else None
        follower = Follower(plan, stream, out) if stream is not None else None
        sink = Sink(plan["sink"], out, follower.arrived) if follower and plan.get("sink") else None
        following = (
            asyncio.create_task(sink.run() if sink else follower.run()) if follower else None
        )
        if follower is not None:
            ready = sink.listening if sink else follower.connected
            await asyncio.wait_for(ready.wait(), DRAIN_TIMEOUT_S)
        sends: set[asyncio.Task[None]] = set()
        cpu0, wall0 = time.process_time(), time.perf_counter()
        start = wall0 + 0.1
        for i, request in enumerate(requests):
            due = start + i / plan["rate"]
            if (delay := due - time.perf_counter()) > 0:
                await asyncio.sleep(delay)
            now = time.perf_counter()
            out.send_lag_ms.append((now - due) * 1000)
            if i == 0:
                out.first_send_s = now - start
            out.last_send_s = now - start
            out.sent += 1
            task = asyncio.create_task(deliver(deliveries, request, i, watcher, out, follower))
            sends.add(task)
            task.add_done_callback(sends.discard)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*sends), DRAIN_TIMEOUT_S)
        stop.set()
        if watching is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(watching, DRAIN_TIMEOUT_S)
        if follower is not None and following is not None:
            drained = time.perf_counter() + DRAIN_TIMEOUT_S
            while not follower.all_seen() and not following.done():
                if time.perf_counter() > drained:
                    break
                await asyncio.sleep(0.05)
            following.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await following
            follower.settle()
        out.load_cpu_s = time.process_time() - cpu0
        out.load_wall_s = time.perf_counter() - wall0
        out.unresolved = len(watcher.pending) if watcher else 0


def main(argv: list[str]) -> int:
    out = Outcome()
    plan = json.loads(argv[0])
    uvloop.run(run(plan, out) if plan.get("rate") else receive(plan, out))
    print(json.dumps(asdict(out)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
