"""Ack → visible in the entitlement API, p99 at 500 events/s (SPEC §11), embedded or via Redis.

`billhook serve` runs on core 0 with its embedded projector (`visibility`), or
with `[redis] url` and a `billhook worker` beside it (`redis_visibility`). Each
of `--workspaces` workspaces is created through the webhook path first; then
bench/loadgen.py, pinned to core 1, sends signed updates open-loop at `--rate`
and times, for each 2xx ack, when GET entitlements' `as_of_seq` reaches its
`seq`. Afterwards every workspace is compared with its last event.
bench/ingest_latency.py runs the same load unwatched.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import secrets
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from bench import harness
from billhook.testing.servers import RedisServer, free_port, redis_answers, redis_client

NAMES = ("visibility", "redis_visibility")
FULL = {"rate": 500, "duration": 20, "workspaces": 1000, "connections": 64, "poll_interval": 2.0}
QUICK = {"duration": 3, "workspaces": 200}
# The benchmarks of this open-loop load: summary row, the latency it measures, target (ms).
KINDS = {
    "visibility": ("visible_embedded", "visible_ms", 100.0, "Ack → visible at {rate} events/s,"
                   " embedded projector"),
    "redis_visibility": ("visible_redis", "visible_ms", 250.0, "Ack → visible at {rate}"
                         " events/s, via Redis and `billhook worker`"),
    "pg_visibility": ("pg_visible", "visible_ms", 250.0, "Ack → visible at {rate} events/s on"
                      " PostgreSQL, embedded projector"),
    "ingest_latency": ("ingest_p99", "ack_ms", 20.0, "Ingest latency: send → durable ack at"
                       " {rate:,} events/s"),
}  # fmt: skip
# Never db 0: the benchmark flushes its db before and after.
REDIS_URL = "redis://127.0.0.1:6379/14"
# The achieved send rate must be this close to the asked one for the run to count.
RATE_TOLERANCE = 0.05
LOADGEN_EXTRA_S = 180
WAKEUPS = re.compile(r"^billhook_wakeups_sent_total ([0-9.e+]+)$", re.MULTILINE)
# The statuses the load turns through: all keep the tier, so the seat count always shows.
STATUS_CYCLE = (("active", False), ("past_due", False), ("trialing", False), ("active", True))


def initial_sub(n: int) -> harness.Sub:
    """What workspace `n` is created with before the load: active, one seat."""
    return harness.Sub(f"ws_{n:06d}")


def load_sub(i: int, workspaces: int) -> harness.Sub:
    """What event `i` of the load says: seats up by one, status turning, on workspace i % N."""
    n, turn = i % workspaces, i // workspaces
    status, cancel = STATUS_CYCLE[(turn + n) % len(STATUS_CYCLE)]
    return harness.Sub(f"ws_{n:06d}", status=status, quantity=2 + turn, cancel=cancel)


@dataclass(frozen=True)
class Storage:
    """Where the server keeps its log and projections when not in SQLite files: `[storage]
    url`, the CPU seconds so far of the database processes serving it (pinned to the
    server's core: not noise), and where those ran, for the method list."""

    url: str
    cpu_s: Callable[[], float]
    placement: str


@dataclass(frozen=True)
class Run:
    """What the load generator measured, the CPU shares, and the checks after the load."""

    out: dict[str, Any]
    server: float
    server_loop: float
    worker: float | None
    database: float | None
    loadgen: float
    noise: tuple[float, float]
    mismatches: list[str]
    wakeups: float | None

    def q(self, series: str, p: float) -> float:
        return harness.percentile(self.out[series], p)

    def spread(self, series: str) -> str:
        """p50 / p95 / p99 / max of a latency series, in ms."""
        values = self.out[series]
        return " / ".join(f"{harness.percentile(values, p):.2f}" for p in (50, 95, 99, 100)) + " ms"

    @property
    def send_rate(self) -> float:
        span = self.out["last_send_s"] - self.out["first_send_s"]
        return (self.out["sent"] - 1) / span if span > 0 else 0.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rate", type=int, metavar="EVENTS_S")
    parser.add_argument("--duration", type=int, metavar="SECONDS")
    parser.add_argument("--workspaces", type=int, metavar="N")
    parser.add_argument("--connections", type=int, metavar="N")
    parser.add_argument("--poll-interval", type=float, metavar="MS", help="rest between polls")
    parser.add_argument("--redis-url", default=REDIS_URL, help="redis_visibility only")


@contextlib.contextmanager
def redis_db(url: str, work: Path) -> Iterator[str]:
    """A flushed Redis db at `url` (or, when none answers at the default, a redis-server of
    our own), flushed again afterwards."""
    if urlsplit(url).path.strip("/") in ("", "0"):
        raise harness.BenchError(f"{url}: the benchmark flushes its db, so not db 0")
    with contextlib.ExitStack() as stack:
        if not redis_answers(url):
            if url != REDIS_URL:
                raise harness.BenchError(f"no Redis answers at {url}")
            own = RedisServer(
                harness.ensure_tool("redis-server", "redis-server"), free_port(), work
            )
            own.start()
            stack.callback(own.stop)
            url = own.url(14)
        with redis_client(url) as client:
            client.flushdb()
        try:
            yield url
        finally:
            with redis_client(url) as client:
                client.flushdb()


def wakeups_sent(url: str) -> float:
    """`billhook_wakeups_sent_total` from the server's /metrics."""
    found = WAKEUPS.search(httpx.get(f"{url}/metrics", timeout=10).text)
    if found is None:
        raise harness.BenchError("/metrics has no billhook_wakeups_sent_total")
    return float(found.group(1))


def run_loadgen(plan: dict[str, Any]) -> dict[str, Any]:
    """bench/loadgen.py on the load generator's core; what it measured."""
    harness.ensure_module("aiohttp")
    command = [sys.executable, "-m", "bench.loadgen", json.dumps(plan)]
    timeout = plan["duration"] + LOADGEN_EXTRA_S
    measured: dict[str, Any] = json.loads(
        harness.run_pinned("the load generator", harness.LOADGEN_CORE, command, timeout)
    )
    return measured


def measure(
    args: argparse.Namespace,
    *,
    redis: bool,
    watch: bool,
    storage: Storage | None = None,
    follow: bool = False,
) -> Run:
    """Serve billhook (and its worker), create the workspaces, run the load, check the end.

    `follow`: the load generator also follows the change feed's stream (bench/feed_lag.py)."""
    token, secret = "bench-read-" + secrets.token_hex(16), "whsec_bench_" + secrets.token_hex(16)
    run_id = secrets.token_hex(5)
    with harness.scratch_dir("latency-") as work, contextlib.ExitStack() as stack:
        redis_url = stack.enter_context(redis_db(args.redis_url, work)) if redis else None
        config = harness.bench_config(
            work,
            secret=secret,
            token=token,
            redis_url=redis_url,
            storage_url=storage.url if storage else None,
        )
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = stack.enter_context(
            harness.serve(harness.billhook_command(config, port), work / "server.log", port)
        )
        pids = [server]
        if redis:
            worker = [sys.executable, "-m", "billhook", "worker", "--config", str(config)]
            worker += ["--threads", "1", "--log-level", "warning"]
            pids.append(stack.enter_context(harness.serve(worker, work / "worker.log")))
        print(f"creating {args.workspaces:,} workspaces through the webhook path", flush=True)
        created = int(time.time()) - 2 * 86_400
        subs = [initial_sub(n) for n in range(args.workspaces)]
        harness.feed(url, token, secret, subs, "created", created)
        plan = {k: getattr(args, k) for k in ("workspaces", "rate", "duration", "connections")}
        plan |= {"url": url, "token": token, "secret": secret, "run_id": run_id}
        plan["poll_interval_s"] = args.poll_interval / 1000
        plan |= {"created": created, "watch": watch, "follow": follow}
        print(
            f"load: {args.rate}/s for {args.duration} s from core {harness.LOADGEN_CORE}",
            flush=True,
        )
        sent_before = wakeups_sent(url) if redis else 0.0
        database_cpu = storage.cpu_s if storage else harness.no_companion
        before, database_before = harness.Cpu.now(*pids), database_cpu()
        out = run_loadgen(plan)
        used = before.until(harness.Cpu.now(*pids))
        database_s = database_cpu() - database_before
        wakeups = wakeups_sent(url) - sent_before if redis else None
        if not watch:
            harness.wait_projected(url, token, out["top_seq"])
        last = {f"ws_{n:06d}": initial_sub(n) for n in range(args.workspaces)}
        for i in range(out["sent"]):
            last[load_sub(i, args.workspaces).workspace] = load_sub(i, args.workspaces)
        mismatches = harness.check_all(url, token, last)
    busy = max(float(out["load_wall_s"]), 1e-9)
    return Run(
        out=out,
        server=used.procs[0] / busy,
        server_loop=used.loop / busy,
        worker=used.procs[1] / busy if redis else None,
        database=database_s / busy if storage else None,
        loadgen=out["load_cpu_s"] / busy,
        noise=used.others(sum(used.procs) + database_s, used.children),
        mismatches=mismatches,
        wakeups=wakeups,
    )


def problems(r: Run, rate: int) -> list[str]:
    """What makes the run doubtful or shows billhook misbehaving; empty when nothing does."""
    o = r.out
    unanswered = o["sent"] - o["acked"] - o["non_2xx"] - o["errors"]
    checks = [
        (o["non_2xx"], f"{o['non_2xx']} deliveries answered non-2xx"),
        (o["errors"], f"{o['errors']} deliveries failed: " + "; ".join(o["error_samples"])),
        (unanswered, f"{unanswered} deliveries never answered"),
        (o["unresolved"], f"{o['unresolved']} acked events never became visible"),
        (o["poll_errors"], f"{o['poll_errors']} polls failed"),
        (
            abs(r.send_rate - rate) > RATE_TOLERANCE * rate,
            f"sent {r.send_rate:,.0f}/s, not {rate}/s",
        ),
        (
            o["sample_failures"],
            "read-backs missed their change: " + "; ".join(o["sample_failures"][:3]),
        ),
        (r.mismatches, f"{len(r.mismatches)} workspaces differ: " + "; ".join(r.mismatches[:3])),
    ]
    return [message for failed, message in checks if failed]


def load_lines(
    args: argparse.Namespace, redis: bool, watch: bool, storage: Storage | None = None
) -> list[str]:
    """How the server ran and how the load was sent, for the method list."""
    server = (
        "`billhook serve` with `[redis] url` (the receiver sends coalesced dramatiq wake-ups)"
        f" and `billhook worker --threads 1`, both pinned to core 0; Redis at {args.redis_url}"
        " (unless none answered there: a redis-server of its own), flushed before and after,"
        " not pinned (its CPU counts as noise)"
        if redis
        else "`billhook serve` with its default settings (embedded projector on), pinned to core 0"
    )
    if storage is not None:
        server += (
            "; `[storage] url` on a throwaway PostgreSQL database created for the run and"
            f" dropped after, {storage.placement}"
        )
    return [
        f"Server: {server}; a read token, a Stripe secret and the test price map;"
        f" {harness.server_stack()}.",
        f"Data: {args.workspaces:,} workspaces, each created through `POST /webhooks/stripe`"
        " and projected before the load.",
        "Load: bench/loadgen.py (asyncio on uvloop, aiohttp, up to"
        f" {args.connections} keep-alive connections) pinned to core 1, sending signed"
        f" `customer.subscription.updated` events open-loop at {args.rate}/s for"
        f" {args.duration} s (event *i* due at start + *i*/rate), each changing a workspace's"
        " seats and status; afterwards every workspace is compared with its last event.",
        *(
            [
                "Measure: for each 2xx ack (its `seq`), the time until a poll of"
                " `GET /v1/workspaces/ws_probe/entitlements` answers with `as_of_seq` ≥ that seq;"
                f" one poller resting {args.poll_interval:g} ms between polls, so each figure may"
                " overstate the delay by up to one poll cycle (below), never understate it; one"
                " event in 20 is also read back from its own workspace."
            ]
            if watch
            else [
                "Measure: each event's time from its send to its 2xx, given once its row is"
                " committed with `synchronous=FULL`; nothing polls the API during the load."
            ]
        ),
    ]


def values(r: Run, args: argparse.Namespace, watch: bool) -> dict[str, str]:
    """The figures of a run, label → text."""
    o = r.out
    rows = {
        "events sent / acked (2xx)": f"{o['sent']:,} / {o['acked']:,}",
        "achieved send rate": f"{r.send_rate:,.1f}/s (asked {args.rate}/s; send lag p99"
        f" {r.q('send_lag_ms', 99):.2f} ms)",
        "send → ack p50 / p95 / p99 / max": r.spread("ack_ms"),
    }
    if watch:
        rows["ack → visible p50 / p95 / p99 / max"] = r.spread("visible_ms")
        rows["resolution: poll cycle p50 / p99"] = (
            f"{r.q('poll_cycle_ms', 50):.2f} / {r.q('poll_cycle_ms', 99):.2f} ms"
            f" ({o['polls']:,} polls, round trip p50 {r.q('poll_rtt_ms', 50):.2f} ms)"
        )
        rows["read-backs / missed"] = f"{o['sampled']:,} / {len(o['sample_failures'])}"
    rows["workspaces checked after the load / differing"] = (
        f"{args.workspaces:,} / {len(r.mismatches)}"
    )
    worker = ("", "") if r.worker is None else (" / worker", f" / {r.worker:.0%}")
    if r.database is not None:
        worker = (f"{worker[0]} / PostgreSQL backends", f"{worker[1]} / {r.database:.0%}")
    rows[f"CPU: server (its event loop){worker[0]} / load generator"] = (
        f"{r.server:.0%} ({r.server_loop:.0%}){worker[1]} / {r.loadgen:.0%} of a core"
    )
    if r.wakeups is not None:
        first, rest = o["visible_ms"][: args.rate], o["visible_ms"][args.rate :]
        rows["ack → visible: max of the first second / p99 of the rest"] = (
            f"{max(first, default=0):.2f} / {harness.percentile(rest, 99):.2f} ms (an idle dramatiq"
            " consumer polls Redis with a backoff of up to 1 s)"
        )
        rows["dramatiq wake-ups per 1,000 events"] = f"{1000 * r.wakeups / max(o['acked'], 1):.1f}"
    return rows


def run(
    name: str, args: argparse.Namespace, argv: Sequence[str], storage: Storage | None = None
) -> dict[str, Any]:
    """Benchmark `name` of KINDS; with `storage`, the server keeps its data there."""
    key, series, target, title = KINDS[name]
    redis, watch = name == "redis_visibility", series == "visible_ms"
    r = measure(args, redis=redis, watch=watch, storage=storage)
    p99 = r.q(series, 99)
    measured = (
        f"p99 {p99:.1f} ms (p50 {r.q(series, 50):.1f}, p95 {r.q(series, 95):.1f}, max"
        f" {r.q(series, 100):.1f} ms; {r.out['acked']:,} events acked at {r.send_rate:,.0f}/s)"
    )
    return harness.result(
        name,
        argv,
        args.quick,
        title=title.format(rate=args.rate),
        figures=[harness.figure(key, measured, p99 < target)],
        method=load_lines(args, redis, watch, storage),
        values=values(r, args, watch),
        noise=harness.noise_text([r.noise]),
        problems=problems(r, args.rate),
    )
