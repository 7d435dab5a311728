"""Reads benchmark (SPEC §11): entitlement GET and check requests/s ÷ a minimal Starlette GET.

A `billhook serve` (read token, Stripe secret and price map, embedded
projector) is first fed through its real webhook path: signed
`customer.subscription.created` events for `--workspaces` workspaces (mixed
prices, seat counts and statuses), then `customer.subscription.updated` events
for about half of them (past due, canceling, canceled, unpaid, seat changes).
Once `as_of_seq` shows everything projected, every workspace's answer is
checked against what it was sent.

Then bench/minimal_app.py (the same uvicorn settings) starts beside it, and
each round loads, in turn, `GET /v1/workspaces/<id>/entitlements`,
`POST /v1/workspaces/<id>/check` with `{"action": "ai_imports"}` (both with
the bearer token, random workspaces of the fed ones) and the minimal app's
GET at the same path, each for `--duration` seconds of `wrk -t1`, the servers
on core 0 and wrk on core 1. The order of the three turns each round.

The figures are the medians of the per-round ratios of 200 responses per
second; latencies are wrk's per-round p50/p99, medians over the rounds.
"""

from __future__ import annotations

import argparse
import random
import secrets
import statistics
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.entitlements import (
    base_url,
    billhook_command,
    billhook_toml,
    feed,
    fetch_all,
    minimal_command,
    mismatch,
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
    medians_of,
    now_utc,
    server_stack,
)
from bench.subscriptions import (
    DEFAULT_TIER,
    SubscriptionState,
    event_body,
    period_end_from_now,
)
from bench.tools import (
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

SCRIPT = Path(__file__).resolve().parent / "reads.lua"
TARGET_RATIO = 0.7
WARMUP_S = 2
# What the loads are called, in the order of the first round.
KINDS = ("entitlements", "check", "baseline")
CHECK_ACTION = "ai_imports"
# Below this share of core 0, a baseline run was not server-bound (said in the report).
BASELINE_BOUND = 0.95
# The feed: created statuses, then the updates about half of the workspaces get.
CREATED_STATUSES = (("active", 60), ("trialing", 25), ("incomplete", 15))
UPDATES: tuple[tuple[str, bool, int], ...] = (
    # (status, cancel_at_period_end, weight); `active` without cancel is a seat change.
    ("past_due", False, 25),
    ("active", True, 20),
    ("canceled", False, 20),
    ("unpaid", False, 10),
    ("active", False, 25),
)
UPDATE_SHARE = 0.5
PRICE_WEIGHTS = (
    ("price_team_monthly", 50),
    ("price_team_yearly", 30),
    ("price_enterprise_yearly", 20),
)
SEED = 20_261_121


@dataclass(frozen=True)
class Options:
    """How the benchmark runs (command-line options)."""

    rounds: int
    duration_s: int
    connections: int
    workspaces: int
    write_docs: bool


@dataclass(frozen=True)
class Run(WrkRun):
    """One wrk run, as bench/reads.lua counted it (`ok`: 200 responses)."""

    non_200: int
    as_of: int
    allow: int
    would_deny: int

    @classmethod
    def from_wrk(cls, raw: Mapping[str, Any], cpu: CpuUse) -> Run:
        return cls(
            **wrk_figures(raw),
            ok=raw["ok"],
            cpu=cpu,
            non_200=raw["non_200"],
            as_of=raw["as_of"],
            allow=raw["allow"],
            would_deny=raw["would_deny"],
        )


@dataclass(frozen=True)
class Round:
    number: int
    order: tuple[str, ...]
    runs: Mapping[str, Run]

    def ratio(self, kind: str) -> float:
        return self.runs[kind].rate / self.runs["baseline"].rate

    @property
    def noise(self) -> tuple[float, float]:
        runs = self.runs.values()
        return (
            max(r.cpu.others_server_core for r in runs),
            max(r.cpu.others_loadgen_core for r in runs),
        )


@dataclass(frozen=True)
class Fed:
    """What the server was fed before the rounds."""

    workspaces: list[str]
    events: int
    top_seq: int
    feed_s: float
    project_s: float
    tiers: Mapping[str, int]
    statuses: Mapping[str, int]
    mismatches: list[str]


def parse_options(argv: Sequence[str]) -> Options:
    """Options from the command line (`python -m bench reads --help`)."""
    parser = argparse.ArgumentParser(prog="python -m bench reads", description=__doc__)
    parser.add_argument("--rounds", type=int_between(1, 50), default=5, metavar="N")
    parser.add_argument("--duration", type=int_between(1, 300), default=8, metavar="SECONDS")
    parser.add_argument("--connections", type=int_between(1, 1024), default=32, metavar="N")
    parser.add_argument("--workspaces", type=int_between(1, 100_000), default=1000, metavar="N")
    parser.add_argument("--no-docs", action="store_true", help="do not rewrite docs/performance.md")
    args = parser.parse_args(list(argv))
    return Options(args.rounds, args.duration, args.connections, args.workspaces, not args.no_docs)


def _pick(rng: random.Random, weighted: Sequence[tuple[Any, int]]) -> Any:
    return rng.choices([value for value, _ in weighted], [w for _, w in weighted])[0]


def feed_plan(count: int) -> tuple[list[SubscriptionState], list[SubscriptionState]]:
    """The created states of `count` workspaces, and the updates some of them get."""
    rng = random.Random(SEED)
    created: list[SubscriptionState] = []
    updated: list[SubscriptionState] = []
    for n in range(count):
        state = SubscriptionState(
            workspace=f"ws_{n:06d}",
            status=_pick(rng, CREATED_STATUSES),
            price=_pick(rng, PRICE_WEIGHTS),
            quantity=rng.randint(1, 50),
        )
        created.append(state)
        if rng.random() < UPDATE_SHARE:
            status, cancel, _ = rng.choices(UPDATES, [w for *_, w in UPDATES])[0]
            updated.append(
                SubscriptionState(
                    workspace=state.workspace,
                    status=status,
                    price=state.price,
                    quantity=rng.randint(1, 50),
                    cancel_at_period_end=cancel,
                )
            )
    return created, updated


def expected_answer(state: SubscriptionState) -> dict[str, Any]:
    """The fields of GET entitlements a workspace whose only subscription is `state` shows."""
    granted = state.tier != DEFAULT_TIER
    return {
        "tier": state.tier,
        "status": state.normalized_status,
        "seats": {"purchased": state.quantity} if granted else None,
    }


def feed_server(url: str, token: str, secret: str, count: int, run_id: str) -> Fed:
    """Feed the server through /webhooks/stripe, wait for the projection, check every answer."""
    created, updated = feed_plan(count)
    period_end = period_end_from_now()
    # Events an hour old, updates a minute after their subscription's creation.
    t0 = int(time.time()) - 3600

    def bodies(states: Sequence[SubscriptionState], kind: str, created_at: int) -> list[str]:
        return [
            event_body(
                s,
                event_id=f"evt_{run_id}_{kind}_{s.workspace}",
                event_type=f"customer.subscription.{kind}",
                created=created_at,
                period_end=period_end,
            )
            for s in states
        ]

    started = time.monotonic()
    top = feed(url, bodies(created, "created", t0), secret)
    top = max(top, feed(url, bodies(updated, "updated", t0 + 60), secret))
    feed_s = time.monotonic() - started
    project_s = wait_projected(url, token, top)
    final = {s.workspace: s for s in created} | {s.workspace: s for s in updated}
    answers = fetch_all(url, token, list(final))
    mismatches = []
    for workspace, state in final.items():
        differs = mismatch(answers[workspace], expected_answer(state))
        if differs is not None:
            mismatches.append(f"{workspace}: {differs}")
    tiers: dict[str, int] = {}
    statuses: dict[str, int] = {}
    for state in final.values():
        tiers[state.tier] = tiers.get(state.tier, 0) + 1
        status = state.normalized_status
        statuses[status] = statuses.get(status, 0) + 1
    return Fed(
        workspaces=list(final),
        events=len(created) + len(updated),
        top_seq=top,
        feed_s=feed_s,
        project_s=project_s,
        tiers=dict(sorted(tiers.items())),
        statuses=dict(sorted(statuses.items(), key=lambda kv: -kv[1])),
        mismatches=mismatches,
    )


def measure(
    wrk: str,
    server: subprocess.Popen[bytes],
    port: int,
    kind: str,
    ids: Path,
    token: str,
    options: Options,
    duration_s: int,
) -> Run:
    """One wrk run of `kind` against `server`, listening on `port`."""
    mode = "check" if kind == "check" else "entitlements"
    raw, cpu = run_wrk_against(
        wrk,
        server,
        url=base_url(port),
        script=SCRIPT,
        script_args=[str(ids), mode, token],
        duration_s=duration_s,
        connections=options.connections,
    )
    return Run.from_wrk(raw, cpu)


def describe_round(r: Round) -> str:
    parts = [
        f"{kind} {run.rate:,.0f}/s p50 {run.p50_ms:.2f} ms p99 {run.p99_ms:.2f} ms"
        f" CPU {cpu_pair(run.cpu)}"
        for kind, run in ((k, r.runs[k]) for k in KINDS)
    ]
    return (
        f"round {r.number}: "
        + " | ".join(parts)
        + f" | ratios GET {r.ratio('entitlements'):.3f} check {r.ratio('check'):.3f}"
        + f" | others {noise_pair(r.noise)} of cores 0/1"
    )


def run_rounds(wrk: str, options: Options) -> tuple[Fed, list[Round]]:
    """Feed billhook, start the minimal app beside it, warm both up, then alternate the loads."""
    token = "bench-read-" + secrets.token_hex(16)
    secret = "whsec_bench_" + secrets.token_hex(16)
    rounds: list[Round] = []
    with scratch_dir("reads-") as work:
        config = work / "billhook.toml"
        config.write_text(billhook_toml(work / "data", secret=secret, token=token), "utf-8")
        port, minimal_port = free_port(), free_port()
        with (
            serve(billhook_command(config, port), port, work / "server.log") as billhook,
            serve(minimal_command(minimal_port), minimal_port, work / "minimal.log") as minimal,
        ):
            print(f"feeding {options.workspaces:,} workspaces through the webhook path", flush=True)
            fed = feed_server(
                base_url(port), token, secret, options.workspaces, secrets.token_hex(5)
            )
            print(
                f"fed {fed.events:,} events in {fed.feed_s:.1f} s, projected"
                f" {fed.project_s:.1f} s later; {len(fed.mismatches)} answers differ",
                flush=True,
            )
            ids = work / "workspaces.txt"
            ids.write_text("".join(f"{w}\n" for w in fed.workspaces), "utf-8")
            servers = {"entitlements": billhook, "check": billhook, "baseline": minimal}
            ports = {"entitlements": port, "check": port, "baseline": minimal_port}
            print(f"warm-up: {WARMUP_S} s of each load", flush=True)
            for kind in KINDS:
                measure(wrk, servers[kind], ports[kind], kind, ids, token, options, WARMUP_S)
            for number in range(1, options.rounds + 1):
                shift = (number - 1) % len(KINDS)
                order = KINDS[shift:] + KINDS[:shift]
                runs = {
                    kind: measure(
                        wrk,
                        servers[kind],
                        ports[kind],
                        kind,
                        ids,
                        token,
                        options,
                        options.duration_s,
                    )
                    for kind in order
                }
                done = Round(number, order, runs)
                print(describe_round(done), flush=True)
                rounds.append(done)
    return fed, rounds


@dataclass(frozen=True)
class Summary:
    rates: Mapping[str, float]
    p50_ms: Mapping[str, float]
    p99_ms: Mapping[str, float]
    cpu_us: Mapping[str, float]
    ratios: Mapping[str, float]
    responses: Mapping[str, int]
    non_200: Mapping[str, int]
    socket_errors: Mapping[str, int]
    allow: int
    would_deny: int
    noise: tuple[float, float]
    loadgen_peak: float

    def met(self, kind: str) -> bool:
        return self.ratios[kind] >= TARGET_RATIO

    @property
    def all_200(self) -> bool:
        return not any(self.non_200.values()) and not any(self.socket_errors.values())


def summarize(rounds: Sequence[Round]) -> Summary:
    median = statistics.median

    def per_kind(value: Any) -> dict[str, Any]:
        return {k: median([value(r.runs[k]) for r in rounds]) for k in KINDS}

    def totals(value: Any) -> dict[str, int]:
        return {k: sum(value(r.runs[k]) for r in rounds) for k in KINDS}

    return Summary(
        rates=per_kind(lambda run: run.rate),
        p50_ms=per_kind(lambda run: run.p50_ms),
        p99_ms=per_kind(lambda run: run.p99_ms),
        cpu_us=per_kind(lambda run: run.cpu_us),
        ratios={k: median([r.ratio(k) for r in rounds]) for k in ("entitlements", "check")},
        responses=totals(lambda run: run.responses),
        non_200=totals(lambda run: run.non_200),
        socket_errors=totals(lambda run: run.socket_errors),
        allow=sum(r.runs["check"].allow for r in rounds),
        would_deny=sum(r.runs["check"].would_deny for r in rounds),
        noise=(max(r.noise[0] for r in rounds), max(r.noise[1] for r in rounds)),
        loadgen_peak=max(run.cpu.loadgen for r in rounds for run in r.runs.values()),
    )


def problems_of(fed: Fed, rounds: Sequence[Round]) -> list[str]:
    """What makes the figures doubtful or shows billhook misbehaving; empty if none."""
    found = [f"answer differs after the feed: {m}" for m in fed.mismatches[:5]]
    if len(fed.mismatches) > 5:
        found.append(f"... {len(fed.mismatches) - 5} more answers differ after the feed")
    for r in rounds:
        for kind, run in r.runs.items():
            label = f"round {r.number} {kind}"
            if run.non_200:
                found.append(f"{label}: {run.non_200} responses were not 200")
            if run.socket_errors:
                found.append(f"{label}: {run.socket_errors} socket errors/timeouts")
            if kind != "baseline" and run.as_of != run.ok:
                found.append(f"{label}: {run.ok - run.as_of} 200 answers carried no as_of_seq")
            if kind == "check" and run.allow + run.would_deny != run.ok:
                found.append(f"{label}: {run.ok - run.allow - run.would_deny} odd decisions")
    return found


def baseline_note(rounds: Sequence[Round]) -> str:
    """A caveat when the minimal app was not CPU-bound in some rounds (empty otherwise)."""
    short = [r for r in rounds if r.runs["baseline"].cpu.server < BASELINE_BOUND]
    if not short:
        return ""
    lowest = min(r.runs["baseline"].cpu.server for r in short)
    return (
        f" The minimal app used less than {BASELINE_BOUND:.0%} of core 0 in {len(short)} of"
        f" {len(rounds)} rounds (down to {lowest:.0%}): there its rate was held back by the"
        " load side, which makes those rounds' ratios more flattering to billhook, not less."
    )


LABELS = {
    "entitlements": "billhook GET entitlements",
    "check": "billhook POST check",
    "baseline": "minimal Starlette GET",
}


def summary_lines(s: Summary, fed: Fed, options: Options) -> list[str]:
    lines = [
        "",
        f"reads: {options.connections} connections, {options.duration_s} s per run,"
        f" rounds: {options.rounds}, {len(fed.workspaces):,} workspaces"
        f" ({fed.events:,} events fed)",
    ]
    for kind in KINDS:
        lines.append(
            f"  {LABELS[kind]:<26} {s.rates[kind]:>9,.0f} req/s  p50 {s.p50_ms[kind]:6.2f} ms"
            f"  p99 {s.p99_ms[kind]:6.2f} ms  server CPU {s.cpu_us[kind]:,.0f} us/request"
        )
    for kind in ("entitlements", "check"):
        verdict = "met" if s.met(kind) else "MISSED"
        lines.append(
            f"  ratio {kind} (median of per-round ratios) {s.ratios[kind]:.3f};"
            f" target >= {TARGET_RATIO}: {verdict}"
        )
    lines.append(
        "  all responses 200: "
        + (
            "yes"
            if s.all_200
            else f"NO ({dict(s.non_200)} non-200, {dict(s.socket_errors)} errors)"
        )
        + f"; checks: {s.allow:,} allow, {s.would_deny:,} would_deny (observe mode)"
    )
    if noisy(s.noise, s.loadgen_peak):
        lines.append(noise_note(s.noise))
    return lines


def round_table(rounds: Sequence[Round]) -> list[str]:
    lines = [
        "| round | order | GET req/s | check req/s | minimal req/s | GET ratio | check ratio"
        " | GET p50 / p99 ms | check p50 / p99 ms | minimal p50 / p99 ms"
        " | CPU server (loop) / wrk: GET, check, minimal | CPU others, core 0/1 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rounds:
        g, c, m = (r.runs[k] for k in KINDS)
        order = ", ".join(
            {"entitlements": "GET", "check": "check", "baseline": "minimal"}[k] for k in r.order
        )
        lines.append(
            f"| {r.number} | {order} | {g.rate:,.0f} | {c.rate:,.0f} | {m.rate:,.0f}"
            f" | {r.ratio('entitlements'):.3f} | {r.ratio('check'):.3f}"
            f" | {g.p50_ms:.2f} / {g.p99_ms:.2f} | {c.p50_ms:.2f} / {c.p99_ms:.2f}"
            f" | {m.p50_ms:.2f} / {m.p99_ms:.2f}"
            f" | {cpu_pair(g.cpu)}, {cpu_pair(c.cpu)}, {cpu_pair(m.cpu)} | {noise_pair(r.noise)} |"
        )
    return lines


def document(
    s: Summary,
    fed: Fed,
    rounds: Sequence[Round],
    options: Options,
    problems: Sequence[str],
    command: str,
) -> str:
    """The reads section of docs/performance.md."""

    def verdict(kind: str) -> str:
        return "**met**" if s.met(kind) else "**missed**"

    tiers = ", ".join(f"{n:,} {t}" for t, n in fed.tiers.items())
    statuses = ", ".join(f"{n:,} {st}" for st, n in fed.statuses.items())
    all_200 = (
        f"yes, all {sum(s.responses.values()):,} of them (checks in the default"
        f" `observe` mode: {s.allow:,} `allow`, {s.would_deny:,} `would_deny`)"
        if s.all_200
        else f"**no**: non-200 {dict(s.non_200)}, socket errors/timeouts {dict(s.socket_errors)}"
    )
    lines = [
        "## Reads: entitlement GET and check requests/s ÷ minimal Starlette GET",
        "",
        f"Measured {now_utc()} with `{command}` (part of `make bench`)."
        f" Target (SPEC §11): ratio ≥ {TARGET_RATIO} each; GET {verdict('entitlements')},"
        f" check {verdict('check')}.",
        "",
        f"- Machine: {machine()}; data dir on {filesystem_of(RESULTS)}.",
        f"- Code: {code_version()}; `billhook serve` with its default settings (embedded"
        " projector on, enforcement `observe`), a read token, a Stripe secret and a price map"
        " (team monthly/yearly, enterprise yearly).",
        f"- Servers: {server_stack()}; one process each, access log off, log level warning,"
        " both running for the whole benchmark, pinned to core 0 (`taskset -c 0`).",
        f"- Data: {len(fed.workspaces):,} workspaces fed through `POST /webhooks/stripe`"
        f" ({fed.events:,} signed `customer.subscription.created`/`updated` events with"
        f" `metadata.workspace_id`, up to seq {fed.top_seq:,}), projected before the rounds"
        f" and every answer checked against what was sent ({len(fed.mismatches)} differed)."
        f" Tiers: {tiers}. Statuses: {statuses}.",
        f"- Load: `wrk -t1 -c{options.connections} -d{options.duration_s}s --latency` pinned to"
        " core 1 (bench/reads.lua), each request for a random one of the workspaces with"
        " `Authorization: Bearer …`: `GET /v1/workspaces/<id>/entitlements`,"
        f' `POST /v1/workspaces/<id>/check` with `{{"action": "{CHECK_ACTION}"}}`, and the'
        " minimal app's `GET` at the same path (answers a small JSON object, looks nothing up;"
        f" bench/minimal_app.py); {options.rounds} rounds of the three, in an order that turns"
        f" each round, after a {WARMUP_S} s warm-up of each.",
        "",
        "| figure | billhook GET entitlements | billhook POST check | minimal Starlette GET |",
        "|---|---|---|---|",
        "| 200 responses/s (median of rounds) | "
        + " | ".join(f"{s.rates[k]:,.0f}" for k in KINDS)
        + " |",
        "| p50 latency (median of rounds) | "
        + " | ".join(f"{s.p50_ms[k]:.2f} ms" for k in KINDS)
        + " |",
        "| p99 latency (median of rounds) | "
        + " | ".join(f"{s.p99_ms[k]:.2f} ms" for k in KINDS)
        + " |",
        "| server CPU per response (median of rounds) | "
        + " | ".join(f"{s.cpu_us[k]:,.0f} µs" for k in KINDS)
        + " |",
        f"| **ratio** (median of per-round ratios) | **{s.ratios['entitlements']:.3f}**"
        f" | **{s.ratios['check']:.3f}** | |",
        "",
        f"All responses 200: {all_200}.",
        "",
        *round_table(rounds),
        "",
        "CPU columns: each server's share of core 0 while loaded (in brackets, its event-loop"
        " thread alone), wrk's share of core 1, and the most other processes took of core 0"
        " and of core 1 during the round (noise; the idle server of the pair counts here).",
        "",
        f"Noise: other processes used up to {noise_pair(s.noise)} of cores 0/1"
        + (" (figures disturbed)." if noisy(s.noise, s.loadgen_peak) else ".")
        + baseline_note(rounds),
        "",
        "Problems: " + ("; ".join(problems) if problems else "none."),
    ]
    return "\n".join(lines)


def figures(
    s: Summary, rounds: Sequence[Round], command: str, problems: Sequence[str]
) -> list[Figure]:
    """The summary rows: each ratio and the rates behind it."""
    return [
        Figure(
            key,
            f"{s.ratios[kind]:.3f} ({label} {s.rates[kind]:,.0f} req/s ÷ minimal"
            f" {s.rates['baseline']:,.0f} req/s; {medians_of(len(rounds))})",
            s.met(kind),
            command,
            noise_pair(s.noise),
            len(problems),
        )
        for key, kind, label in (
            ("reads_get", "entitlements", "GET"),
            ("reads_check", "check", "check"),
        )
    ]


# The summary rows this benchmark writes.
FIGURES = ("reads_get", "reads_check")


def main(argv: Sequence[str]) -> int:
    """Run the reads benchmark; 0 when every run is valid, 1 otherwise."""
    options = parse_options(argv)
    command = command_line("reads", argv)
    try:
        ensure_cores()
        if not SCRIPT.is_file():
            raise BenchError(f"missing {SCRIPT}")
        wrk = ensure_wrk()
        fed, rounds = run_rounds(wrk, options)
    except BenchError as e:
        return fail("reads", e, FIGURES, command, options.write_docs)
    problems = problems_of(fed, rounds)
    summary = summarize(rounds)
    return finish(
        "reads",
        summary_lines(summary, fed, options),
        problems,
        options.write_docs,
        lambda: document(summary, fed, rounds, options, problems, command),
        figures(summary, rounds, command, problems),
    )
