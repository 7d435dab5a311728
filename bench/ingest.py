"""Ingest benchmark (SPEC §11): unique signed Stripe events/s ÷ a minimal Starlette POST.

Each round runs `billhook serve` (fresh data dir) and then bench/minimal_app.py
under the same uvicorn settings, each for `--duration` seconds of
`wrk -t1 -c32`, the server on core 0 and wrk on core 1. wrk cannot sign, so
before each billhook round a pool of freshly signed, unique events, larger
than the round can send, is written for bench/replay.lua to send once each.
Afterwards the log is counted with sqlite3 and checked against wrk's answers.

The figure is the median of the per-round ratios of 2xx responses per second;
latencies are wrk's per-round p50/p99, medians over the rounds.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sqlite3
import statistics
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.deliveries import Pool, write_pool
from bench.report import (
    Figure,
    code_version,
    command_line,
    fail,
    filesystem_of,
    finish,
    machine,
    medians_of,
    now_utc,
    server_stack,
)
from bench.tools import (
    HOST,
    RESULTS,
    BenchError,
    CpuUse,
    WrkRun,
    cpu_pair,
    ensure_cores,
    ensure_wrk,
    free_port,
    int_between,
    noise_note,
    noise_pair,
    noisy,
    run_wrk_against,
    scratch_dir,
    serve,
    wrk_figures,
)

SCRIPT = Path(__file__).resolve().parent / "replay.lua"
WEBHOOK_PATH = "/webhooks/stripe"
TARGET_RATIO = 0.6
# An unmeasured baseline run first: it warms the machine and bounds the rate to expect.
WARMUP_S = 2
# The baseline does not care which events it gets: one small pool, cycled.
BASELINE_POOL = 2_000
BASELINE_FILE = "baseline.requests"
# A billhook pool holds this many times what the expected rate could send...
POOL_MARGIN = 1.3
# ...where after the first round billhook is expected to reach at most this times its best...
BILLHOOK_HEADROOM = 2.0
# ...within these bounds (the upper one keeps wrk's memory to about a gigabyte).
POOL_MIN = 5_000
POOL_MAX = 300_000


@dataclass(frozen=True)
class Options:
    """How the benchmark runs (command-line options)."""

    rounds: int
    duration_s: int
    connections: int
    write_docs: bool


@dataclass(frozen=True)
class Load(WrkRun):
    """One wrk run, as bench/replay.lua counted it (`ok`: 2xx responses)."""

    non_2xx: int
    accepted: int
    duplicate: int
    sent: int
    pool: int

    @classmethod
    def from_wrk(cls, raw: Mapping[str, Any], cpu: CpuUse) -> Load:
        """Read the JSON line bench/replay.lua's `done()` prints, with the server's CPU use."""
        return cls(
            **wrk_figures(raw),
            ok=raw["requests"] - raw["non_2xx"],
            cpu=cpu,
            non_2xx=raw["non_2xx"],
            accepted=raw["accepted"],
            duplicate=raw["duplicate"],
            sent=raw["sent"],
            pool=raw["pool"],
        )


@dataclass(frozen=True)
class LogTally:
    """What a round left in events.db."""

    rows: int
    distinct_ids: int
    # Distinct `received_at` stamps: one per committed batch (ms resolution, so a lower bound).
    commits: int


@dataclass(frozen=True)
class Round:
    """One billhook run and the baseline run after it."""

    number: int
    billhook: Load
    baseline: Load
    log: LogTally
    mean_body_bytes: float

    @property
    def ratio(self) -> float:
        return self.billhook.rate / self.baseline.rate

    @property
    def noise(self) -> tuple[float, float]:
        """The largest shares of core 0 and of core 1 other processes used during the round."""
        loads = (self.billhook, self.baseline)
        return (
            max(load.cpu.others_server_core for load in loads),
            max(load.cpu.others_loadgen_core for load in loads),
        )

    @property
    def in_flight(self) -> int:
        """Events committed after wrk stopped: sent, stored, but never answered to wrk."""
        return self.log.rows - self.billhook.accepted


@dataclass(frozen=True)
class Summary:
    """The medians over all rounds, and the log totals."""

    billhook_rate: float
    baseline_rate: float
    ratio: float
    billhook_p50_ms: float
    billhook_p99_ms: float
    baseline_p50_ms: float
    baseline_p99_ms: float
    billhook_cpu_us: float
    baseline_cpu_us: float
    loadgen_peak: float
    rows: int
    commits: int
    mean_body_bytes: float
    noise: tuple[float, float]

    @property
    def met(self) -> bool:
        return self.ratio >= TARGET_RATIO


def parse_options(argv: Sequence[str]) -> Options:
    """Options from the command line (`python -m bench ingest --help`)."""
    parser = argparse.ArgumentParser(prog="python -m bench ingest", description=__doc__)
    parser.add_argument("--rounds", type=int_between(1, 50), default=5, metavar="N")
    parser.add_argument("--duration", type=int_between(1, 300), default=8, metavar="SECONDS")
    parser.add_argument("--connections", type=int_between(1, 1024), default=32, metavar="N")
    parser.add_argument("--no-docs", action="store_true", help="do not rewrite docs/performance.md")
    args = parser.parse_args(list(argv))
    return Options(args.rounds, args.duration, args.connections, not args.no_docs)


def billhook_config(data_dir: Path, secret: str) -> str:
    """A billhook.toml for one round: its own data dir and the benchmark's Stripe secret."""
    # JSON string literals are valid TOML basic strings.
    return (
        f"[billhook]\ndata_dir = {json.dumps(str(data_dir))}\n\n"
        f"[stripe]\nwebhook_secrets = [{json.dumps(secret)}]\n"
    )


def tally_log(path: Path) -> LogTally:
    """Count the rows, ids and commits in a round's events.db (its server has stopped)."""
    if not path.exists():
        raise BenchError(f"billhook wrote no event log at {path}")
    try:
        conn = sqlite3.connect(path)
        try:
            rows, ids, commits = conn.execute(
                "SELECT count(*), count(DISTINCT event_id), count(DISTINCT received_at) FROM events"
            ).fetchone()
        finally:
            conn.close()
    except sqlite3.Error as e:
        raise BenchError(f"cannot count the event log at {path}: {e}") from None
    return LogTally(rows=rows, distinct_ids=ids, commits=commits)


def pool_size(expected_rate: float, options: Options) -> int:
    """Requests for one billhook round: more than a run at `expected_rate` could send."""
    wanted = int(expected_rate * options.duration_s * POOL_MARGIN) + options.connections
    return min(max(wanted, POOL_MIN), POOL_MAX)


def expected_rate(baseline_rates: Sequence[float], billhook_rates: Sequence[float]) -> float:
    """A generous bound on billhook's next rate (a pool running out is caught, not hidden).

    Before any billhook round: the fastest baseline run, since billhook does
    more per request. After: twice billhook's own best, if that is lower.
    """
    bound = max(baseline_rates)
    if billhook_rates:
        bound = min(bound, BILLHOOK_HEADROOM * max(billhook_rates))
    return bound


def measure(
    wrk: str,
    server: subprocess.Popen[bytes],
    port: int,
    pool: Path,
    options: Options,
    duration_s: int,
) -> Load:
    """One wrk run of `pool` against `server`, listening on `port`."""
    raw, cpu = run_wrk_against(
        wrk,
        server,
        url=f"http://{HOST}:{port}",
        script=SCRIPT,
        script_args=[str(pool), WEBHOOK_PATH],
        duration_s=duration_s,
        connections=options.connections,
    )
    return Load.from_wrk(raw, cpu)


def run_baseline(wrk: str, work: Path, pool: Path, options: Options, duration_s: int) -> Load:
    """Serve bench/minimal_app.py and load it for `duration_s` seconds."""
    port = free_port()
    command = [sys.executable, "-m", "bench.minimal_app", "--port", str(port)]
    with serve(command, port, work / "baseline.log") as server:
        return measure(wrk, server, port, pool, options, duration_s)


def run_billhook(
    wrk: str, round_dir: Path, pool: Pool, secret: str, options: Options
) -> tuple[Load, LogTally]:
    """Serve billhook on a fresh data dir, load it with `pool`, then count its log."""
    data_dir = round_dir / "data"
    config = round_dir / "billhook.toml"
    config.write_text(billhook_config(data_dir, secret), encoding="utf-8")
    port = free_port()
    command = [sys.executable, "-m", "billhook", "serve", "--config", str(config)]
    command += ["--port", str(port), "--log-level", "warning"]
    with serve(command, port, round_dir / "server.log") as server:
        load = measure(wrk, server, port, pool.path, options, options.duration_s)
    # The server has stopped: whatever it was still committing is in the log now.
    return load, tally_log(data_dir / "events.db")


def round_problems(r: Round, connections: int) -> list[str]:
    """What makes a round's figures doubtful or shows billhook misbehaving; empty if none."""
    b, label = r.billhook, f"round {r.number}"
    checks = [
        (b.non_2xx > 0, f"billhook answered {b.non_2xx} non-2xx responses"),
        (b.socket_errors > 0, f"billhook run had {b.socket_errors} socket errors/timeouts"),
        (b.duplicate > 0, f"billhook answered {b.duplicate} duplicates"),
        (b.accepted != b.ok, f"{b.ok - b.accepted} 2xx answers were not 'accepted'"),
        (b.sent >= b.pool, f"the pool of {b.pool} ran out: events were sent twice"),
        (
            not b.accepted <= r.log.rows <= b.sent,
            f"log has {r.log.rows} rows, expected {b.accepted}..{b.sent}",
        ),
        (r.in_flight > connections, f"{r.in_flight} events in flight with {connections} conns"),
        (r.log.distinct_ids != r.log.rows, "the log holds repeated event ids"),
        (r.baseline.non_2xx > 0, f"baseline answered {r.baseline.non_2xx} non-2xx responses"),
        (r.baseline.socket_errors > 0, f"baseline had {r.baseline.socket_errors} socket errors"),
    ]
    return [f"{label}: {message}" for failed, message in checks if failed]


def describe_round(r: Round) -> str:
    """One progress line for a finished round."""
    b, m = r.billhook, r.baseline
    return (
        f"round {r.number}: billhook {b.rate:,.0f}/s p50 {b.p50_ms:.1f} ms p99 {b.p99_ms:.1f} ms"
        f" | minimal {m.rate:,.0f}/s p50 {m.p50_ms:.1f} ms p99 {m.p99_ms:.1f} ms"
        f" | ratio {r.ratio:.3f} | log {r.log.rows:,} rows = {b.accepted:,} accepted"
        f" + {r.in_flight} in flight at stop; {r.log.commits:,} commits"
        f" | CPU server (loop)/wrk: billhook {cpu_pair(b.cpu)}, minimal {cpu_pair(m.cpu)};"
        f" other processes {noise_pair(r.noise)} of cores 0/1"
    )


@dataclass(frozen=True)
class Session:
    """What every round of one benchmark run shares."""

    wrk: str
    work: Path
    secret: str
    # Random per run: starts every event id, so no two runs' ids meet.
    run_id: str
    options: Options


def run_round(session: Session, number: int, expected: float) -> Round:
    """Sign a fresh pool, run billhook on it, then the baseline on the baseline pool."""
    wrk, work, options = session.wrk, session.work, session.options
    round_dir = work / f"round{number}"
    round_dir.mkdir()
    count = pool_size(expected, options)
    print(f"round {number}/{options.rounds}: signing {count:,} events", flush=True)
    pool = write_pool(
        round_dir / "requests",
        count=count,
        secret=session.secret,
        id_prefix=f"{session.run_id}{number:02d}",
    )
    billhook, log = run_billhook(wrk, round_dir, pool, session.secret, options)
    pool.path.unlink()
    baseline = run_baseline(wrk, work, work / BASELINE_FILE, options, options.duration_s)
    return Round(number, billhook, baseline, log, pool.mean_body_bytes)


def run_rounds(wrk: str, options: Options) -> list[Round]:
    """Warm up, then alternate billhook and baseline runs; everything in one scratch dir."""
    rounds: list[Round] = []
    with scratch_dir("ingest-") as work:
        session = Session(
            wrk, work, "whsec_bench_" + secrets.token_hex(16), secrets.token_hex(5), options
        )
        write_pool(
            work / BASELINE_FILE, count=BASELINE_POOL, secret=session.secret, id_prefix="base"
        )
        print(f"warm-up: minimal app for {WARMUP_S} s", flush=True)
        warm = run_baseline(wrk, work, work / BASELINE_FILE, options, WARMUP_S)
        baseline_rates: list[float] = [warm.rate]
        billhook_rates: list[float] = []
        for number in range(1, options.rounds + 1):
            done = run_round(session, number, expected_rate(baseline_rates, billhook_rates))
            print(describe_round(done), flush=True)
            rounds.append(done)
            baseline_rates.append(done.baseline.rate)
            billhook_rates.append(done.billhook.rate)
    return rounds


def summarize(rounds: Sequence[Round]) -> Summary:
    """Medians over the rounds (rates, ratio, latencies) and the log totals."""
    median = statistics.median
    return Summary(
        billhook_rate=median([r.billhook.rate for r in rounds]),
        baseline_rate=median([r.baseline.rate for r in rounds]),
        ratio=median([r.ratio for r in rounds]),
        billhook_p50_ms=median([r.billhook.p50_ms for r in rounds]),
        billhook_p99_ms=median([r.billhook.p99_ms for r in rounds]),
        baseline_p50_ms=median([r.baseline.p50_ms for r in rounds]),
        baseline_p99_ms=median([r.baseline.p99_ms for r in rounds]),
        billhook_cpu_us=median([r.billhook.cpu_us for r in rounds]),
        baseline_cpu_us=median([r.baseline.cpu_us for r in rounds]),
        loadgen_peak=max(load.cpu.loadgen for r in rounds for load in (r.billhook, r.baseline)),
        rows=sum(r.log.rows for r in rounds),
        commits=sum(r.log.commits for r in rounds),
        mean_body_bytes=median([r.mean_body_bytes for r in rounds]),
        noise=(max(r.noise[0] for r in rounds), max(r.noise[1] for r in rounds)),
    )


def summary_lines(s: Summary, options: Options) -> list[str]:
    """The figures as printed at the end of the run."""
    verdict = "met" if s.met else "MISSED"
    return [
        "",
        f"ingest: {options.connections} connections, {options.duration_s} s per run,"
        f" rounds: {options.rounds}, mean body {s.mean_body_bytes / 1024:.1f} KiB",
        f"  billhook serve  {s.billhook_rate:>9,.0f} events/s"
        f"  p50 {s.billhook_p50_ms:6.2f} ms  p99 {s.billhook_p99_ms:7.2f} ms",
        f"  minimal app     {s.baseline_rate:>9,.0f} req/s   "
        f"  p50 {s.baseline_p50_ms:6.2f} ms  p99 {s.baseline_p99_ms:7.2f} ms",
        f"  server CPU per response: billhook {s.billhook_cpu_us:,.0f} us,"
        f" minimal {s.baseline_cpu_us:,.0f} us",
        f"  ratio (median of per-round ratios) {s.ratio:.3f}; target >= {TARGET_RATIO}: {verdict}",
        f"  log: {s.rows:,} rows in {s.commits:,} commits"
        f" ({s.rows / max(s.commits, 1):.1f} events per commit/fsync)",
        *([noise_note(s.noise)] if noisy(s.noise, s.loadgen_peak) else []),
    ]


def round_table(rounds: Sequence[Round]) -> list[str]:
    """The per-round Markdown table of the document."""
    lines = [
        "| round | billhook events/s | minimal req/s | ratio | billhook p50 / p99 ms"
        " | minimal p50 / p99 ms | rows in log (accepted + in flight) | commits"
        " | CPU server (loop) / wrk, billhook run | CPU server (loop) / wrk, minimal run"
        " | CPU others, core 0/1 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rounds:
        b, m = r.billhook, r.baseline
        lines.append(
            f"| {r.number} | {b.rate:,.0f} | {m.rate:,.0f} | {r.ratio:.3f}"
            f" | {b.p50_ms:.1f} / {b.p99_ms:.1f} | {m.p50_ms:.1f} / {m.p99_ms:.1f}"
            f" | {r.log.rows:,} ({b.accepted:,} + {r.in_flight}) | {r.log.commits:,}"
            f" | {cpu_pair(b.cpu)} | {cpu_pair(m.cpu)} | {noise_pair(r.noise)} |"
        )
    return lines


def document(
    s: Summary, rounds: Sequence[Round], options: Options, problems: Sequence[str], command: str
) -> str:
    """The ingest section of docs/performance.md."""
    verdict = "**met**" if s.met else "**missed**"
    lines = [
        "## Ingest: signed Stripe events/s ÷ minimal Starlette POST",
        "",
        f"Measured {now_utc()} with `{command}` (part of `make bench`). Target (SPEC §11):"
        f" ratio ≥ {TARGET_RATIO}, {verdict}.",
        "",
        f"- Machine: {machine()}; event log on {filesystem_of(RESULTS)}.",
        f"- Code: {code_version()}; `billhook serve` with its default settings"
        " (embedded projector on) and a Stripe secret.",
        f"- Servers: {server_stack()}; one process, access log off, log level warning,"
        " pinned to core 0 (`taskset -c 0`).",
        f"- Load: `wrk -t1 -c{options.connections} -d{options.duration_s}s --latency`"
        " pinned to core 1, replaying pre-signed requests (bench/replay.lua);"
        f" {options.rounds} alternating rounds, billhook then the minimal app,"
        f" after a {WARMUP_S} s warm-up.",
        "- Events: built from tests/fixtures/stripe_objects.json (subscription, invoice,"
        " checkout session, customer and price events in turn), each with a unique `evt_` id"
        " and about an object of its own, signed with `stripe` just before each round;"
        f" mean body {s.mean_body_bytes:,.0f} bytes.",
        "",
        "| figure | billhook (`POST /webhooks/stripe`, durable ack) | minimal Starlette POST |",
        "|---|---|---|",
        f"| 2xx responses/s (median of rounds) | {s.billhook_rate:,.0f} | {s.baseline_rate:,.0f} |",
        f"| p50 latency (median of rounds) | {s.billhook_p50_ms:.2f} ms"
        f" | {s.baseline_p50_ms:.2f} ms |",
        f"| p99 latency (median of rounds) | {s.billhook_p99_ms:.2f} ms"
        f" | {s.baseline_p99_ms:.2f} ms |",
        f"| server CPU per 2xx response (median of rounds) | {s.billhook_cpu_us:,.0f} µs"
        f" | {s.baseline_cpu_us:,.0f} µs |",
        f"| **ratio** (median of per-round ratios) | **{s.ratio:.3f}** | |",
        "",
        f"Log check: {s.rows:,} rows in {s.commits:,} commits"
        f" ({s.rows / max(s.commits, 1):.1f} events per commit and fsync). Each round's rows"
        " equal the events wrk got `accepted` for, plus those in flight when wrk stopped"
        " (sent, committed, never answered to wrk).",
        "",
        *round_table(rounds),
        "",
        "CPU columns: the server's share of core 0 while loaded (in brackets, its event-loop"
        " thread alone; the rest is its other threads, e.g. the log writer and the embedded"
        " projector), wrk's share of core 1, and the most other processes took of core 0"
        " and of core 1 during the round (noise).",
        "",
        f"Noise: other processes used up to {noise_pair(s.noise)} of cores 0/1"
        + (" (figures disturbed)." if noisy(s.noise, s.loadgen_peak) else "."),
        "",
        "Problems: " + ("; ".join(problems) if problems else "none (no non-2xx, no duplicates)."),
    ]
    return "\n".join(lines)


def prepare() -> str:
    """Check the cores and tools the benchmark needs; the path of wrk."""
    ensure_cores()
    if not SCRIPT.is_file():
        raise BenchError(f"missing {SCRIPT}")
    return ensure_wrk()


def figure(s: Summary, rounds: Sequence[Round], command: str, problems: Sequence[str]) -> Figure:
    """The summary row: the ratio and the rates behind it."""
    return Figure(
        "ingest_ratio",
        f"{s.ratio:.3f} (billhook {s.billhook_rate:,.0f} events/s ÷ minimal"
        f" {s.baseline_rate:,.0f} req/s; {medians_of(len(rounds))})",
        s.met,
        command,
        noise_pair(s.noise),
        len(problems),
    )


# The summary rows this benchmark writes.
FIGURES = ("ingest_ratio",)


def main(argv: Sequence[str]) -> int:
    """Run the ingest benchmark; 0 when every round is valid, 1 otherwise."""
    options = parse_options(argv)
    command = command_line("ingest", argv)
    try:
        wrk = prepare()
        rounds = run_rounds(wrk, options)
    except BenchError as e:
        return fail("ingest", e, FIGURES, command, options.write_docs)
    problems = [p for r in rounds for p in round_problems(r, options.connections)]
    summary = summarize(rounds)
    return finish(
        "ingest",
        summary_lines(summary, options),
        problems,
        options.write_docs,
        lambda: document(summary, rounds, options, problems, command),
        [figure(summary, rounds, command, problems)],
    )
