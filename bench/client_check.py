"""Client: a cached `Billhook.check` ÷ an HTTP `POST .../check`, calls/s per call (SPEC §11).

`billhook serve` (SQLite, embedded projector) runs on core 0, fed through its
webhook path like bench/reads.py. On core 1, one process (`python -m
bench.client_check PLAN_JSON`) makes a `billhook_client.Billhook` whose
follower long-polls the change feed, waits until the follower has caught up,
calls `check` once per fed workspace (the warm-up, over HTTP), then runs
alternating rounds of the same calls, one at a time: (a) `Billhook.check`,
answered from the cache, and (b) `POST /v1/workspaces/{id}/check` with an
`httpx.Client` on a keep-alive connection. Every request the client's transport
sends is counted by kind: the cached rounds must send no check request. Then
each workspace's cached answer is compared with billhook's. The figure is the
median of the per-round ratios of calls/s.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import httpx

from bench import harness, reads
from billhook.testing.servers import free_port

NAMES = ("client_check",)
FULL = {"rounds": 5, "duration": 5, "workspaces": 1000}
QUICK = {"rounds": 2, "duration": 1, "workspaces": 100}
TARGET = 50.0
ACTION = "ai_imports"
# How long the client's follower may take to catch up the first time.
FOLLOWER_START_S = 30.0
CALLER_EXTRA_S = 120
# The follower's long poll is half of this (capped at 25 s): it confirms the cache well
# within every round, so a cached answer never lapses while being measured.
MAX_STALENESS_S = 60.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rounds", type=int, metavar="N")
    parser.add_argument("--duration", type=float, metavar="SECONDS", help="of each kind per round")
    parser.add_argument("--workspaces", type=int, metavar="N")


# -- the caller, on the load generator's core ---------------------------------------------


class CountingTransport(httpx.HTTPTransport):
    """httpx's transport, counting the requests it sends by kind (check, feed, other)."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: Counter[str] = Counter()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        kind = "check" if path.endswith("/check") else "feed" if path == "/v1/changes" else "other"
        self.sent[kind] += 1
        return super().handle_request(request)


def timed(call: Callable[[str], object], workspaces: Sequence[str], seconds: float) -> float:
    """Calls per second of `call`, one workspace after another, for at least `seconds`."""
    calls = 0
    started = time.perf_counter()
    deadline = started + seconds
    while True:
        for workspace in workspaces:
            call(workspace)
        calls += len(workspaces)
        if (now := time.perf_counter()) >= deadline:
            return calls / (now - started)


def call_rounds(plan: dict[str, Any]) -> dict[str, Any]:
    """The warm-up and the alternating rounds; what was measured."""
    from billhook_client import Billhook  # imported here: only the caller process needs it

    workspaces: list[str] = plan["workspaces"]
    transport = CountingTransport()
    out: dict[str, Any] = {"rounds": [], "problems": []}
    with (
        Billhook(
            plan["url"], plan["token"], transport=transport, max_staleness_s=MAX_STALENESS_S
        ) as client,
        httpx.Client(
            base_url=plan["url"], headers=harness.bearer(plan["token"]), timeout=30
        ) as http,
    ):
        deadline = time.monotonic() + FOLLOWER_START_S
        while client.heard_at is None:
            if time.monotonic() > deadline:
                raise harness.BenchError("the client's follower never caught up with billhook")
            time.sleep(0.01)
        warm = {w: client.check(w, ACTION) for w in workspaces}
        warm_sent = transport.sent["check"]
        body = {"action": ACTION}

        def cached(workspace: str) -> object:
            return client.check(workspace, ACTION)

        def direct(workspace: str) -> httpx.Response:
            answer = http.post(f"/v1/workspaces/{workspace}/check", json=body)
            if answer.status_code not in (200, 402):
                raise harness.BenchError(f"POST .../check answered {answer.status_code}")
            return answer

        timed(cached, workspaces, min(plan["duration"], 1.0))
        timed(direct, workspaces, min(plan["duration"], 1.0))
        for number in range(plan["rounds"]):
            before = transport.sent["check"]
            order = (("cached", cached), ("http", direct))[:: 1 if number % 2 == 0 else -1]
            rates = {kind: timed(call, workspaces, plan["duration"]) for kind, call in order}
            # Only the client's requests pass through `transport`, not the HTTP rounds'.
            sent = transport.sent["check"] - before
            out["rounds"].append(rates | {"order": [k for k, _ in order], "client_sent": sent})
        # billhook's answers now, beside the cached ones: the same decisions, as of the same seq.
        differing = []
        for workspace in workspaces:
            mine = client.check(workspace, ACTION)
            theirs = direct(workspace).json()
            fields = ("decision", "allowed", "reason", "tier", "as_of_seq")
            if mine.fallback or any(getattr(mine, f) != theirs.get(f) for f in fields):
                differing.append(workspace)
        out |= {
            "warm_up_requests": warm_sent,
            "warm_up_fallbacks": sum(c.fallback for c in warm.values()),
            "decisions": Counter(c.decision for c in warm.values()),
            "sent": dict(transport.sent),
            "differing": differing,
        }
    return out


def main(argv: list[str]) -> int:
    try:
        out = call_rounds(json.loads(argv[0]))
    except harness.BenchError as e:
        print(str(e), file=sys.stderr)
        return 1
    print(json.dumps(out))
    return 0


# -- the benchmark -------------------------------------------------------------------------


def run(name: str, args: argparse.Namespace, argv: Sequence[str]) -> dict[str, Any]:
    token, secret = "bench-read-" + secrets.token_hex(16), "whsec_bench_" + secrets.token_hex(16)
    with harness.scratch_dir("client-") as work:
        config = harness.bench_config(work, secret=secret, token=token)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        command = harness.billhook_command(config, port)
        with harness.serve(command, work / "server.log", port) as server:
            print(f"feeding {args.workspaces:,} workspaces through the webhook path", flush=True)
            last, events, mismatches = reads.feed_server(url, token, secret, args.workspaces)
            plan = {"url": url, "token": token, "workspaces": sorted(last)}
            plan |= {"rounds": args.rounds, "duration": args.duration}
            print(
                f"{args.rounds} rounds of {args.duration:g} s each, cached and HTTP,"
                f" from core {harness.LOADGEN_CORE}",
                flush=True,
            )
            before = harness.Cpu.now(server)
            caller = [sys.executable, "-m", "bench.client_check", json.dumps(plan)]
            timeout = args.rounds * args.duration * 2 + CALLER_EXTRA_S
            out = json.loads(
                harness.run_pinned("the client", harness.LOADGEN_CORE, caller, timeout)
            )
            used = before.until(harness.Cpu.now(server))
    rounds = out["rounds"]
    ratios = [r["cached"] / r["http"] for r in rounds]
    ratio = harness.median(ratios)
    rate = {k: harness.median([r[k] for r in rounds]) for k in ("cached", "http")}
    leaked = sum(r["client_sent"] for r in rounds)
    checks = [
        (leaked, f"the cached rounds sent {leaked} check requests (expected none)"),
        (
            out["warm_up_requests"] != len(last),
            f"the warm-up sent {out['warm_up_requests']} check requests for {len(last)} workspaces",
        ),
        (out["warm_up_fallbacks"], f"{out['warm_up_fallbacks']} warm-up answers were fallbacks"),
        (
            out["differing"],
            f"{len(out['differing'])} cached answers differ from billhook's:"
            f" {out['differing'][:3]}",
        ),
        (mismatches, f"{len(mismatches)} workspaces answered otherwise than fed: {mismatches[:3]}"),
    ]
    decisions = ", ".join(f"{n:,} {d}" for d, n in sorted(out["decisions"].items()))
    sent = ", ".join(f"{k} {n:,}" for k, n in sorted(out["sent"].items()))
    return harness.result(
        name,
        argv,
        args.quick,
        title="Client: a cached `Billhook.check` ÷ an HTTP `POST .../check`, per call",
        figures=[
            harness.figure(
                "client",
                f"{ratio:,.0f} times faster (cached {rate['cached']:,.0f} calls/s ÷ HTTP"
                f" {rate['http']:,.0f} calls/s; medians of {args.rounds} rounds)",
                ratio >= TARGET,
            )
        ],
        method=[
            "Server: `billhook serve` (SQLite, default settings, embedded projector; a read"
            " token, a Stripe secret, the test price map), pinned to core 0;"
            f" {harness.server_stack()}.",
            f"Data: {args.workspaces:,} workspaces fed through `POST /webhooks/stripe` ({events:,}"
            " signed `customer.subscription.created`/`updated` events, as for the reads"
            f" benchmark), projected, every answer checked ({len(mismatches)} differed).",
            "Caller: one process pinned to core 1 (bench/client_check.py) holding a"
            " `billhook_client.Billhook` (its follower long-polling `/v1/changes` on a thread,"
            f" `max_staleness_s={MAX_STALENESS_S:g}`) and an `httpx.Client`; it waits for the"
            f" follower's first answer, calls `check(workspace, {ACTION!r})` once per workspace"
            " (the warm-up: over HTTP, then cached), then makes a 1 s unmeasured pass of each"
            f" kind and {args.rounds} rounds, alternating which goes first, of {args.duration:g}"
            " s each: (a) `Billhook.check`, (b) `POST /v1/workspaces/{id}/check` with"
            f' `{{"action": "{ACTION}"}}` on a keep-alive connection; sequential, the'
            " workspaces in turn.",
            "Requests are counted by kind in the client's own httpx transport: the cached"
            " rounds must send no check request. Afterwards each workspace's cached answer is"
            " compared with billhook's (decision, allowed, reason, tier, as_of_seq).",
        ],
        values={
            "calls/s, cached / HTTP (medians of rounds)": (
                f"{rate['cached']:,.0f} / {rate['http']:,.0f}"
            ),
            "time per call, cached / HTTP": (
                f"{1e6 / rate['cached']:,.2f} / {1e6 / rate['http']:,.1f} µs"
            ),
            "**ratio** cached ÷ HTTP (median of per-round ratios)": f"**{ratio:,.0f}**",
            "check requests sent by the client: warm-up / cached rounds": (
                f"{out['warm_up_requests']:,} / {leaked:,}"
            ),
            "requests sent by the client's transport in all, by kind": sent,
            "warm-up answers (enforcement `observe`)": decisions,
            "cached answers differing from billhook's": f"{len(out['differing']):,}",
            "server CPU over the whole caller run": (
                f"{used.procs[0] / max(used.wall, 1e-9):.0%} of a core"
            ),
        },
        rounds=[
            {
                "round": n,
                "order": ", ".join(r["order"]),
                "cached calls/s": round(r["cached"]),
                "HTTP calls/s": round(r["http"]),
                "ratio": round(r["cached"] / r["http"], 1),
                "check requests in the cached round": r["client_sent"],
            }
            for n, r in enumerate(rounds, start=1)
        ],
        noise=harness.noise_text([used.others(used.procs[0], used.children)]),
        problems=[message for failed, message in checks if failed],
        raw={"rounds": rounds, "ratios": ratios},
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
