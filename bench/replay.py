"""Replay of 1,000,000 events, 50,000 subscriptions (SPEC §11): rate, ÷ a raw scan, peak RSS.

On the log of bench/make_log.py, each round runs two processes pinned to core
0 (bench/replay_run.py): the baseline, one sqlite3 cursor over every row and
`json.loads` of each payload; then `projections.rebuild.rebuild` (the fold and
bulk write of `billhook replay`, before its comparison and swap) from seq 1.
Rates are events ÷ each process's wall time, start-up included; the ratio is
the median of per-round ratios; peak RSS is each process's own high-water mark.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from bench import harness
from bench.make_log import LogSpec, ensure
from billhook.testing.settings import write_config

NAMES = ("replay",)
FULL = {"events": 1_000_000, "subscriptions": 50_000, "rounds": 3}
QUICK = {"events": 20_000, "subscriptions": 1_000, "rounds": 2}
TARGET_RATE, TARGET_RATIO, TARGET_RSS = 50_000, 0.5, 2**30
RUN_TIMEOUT_S = 900


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--events", type=int, metavar="N")
    parser.add_argument("--subscriptions", type=int, metavar="N")
    parser.add_argument("--seed", type=int, default=LogSpec.seed)
    parser.add_argument("--rounds", type=int, metavar="N")


def measure(
    command: Sequence[str],
    events: int,
    companion: Callable[[], float] = harness.no_companion,
) -> dict[str, Any]:
    """Run `command` pinned to core 0; its rate, own figures, CPU and the noise on core 0.

    `companion`: CPU seconds so far of the processes serving it on core 0 (its
    PostgreSQL backends), reported as `companion_cpu` and not counted as noise.
    """
    before, companion_before = harness.Cpu.now(), companion()
    started = time.perf_counter()
    python = [sys.executable, "-m", "bench.replay_run", *command]
    stdout = harness.run_pinned(command[0], harness.SERVER_CORE, python, RUN_TIMEOUT_S)
    wall = time.perf_counter() - started
    used, companion_s = before.until(harness.Cpu.now()), companion() - companion_before
    out: dict[str, Any] = json.loads(stdout)
    if out["events"] != events:
        raise harness.BenchError(f"{command[0]} read {out['events']:,} events, not {events:,}")
    noise = used.others(used.children + companion_s, 0.0)
    return out | {
        "wall": wall,
        "rate": events / wall,
        "cpu": used.children,
        "companion_cpu": companion_s,
        "noise": noise,
    }


def run(name: str, args: argparse.Namespace, argv: Sequence[str]) -> dict[str, Any]:
    spec = LogSpec(args.events, args.subscriptions, args.seed)
    data, stats, reused = ensure(spec)
    config = write_config(data, data_dir=data, auth=None)
    with (data / "events.db").open("rb") as log:
        # Every measured process then finds the log in the page cache.
        while log.read(1 << 24):
            pass
    rounds = []
    for number in range(1, args.rounds + 1):
        base = measure(["scan", str(data / "events.db")], spec.events)
        replay = measure(["rebuild", str(config), str(data / "projections.bench.db")], spec.events)
        rounds.append((base, replay))
        print(
            f"round {number}/{args.rounds}: scan {base['rate']:,.0f}/s,"
            f" replay {replay['rate']:,.0f}/s, ratio {replay['rate'] / base['rate']:.3f}",
            flush=True,
        )
    rate = harness.median([r["rate"] for _, r in rounds])
    base_rate = harness.median([b["rate"] for b, _ in rounds])
    ratio = harness.median([r["rate"] / b["rate"] for b, r in rounds])
    rss, base_rss = (max(run[i]["peak_rss"] for run in rounds) for i in (1, 0))
    mib = 2**20
    noise = f"{max(x['noise'][0] for run in rounds for x in run):.0%} of core 0 (the one it uses)"
    of = f"{spec.events:,} events; medians of {args.rounds} rounds"
    return harness.result(
        name,
        argv,
        args.quick,
        title=f"Replay: rebuilding projections from {spec.events:,} events"
        f" ({spec.subscriptions:,} subscriptions)",
        figures=[
            harness.figure("replay_rate", f"{rate:,.0f} events/s ({of})", rate >= TARGET_RATE),
            harness.figure(
                "replay_ratio",
                f"{ratio:.3f} (replay {rate:,.0f} ÷ scan {base_rate:,.0f} events/s; {of})",
                ratio >= TARGET_RATIO,
            ),
            harness.figure(
                "replay_rss",
                f"{rss / mib:,.0f} MiB (baseline {base_rss / mib:,.0f} MiB; the largest of"
                f" {args.rounds} rounds)",
                rss < TARGET_RSS,
            ),
        ],
        method=[
            f"Log: bench/make_log.py, {spec.events:,} events over {spec.subscriptions:,}"
            f" subscriptions, seed {spec.seed}"
            + (" (reused from an earlier run)" if reused else "")
            + f": {stats.describe()}",
            "Replay: `python -m bench.replay_run rebuild CONFIG TARGET`, pinned to core 0:"
            " `projections.rebuild.rebuild` from seq 1 into a new store.",
            "Baseline: `python -m bench.replay_run scan EVENTS_DB`, pinned to core 0: one sqlite3"
            " cursor over every row in seq order and `json.loads` of each payload, nothing else.",
            f"{args.rounds} alternating rounds, baseline first, the log in the page cache.",
        ],
        values={
            "baseline: scan + `json.loads`": f"{base_rate:,.0f} events/s",
            "**replay** (whole process)": f"**{rate:,.0f} events/s**",
            "scan / rebuild themselves (their own clocks)": " / ".join(
                f"{harness.median([spec.events / run[i]['seconds'] for run in rounds]):,.0f}"
                for i in (0, 1)
            )
            + " events/s",
            "**ratio** replay ÷ baseline (median of per-round ratios)": f"**{ratio:.3f}**",
            "**peak RSS**, replay / baseline": (
                f"**{rss / mib:,.0f} MiB** / {base_rss / mib:,.0f} MiB"
            ),
        },
        rounds=[
            {
                "round": n,
                "baseline events/s (wall s)": f"{b['rate']:,.0f} ({b['wall']:.1f})",
                "replay events/s (wall s)": f"{r['rate']:,.0f} ({r['wall']:.1f})",
                "ratio": round(r["rate"] / b["rate"], 3),
                "replay CPU s": round(r["cpu"], 1),
                "peak RSS replay / baseline": (
                    f"{r['peak_rss'] / mib:,.0f} / {b['peak_rss'] / mib:,.0f} MiB"
                ),
                "others on core 0": f"{b['noise'][0]:.0%} / {r['noise'][0]:.0%}",
            }
            for n, (b, r) in enumerate(rounds, start=1)
        ],
        noise=noise,
    )
