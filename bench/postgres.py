"""PostgreSQL ingest ÷ the SQLite figure, one receiver (SPEC §11, §4a); the PostgreSQL pieces
every pg_* benchmark shares.

`pg_ingest` runs bench/ingest.py's method with SQLite and PostgreSQL in turn
instead of billhook and the minimal app: each round serves `billhook serve`
on a fresh data dir (SQLite), then on a fresh throwaway database of the
machine's PostgreSQL (`[storage] url`), each pinned to core 0 and loaded by
`wrk -t1 -c32` on core 1 with a pool of freshly signed unique events; the
figure is the median of per-round ratios of 2xx/s, PostgreSQL ÷ SQLite.

Every pg_* benchmark runs on a database created for it and dropped after,
whatever happens (`database`), and pins the backends serving that database
to core 0 (`Backends`): the server's side, as the SQLite server does its own
writing there. Their CPU is reported beside the server's, not as noise.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

from bench import harness, ingest
from billhook.log.backend import database_name
from billhook.testing.servers import free_port

NAMES = ("pg_ingest",)
FULL = {"rounds": 5, "duration": 8, "connections": 32}
QUICK = {"rounds": 2, "duration": 2}
TARGET_RATIO = 0.5
# The maintenance database the throwaway databases are created from (trust auth on loopback).
ADMIN_URL = os.environ.get(
    "BILLHOOK_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
CONNECT_TIMEOUT_S = 10
# How often the benchmark's backends are looked for, to pin them and read their CPU.
BACKEND_POLL_S = 0.1


def add_postgres_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--postgres-url",
        default=ADMIN_URL,
        metavar="URL",
        help="the PostgreSQL maintenance database a throwaway database is created from"
        " (default: $BILLHOOK_BENCH_POSTGRES_URL or the local server)",
    )
    parser.add_argument(
        "--pin-postgres",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="pin the backends serving the benchmark's database to the server's core"
        " (default; --no-pin-postgres lets them run on any core, the load's included)",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    ingest.add_arguments(parser)
    add_postgres_argument(parser)


# -- the database --------------------------------------------------------------------------


@contextlib.contextmanager
def database(admin_url: str) -> Iterator[str]:
    """A new, empty database `billhook_bench_<random>` on the server of `admin_url`; its URL.
    Dropped on exit (`WITH (FORCE)`: whoever is still connected), however the block ends."""
    name = f"billhook_bench_{secrets.token_hex(6)}"
    _admin(admin_url, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield urlunsplit(urlsplit(admin_url)._replace(path=f"/{name}"))
    finally:
        drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        _admin(admin_url, drop)


def _admin(admin_url: str, statement: sql.Composed) -> None:
    try:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S) as conn:
            conn.execute(statement)
    except psycopg.Error as e:
        where = database_name(admin_url)
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise harness.BenchError(f"PostgreSQL at {where}: {first}") from None


def _stat_cpu_s(pid: int) -> float | None:
    """utime + stime of process `pid` in seconds; None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / harness.CLOCK_TICKS


class Backends:
    """The PostgreSQL backends serving database `url`, pinned to the server's core and their
    CPU counted, while the block runs.

    A thread looks for them every BACKEND_POLL_S (a pool opens connections as
    load grows), so a new backend runs a fraction of a second unpinned at
    most. `cpu_s()` is the CPU every backend seen so far has used since it
    started (one that ended keeps its last reading): the difference of two
    calls is what they used in between. Pinning needs root (CAP_SYS_NICE);
    without it `pin_problem` says why and the backends run where they like.
    """

    def __init__(self, url: str, admin_url: str, core: int | None = harness.SERVER_CORE) -> None:
        self.name = urlsplit(url).path.strip("/")
        self.core = core
        self.pin_problem: str | None = None
        self._admin_url = admin_url
        self._seen: dict[int, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pg-backends", daemon=True)
        self._conn: psycopg.Connection[Any] | None = None

    def __enter__(self) -> Backends:
        try:
            self._conn = psycopg.connect(
                self._admin_url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S
            )
        except psycopg.Error as e:
            raise harness.BenchError(
                f"PostgreSQL at {database_name(self._admin_url)}: {e}"
            ) from None
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        if self._conn is not None:
            self._conn.close()

    def _run(self) -> None:
        while not self._stop.wait(BACKEND_POLL_S):
            with contextlib.suppress(psycopg.Error):
                self.refresh()

    def refresh(self) -> None:
        """Find the database's backends now: pin the new ones, read everyone's CPU."""
        with self._lock:
            assert self._conn is not None
            rows = self._conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s", (self.name,)
            ).fetchall()
            for (pid,) in rows:
                if pid not in self._seen and self.core is not None and not self.pin_problem:
                    try:
                        os.sched_setaffinity(pid, {self.core})
                    except PermissionError as e:
                        self.pin_problem = f"PostgreSQL's backends could not be pinned: {e}"
                    except ProcessLookupError:
                        continue
                cpu = _stat_cpu_s(pid)
                if cpu is not None:
                    self._seen[pid] = cpu

    def cpu_s(self) -> float:
        """CPU seconds the database's backends have used so far (read now)."""
        with contextlib.suppress(psycopg.Error):
            self.refresh()
        with self._lock:
            return sum(self._seen.values())

    def placement(self) -> str:
        """Where the backends ran, for the method list."""
        if self.pin_problem or self.core is None:
            why = " (no permission)" if self.pin_problem else " (`--no-pin-postgres`)"
            return (
                f"the backends serving the benchmark's database unpinned{why}: they ran on any"
                " core, and the noise of core 0 leaves out all of their CPU wherever it ran"
            )
        return (
            f"the backends serving the benchmark's database pinned to core {self.core} as they"
            " appear (found every 0.1 s); the server's background processes (WAL writer,"
            " checkpointer) unpinned, their CPU in the noise"
        )


@contextlib.contextmanager
def pg_deployment(args: argparse.Namespace) -> Iterator[tuple[str, Backends]]:
    """A throwaway database and its counted backends, pinned unless `--no-pin-postgres`."""
    core = harness.SERVER_CORE if args.pin_postgres else None
    with database(args.postgres_url) as url, Backends(url, args.postgres_url, core) as backends:
        yield url, backends


def server_version(admin_url: str) -> str:
    with psycopg.connect(admin_url, connect_timeout=CONNECT_TIMEOUT_S) as conn:
        found = conn.execute("SHOW server_version").fetchone()
        commit = conn.execute("SHOW synchronous_commit").fetchone()
        fsync = conn.execute("SHOW fsync").fetchone()
    version = str(found[0]).split()[0] if found else "?"
    parts = urlsplit(admin_url)
    return (
        f"PostgreSQL {version} at {parts.hostname or 'its socket'}:{parts.port or 5432}"
        f" (fsync {fsync[0] if fsync else '?'},"
        f" server default synchronous_commit {commit[0] if commit else '?'}; billhook sets it on"
        " for its sessions)"
    )


# -- pg_ingest: PostgreSQL ÷ SQLite --------------------------------------------------------


def pool_size(bound: float, duration: int) -> int:
    """Events to sign for one run: more than a server at `bound`/s could take in `duration`."""
    return min(max(int(bound * duration * ingest.POOL_MARGIN), ingest.POOL_MIN), ingest.POOL_MAX)


def warm_up(work: Path, secret: str, args: argparse.Namespace) -> float:
    """The minimal app's rate after a short run: an upper bound for billhook's (pool sizes)."""
    pool = work / "baseline.requests"
    ingest.write_pool(pool, ingest.BASELINE_POOL, secret, "base")
    port = free_port()
    print(f"warm-up: the minimal app for {ingest.WARMUP_S} s", flush=True)
    rate = ingest.load(harness.minimal_command(port), port, work, pool, args, ingest.WARMUP_S)
    return float(rate["rate"])


def pg_single(work: Path, count: int, secret: str, args: argparse.Namespace) -> dict[str, Any]:
    """ingest.billhook_run on a fresh throwaway database, its backends pinned and counted."""
    with pg_deployment(args) as (url, backends):
        run = ingest.billhook_run(work, count, secret, args, url, backends.cpu_s)
    return run | {"pin_problem": backends.pin_problem, "placement": backends.placement()}


def run(name: str, args: argparse.Namespace, argv: Sequence[str]) -> dict[str, Any]:
    secret = "whsec_bench_" + secrets.token_hex(16)
    runs: list[tuple[dict[str, Any], dict[str, Any]]] = []
    version = server_version(args.postgres_url)
    with harness.scratch_dir("pg-ingest-") as work:
        bound = warm_up(work, secret, args)
        for n in range(1, args.rounds + 1):
            count = pool_size(bound, args.duration)
            print(f"round {n}/{args.rounds}: signing {count:,} events twice", flush=True)
            (work / f"{n}-sqlite").mkdir()
            (work / f"{n}-pg").mkdir()
            s = ingest.billhook_run(work / f"{n}-sqlite", count, secret, args)
            p = pg_single(work / f"{n}-pg", count, secret, args)
            runs.append((s, p))
            bound = min(bound, 2 * max(max(s["rate"], p["rate"]) for s, p in runs))
            print(f"  SQLite {s['rate']:,.0f}/s, PostgreSQL {p['rate']:,.0f}/s", flush=True)
    ss, ps = [s for s, _ in runs], [p for _, p in runs]
    ratio = harness.median([p["rate"] / s["rate"] for s, p in runs])

    def med(runs: list[dict[str, Any]], key: str) -> float:
        return float(harness.median([r[key] for r in runs]))

    problems = [
        f"round {n}, {backend}: {p.removeprefix(f'round {n}: ')}"
        for n, (s, pg) in enumerate(runs, 1)
        for backend, r in (("SQLite", s), ("PostgreSQL", pg))
        for p in ingest.problems_of(n, r, NO_BASELINE, args.connections)
    ]
    problems += sorted({p["pin_problem"] for p in ps if p["pin_problem"]})
    return harness.result(
        name,
        argv,
        args.quick,
        title="PostgreSQL ingest: signed Stripe events/s ÷ the same on SQLite, one receiver",
        figures=[
            harness.figure(
                "pg_ingest_ratio",
                f"{ratio:.3f} (PostgreSQL {med(ps, 'rate'):,.0f} ÷ SQLite {med(ss, 'rate'):,.0f}"
                f" events/s; medians of {args.rounds} rounds)",
                ratio >= TARGET_RATIO,
            )
        ],
        method=[
            "Servers: `billhook serve` (default settings, embedded projector on), pinned to core"
            " 0, on a fresh data dir each round: SQLite, then `[storage] url` on a throwaway"
            f" database created for the round and dropped after; {harness.server_stack()}.",
            f"Database: {version}; {ps[0]['placement']}.",
            f"Load: `wrk -t1 -c{args.connections} -d{args.duration}s` pinned to core 1"
            f" (bench/wrk.lua), as `python -m bench ingest`; {args.rounds} rounds, SQLite then"
            f" PostgreSQL, after a {ingest.WARMUP_S} s warm-up of the minimal app (which sizes"
            " the pools).",
            "Events: as `python -m bench ingest` (Stripe's example objects, each a new `evt_`"
            " id about an object of its own), a pool freshly signed for each run; mean body"
            f" {med(ss, 'bytes'):,.0f} bytes.",
        ],
        values={
            "2xx/s, PostgreSQL / SQLite": f"{med(ps, 'rate'):,.0f} / {med(ss, 'rate'):,.0f}",
            "p50 / p99 latency, PostgreSQL": (
                f"{med(ps, 'p50_ms'):.2f} / {med(ps, 'p99_ms'):.2f} ms"
            ),
            "p50 / p99 latency, SQLite": f"{med(ss, 'p50_ms'):.2f} / {med(ss, 'p99_ms'):.2f} ms",
            "CPU per 2xx response: server, PostgreSQL run (+ its backends) / SQLite run": (
                f"{med(ps, 'cpu_us'):,.0f} (+ {med(ps, 'companion_us'):,.0f}) /"
                f" {med(ss, 'cpu_us'):,.0f} µs"
            ),
            "events per commit, PostgreSQL / SQLite": " / ".join(
                f"{sum(r['rows'] for r in rs) / max(sum(r['commits'] for r in rs), 1):.1f}"
                for rs in (ps, ss)
            ),
            "**ratio** PostgreSQL ÷ SQLite (median of per-round ratios)": f"**{ratio:.3f}**",
        },
        rounds=[
            {
                "round": n,
                "SQLite events/s": round(s["rate"]),
                "PostgreSQL events/s": round(p["rate"]),
                "ratio": round(p["rate"] / s["rate"], 3),
                "p50 / p99 ms, SQLite; PostgreSQL": f"{s['p50_ms']:.1f} / {s['p99_ms']:.1f};"
                f" {p['p50_ms']:.1f} / {p['p99_ms']:.1f}",
                "rows, SQLite; PostgreSQL": f"{s['rows']:,}; {p['rows']:,}",
                "CPU server (loop)/wrk: SQLite; PostgreSQL (+ backends)": (
                    f"{s['cpu']}; {p['cpu']} (+ {p['companion_cpu']:.0%})"
                ),
                "others on cores 0/1": harness.noise_text([s["noise"], p["noise"]], ""),
            }
            for n, (s, p) in enumerate(runs, start=1)
        ],
        noise=harness.noise_text([r["noise"] for r in ss + ps]),
        problems=problems,
    )


# ingest.problems_of checks a baseline run too; the PostgreSQL benchmarks have none.
NO_BASELINE: dict[str, Any] = {"non_2xx": 0, "socket_errors": 0}
