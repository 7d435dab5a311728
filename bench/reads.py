"""Reads ratio (SPEC §11): entitlement GET and check requests/s ÷ a minimal Starlette GET.

`billhook serve` is fed through its webhook path: a subscription for each of
`--workspaces` workspaces (mixed prices, seats and statuses), then an update
for about half of them; once projected, every answer is checked. With
bench/minimal_app.py beside it (both on core 0), each round loads, in an order
that turns, GET entitlements, POST check (`{"action": "ai_imports"}`) and the
minimal app's GET at the same path, random workspaces, `wrk -t1` on core 1.
The figures are medians of the per-round ratios.
"""

from __future__ import annotations

import argparse
import random
import secrets
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import harness
from billhook.testing.servers import free_port

NAMES = ("reads",)
FULL = {"rounds": 5, "duration": 8, "connections": 32, "workspaces": 1000}
QUICK = {"rounds": 2, "duration": 2, "workspaces": 200}
TARGET = 0.7
WARMUP_S = 2
KINDS = ("GET", "check", "minimal")
SEED = 20_261_121
# Weighted choices of the feed: created statuses, prices, and the updates half of them get.
CREATED = {"active": 60, "trialing": 25, "incomplete": 15}
PRICES = {"price_team_monthly": 50, "price_team_yearly": 30, "price_enterprise_yearly": 20}
UPDATES = {("past_due", False): 25, ("active", True): 20, ("canceled", False): 20}
UPDATES |= {("unpaid", False): 10, ("active", False): 25}
CHECK_BODY = '{"action": "ai_imports"}'
MARKERS = ('"decision":"allow"', '"decision":"would_deny"')


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rounds", type=int, metavar="N")
    parser.add_argument("--duration", type=int, metavar="SECONDS")
    parser.add_argument("--connections", type=int, metavar="N")
    parser.add_argument("--workspaces", type=int, metavar="N")


def plan(count: int) -> tuple[list[harness.Sub], list[harness.Sub]]:
    """Every workspace's created subscription, and the updates about half of them get."""
    rng = random.Random(SEED)

    def pick(weights: dict[Any, int]) -> Any:
        return rng.choices(list(weights), list(weights.values()))[0]

    created = [
        harness.Sub(f"ws_{n:06d}", pick(CREATED), pick(PRICES), rng.randint(1, 50))
        for n in range(count)
    ]
    updated = []
    for sub in created:
        if rng.random() < 0.5:
            status, cancel = pick(UPDATES)
            updated.append(
                harness.Sub(sub.workspace, status, sub.price, rng.randint(1, 50), cancel)
            )
    return created, updated


def feed_server(
    url: str, token: str, secret: str, count: int
) -> tuple[dict[str, harness.Sub], int, list[str]]:
    """Feed the server, wait for the projection; (last state per workspace, events, mismatches)."""
    created, updated = plan(count)
    harness.feed(url, token, secret, created, "created", int(time.time()) - 3600)
    harness.feed(url, token, secret, updated, "updated", int(time.time()) - 3540)
    last = {s.workspace: s for s in created} | {s.workspace: s for s in updated}
    return last, len(created) + len(updated), harness.check_all(url, token, last)


def pools(work: Path, workspaces: Sequence[str], token: str) -> dict[str, Path]:
    """The request pools of the three loads, one request per workspace each."""
    auth = harness.bearer(token)
    paths = {kind: work / f"{kind}.requests" for kind in KINDS}
    entitlements = [("GET", f"/v1/workspaces/{w}/entitlements", "", auth) for w in workspaces]
    harness.write_requests(paths["GET"], entitlements)
    harness.write_requests(paths["minimal"], entitlements)
    check = {**auth, "Content-Type": "application/json"}
    harness.write_requests(
        paths["check"],
        [("POST", f"/v1/workspaces/{w}/check", CHECK_BODY, check) for w in workspaces],
    )
    return paths


def run(name: str, args: argparse.Namespace, argv: Sequence[str]) -> dict[str, Any]:
    token, secret = "bench-read-" + secrets.token_hex(16), "whsec_bench_" + secrets.token_hex(16)
    runs: list[dict[str, dict[str, Any]]] = []
    with harness.scratch_dir("reads-") as work:
        config = harness.bench_config(work, secret=secret, token=token)
        port, minimal_port = free_port(), free_port()
        servers = harness.billhook_command(config, port), harness.minimal_command(minimal_port)
        with (
            harness.serve(servers[0], work / "server.log", port) as billhook,
            harness.serve(servers[1], work / "minimal.log", minimal_port) as minimal,
        ):
            print(f"feeding {args.workspaces:,} workspaces through the webhook path", flush=True)
            last, events, mismatches = feed_server(
                f"http://127.0.0.1:{port}", token, secret, args.workspaces
            )
            paths = pools(work, list(last), token)
            targets = dict.fromkeys(("GET", "check"), (billhook, port))
            targets["minimal"] = (minimal, minimal_port)

            def load(kind: str, seconds: int) -> dict[str, Any]:
                pool, conns = paths[kind], args.connections
                return harness.run_wrk(*targets[kind], pool, "random", MARKERS, seconds, conns)

            for kind in KINDS:
                load(kind, WARMUP_S)
            for number in range(args.rounds):
                order = KINDS[number % 3 :] + KINDS[: number % 3]
                runs.append({kind: load(kind, args.duration) for kind in order})
                ratios = ", ".join(f"{k} {runs[-1][k]['rate']:,.0f}/s" for k in KINDS)
                print(f"round {number + 1}/{args.rounds}: {ratios}", flush=True)
    ratio = {
        k: harness.median([r[k]["rate"] / r["minimal"]["rate"] for r in runs])
        for k in ("GET", "check")
    }
    rate = {k: harness.median([r[k]["rate"] for r in runs]) for k in KINDS}
    bad = sum(r[k]["non_2xx"] + r[k]["socket_errors"] for r in runs for k in KINDS)
    allow = sum(r["check"]["marks"][0] for r in runs)
    would_deny = sum(r["check"]["marks"][1] for r in runs)
    problems = [f"{bad} requests failed or answered non-200"] * bool(bad)
    problems += [
        f"{len(mismatches)} workspaces answered otherwise than fed: {mismatches[:3]}"
    ] * bool(mismatches)
    tiers = Counter(s.expected()["tier"] for s in last.values())
    statuses = Counter(s.expected()["status"] for s in last.values())

    def med(kind: str, key: str) -> float:
        return float(harness.median([r[kind][key] for r in runs]))

    return harness.result(
        name,
        argv,
        args.quick,
        title="Reads: entitlement GET and check requests/s ÷ minimal Starlette GET",
        figures=[
            harness.figure(
                f"reads_{kind.lower()}",
                f"{ratio[kind]:.3f} ({kind} {rate[kind]:,.0f} req/s ÷ minimal"
                f" {rate['minimal']:,.0f} req/s; medians of {args.rounds} rounds)",
                ratio[kind] >= TARGET,
            )
            for kind in ("GET", "check")
        ],
        method=[
            "Servers: `billhook serve` (default settings, embedded projector, enforcement"
            " `observe`; a read token, a Stripe secret, the test price map) and"
            " bench/minimal_app.py, both running throughout, pinned to core 0;"
            f" {harness.server_stack()}.",
            f"Data: {args.workspaces:,} workspaces fed through `POST /webhooks/stripe` ({events:,}"
            " signed `customer.subscription.created`/`updated` events), projected, and every"
            f" answer checked ({len(mismatches)} differed). Tiers: "
            + ", ".join(f"{c} {t}" for t, c in sorted(tiers.items()))
            + "; statuses: "
            + ", ".join(f"{c} {s}" for s, c in statuses.most_common())
            + ".",
            f"Load: `wrk -t1 -c{args.connections} -d{args.duration}s` pinned to core 1"
            " (bench/wrk.lua), a random fed workspace per request, with the bearer token;"
            f" {args.rounds} rounds of the three loads in an order that turns, after a"
            f" {WARMUP_S} s warm-up of each.",
        ],
        values={
            "200 responses/s, GET / check / minimal (medians of rounds)": " / ".join(
                f"{rate[k]:,.0f}" for k in KINDS
            ),
            "p50 / p99 latency, GET / check / minimal": "; ".join(
                f"{med(k, 'p50_ms'):.2f} / {med(k, 'p99_ms'):.2f} ms" for k in KINDS
            ),
            "server CPU per response, GET / check / minimal": " / ".join(
                f"{med(k, 'cpu_us'):,.0f}" for k in KINDS
            )
            + " µs",
            "checks (`observe`): allow / would_deny": f"{allow:,} / {would_deny:,}",
            "**ratio** GET / check (medians of per-round ratios)": (
                f"**{ratio['GET']:.3f}** / **{ratio['check']:.3f}**"
            ),
        },
        rounds=[
            {
                "round": n,
                "order": ", ".join(r),
                **{f"{k} req/s": round(r[k]["rate"]) for k in KINDS},
                "GET ratio": round(r["GET"]["rate"] / r["minimal"]["rate"], 3),
                "check ratio": round(r["check"]["rate"] / r["minimal"]["rate"], 3),
                "CPU server (loop)/wrk: GET, check, minimal": ", ".join(r[k]["cpu"] for k in KINDS),
                "others on cores 0/1": harness.noise_text([r[k]["noise"] for k in KINDS], ""),
            }
            for n, r in enumerate(runs, start=1)
        ],
        noise=harness.noise_text([r[k]["noise"] for r in runs for k in KINDS]),
        problems=problems,
    )
