"""Outbound webhooks: change → delivered at 500 changes/s, and deliveries/s (SPEC §11).

`outbound_latency` is bench/feed_lag.py's load with an endpoint instead of a
stream: `billhook serve` (embedded projector and dispatcher) on core 0 with one
`[[outbound.endpoints]]` whose URL is a sink in bench/loadgen.py's process on
core 1, which verifies each delivery and notes when it arrived by `data.seq`.
Each event of the load changes one workspace's seats, so each acked `seq` gets
one delivery; the figure is ack → delivered, an upper bound of change →
delivered but for the ack's own trip (send → delivered bounds it outright).
The workspaces are created by a first server without the endpoint, and the
outbox starts at the head of the feed, so only the load's changes are sent.

`outbound_throughput` delivers a backlog: `--changes` workspaces created by a
server without the endpoint, then the outbox recreated with its fan-out cursor
at the start of the feed, and a server with the endpoint started: its
dispatcher fans the whole feed out and sends it to a sink (core 1) that answers
204 after `--answer-ms`. Deliveries/s are counted at the sink, from the first
delivery to the last, once per `--in-flight` value (`[outbound] max_in_flight`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from bench import feed_lag, harness, visibility
from billhook.config import load_settings
from billhook.outbound.endpoints import new_secret
from billhook.outbound.store import open_outbox, outbound_path
from billhook.projections.backend import open_live
from billhook.testing.servers import HOST, free_port, stop_process, wait_until

NAMES = ("outbound_latency", "outbound_throughput")
FULL = {
    "rate": 500,
    "duration": 20,
    "workspaces": 1000,
    "connections": 64,
    "changes": 20_000,
    "answer_ms": 20.0,
    "in_flight": "64,128",
}
QUICK = {"duration": 3, "workspaces": 200, "changes": 2_000}
LATENCY_TARGET_MS = 250.0
THROUGHPUT_TARGET = 1_000.0
# The endpoint's id (in the outbox, logs and metrics) and the path the sink serves.
ENDPOINT = "bench"
SINK_PATH = "/hooks"
# A sink that outlives this (billhook starting, the backlog fanned out and sent) failed.
SINK_TIMEOUT_S = 600.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rate", type=int, metavar="EVENTS_S", help="outbound_latency")
    parser.add_argument("--duration", type=int, metavar="SECONDS", help="outbound_latency")
    parser.add_argument("--workspaces", type=int, metavar="N", help="outbound_latency")
    parser.add_argument("--connections", type=int, metavar="N", help="outbound_latency")
    parser.add_argument("--changes", type=int, metavar="N", help="outbound_throughput backlog")
    parser.add_argument("--answer-ms", type=float, metavar="MS", help="the sink's answer time")
    parser.add_argument(
        "--in-flight", metavar="N[,N]", help="max_in_flight of each throughput round"
    )


def endpoint(port: int, secret: str, max_in_flight: int | None = None) -> dict[str, Any]:
    """The `[outbound]` table: one endpoint, the sink on `port`."""
    url = f"http://{HOST}:{port}{SINK_PATH}"
    table: dict[str, Any] = {"endpoints": [{"id": ENDPOINT, "url": url, "secrets": [secret]}]}
    return table | ({"max_in_flight": max_in_flight} if max_in_flight else {})


def server_url(port: int) -> str:
    return f"http://{HOST}:{port}"


def create_workspaces(
    work: Path, token: str, secret: str, subs: Sequence[harness.Sub], created: int
) -> Path:
    """Create `subs` through the webhook path of a server without endpoints, then stop it;
    the config (work/billhook.toml)."""
    config = harness.bench_config(work, secret=secret, token=token)
    port = free_port()
    log = work / "feed-server.log"
    with harness.serve(harness.billhook_command(config, port), log, port):
        print(f"creating {len(subs):,} workspaces through the webhook path", flush=True)
        harness.feed(server_url(port), token, secret, subs, "created", created)
    return config


def fresh_outbox(config: Path, *, at_head: bool) -> None:
    """Recreate the (stopped) server's outbox, its fan-out cursor at the head of the feed or
    at its start: every change after it is fanned out to the endpoint it first sees."""
    settings = load_settings(config, environ={})
    cursor = (0, 0)
    if at_head:
        store = open_live(settings)
        try:
            cursor = store.last_cursor()
        finally:
            store.close()
    path = outbound_path(settings)
    for suffix in ("", "-wal", "-shm"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)
    outbox = open_outbox(settings)
    try:
        outbox.enqueue(None, cursor, [], 0, 0)
    finally:
        outbox.close()


def outbox_counts(config: Path) -> dict[str, int]:
    """Deliveries by status in the (stopped) server's outbox."""
    outbox = open_outbox(load_settings(config, environ={}))
    try:
        return outbox.counts()
    finally:
        outbox.close()


def counts_text(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{status} {n:,}" for status, n in counts.items())


def unfinished(counts: Mapping[str, int]) -> list[str]:
    """The outbox's deliveries that did not end delivered, as a problem; empty if none."""
    left = {status: n for status, n in counts.items() if status != "delivered" and n}
    return [f"outbox after the run: {counts_text(left)} (not delivered)"] if left else []


# -- outbound_latency --------------------------------------------------------------------


def measure_latency(args: argparse.Namespace) -> tuple[visibility.Run, dict[str, int]]:
    """Create the workspaces, serve with the endpoint, run the load into the sink, check."""
    token, secret = "bench-read-" + secrets.token_hex(16), "whsec_bench_" + secrets.token_hex(16)
    hook_secret = new_secret()
    created = int(time.time()) - 2 * 86_400
    initial = [visibility.initial_sub(n) for n in range(args.workspaces)]
    with harness.scratch_dir("outbound-") as work:
        config = create_workspaces(work, token, secret, initial, created)
        fresh_outbox(config, at_head=True)
        sink_port, port = free_port(), free_port()
        config = harness.bench_config(
            work, secret=secret, token=token, outbound=endpoint(sink_port, hook_secret)
        )
        url = server_url(port)
        log = work / "server.log"
        with harness.serve(harness.billhook_command(config, port), log, port) as server:
            plan = {k: getattr(args, k) for k in ("workspaces", "rate", "duration", "connections")}
            plan |= {"url": url, "token": token, "secret": secret, "run_id": secrets.token_hex(5)}
            plan |= {"created": created, "watch": False, "follow": False, "poll_interval_s": 0}
            plan["sink"] = {"port": sink_port, "secret": hook_secret}
            print(
                f"load: {args.rate}/s for {args.duration} s, sink on core {harness.LOADGEN_CORE}",
                flush=True,
            )
            before = harness.Cpu.now(server)
            out = visibility.run_loadgen(plan)
            used = before.until(harness.Cpu.now(server))
            harness.wait_projected(url, token, out["top_seq"])
            last = {sub.workspace: sub for sub in initial}
            for i in range(out["sent"]):
                sub = visibility.load_sub(i, args.workspaces)
                last[sub.workspace] = sub
            mismatches = harness.check_all(url, token, last)
        counts = outbox_counts(config)
    busy = max(float(out["load_wall_s"]), 1e-9)
    run = visibility.Run(
        out=out,
        server=used.procs[0] / busy,
        server_loop=used.loop / busy,
        worker=None,
        database=None,
        loadgen=out["load_cpu_s"] / busy,
        noise=used.others(used.procs[0], used.children),
        mismatches=mismatches,
        wakeups=None,
    )
    return run, counts


def latency_problems(r: visibility.Run, rate: int, counts: Mapping[str, int]) -> list[str]:
    """The load's problems, and the deliveries': missing, refused, twice, wrong, left over."""
    o = r.out
    checks = [
        (o["stream_errors"], "the sink failed: " + "; ".join(o["stream_errors"][:3])),
        (o["unseen"], f"{o['unseen']} acked events' changes were never delivered"),
        (o["rejected"], f"{o['rejected']} deliveries did not verify (answered 400)"),
        (o["duplicate_changes"], f"{o['duplicate_changes']} changes were delivered twice"),
        (o["foreign_changes"], f"{o['foreign_changes']} deliveries of no event of the load"),
        (
            o["change_failures"],
            "deliveries differ from their event: " + "; ".join(o["change_failures"][:3]),
        ),
    ]
    failed = [message for bad, message in checks if bad]
    return visibility.problems(r, rate) + failed + unfinished(counts)


def run_latency(name: str, args: argparse.Namespace, argv: Sequence[str]) -> dict[str, Any]:
    r, counts = measure_latency(args)
    o = r.out
    delivered = o["seen_ms"]
    p99 = harness.percentile(delivered, 99)
    measured = (
        f"p99 {p99:.1f} ms ack → delivered (p50 {harness.percentile(delivered, 50):.1f}, max"
        f" {harness.percentile(delivered, 100):.1f} ms; {len(delivered):,} changes at"
        f" {r.send_rate:,.0f} events/s)"
    )
    load = visibility.load_lines(args, redis=False, watch=False)
    method = [
        load[0].replace(
            "with its default settings (embedded projector on)",
            "with its default settings (embedded projector and dispatcher on) and one"
            " `[[outbound.endpoints]]` (default `[outbound]` settings: `max_in_flight` 64)",
        ),
        load[1].replace("before the load.", "before the load, by a first server without the")
        + " endpoint; the outbox then starts at the head of the feed, so only the load's"
        " changes are delivered.",
        load[2],
        "Measure: the endpoint is a sink in the load generator's process (aiohttp.web, core 1)"
        " that verifies every delivery with `standardwebhooks` (about 10 µs each), notes its"
        " arrival by `data.seq` when its body has been read, and answers 204. A change"
        " carries no projection commit time, so the figure is **ack → delivered**: from the"
        " event's 2xx (its `seq`) to the delivery of its change (same `seq`). The projection"
        " commits an event only after it is durably logged, which is when the ack is sent, so"
        " ack → delivered exceeds change → delivered except by the ack's own trip to the"
        " client; send → delivered (below) bounds it outright. Each delivered change is"
        " compared with its event (workspace, tier, status, seats).",
    ]
    values = {
        "events sent / acked (2xx)": f"{o['sent']:,} / {o['acked']:,}",
        "achieved send rate": f"{r.send_rate:,.1f}/s (asked {args.rate}/s; send lag p99"
        f" {r.q('send_lag_ms', 99):.2f} ms)",
        "send → ack p50 / p95 / p99 / max": r.spread("ack_ms"),
        "**ack → delivered** p50 / p95 / p99 / max": feed_lag.spread(delivered),
        "send → delivered p50 / p95 / p99 / max": feed_lag.spread(o["sent_seen_ms"]),
        "requests at the sink / refused (did not verify) / same `webhook-id` again": (
            f"{o['deliveries']:,} / {o['rejected']:,} / {o['duplicate_ids']:,}"
        ),
        "changes delivered / missing / twice / not of the load": (
            f"{len(delivered):,} / {o['unseen']:,} / {o['duplicate_changes']:,}"
            f" / {o['foreign_changes']:,}"
        ),
        "changes delivered before their ack arrived": f"{o['seen_before_ack']:,}",
        "deliveries differing from their event": f"{len(o['change_failures']):,}",
        "outbox after the run": counts_text(counts),
        "workspaces checked after the load / differing": (
            f"{args.workspaces:,} / {len(r.mismatches)}"
        ),
        "CPU: server (its event loop) / load generator with sink": (
            f"{r.server:.0%} ({r.server_loop:.0%}) / {r.loadgen:.0%} of a core"
        ),
    }
    return harness.result(
        name,
        argv,
        args.quick,
        title=f"Outbound: ack → entitlement webhook delivered at {args.rate} events/s",
        figures=[
            harness.figure(
                "outbound_latency", measured, bool(delivered) and p99 < LATENCY_TARGET_MS
            )
        ],
        method=method,
        values=values,
        noise=harness.noise_text([r.noise]),
        problems=latency_problems(r, args.rate, counts),
    )


# -- outbound_throughput -----------------------------------------------------------------


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex((HOST, port)) == 0


@contextlib.contextmanager
def sink_process(plan: dict[str, Any], work: Path) -> Iterator[subprocess.Popen[bytes]]:
    """bench/loadgen.py as a sink only, pinned to the load generator's core, listening;
    stopped when the block ends if it is still running. Its JSON goes to work/sink.json."""
    harness.ensure_module("aiohttp")
    command = [sys.executable, "-m", "bench.loadgen", json.dumps(plan)]
    with (work / "sink.json").open("wb") as out, (work / "sink.log").open("wb") as err:
        process = subprocess.Popen(
            harness.pinned(harness.LOADGEN_CORE, command),
            cwd=harness.REPO,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
        )
    try:
        port = plan["sink"]["port"]
        up = lambda: process.poll() is not None or listening(port)  # noqa: E731
        wait_until(up, harness.START_TIMEOUT_S, "the sink to listen")
        if process.poll() is not None:
            raise harness.BenchError(f"the sink exited at start: {sink_tail(work)}")
        yield process
    except TimeoutError as e:
        raise harness.BenchError(str(e)) from None
    finally:
        stop_process(process)


def sink_tail(work: Path) -> str:
    lines = (work / "sink.log").read_text(errors="replace").strip().splitlines()
    return (lines[-1] if lines else "no output")[:200]


def deliver_backlog(
    work: Path, token: str, secret: str, changes: int, answer_ms: float, in_flight: int
) -> dict[str, Any]:
    """One round: the outbox from the start of the feed, a sink, a server with the endpoint;
    what the sink measured, with the server's CPU and the outbox's counts."""
    fresh_outbox(work / "billhook.toml", at_head=False)
    sink_port, port = free_port(), free_port()
    hook_secret = new_secret()
    sink = {"port": sink_port, "secret": hook_secret, "delay_s": answer_ms / 1000}
    plan = {"rate": 0, "sink": sink | {"expect": changes}}
    print(f"delivering {changes:,} changes, max_in_flight {in_flight}", flush=True)
    with sink_process(plan, work) as process:
        config = harness.bench_config(
            work, secret=secret, token=token, outbound=endpoint(sink_port, hook_secret, in_flight)
        )
        log = work / f"server-{in_flight}.log"
        with harness.serve(harness.billhook_command(config, port), log, port) as server:
            before = harness.Cpu.now(server)
            try:
                process.wait(timeout=SINK_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                raise harness.BenchError(
                    f"the sink did not finish within {SINK_TIMEOUT_S:.0f} s"
                ) from None
            used = before.until(harness.Cpu.now(server))
    if process.returncode != 0:
        raise harness.BenchError(f"the sink exited with {process.returncode}: {sink_tail(work)}")
    out: dict[str, Any] = json.loads((work / "sink.json").read_text())
    span = out["last_delivery_s"] - out["first_delivery_s"]
    return out | {
        "in_flight": in_flight,
        "rate": (out["unique_ids"] - 1) / span if span > 0 else 0.0,
        "span_s": span,
        "server_cpu_s": used.procs[0],
        "server_wall_s": used.wall,
        "noise": used.others(used.procs[0], out["load_cpu_s"]),
        "counts": outbox_counts(config),
    }


def throughput_problems(r: Mapping[str, Any], changes: int) -> list[str]:
    """A round's problems: changes not delivered, refused, twice, left in the outbox."""
    at = f"max_in_flight {r['in_flight']}: "
    checks = [
        (r["stream_errors"], "the sink failed: " + "; ".join(r["stream_errors"][:3])),
        (r["unique_ids"] < changes, f"{changes - r['unique_ids']:,} changes never delivered"),
        (r["unique_ids"] > changes, f"{r['unique_ids'] - changes:,} deliveries beyond the backlog"),
        (r["rejected"], f"{r['rejected']} deliveries did not verify (answered 400)"),
        (r["duplicate_ids"], f"{r['duplicate_ids']} deliveries came twice (same `webhook-id`)"),
    ]
    failed = [message for bad, message in checks if bad] + unfinished(r["counts"])
    return [at + message for message in failed]


def per_delivery_us(r: Mapping[str, Any]) -> float:
    """The server's CPU (its whole run) per change delivered, in µs."""
    return float(r["server_cpu_s"]) * 1e6 / max(int(r["unique_ids"]), 1)


def run_throughput(name: str, args: argparse.Namespace, argv: Sequence[str]) -> dict[str, Any]:
    flights = [int(n) for n in str(args.in_flight).split(",") if n.strip()]
    if not flights or min(flights) < 1:
        raise harness.BenchError(f"--in-flight {args.in_flight}: positive numbers, comma-separated")
    token, secret = "bench-read-" + secrets.token_hex(16), "whsec_bench_" + secrets.token_hex(16)
    created = int(time.time()) - 2 * 86_400
    subs = [visibility.initial_sub(n) for n in range(args.changes)]
    with harness.scratch_dir("outbound-") as work:
        create_workspaces(work, token, secret, subs, created)
        rounds = [
            deliver_backlog(work, token, secret, args.changes, args.answer_ms, n) for n in flights
        ]
    first = rounds[0]
    clean = first["unique_ids"] == args.changes and not first["duplicate_ids"]
    measured = (
        f"{first['rate']:,.0f} deliveries/s to one endpoint answering in {args.answer_ms:g} ms"
        f" (max_in_flight {first['in_flight']}; {first['unique_ids']:,} of {args.changes:,}"
        f" delivered once each)"
    )
    rows = [
        {
            "max_in_flight": r["in_flight"],
            "deliveries/s": f"{r['rate']:,.0f}",
            "delivered / backlog": f"{r['unique_ids']:,} / {args.changes:,}",
            "same `webhook-id` again": r["duplicate_ids"],
            "first → last delivery": f"{r['span_s']:.2f} s",
            "server CPU per delivery": f"{per_delivery_us(r):,.0f} µs",
            "CPU: server / sink": f"{r['server_cpu_s'] / max(r['server_wall_s'], 1e-9):.0%}"
            f" / {r['sink_cpu_s'] / max(r['span_s'], 1e-9):.0%} of a core",
        }
        for r in rounds
    ]
    method = [
        "Server: `billhook serve` with its default settings (embedded projector and dispatcher"
        " on), pinned to core 0, with one `[[outbound.endpoints]]` and `[outbound]"
        " max_in_flight` as in each round (64 is the default); a read token, a Stripe secret"
        f" and the test price map; {harness.server_stack()}; the dispatcher sends with aiohttp.",
        f"Data: {args.changes:,} workspaces, each created through `POST /webhooks/stripe` (one"
        " change each) by a first server without the endpoint; then, for each round, the"
        " outbox is recreated with its fan-out cursor at the start of the feed and a server"
        " with the endpoint is started, which fans the whole feed out to it and delivers it.",
        "Sink: bench/loadgen.py as a sink only (asyncio on uvloop, aiohttp.web), pinned to"
        " core 1, verifying every delivery with `standardwebhooks` and answering 204 after"
        f" `asyncio.sleep({args.answer_ms / 1000:g})`; it stops once every change arrived (then"
        " waits 1 s for late duplicates).",
        "Measure: distinct `webhook-id`s received ÷ the time from the first delivery to the"
        " last, at the sink; every change must arrive once. Server CPU is over the server's"
        " whole run (start, fan-out and delivery), ÷ that wall time; the sink's is over"
        " first → last delivery.",
    ]
    values = {
        f"**deliveries/s** (max_in_flight {first['in_flight']})": f"{first['rate']:,.0f}",
        "answer time of the sink": f"{args.answer_ms:g} ms",
        "outbox after the first round": counts_text(first["counts"]),
    }
    return harness.result(
        name,
        argv,
        args.quick,
        title=f"Outbound: deliveries/s to one endpoint answering in {args.answer_ms:g} ms",
        figures=[
            harness.figure(
                "outbound_throughput", measured, clean and first["rate"] >= THROUGHPUT_TARGET
            )
        ],
        method=method,
        values=values,
        rounds=rows,
        noise=harness.noise_text([r["noise"] for r in rounds]),
        problems=[p for r in rounds for p in throughput_problems(r, args.changes)],
        raw={"rounds": [{k: v for k, v in r.items() if not isinstance(v, list)} for r in rounds]},
    )


def run(name: str, args: argparse.Namespace, argv: Sequence[str]) -> dict[str, Any]:
    if name == "outbound_latency":
        return run_latency(name, args, argv)
    return run_throughput(name, args, argv)
