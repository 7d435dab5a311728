"""Replay of 1,000,000 events on PostgreSQL (SPEC §11, §4a): events/s, ≥ 20,000.

The log of bench/make_log.py (the one `python -m bench replay` uses) is moved
into a throwaway database of the machine's PostgreSQL by `billhook log copy`
(unmeasured), as an operator moving a deployment would. Each round then runs
`projections.rebuild.rebuild` — the fold and bulk write of `billhook replay` —
from seq 1, reading a `PostgresEventLog` and building the schema
`billhook_projections_replay`, in a process of its own pinned to core 0
(bench/replay_run.py), the backends serving it pinned there too
(bench/postgres.py). The rate is events ÷ that process's wall time, start-up
included; the figure is the median of the rounds.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

import psycopg

from bench import harness, postgres, replay
from bench.make_log import LogSpec, ensure
from billhook.log.postgres import LOG_SCHEMA
from billhook.testing.settings import write_config

NAMES = ("pg_replay",)
FULL = replay.FULL
QUICK = replay.QUICK
TARGET_RATE = 20_000
# Where each round's rebuild builds (dropped before and after it).
SHADOW_SCHEMA = "billhook_projections_replay"
COPY_TIMEOUT_S = 3_600


def add_arguments(parser: argparse.ArgumentParser) -> None:
    replay.add_arguments(parser)
    postgres.add_postgres_argument(parser)


def copy_log(sqlite_config: str, url: str) -> float:
    """`billhook log copy --to url` of the SQLite deployment; the seconds it took."""
    command = [sys.executable, "-m", "billhook", "log", "copy", "--config", sqlite_config]
    started = time.perf_counter()
    try:
        done = subprocess.run(
            [*command, "--to", url],
            cwd=harness.REPO,
            capture_output=True,
            text=True,
            timeout=COPY_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        raise harness.BenchError(f"billhook log copy took over {COPY_TIMEOUT_S} s") from None
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1][:200]
        raise harness.BenchError(f"billhook log copy failed: {tail}")
    return time.perf_counter() - started


def warm(url: str) -> int:
    """Read every payload once, so each round finds the log in PostgreSQL's cache and the
    page cache (as `python -m bench replay` reads events.db first); the rows read."""
    query = f"SELECT count(*), sum(length(payload)) FROM {LOG_SCHEMA}.events"
    with psycopg.connect(url, connect_timeout=postgres.CONNECT_TIMEOUT_S) as conn:
        found = conn.execute(query).fetchone()
    return int(found[0]) if found else 0


def run(name: str, args: argparse.Namespace, argv: Sequence[str]) -> dict[str, Any]:
    spec = LogSpec(args.events, args.subscriptions, args.seed)
    data, stats, reused = ensure(spec)
    version = postgres.server_version(args.postgres_url)
    rounds = []
    with (
        harness.scratch_dir("pg-replay-") as work,
        postgres.pg_deployment(args) as (url, backends),
    ):
        sqlite_config = write_config(work, name="sqlite.toml", data_dir=data, auth=None)
        print(f"copying {spec.events:,} events into PostgreSQL (billhook log copy)", flush=True)
        copy_s = copy_log(str(sqlite_config), url)
        if (rows := warm(url)) != spec.events:
            raise harness.BenchError(f"the copied log holds {rows:,} events, not {spec.events:,}")
        config = write_config(
            work, data_dir=work / "data", auth=None, sections={"storage": {"url": url}}
        )
        for number in range(1, args.rounds + 1):
            command = ["rebuild", str(config), SHADOW_SCHEMA]
            r = replay.measure(command, spec.events, backends.cpu_s)
            rounds.append(r)
            print(f"round {number}/{args.rounds}: replay {r['rate']:,.0f}/s", flush=True)
        placement, pin_problem = backends.placement(), backends.pin_problem
    rate = harness.median([r["rate"] for r in rounds])
    own = harness.median([spec.events / r["seconds"] for r in rounds])
    rss = max(r["peak_rss"] for r in rounds)
    mib = 2**20
    of = f"{spec.events:,} events; rebuild itself {own:,.0f}/s; medians of {args.rounds} rounds"
    return harness.result(
        name,
        argv,
        args.quick,
        title=f"Replay on PostgreSQL: rebuilding projections from {spec.events:,} events"
        f" ({spec.subscriptions:,} subscriptions)",
        figures=[
            harness.figure("pg_replay_rate", f"{rate:,.0f} events/s ({of})", rate >= TARGET_RATE)
        ],
        method=[
            f"Log: bench/make_log.py, {spec.events:,} events over {spec.subscriptions:,}"
            f" subscriptions, seed {spec.seed}"
            + (" (reused from an earlier run)" if reused else "")
            + f": {stats.describe()}; moved by `billhook log copy --to` into a throwaway"
            f" database created for the run and dropped after (unmeasured, {copy_s:,.0f} s).",
            f"Database: {version}; {placement}.",
            "Replay: `python -m bench.replay_run rebuild CONFIG billhook_projections_replay`,"
            " pinned to core 0: `projections.rebuild.rebuild` from seq 1, reading the"
            " PostgreSQL log and building that schema in the same database (dropped before and"
            " after each round).",
            f"{args.rounds} rounds, the log read once before the first (in the caches).",
        ],
        values={
            "**replay** (whole process)": f"**{rate:,.0f} events/s**",
            "rebuild itself (its own clock)": f"{own:,.0f} events/s",
            "CPU: replay process / PostgreSQL backends (median seconds)": (
                f"{harness.median([r['cpu'] for r in rounds]):,.1f} /"
                f" {harness.median([r['companion_cpu'] for r in rounds]):,.1f} s"
            ),
            "peak RSS of the replay process": f"{rss / mib:,.0f} MiB",
            "`billhook log copy` (set-up, unmeasured)": f"{copy_s:,.1f} s",
        },
        rounds=[
            {
                "round": n,
                "replay events/s (wall s)": f"{r['rate']:,.0f} ({r['wall']:.1f})",
                "replay CPU s / backends CPU s": f"{r['cpu']:.1f} / {r['companion_cpu']:.1f}",
                "peak RSS": f"{r['peak_rss'] / mib:,.0f} MiB",
                "others on core 0": f"{r['noise'][0]:.0%}",
            }
            for n, r in enumerate(rounds, start=1)
        ],
        noise=f"{max(r['noise'][0] for r in rounds):.0%} of core 0 (the one it uses)",
        problems=[pin_problem] if pin_problem else [],
    )
