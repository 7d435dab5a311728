"""Visibility benchmark (SPEC §11): ack → visible in the entitlement API at 500 events/s.

A `billhook serve` (embedded projector, the default) runs on core 0 with a
read token, a Stripe secret and a price map. It is first fed, through its
webhook path, one `customer.subscription.created` event for each of
`--workspaces` workspaces, and left to project them. Then
bench/visibility_load.py, in a process of its own on core 1, sends signed
`customer.subscription.updated` events at a constant `--rate` (open loop) for
`--duration` seconds, each changing a workspace's seat count and status, and
measures for every acknowledged event how long after its 2xx ack GET
entitlements reflects it (`as_of_seq` of a poll reaching the ack's `seq`).

The figure is the p99 of ack → visible over all the run's events; the
resolution of each is one poll cycle (reported with the figures).
"""

from __future__ import annotations

import argparse
import json
import secrets
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.entitlements import (
    base_url,
    billhook_command,
    billhook_toml,
    feed,
    percentile,
    wait_projected,
)
from bench.report import (
    Figure,
    code_version,
    command_line,
    fail,
    filesystem_of,
    finish,
    machine,
    now_utc,
    server_stack,
)
from bench.subscriptions import event_body, period_end_from_now
from bench.tools import (
    LOADGEN_CORE,
    RESULTS,
    BenchError,
    CpuSample,
    ensure_cores,
    free_port,
    int_between,
    pinned,
    sample_cpu,
    scratch_dir,
    serve,
)
from bench.visibility_load import initial_state

TARGET_P99_MS = 100.0
# The load generator may take this long on top of its run (building, signing, final check).
LOADGEN_EXTRA_S = 180
# The achieved send rate must be this close to the asked one for the run to count.
RATE_TOLERANCE = 0.05


@dataclass(frozen=True)
class Options:
    rate: int
    duration_s: int
    workspaces: int
    connections: int
    poll_interval_ms: float
    write_docs: bool
    # Poll for visibility during the load (bench/ingest_latency.py turns it off).
    watch: bool = True


@dataclass(frozen=True)
class Result:
    """The load generator's measurements, summarized."""

    raw: dict[str, Any]
    server_cpu: float
    server_loop_cpu: float
    others_server_core: float
    others_loadgen_core: float

    def visible(self, q: float) -> float:
        return percentile(self.raw["visible_ms"], q)

    def ack(self, q: float) -> float:
        return percentile(self.raw["ack_ms"], q)

    def lag(self, q: float) -> float:
        return percentile(self.raw["send_lag_ms"], q)

    def cycle(self, q: float) -> float:
        return percentile(self.raw["poll_cycle_ms"], q)

    def rtt(self, q: float) -> float:
        return percentile(self.raw["poll_rtt_ms"], q)

    @property
    def send_rate(self) -> float:
        """Events sent per second, first to last send."""
        span = self.raw["last_send_s"] - self.raw["first_send_s"]
        return (self.raw["sent"] - 1) / span if span > 0 else 0.0

    @property
    def loadgen_cpu(self) -> float:
        """The load generator's share of its core over its run."""
        wall: float = self.raw["wall_s"]
        return float(self.raw["cpu_s"]) / wall if wall > 0 else 0.0

    @property
    def unanswered(self) -> int:
        r = self.raw
        return int(r["sent"] - r["acked"] - r["non_2xx"] - r["errors"])

    def met(self) -> bool:
        return self.visible(99) < TARGET_P99_MS


def add_load_options(parser: argparse.ArgumentParser, rate: int = 500) -> None:
    """The load's options (default `rate` events/s), shared with the other open-loop benchmarks."""
    parser.add_argument("--rate", type=int_between(1, 10_000), default=rate, metavar="EVENTS_S")
    parser.add_argument("--duration", type=int_between(1, 600), default=20, metavar="SECONDS")
    parser.add_argument("--workspaces", type=int_between(1, 100_000), default=1000, metavar="N")
    parser.add_argument("--connections", type=int_between(1, 1024), default=64, metavar="N")
    parser.add_argument(
        "--poll-interval", type=float, default=2.0, metavar="MS", help="rest between polls"
    )


def parse_options(argv: Sequence[str]) -> Options:
    """Options from the command line (`python -m bench visibility --help`)."""
    parser = argparse.ArgumentParser(prog="python -m bench visibility", description=__doc__)
    add_load_options(parser)
    parser.add_argument("--no-docs", action="store_true", help="do not rewrite docs/performance.md")
    return load_options(parser, parser.parse_args(list(argv)))


def load_options(
    parser: argparse.ArgumentParser, args: argparse.Namespace, *, watch: bool = True
) -> Options:
    """Options from parsed `add_load_options` arguments and `--no-docs`."""
    if not 0 < args.poll_interval <= 100:
        parser.error("--poll-interval must be in (0, 100] ms")
    return Options(
        args.rate,
        args.duration,
        args.workspaces,
        args.connections,
        args.poll_interval,
        not args.no_docs,
        watch,
    )


def feed_initial(url: str, token: str, secret: str, options: Options, run_id: str) -> int:
    """Create every workspace's subscription through the webhook path; wait until projected."""
    period_end = period_end_from_now()
    created = int(time.time()) - 2 * 86_400
    bodies = [
        event_body(
            initial_state(n),
            event_id=f"evt_{run_id}_created_{n:06d}",
            event_type="customer.subscription.created",
            created=created,
            period_end=period_end,
        )
        for n in range(options.workspaces)
    ]
    top = feed(url, bodies, secret)
    wait_projected(url, token, top)
    return created


def run_load(
    url: str, token: str, secret: str, options: Options, created: int, work: Path, run_id: str
) -> dict[str, Any]:
    """Run bench/visibility_load.py on the load generator's core; its measurements."""
    out = work / "load.json"
    command = [
        sys.executable,
        *("-m", "bench.visibility_load", "--url", url, "--token", token, "--secret", secret),
        *("--workspaces", str(options.workspaces), "--rate", str(options.rate)),
        *("--duration", str(options.duration_s), "--created-base", str(created)),
        *("--period-end", str(period_end_from_now()), "--connections", str(options.connections)),
        *("--poll-interval", str(options.poll_interval_ms / 1000), "--run-id", run_id),
        *("--out", str(out)),
        *(() if options.watch else ("--no-watch",)),
    ]
    timeout = options.duration_s + LOADGEN_EXTRA_S
    try:
        done = subprocess.run(
            pinned(LOADGEN_CORE, command),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"the load generator did not finish within {timeout} s") from None
    if done.returncode != 0 or not out.exists():
        detail = (done.stderr.strip().splitlines() or ["(no output)"])[-1][:200]
        raise BenchError(f"the load generator exited with status {done.returncode}: {detail}")
    result: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    return result


def measure(options: Options) -> Result:
    """Start billhook, feed it, load it; the load generator's measurements and the server's CPU."""
    token = "bench-read-" + secrets.token_hex(16)
    secret = "whsec_bench_" + secrets.token_hex(16)
    run_id = secrets.token_hex(5)
    with scratch_dir("visibility-") as work:
        config = work / "billhook.toml"
        config.write_text(billhook_toml(work / "data", secret=secret, token=token), "utf-8")
        port = free_port()
        url = base_url(port)
        with serve(billhook_command(config, port), port, work / "server.log") as server:
            print(
                f"creating {options.workspaces:,} workspaces through the webhook path", flush=True
            )
            created = feed_initial(url, token, secret, options, run_id)
            print(
                f"load: {options.rate}/s for {options.duration_s} s from core {LOADGEN_CORE}",
                flush=True,
            )
            before: CpuSample = sample_cpu(server.pid)
            raw = run_load(url, token, secret, options, created, work, run_id)
            after = sample_cpu(server.pid)
    # The server's share of core 0 while the load ran; the rest of the interval it idled
    # (the load generator builds its events first and checks every workspace after).
    busy_s = max(raw["wall_s"], 1e-9)
    wall = max(after.wall_s - before.wall_s, 1e-9)
    server_s = after.server_s - before.server_s
    return Result(
        raw=raw,
        server_cpu=server_s / busy_s,
        server_loop_cpu=(after.server_loop_s - before.server_loop_s) / busy_s,
        others_server_core=max(after.server_core_s - before.server_core_s - server_s, 0.0) / wall,
        others_loadgen_core=max(
            after.loadgen_core_s - before.loadgen_core_s - raw["process_cpu_s"], 0.0
        )
        / wall,
    )


def problems_of(r: Result, options: Options) -> list[str]:
    raw = r.raw
    checks = [
        (raw["non_2xx"] > 0, f"{raw['non_2xx']} deliveries answered non-2xx"),
        (raw["errors"] > 0, f"{raw['errors']} deliveries failed (connection errors/timeouts)"),
        (bool(raw["error_samples"]), "first failures: " + "; ".join(raw["error_samples"])),
        (r.unanswered > 0, f"{r.unanswered} deliveries never answered"),
        (raw["unresolved"] > 0, f"{raw['unresolved']} acked events never became visible"),
        (raw["poll_errors"] > 0, f"{raw['poll_errors']} polls failed"),
        (
            abs(r.send_rate - options.rate) > RATE_TOLERANCE * options.rate,
            f"sent {r.send_rate:,.0f} events/s, not the {options.rate}/s asked",
        ),
        (
            bool(raw["sample_failures"]),
            f"{len(raw['sample_failures'])} read-backs missed their event's change: "
            + "; ".join(raw["sample_failures"][:3]),
        ),
        (
            bool(raw["final_mismatches"]),
            f"{len(raw['final_mismatches'])} workspaces differ from their last event: "
            + "; ".join(raw["final_mismatches"][:3]),
        ),
    ]
    return [message for failed, message in checks if failed]


def summary_lines(r: Result, options: Options) -> list[str]:
    raw = r.raw
    verdict = "met" if r.met() else "MISSED"
    return [
        "",
        f"visibility: {options.rate} events/s asked, {options.duration_s} s,"
        f" {options.workspaces:,} workspaces; sent {raw['sent']:,} at {r.send_rate:,.1f}/s"
        f" (send lag behind schedule p99 {r.lag(99):.2f} ms), {raw['acked']:,} acked",
        f"  ack -> visible  p50 {r.visible(50):6.2f} ms  p95 {r.visible(95):6.2f} ms"
        f"  p99 {r.visible(99):6.2f} ms  max {max(raw['visible_ms'], default=0):6.2f} ms;"
        f" target p99 < {TARGET_P99_MS:.0f} ms: {verdict}",
        f"  send -> ack     p50 {r.ack(50):6.2f} ms  p95 {r.ack(95):6.2f} ms"
        f"  p99 {r.ack(99):6.2f} ms",
        f"  resolution: poll cycle p50 {r.cycle(50):.2f} ms p99 {r.cycle(99):.2f} ms"
        f" ({raw['polls']:,} polls, RTT p50 {r.rtt(50):.2f} ms)",
        f"  CPU: server {r.server_cpu:.0%} ({r.server_loop_cpu:.0%} event loop) of core 0,"
        f" load generator {r.loadgen_cpu:.0%} of core 1; others {r.others_server_core:.0%}"
        f"/{r.others_loadgen_core:.0%}",
        f"  read-backs: {raw['sampled']:,} sampled, {len(raw['sample_failures'])} missed;"
        f" final check: {raw['final_checked']:,} workspaces,"
        f" {len(raw['final_mismatches'])} differ",
    ]


def sent_rows(r: Result, options: Options) -> list[str]:
    """Table rows of every open-loop section: what was sent and acked, at what rate."""
    raw = r.raw
    return [
        f"| events sent / acked (2xx) | {raw['sent']:,} / {raw['acked']:,} |",
        f"| achieved send rate (first to last send) | {r.send_rate:,.1f} events/s"
        f" (asked {options.rate}/s; send lag behind schedule p50 {r.lag(50):.2f} ms,"
        f" p99 {r.lag(99):.2f} ms) |",
    ]


def ack_row(r: Result, bold: bool = False) -> str:
    """The table row of send → ack latencies (the p99 in bold when it is the figure)."""
    p99 = f"**{r.ack(99):.2f}**" if bold else f"{r.ack(99):.2f}"
    return (
        f"| {'**send → ack** (durable)' if bold else 'send → ack (durable)'} p50 / p95 / p99 / max"
        f" | {r.ack(50):.2f} / {r.ack(95):.2f} / {p99} / {max(r.raw['ack_ms'], default=0):.2f} ms |"
    )


def visible_rows(r: Result) -> list[str]:
    """Table rows of ack → visible latencies and the resolution they were measured at."""
    raw = r.raw
    return [
        f"| **ack → visible** p50 / p95 / p99 / max | {r.visible(50):.2f} / {r.visible(95):.2f}"
        f" / **{r.visible(99):.2f}** / {max(raw['visible_ms'], default=0):.2f} ms |",
        f"| resolution: poll cycle p50 / p99 | {r.cycle(50):.2f} / {r.cycle(99):.2f} ms"
        f" ({raw['polls']:,} polls, round trip p50 {r.rtt(50):.2f} ms) |",
    ]


def check_rows(r: Result) -> list[str]:
    """Table rows of the correctness checks: read-backs (when watched) and the final check."""
    raw = r.raw
    return [
        *(
            [
                f"| read-backs of sampled events / missed | {raw['sampled']:,}"
                f" / {len(raw['sample_failures'])} |"
            ]
            if raw["polls"]
            else []
        ),
        f"| workspaces checked after the load / differing | {raw['final_checked']:,}"
        f" / {len(raw['final_mismatches'])} |",
    ]


# What a visibility figure's resolution means, for the sections that report one.
RESOLUTION_NOTE = (
    "Resolution: an event counts as visible when the first poll that shows it answers, so"
    " each figure may overstate the true delay by up to one poll cycle (above), never"
    " understate it."
)


def noise(r: Result) -> str:
    """Other processes' shares of cores 0 and 1 during the run, e.g. `2%/35%`."""
    return f"{r.others_server_core:.0%}/{r.others_loadgen_core:.0%}"


def problems_line(problems: Sequence[str]) -> str:
    """The closing line of a section."""
    return "Problems: " + ("; ".join(problems) if problems else "none.")


def document(r: Result, options: Options, problems: Sequence[str], command: str) -> str:
    """The visibility section of docs/performance.md."""
    verdict = "**met**" if r.met() else "**missed**"
    lines = [
        "## Visibility: ack → visible in the entitlement API at 500 events/s (embedded projector)",
        "",
        f"Measured {now_utc()} with `{command}` (part of `make bench`)."
        f" Target (SPEC §11): p99 < {TARGET_P99_MS:.0f} ms embedded, {verdict}.",
        "",
        f"- Machine: {machine()}; data dir on {filesystem_of(RESULTS)}.",
        f"- Code: {code_version()}; `billhook serve` with its default settings (embedded"
        " projector on, no Redis), a read token, a Stripe secret and a price map;"
        f" {server_stack()}; one process, pinned to core 0 (`taskset -c 0`).",
        f"- Data: {options.workspaces:,} workspaces, each created first through"
        " `POST /webhooks/stripe` (`customer.subscription.created`, team, 1 seat) and"
        " projected before the load.",
        load_item(options),
        "- Measure: for each 2xx ack (its `seq`), the time until a poll of"
        " `GET /v1/workspaces/ws_probe/entitlements` answers with `as_of_seq` ≥ that seq"
        " (`as_of_seq` is the projection checkpoint the answer was read at). One poller on its"
        f" own connection, resting {options.poll_interval_ms:g} ms between polls while any"
        " ack is pending; a poll resolves every pending ack at or below its `as_of_seq`,"
        " measured to the poll answer's arrival. One event in 20 is also read back from its"
        " own workspace (its change must show), and after the load every workspace is"
        " compared with the last event sent about it.",
        "",
        "| figure | value |",
        "|---|---|",
        *sent_rows(r, options),
        visible_rows(r)[0],
        ack_row(r),
        visible_rows(r)[1],
        *check_rows(r),
        f"| CPU: server (its event loop) of core 0 / load generator of core 1 |"
        f" {r.server_cpu:.0%} ({r.server_loop_cpu:.0%}) / {r.loadgen_cpu:.0%} |",
        f"| CPU of other processes, core 0 / core 1 | {r.others_server_core:.0%}"
        f" / {r.others_loadgen_core:.0%} |",
        "",
        RESOLUTION_NOTE,
        "",
        problems_line(problems),
    ]
    return "\n".join(lines)


def load_item(options: Options) -> str:
    """The list item of a section saying how the open-loop load was sent."""
    return (
        "- Load: bench/visibility_load.py (asyncio on uvloop, a lean keep-alive HTTP/1.1"
        f" client in bench/rawhttp.py, up to {options.connections} keep-alive connections) in"
        " its own process pinned to core 1, sending signed `customer.subscription.updated`"
        f" events open-loop at {options.rate}/s for {options.duration_s} s (event *i* due at"
        " start + *i*/rate, whatever the earlier ones did); each updates the next workspace in"
        " turn (seat count +1, status turning between active, past_due, trialing and"
        " canceling, `created` one second after the previous event's), so each changes what"
        " GET entitlements answers."
    )


def figure(key: str, r: Result, met: bool, command: str, problems: Sequence[str]) -> Figure:
    """The summary row of an ack → visible benchmark."""
    raw = r.raw
    return Figure(
        key,
        f"p99 {r.visible(99):.1f} ms (p50 {r.visible(50):.1f}, max"
        f" {max(raw['visible_ms'], default=0):.1f} ms; {raw['acked']:,} events acked at"
        f" {r.send_rate:,.0f}/s)",
        met,
        command,
        noise(r),
        len(problems),
    )


# The summary rows this benchmark writes.
FIGURES = ("visible_embedded",)


def main(argv: Sequence[str]) -> int:
    """Run the visibility benchmark; 0 when the run is valid, 1 otherwise."""
    options = parse_options(argv)
    command = command_line("visibility", argv)
    try:
        ensure_cores()
        result = measure(options)
    except BenchError as e:
        return fail("visibility", e, FIGURES, command, options.write_docs)
    problems = problems_of(result, options)
    return finish(
        "visibility",
        summary_lines(result, options),
        problems,
        options.write_docs,
        lambda: document(result, options, problems, command),
        [figure("visible_embedded", result, result.met(), command, problems)],
    )
