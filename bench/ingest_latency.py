"""Ingest latency benchmark (SPEC §11): p99 of send → durable ack at 1,000 events/s.

The set-up of bench/visibility.py: a `billhook serve` with its default
settings (embedded projector on, the default a new user gets) on core 0,
`--workspaces` workspaces created through the webhook path first; then
bench/visibility_load.py, in a process of its own on core 1, sends signed
`customer.subscription.updated` events open-loop at `--rate` for `--duration`
seconds. Nobody polls during the load, so the server gets webhooks only; each
event's latency is from its send to its 2xx, which billhook answers only once
the event is committed with `synchronous=FULL`. After the load the projection
is awaited and every workspace compared with the last event sent about it.

The figure is the p99 over all the run's events.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from bench import visibility
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
from bench.tools import RESULTS, BenchError, ensure_cores

NAME = "ingest_latency"
TARGET_P99_MS = 20.0
DEFAULT_RATE = 1000
# The summary rows this benchmark writes.
FIGURES = ("ingest_p99",)


def parse_options(argv: Sequence[str]) -> visibility.Options:
    """Options from the command line (`python -m bench ingest_latency --help`)."""
    parser = argparse.ArgumentParser(prog=f"python -m bench {NAME}", description=__doc__)
    visibility.add_load_options(parser, rate=DEFAULT_RATE)
    parser.add_argument("--no-docs", action="store_true", help="do not rewrite docs/performance.md")
    return visibility.load_options(parser, parser.parse_args(list(argv)), watch=False)


def met(r: visibility.Result) -> bool:
    return r.ack(99) < TARGET_P99_MS


def summary_lines(r: visibility.Result, options: visibility.Options) -> list[str]:
    """The figures as printed at the end of the run."""
    raw = r.raw
    return [
        "",
        f"{NAME}: {options.rate} events/s asked, {options.duration_s} s,"
        f" {options.workspaces:,} workspaces, no polling; sent {raw['sent']:,} at"
        f" {r.send_rate:,.1f}/s (send lag behind schedule p99 {r.lag(99):.2f} ms),"
        f" {raw['acked']:,} acked",
        f"  send -> ack  p50 {r.ack(50):6.2f} ms  p95 {r.ack(95):6.2f} ms"
        f"  p99 {r.ack(99):6.2f} ms  max {max(raw['ack_ms'], default=0):6.2f} ms;"
        f" target p99 < {TARGET_P99_MS:.0f} ms: {'met' if met(r) else 'MISSED'}",
        f"  CPU: server {r.server_cpu:.0%} ({r.server_loop_cpu:.0%} event loop) of core 0,"
        f" load generator {r.loadgen_cpu:.0%} of core 1; others {visibility.noise(r)}",
        f"  final check: {raw['final_checked']:,} workspaces,"
        f" {len(raw['final_mismatches'])} differ",
    ]


def document(
    r: visibility.Result, options: visibility.Options, problems: Sequence[str], command: str
) -> str:
    """The ingest_latency section of docs/performance.md."""
    verdict = "**met**" if met(r) else "**missed**"
    lines = [
        f"## Ingest latency: send → durable ack at {options.rate:,} events/s",
        "",
        f"Measured {now_utc()} with `{command}` (part of `make bench`)."
        f" Target (SPEC §11): p99 < {TARGET_P99_MS:.0f} ms, {verdict}.",
        "",
        f"- Machine: {machine()}; data dir on {filesystem_of(RESULTS)}.",
        f"- Code: {code_version()}; `billhook serve` with its default settings (embedded"
        " projector on, no Redis), a read token, a Stripe secret and a price map;"
        f" {server_stack()}; one process, pinned to core 0 (`taskset -c 0`).",
        f"- Data: {options.workspaces:,} workspaces, each created first through"
        " `POST /webhooks/stripe` and projected before the load.",
        visibility.load_item(options),
        "- Measure: each event's time from its send to its 2xx (`accepted`, given only once"
        " its row is committed with `synchronous=FULL`). Nothing polls the API during the"
        " load: the server gets webhooks only, and its embedded projector applies them as they"
        " come. After the load the projection is awaited and every workspace compared with"
        " the last event sent about it.",
        "",
        "| figure | value |",
        "|---|---|",
        *visibility.sent_rows(r, options),
        visibility.ack_row(r, bold=True),
        *visibility.check_rows(r),
        f"| CPU: server (its event loop) of core 0 / load generator of core 1 |"
        f" {r.server_cpu:.0%} ({r.server_loop_cpu:.0%}) / {r.loadgen_cpu:.0%} |",
        f"| CPU of other processes, core 0 / core 1 | {r.others_server_core:.0%}"
        f" / {r.others_loadgen_core:.0%} |",
        "",
        visibility.problems_line(problems),
    ]
    return "\n".join(lines)


def figure(r: visibility.Result, command: str, problems: Sequence[str]) -> Figure:
    """The summary row."""
    raw = r.raw
    return Figure(
        "ingest_p99",
        f"p99 {r.ack(99):.1f} ms (p50 {r.ack(50):.1f}, p95 {r.ack(95):.1f}, max"
        f" {max(raw['ack_ms'], default=0):.1f} ms; {raw['acked']:,} events acked at"
        f" {r.send_rate:,.0f}/s)",
        met(r),
        command,
        visibility.noise(r),
        len(problems),
    )


def main(argv: Sequence[str]) -> int:
    """Run the benchmark; 0 when the run is valid, 1 otherwise."""
    options = parse_options(argv)
    command = command_line(NAME, argv)
    try:
        ensure_cores()
        result = visibility.measure(options)
    except BenchError as e:
        return fail(NAME, e, FIGURES, command, options.write_docs)
    problems = visibility.problems_of(result, options)
    return finish(
        NAME,
        summary_lines(result, options),
        problems,
        options.write_docs,
        lambda: document(result, options, problems, command),
        [figure(result, command, problems)],
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
