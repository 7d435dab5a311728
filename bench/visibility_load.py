"""The visibility benchmark's load generator: open-loop signed events, then ack → visible.

Run by bench/visibility.py in a process of its own, pinned to the load
generator's core: `python -m bench.visibility_load --url URL --token T
--secret S --workspaces N --rate R --duration SECONDS --created-base TS
--out FILE`.

Event `i` updates workspace `i % N` (seat count up by one, status turning
between active, past due, trialing and canceling, `created` one second later
than event `i - 1`'s), so each event changes what GET entitlements answers.
All events are built and signed before the clock starts; event `i` is sent at
`start + i / rate` whatever happened to the ones before it (open loop), on a
pool of keep-alive connections (bench/rawhttp.py: httpx spends so much CPU
per request that one core could not keep the schedule and poll too).

Visibility is watched the cheap way: one poller GETs the entitlements of a
workspace no event is about (`ws_probe`) every `--poll-interval`, on its own
connection; the answer's `as_of_seq` is the projection checkpoint it was read
at, so every acknowledged event with `seq <= as_of_seq` is visible by then and
resolves at once, its latency the poll answer's arrival minus the ack's. The
true moment lies between the previous poll's answer and this one: the
resolution is one poll cycle (reported). One event in `--sample-every` is also
read back directly, its own workspace's answer showing its change.

With `--no-watch` nobody polls during the load (bench/ingest_latency.py: the
server gets webhooks only, send → ack is the figure); the projection is then
awaited once after the load. Either way, every workspace's answer is then
compared with the last event sent about it. Everything measured goes to
`--out` as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import heapq
import json
import resource
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench.entitlements import (
    PROBE_WORKSPACE,
    WEBHOOK_PATH,
    bearer,
    entitlements_path,
    fetch_all,
    mismatch,
    wait_projected,
)
from bench.rawhttp import Answer, HttpError, Pool, request_bytes
from bench.subscriptions import SubscriptionState, event_body, signed_headers
from bench.tools import BenchError

# The statuses the load's updates turn through: all keep the tier, so seats always show.
STATUS_CYCLE: tuple[tuple[str, bool], ...] = (
    ("active", False),
    ("past_due", False),
    ("trialing", False),
    ("active", True),
)
# How long to wait, after the last send, for acks and visibility before giving up.
DRAIN_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Plan:
    url: str
    token: str
    secret: str
    workspaces: int
    rate: float
    duration_s: float
    created_base: int
    period_end: int
    connections: int
    poll_interval_s: float
    sample_every: int
    run_id: str
    # Poll for visibility during the load (off: webhooks only, send → ack is what counts).
    watch: bool = True


@dataclass
class Outcome:
    """Everything measured, as written to `--out`."""

    scheduled: int = 0
    sent: int = 0
    acked: int = 0
    non_2xx: int = 0
    errors: int = 0
    # The first few failures, for the report.
    error_samples: list[str] = field(default_factory=list)
    first_send_s: float = 0.0
    # The highest seq acknowledged.
    top_seq: int = 0
    last_send_s: float = 0.0
    # Per acknowledged event, in ms: send → ack, ack → visible; send lag behind schedule.
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
    final_checked: int = 0
    final_mismatches: list[str] = field(default_factory=list)
    cpu_s: float = 0.0
    wall_s: float = 0.0


def state_of(plan: Plan, i: int) -> SubscriptionState:
    """What event `i` says about its workspace."""
    workspace, round_ = i % plan.workspaces, i // plan.workspaces
    status, cancel = STATUS_CYCLE[(round_ + workspace) % len(STATUS_CYCLE)]
    return SubscriptionState(
        workspace=workspace_id(workspace),
        status=status,
        price="price_team_monthly",
        quantity=2 + round_,
        cancel_at_period_end=cancel,
    )


def workspace_id(n: int) -> str:
    return f"ws_{n:06d}"


def initial_state(n: int) -> SubscriptionState:
    """The state each workspace is created in before the load (bench/visibility.py feeds it)."""
    return SubscriptionState(
        workspace=workspace_id(n), status="active", price="price_team_monthly", quantity=1
    )


def expected(state: SubscriptionState) -> dict[str, Any]:
    return {"status": state.normalized_status, "seats": {"purchased": state.quantity}}


class Client:
    """The load generator's two connection pools to the server: deliveries and reads."""

    def __init__(self, plan: Plan) -> None:
        parts = urlsplit(plan.url)
        if parts.hostname is None or parts.port is None:
            raise SystemExit(f"--url needs a host and a port: {plan.url}")
        self.host = f"{parts.hostname}:{parts.port}"
        self.deliveries = Pool(parts.hostname, parts.port, plan.connections)
        # The poller's connection, and a few for read-backs.
        self.reads = Pool(parts.hostname, parts.port, 4)
        self._auth = bearer(plan.token)

    def get_entitlements(self, workspace: str) -> bytes:
        return request_bytes(
            "GET", entitlements_path(workspace), host=self.host, headers=self._auth
        )

    def close(self) -> None:
        self.deliveries.close()
        self.reads.close()


def build(plan: Plan, client: Client, count: int) -> list[bytes]:
    """Every delivery of the run, signed now, as the HTTP requests to send."""
    signed_at = int(time.time())
    requests = []
    for i in range(count):
        body = event_body(
            state_of(plan, i),
            event_id=f"evt_{plan.run_id}_load_{i:08d}",
            event_type="customer.subscription.updated",
            created=plan.created_base + 1 + i,
            period_end=plan.period_end,
        )
        headers = signed_headers(body, plan.secret, signed_at)
        requests.append(
            request_bytes(
                "POST", WEBHOOK_PATH, host=client.host, headers=headers, body=body.encode()
            )
        )
    return requests


class Watcher:
    """Acknowledged events waiting to become visible, resolved by polling `as_of_seq`."""

    def __init__(self, plan: Plan, client: Client, out: Outcome) -> None:
        self._plan = plan
        self._client = client
        self._out = out
        self._poll = client.get_entitlements(PROBE_WORKSPACE)
        # (seq, ack time, event index)
        self._pending: list[tuple[int, float, int]] = []
        self._arrived = asyncio.Event()
        self._samples: set[asyncio.Task[None]] = set()

    def acked(self, seq: int, at: float, i: int) -> None:
        heapq.heappush(self._pending, (seq, at, i))
        self._arrived.set()

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def poll_once(self) -> None:
        sent = time.perf_counter()
        try:
            answer = await self._client.reads.send(self._poll)
            as_of = int(answer.json()["as_of_seq"]) if answer.status == 200 else -1
        except (HttpError, ValueError, KeyError, TypeError):
            as_of = -1
        answered = time.perf_counter()
        self._out.polls += 1
        self._out.poll_rtt_ms.append((answered - sent) * 1000)
        if as_of < 0:
            self._out.poll_errors += 1
            return
        while self._pending and self._pending[0][0] <= as_of:
            _, acked_at, i = heapq.heappop(self._pending)
            self._out.visible_ms.append((answered - acked_at) * 1000)
            if i % self._plan.sample_every == 0:
                task = asyncio.create_task(self._sample(i))
                self._samples.add(task)
                task.add_done_callback(self._samples.discard)

    async def _sample(self, i: int) -> None:
        """Read event `i`'s workspace back: its change must show (or a later one's)."""
        state = state_of(self._plan, i)
        self._out.sampled += 1
        try:
            reply = await self._client.reads.send(self._client.get_entitlements(state.workspace))
            answer: Any = reply.json() if reply.status == 200 else reply.status
        except (HttpError, ValueError) as e:
            answer = repr(e)
        seats = (answer.get("seats") or {}) if isinstance(answer, dict) else {}
        purchased = seats.get("purchased", 0) if isinstance(seats, dict) else 0
        if not isinstance(purchased, int) or purchased < state.quantity:
            self._out.sample_failures.append(f"event {i}: {state.workspace} answered {answer!r}")
        elif purchased == state.quantity and (differs := mismatch(answer, expected(state))):
            self._out.sample_failures.append(f"event {i}: {state.workspace} {differs}")

    async def run(self, stop: asyncio.Event) -> None:
        """Poll while anything is pending, until `stop` is set and nothing is left."""
        last: float | None = None
        while not (stop.is_set() and not self._pending):
            if not self._pending:
                self._arrived.clear()
                waiter = asyncio.create_task(self._arrived.wait())
                stopper = asyncio.create_task(stop.wait())
                await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                stopper.cancel()
                last = None
                continue
            await self.poll_once()
            now = time.perf_counter()
            if last is not None:
                self._out.poll_cycle_ms.append((now - last) * 1000)
            last = now
            await asyncio.sleep(self._plan.poll_interval_s)
        if self._samples:
            await asyncio.gather(*self._samples)


async def send(pool: Pool, request: bytes, i: int, watcher: Watcher | None, out: Outcome) -> None:
    started = time.perf_counter()
    try:
        answer: Answer = await pool.send(request)
        acked = time.perf_counter()
        seq = int(answer.json()["seq"]) if 200 <= answer.status < 300 else None
    except (HttpError, ValueError, KeyError, TypeError) as e:
        out.errors += 1
        if len(out.error_samples) < 5:
            out.error_samples.append(f"event {i}: {e}")
        return
    if seq is None:
        out.non_2xx += 1
        if len(out.error_samples) < 5:
            out.error_samples.append(f"event {i}: status {answer.status}: {answer.body[:200]!r}")
        return
    out.acked += 1
    out.ack_ms.append((acked - started) * 1000)
    out.top_seq = max(out.top_seq, seq)
    if watcher is not None:
        watcher.acked(seq, acked, i)


async def run(plan: Plan, out: Outcome) -> None:
    count = int(plan.rate * plan.duration_s)
    out.scheduled = count
    client = Client(plan)
    requests = build(plan, client, count)
    gc.collect()
    gc.freeze()
    try:
        watcher = Watcher(plan, client, out) if plan.watch else None
        stop = asyncio.Event()
        watching = asyncio.create_task(watcher.run(stop)) if watcher is not None else None
        sends: set[asyncio.Task[None]] = set()
        cpu0, wall0 = time.process_time(), time.perf_counter()
        start = time.perf_counter() + 0.1
        for i, request in enumerate(requests):
            due = start + i / plan.rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            now = time.perf_counter()
            out.send_lag_ms.append((now - due) * 1000)
            if i == 0:
                out.first_send_s = now - start
            out.last_send_s = now - start
            out.sent += 1
            task = asyncio.create_task(send(client.deliveries, request, i, watcher, out))
            sends.add(task)
            task.add_done_callback(sends.discard)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*sends), DRAIN_TIMEOUT_S)
        stop.set()
        if watching is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(watching, DRAIN_TIMEOUT_S)
        out.cpu_s = time.process_time() - cpu0
        out.wall_s = time.perf_counter() - wall0
        out.unresolved = watcher.pending if watcher is not None else 0
    finally:
        client.close()


def final_check(plan: Plan, out: Outcome) -> None:
    """Compare every workspace's answer with the last event sent about it.

    Unwatched, the projection may still be catching up: wait for it first.
    """
    if not plan.watch:
        try:
            wait_projected(plan.url, plan.token, out.top_seq)
        except BenchError as e:
            out.final_mismatches.append(f"after the load: {e}")
            return
    last: dict[str, SubscriptionState] = {}
    for n in range(plan.workspaces):
        last[workspace_id(n)] = initial_state(n)
    for i in range(out.sent):
        state = state_of(plan, i)
        last[state.workspace] = state
    answers = fetch_all(plan.url, plan.token, list(last))
    out.final_checked = len(answers)
    for workspace, state in last.items():
        differs = mismatch(answers[workspace], expected(state))
        if differs is not None:
            out.final_mismatches.append(f"{workspace}: {differs}")


def parse(argv: Sequence[str] | None = None) -> tuple[Plan, Path]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--secret", required=True)
    parser.add_argument("--workspaces", type=int, required=True)
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--duration", type=float, required=True)
    parser.add_argument("--created-base", type=int, required=True)
    parser.add_argument("--period-end", type=int, required=True)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--poll-interval", type=float, default=0.002)
    parser.add_argument("--sample-every", type=int, default=20)
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--no-watch", action="store_true", help="no polling during the load")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    plan = Plan(
        url=args.url,
        token=args.token,
        secret=args.secret,
        workspaces=args.workspaces,
        rate=args.rate,
        duration_s=args.duration,
        created_base=args.created_base,
        period_end=args.period_end,
        connections=args.connections,
        poll_interval_s=args.poll_interval,
        sample_every=max(args.sample_every, 1),
        run_id=args.run_id,
        watch=not args.no_watch,
    )
    return plan, args.out


def main(argv: Sequence[str] | None = None) -> None:
    plan, path = parse(argv)
    out = Outcome()
    try:
        import uvloop
    except ImportError:
        asyncio.run(run(plan, out))
    else:
        uvloop.run(run(plan, out))
    gc.unfreeze()
    final_check(plan, out)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result: dict[str, Any] = asdict(out)
    result["process_cpu_s"] = usage.ru_utime + usage.ru_stime
    path.write_text(json.dumps(result), encoding="utf-8")


if __name__ == "__main__":
    main()
