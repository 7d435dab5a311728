"""Ingest ratio (SPEC §11): unique signed Stripe events/s, 32 connections, ÷ a minimal POST.

After a warm-up of the minimal app, each round serves billhook (a fresh data
dir, default settings) and then bench/minimal_app.py (the same uvicorn
settings) on core 0, each loaded by `wrk -t1 -c32` on core 1 for `--duration`
seconds. wrk cannot sign, so before each billhook run a pool of freshly
signed, unique events larger than the run can send is written for
bench/wrk.lua to send once each; afterwards the log is counted with sqlite3
and checked against wrk's answers. The figure is the median of the per-round
ratios of 2xx responses per second.
"""

from __future__ import annotations

import argparse
import contextlib
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg

from bench import harness
from billhook.log.postgres import LOG_SCHEMA
from billhook.testing.servers import free_port
from billhook.testing.stripe import stripe_event_body, stripe_headers, stripe_object

NAMES = ("ingest",)
FULL = {"rounds": 5, "duration": 8, "connections": 32}
QUICK = {"rounds": 2, "duration": 2}
TARGET = 0.6
WARMUP_S = 2
# What a billing endpoint receives, in turn: (event type, Stripe example object); ~3 KB mean.
MIX = (
    ("customer.subscription.updated", "subscription"),
    ("invoice.paid", "invoice"),
    ("checkout.session.completed", "checkout.session"),
    ("customer.updated", "customer"),
    ("price.updated", "price"),
)
# The baseline does not care which events it gets: one small pool, cycled.
BASELINE_POOL = 2_000
# A billhook pool holds this many times what the expected rate could send, within bounds
# (the upper one keeps wrk's memory to about a gigabyte).
POOL_MARGIN, POOL_MIN, POOL_MAX = 1.3, 5_000, 300_000
MARKERS = ('"accepted"', '"duplicate"')


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rounds", type=int, metavar="N")
    parser.add_argument("--duration", type=int, metavar="SECONDS")
    parser.add_argument("--connections", type=int, metavar="N")


def write_pool(path: Path, count: int, secret: str, prefix: str) -> float:
    """`count` signed deliveries, each a new event about an object of its own; mean body bytes.

    All are signed with one timestamp, taken now: the pool stays within
    billhook's signature tolerance for the next few minutes.
    """
    objects = [(event_type, stripe_object(name)) for event_type, name in MIX]
    signed_at, total = int(time.time()), 0

    def requests() -> Iterator[tuple[str, str, str, dict[str, str]]]:
        nonlocal total
        for i in range(count):
            event_type, obj = objects[i % len(objects)]
            unique = f"{prefix}{i:012d}"
            own = {**obj, "id": f"{obj['id'].partition('_')[0]}_{unique}"}
            body = stripe_event_body(
                event_type, event_id=f"evt_{unique}", obj=own, created=signed_at
            )
            total += len(body)
            headers = stripe_headers(body, secret, signed_at)
            yield "POST", harness.WEBHOOK_PATH, body.decode(), headers

    harness.write_requests(path, requests())
    return total / max(count, 1)


def load(
    command: list[str],
    port: int,
    work: Path,
    pool: Path,
    args: argparse.Namespace,
    duration: int,
    companion: Callable[[], float] = harness.no_companion,
) -> dict[str, Any]:
    """Serve `command`, run wrk on it once; wrk's figures with the CPU shares of the run
    (`companion`: see harness.run_wrk)."""
    with harness.serve(command, work / "server.log", port) as pid:
        return harness.run_wrk(
            pid, port, pool, "once", MARKERS, duration, args.connections, companion
        )


def billhook_run(
    work: Path,
    count: int,
    secret: str,
    args: argparse.Namespace,
    storage_url: str | None = None,
    companion: Callable[[], float] = harness.no_companion,
) -> dict[str, Any]:
    """Sign `count` new events, serve billhook on a fresh data dir (and, with `storage_url`,
    the empty PostgreSQL database there), load it once, count its log."""
    pool = work / "requests"
    body_bytes = write_pool(pool, count, secret, work.parent.name[-6:] + work.name)
    config = harness.bench_config(work, secret=secret, token=None, storage_url=storage_url)
    port = free_port()
    command = harness.billhook_command(config, port)
    b = load(command, port, work, pool, args, args.duration, companion)
    pool.unlink()
    rows, ids, commits = log_counts(work / "data", storage_url)
    return b | {"rows": rows, "repeated": rows - ids, "commits": commits, "bytes": body_bytes}


def log_counts(data_dir: Path, storage_url: str | None = None) -> tuple[int, int, int]:
    """Rows, distinct event ids and commits of the log in `data_dir` (or at `storage_url`).

    Run once the server has stopped: whatever it was still committing is in
    the log then. Commits are distinct `received_at` stamps, one per committed
    batch (ms resolution: a lower bound).
    """
    sql = "SELECT count(*), count(DISTINCT event_id), count(DISTINCT received_at) FROM {}"
    if storage_url:
        with psycopg.connect(storage_url, connect_timeout=10) as conn:
            found = conn.execute(sql.format(f"{LOG_SCHEMA}.events")).fetchone()
    else:
        with contextlib.closing(sqlite3.connect(data_dir / "events.db")) as log:
            found = log.execute(sql.format("events")).fetchone()
    rows, ids, commits = found or (0, 0, 0)
    return int(rows), int(ids), int(commits)


def problems_of(n: int, b: dict[str, Any], m: dict[str, Any], conns: int) -> list[str]:
    (accepted, duplicate), rows = b["marks"], b["rows"]
    checks = [
        (b["non_2xx"] or b["socket_errors"], f"{b['non_2xx']} non-2xx, {b['socket_errors']} lost"),
        (duplicate or accepted != b["ok"], f"{b['ok'] - accepted} 2xx answers were not `accepted`"),
        (b["sent"] >= b["pool"], f"the pool of {b['pool']:,} ran out"),
        (not accepted <= rows <= b["sent"], f"{rows:,} rows, not {accepted:,}..{b['sent']:,}"),
        (rows - accepted > conns, f"{rows - accepted} events in flight at stop"),
        (b["repeated"], "the log holds repeated event ids"),
        (m["non_2xx"] or m["socket_errors"], "the minimal app had non-2xx or socket errors"),
    ]  # fmt: skip
    return [f"round {n}: {text}" for failed, text in checks if failed]


def run(name: str, args: argparse.Namespace, argv: Sequence[str]) -> dict[str, Any]:
    secret = "whsec_bench_" + secrets.token_hex(16)
    runs: list[tuple[dict[str, Any], dict[str, Any]]] = []
    with harness.scratch_dir("ingest-") as work:
        baseline_pool = work / "baseline.requests"
        write_pool(baseline_pool, BASELINE_POOL, secret, "base")
        port = free_port()
        minimal = harness.minimal_command(port)
        print(f"warm-up: the minimal app for {WARMUP_S} s", flush=True)
        bound = load(minimal, port, work, baseline_pool, args, WARMUP_S)["rate"]
        for n in range(1, args.rounds + 1):
            # More than billhook can send: the baseline's best rate, or twice billhook's best.
            count = min(max(int(bound * args.duration * POOL_MARGIN), POOL_MIN), POOL_MAX)
            print(f"round {n}/{args.rounds}: signing {count:,} events", flush=True)
            (work / str(n)).mkdir()
            b = billhook_run(work / str(n), count, secret, args)
            m = load(minimal, port, work, baseline_pool, args, args.duration)
            runs.append((b, m))
            bound = min(max(m["rate"] for _, m in runs), 2 * max(b["rate"] for b, _ in runs))
            print(f"  billhook {b['rate']:,.0f}/s, minimal {m['rate']:,.0f}/s", flush=True)
    bs, ms = [b for b, _ in runs], [m for _, m in runs]
    ratio = harness.median([b["rate"] / m["rate"] for b, m in runs])
    rows, commits = sum(b["rows"] for b in bs), sum(b["commits"] for b in bs)

    def med(runs: list[dict[str, Any]], key: str) -> float:
        return float(harness.median([r[key] for r in runs]))

    return harness.result(
        name,
        argv,
        args.quick,
        title="Ingest: signed Stripe events/s ÷ minimal Starlette POST",
        figures=[
            harness.figure(
                "ingest_ratio",
                f"{ratio:.3f} (billhook {med(bs, 'rate'):,.0f} events/s ÷ minimal"
                f" {med(ms, 'rate'):,.0f} req/s; medians of {args.rounds} rounds)",
                ratio >= TARGET,
            )
        ],
        method=[
            "Servers: `billhook serve` (default settings, embedded projector on, a fresh data dir"
            f" each round) and bench/minimal_app.py, pinned to core 0; {harness.server_stack()}.",
            f"Load: `wrk -t1 -c{args.connections} -d{args.duration}s` pinned to core 1"
            f" (bench/wrk.lua); {args.rounds} rounds, billhook then the minimal app, after a"
            f" {WARMUP_S} s warm-up.",
            "Events: Stripe's example objects from billhook.testing (subscription, invoice,"
            " checkout session, customer, price events in turn), each a new `evt_` id about an"
            " object of its own, signed with `stripe` before each round; mean body"
            f" {med(bs, 'bytes'):,.0f} bytes.",
        ],
        values={
            "2xx/s, billhook / minimal": f"{med(bs, 'rate'):,.0f} / {med(ms, 'rate'):,.0f}",
            "p50 / p99 latency, billhook": f"{med(bs, 'p50_ms'):.2f} / {med(bs, 'p99_ms'):.2f} ms",
            "p50 / p99 latency, minimal": f"{med(ms, 'p50_ms'):.2f} / {med(ms, 'p99_ms'):.2f} ms",
            "server CPU per 2xx response, billhook / minimal": (
                f"{med(bs, 'cpu_us'):,.0f} / {med(ms, 'cpu_us'):,.0f} µs"
            ),
            "log": f"{rows:,} rows in {commits:,} commits ({rows / max(commits, 1):.1f} per fsync)",
            "**ratio** (median of per-round ratios)": f"**{ratio:.3f}**",
        },
        rounds=[
            {
                "round": n,
                "billhook events/s": round(b["rate"]),
                "minimal req/s": round(m["rate"]),
                "ratio": round(b["rate"] / m["rate"], 3),
                "p50 / p99 ms, billhook; minimal": f"{b['p50_ms']:.1f} / {b['p99_ms']:.1f};"
                f" {m['p50_ms']:.1f} / {m['p99_ms']:.1f}",
                "rows (accepted + in flight)": f"{b['rows']:,} ({b['marks'][0]:,} +"
                f" {b['rows'] - b['marks'][0]})",
                "commits": b["commits"],
                "CPU server (loop)/wrk: billhook, minimal": f"{b['cpu']}, {m['cpu']}",
                "others on cores 0/1": harness.noise_text([b["noise"], m["noise"]], ""),
            }
            for n, (b, m) in enumerate(runs, start=1)
        ],
        noise=harness.noise_text([r["noise"] for r in bs + ms]),
        problems=[
            p for n, (b, m) in enumerate(runs, 1) for p in problems_of(n, b, m, args.connections)
        ],
    )
