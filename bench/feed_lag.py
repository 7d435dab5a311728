"""Feed lag: a change seen on `/v1/changes/stream`, p99 at 500 events/s (SPEC §11).

The load of bench/visibility.py: `billhook serve` (embedded projector) on
core 0, `--workspaces` workspaces created through the webhook path, then
bench/loadgen.py on core 1 sending signed `customer.subscription.updated`
events open-loop at `--rate`, each changing a workspace's seats (so each makes
one change). In the same process a follower reads the stream from the head and
notes when each change arrives; the change of an event carries its `seq`, which
the ack gave. A change carries no commit time, so the figure is ack → seen:
the projection commits an event after it is logged, which is when its ack is
sent, so ack → seen bounds commit → seen from above but for the ack's own trip
to the client (send → seen, reported too, bounds it outright). Every change is
compared with its event, and afterwards every workspace with its last event.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from bench import harness, visibility
from billhook.api import changes

NAMES = ("feed_lag",)
FULL = {"rate": 500, "duration": 20, "workspaces": 1000, "connections": 64, "poll_interval": 2.0}
QUICK = {"duration": 3, "workspaces": 200}
TARGET_MS = 100.0
add_arguments = visibility.add_arguments


def spread(values: Sequence[float]) -> str:
    """p50 / p95 / p99 / max of a latency series, in ms."""
    return " / ".join(f"{harness.percentile(values, p):.2f}" for p in (50, 95, 99, 100)) + " ms"


def problems(r: visibility.Run, rate: int) -> list[str]:
    """The load's problems, and the stream's: changes missing, wrong, twice or unexpected."""
    o = r.out
    checks = [
        (o["stream_errors"], "the stream failed: " + "; ".join(o["stream_errors"][:3])),
        (o["unseen"], f"{o['unseen']} acked events' changes never arrived on the stream"),
        (o["duplicate_changes"], f"{o['duplicate_changes']} changes arrived twice"),
        (o["foreign_changes"], f"{o['foreign_changes']} changes of no event of the load"),
        (
            o["change_failures"],
            "changes differ from their event: " + "; ".join(o["change_failures"][:3]),
        ),
    ]
    return visibility.problems(r, rate) + [message for failed, message in checks if failed]


def run(name: str, args: argparse.Namespace, argv: Sequence[str]) -> dict[str, Any]:
    r = visibility.measure(args, redis=False, watch=False, follow=True)
    o = r.out
    seen = o["seen_ms"]
    p99 = harness.percentile(seen, 99)
    measured = (
        f"p99 {p99:.1f} ms ack → seen (p50 {harness.percentile(seen, 50):.1f}, max"
        f" {harness.percentile(seen, 100):.1f} ms; {len(seen):,} changes at"
        f" {r.send_rate:,.0f} events/s)"
    )
    method = [
        *visibility.load_lines(args, redis=False, watch=False)[:-1],
        "Measure: in the load generator's process (asyncio, core 1), a follower of"
        " `GET /v1/changes/stream` (aiohttp, its own connection, SSE lines parsed as they"
        " arrive) from the head cursor taken before the first send; a change is *seen* when"
        " its event's blank line is read. (The stream looks for new changes every"
        f" {changes.POLL_S * 1000:g} ms: `billhook.api.changes.POLL_S`.) A change carries no"
        " projection commit time, so the figure is **ack → seen**: the time from the event's"
        " 2xx (its `seq`) to its change (same `seq`) on the stream. The projection commits an"
        " event only after it is durably logged, which is when the ack is sent, so ack → seen"
        " exceeds commit → seen except by the ack's own trip to the client; send → seen"
        " (below) bounds it outright. Each change is compared with its event (workspace,"
        " tier, status, seats).",
    ]
    values = {
        "events sent / acked (2xx)": f"{o['sent']:,} / {o['acked']:,}",
        "achieved send rate": f"{r.send_rate:,.1f}/s (asked {args.rate}/s; send lag p99"
        f" {r.q('send_lag_ms', 99):.2f} ms)",
        "send → ack p50 / p95 / p99 / max": r.spread("ack_ms"),
        "**ack → seen on the stream** p50 / p95 / p99 / max": spread(seen),
        "send → seen p50 / p95 / p99 / max": spread(o["sent_seen_ms"]),
        "changes seen / never seen / twice / not of the load": (
            f"{o['changes_seen']:,} / {o['unseen']:,} / {o['duplicate_changes']:,}"
            f" / {o['foreign_changes']:,}"
        ),
        "changes seen before their ack arrived": f"{o['seen_before_ack']:,}",
        "changes differing from their event": f"{len(o['change_failures']):,}",
        "workspaces checked after the load / differing": (
            f"{args.workspaces:,} / {len(r.mismatches)}"
        ),
        "CPU: server (its event loop) / load generator with follower": (
            f"{r.server:.0%} ({r.server_loop:.0%}) / {r.loadgen:.0%} of a core"
        ),
    }
    return harness.result(
        name,
        argv,
        args.quick,
        title=f"Feed lag: ack → change seen on `/v1/changes/stream` at {args.rate} events/s",
        figures=[harness.figure("feed_lag", measured, bool(seen) and p99 < TARGET_MS)],
        method=method,
        values=values,
        noise=harness.noise_text([r.noise]),
        problems=problems(r, args.rate),
    )
