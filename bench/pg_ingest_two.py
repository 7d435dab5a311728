"""PostgreSQL ingest with one vs two receiver processes (SPEC §11, §4a): the factor, each
process's CPU, and every event in the log exactly once.

Rounds alternate one receiver with two (separate working directories, one
throwaway database, all pinned to core 0 with the database's backends, see
bench/postgres.py). One receiver is loaded by `wrk -t1 -c32`, two by one
`wrk -t1 -c16` each at once, all on core 1, with pools of freshly signed
unique events. The factor is the median of per-round ratios two ÷ one; on two
cores it cannot show scaling, so it has no target. After each two-receiver
run every event sent is delivered again to the *other* receiver: an event in
the log must be answered `duplicate` with its seq, and no acknowledged one
may be `accepted` again; the log must then hold each sent event exactly once
under seqs 1..N, and both projections reach its head.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import secrets
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psycopg

from bench import harness, ingest, postgres
from bench.postgres import NO_BASELINE, pg_deployment, pg_single, pool_size, warm_up
from billhook.log.postgres import LOG_SCHEMA
from billhook.testing.servers import HOST, free_port

NAMES = ("pg_ingest_two",)
FULL = postgres.FULL
QUICK = postgres.QUICK
add_arguments = postgres.add_arguments


def sent_requests(pool: Path, sent: int) -> list[tuple[str, bytes, dict[str, str]]]:
    """The `sent` deliveries of a wrk pool that `once` mode sent: (event id, body, headers).

    wrk calls request() once before the run to check the script, and that
    call takes the pool's first line: what it sent are lines 2 to `sent` + 1.
    """
    out = []
    with pool.open(encoding="utf-8") as lines:
        next(lines, None)
        for _, line in zip(range(sent), lines, strict=False):
            _method, _path, body, *headers = line.rstrip("\n").split("\t")
            event_id = json.loads(body)["id"]
            fields = dict(h.split(": ", 1) for h in headers)
            out.append((event_id, body.encode(), fields))
    return out


def redeliver(
    url: str, deliveries: Sequence[tuple[str, bytes, dict[str, str]]]
) -> list[tuple[str, int, str, int | None]]:
    """POST each delivery again to `url`: (event id, status code, answer status, seq)."""

    def post(
        client: httpx.Client, d: tuple[str, bytes, dict[str, str]]
    ) -> tuple[str, int, str, int | None]:
        answer = client.post(harness.WEBHOOK_PATH, content=d[1], headers=d[2])
        body = answer.json() if answer.status_code == 200 else {}
        return d[0], answer.status_code, str(body.get("status")), body.get("seq")

    return harness.parallel(url, None, post, deliveries)


def log_events(storage_url: str) -> dict[str, list[int]]:
    """Every event id in the PostgreSQL log with the seqs it sits at."""
    found: dict[str, list[int]] = {}
    query = f"SELECT event_id, seq FROM {LOG_SCHEMA}.events ORDER BY seq"
    with psycopg.connect(storage_url, connect_timeout=postgres.CONNECT_TIMEOUT_S) as conn:
        for event_id, seq in conn.execute(query):
            found.setdefault(str(event_id), []).append(int(seq))
    return found


def check_exactly_once(
    storage_url: str,
    sent: dict[int, list[tuple[str, bytes, dict[str, str]]]],
    acked: int,
    ports: Sequence[int],
) -> tuple[list[str], dict[str, int]]:
    """Deliver every sent event again to the other receiver, then check the log: each sent
    event once, seqs 1..N, no acknowledged event accepted twice. (problems, counts)."""
    before = log_events(storage_url)
    answers: list[tuple[str, int, str, int | None]] = []
    for i, port in enumerate(ports):
        other = sent[ports[(i + 1) % len(ports)]]
        answers += redeliver(f"http://{HOST}:{port}", other)
    accepted_again = sum(1 for a in answers if a[2] == "accepted")
    failed = [a for a in answers if a[1] != 200]
    wrong_seq = [a for a in answers if a[2] == "duplicate" and before.get(a[0], [None])[0] != a[3]]
    missing_duplicate = [a for a in answers if a[0] in before and a[2] != "duplicate"]
    after = log_events(storage_url)
    seqs = sorted(s for v in after.values() for s in v)
    sent_ids = {d[0] for ds in sent.values() for d in ds}
    total_sent = len(sent_ids)
    checks = [
        (failed, f"{len(failed)} redeliveries answered non-200"),
        (wrong_seq, f"{len(wrong_seq)} duplicates answered a seq other than the log's"),
        (missing_duplicate, f"{len(missing_duplicate)} logged events were not `duplicate`"),
        (accepted_again > total_sent - acked,
         f"{accepted_again} redeliveries accepted, more than the {total_sent - acked} never"
         " acknowledged: an acknowledged event was missing"),
        (any(len(v) > 1 for v in after.values()), "an event id is in the log more than once"),
        (set(after) != sent_ids, f"the log holds {len(after):,} event ids, not the"
         f" {total_sent:,} sent"),
        (seqs != list(range(1, len(seqs) + 1)), "the log's seqs are not 1..N"),
    ]  # fmt: skip
    problems = [text for failed_check, text in checks if failed_check]
    counts = {"logged": len(before), "accepted_again": accepted_again, "redelivered": len(answers)}
    return problems, counts


def two_receivers(work: Path, count: int, secret: str, args: argparse.Namespace) -> dict[str, Any]:
    """Two `billhook serve` on one fresh database, each loaded by its own wrk at once with
    half the connections; then every event is checked in the log exactly once."""
    token = "bench-read-" + secrets.token_hex(16)
    conns = max(args.connections // 2, 1)
    with pg_deployment(args) as (url, backends), contextlib.ExitStack() as stack:
        nodes = []
        for i in (1, 2):
            home = work / f"receiver{i}"
            home.mkdir()
            pool = home / "requests"
            ingest.write_pool(pool, count, secret, f"{work.parent.name[-6:]}{work.name}r{i}")
            config = harness.bench_config(home, secret=secret, token=token, storage_url=url)
            port = free_port()
            command = harness.billhook_command(config, port)
            pid = stack.enter_context(harness.serve(command, home / "server.log", port))
            nodes.append((pid, port, pool))
        before, backends_before = harness.Cpu.now(*(n[0] for n in nodes)), backends.cpu_s()
        with ThreadPoolExecutor(len(nodes)) as pool_threads:
            raws = list(
                pool_threads.map(
                    lambda n: harness.wrk_figures(
                        n[1], n[2], "once", ingest.MARKERS, args.duration, conns
                    ),
                    nodes,
                )
            )
        used = before.until(harness.Cpu.now(*(n[0] for n in nodes)))
        backends_s = backends.cpu_s() - backends_before
        active = max(max(r["duration_s"] for r in raws), 1e-9)
        ok = sum(r["ok"] for r in raws)
        accepted = sum(r["marks"][0] for r in raws)
        # Redelivered first, while the pools' signatures are fresh (tolerance: 5 minutes).
        sent = {
            port: sent_requests(pool, raw["sent"])
            for (_, port, pool), raw in zip(nodes, raws, strict=True)
        }
        problems, counts = check_exactly_once(url, sent, accepted, [n[1] for n in nodes])
        # Both embedded projectors reach the log's head (they coordinate: one applies a batch).
        rows = ingest.log_counts(work, url)[0]
        for i, (_, port, _) in enumerate(nodes, start=1):
            try:
                harness.wait_projected(f"http://{HOST}:{port}", token, rows)
            except harness.BenchError as e:
                problems.append(f"receiver {i}: {e}")
        for _, _, pool in nodes:
            pool.unlink()
    wrk_cpu = sum(r["run_cpu_s"] for r in raws)
    return {
        "rate": ok / active,
        "ok": ok,
        "accepted": accepted,
        "sent": sum(r["sent"] for r in raws),
        "non_2xx": sum(r["non_2xx"] for r in raws),
        "socket_errors": sum(r["socket_errors"] for r in raws),
        "pool_out": any(r["sent"] >= r["pool"] for r in raws),
        "p50_ms": max(r["p50_ms"] for r in raws),
        "p99_ms": max(r["p99_ms"] for r in raws),
        "receivers_cpu": [p / active for p in used.procs],
        "backends_cpu": backends_s / active,
        "wrk_cpu": wrk_cpu / active,
        "noise": used.others(sum(used.procs) + backends_s, used.children),
        "check_problems": problems,
        **counts,
        "placement": backends.placement(),
        "pin_problem": backends.pin_problem,
    }


def run(name: str, args: argparse.Namespace, argv: Sequence[str]) -> dict[str, Any]:
    secret = "whsec_bench_" + secrets.token_hex(16)
    runs: list[tuple[dict[str, Any], dict[str, Any]]] = []
    version = postgres.server_version(args.postgres_url)
    with harness.scratch_dir("pg-two-") as work:
        bound = warm_up(work, secret, args)
        for n in range(1, args.rounds + 1):
            count = pool_size(bound, args.duration)
            print(f"round {n}/{args.rounds}: signing {count:,} events three times", flush=True)
            (work / f"{n}-one").mkdir()
            (work / f"{n}-two").mkdir()
            one = pg_single(work / f"{n}-one", count, secret, args)
            two = two_receivers(work / f"{n}-two", count, secret, args)
            runs.append((one, two))
            bound = min(bound, 2 * max(max(o["rate"], t["rate"]) for o, t in runs))
            print(
                f"  one receiver {one['rate']:,.0f}/s, two {two['rate']:,.0f}/s;"
                f" redelivered {two['redelivered']:,}, {len(two['check_problems'])} problems",
                flush=True,
            )
    ones, twos = [o for o, _ in runs], [t for _, t in runs]
    factor = harness.median([t["rate"] / o["rate"] for o, t in runs])

    def med(runs: list[dict[str, Any]], key: str) -> float:
        return float(harness.median([r[key] for r in runs]))

    def cpus(ts: list[dict[str, Any]]) -> str:
        """Receiver + receiver (+ backends)/wrk CPU shares, medians over `ts`."""
        receivers = [harness.median([t["receivers_cpu"][i] for t in ts]) for i in (0, 1)]
        return (
            " + ".join(f"{c:.0%}" for c in receivers)
            + f" (+ {med(ts, 'backends_cpu'):.0%})/{med(ts, 'wrk_cpu'):.0%}"
        )

    problems = [
        f"round {n}, one receiver: {p.removeprefix(f'round {n}: ')}"
        for n, (o, _) in enumerate(runs, 1)
        for p in ingest.problems_of(n, o, NO_BASELINE, args.connections)
    ]
    for n, (_, t) in enumerate(runs, 1):
        checks = [
            (t["non_2xx"] or t["socket_errors"],
             f"{t['non_2xx']} non-2xx, {t['socket_errors']} lost"),
            (t["accepted"] != t["ok"], f"{t['ok'] - t['accepted']} 2xx answers not `accepted`"),
            (t["pool_out"], "a pool ran out"),
        ]  # fmt: skip
        problems += [f"round {n}, two receivers: {text}" for bad, text in checks if bad]
        problems += [f"round {n}, two receivers: {text}" for text in t["check_problems"]]
    problems += sorted({r["pin_problem"] for r in ones + twos if r["pin_problem"]})
    redelivered = sum(t["redelivered"] for t in twos)
    failed_rounds = sum(1 for t in twos if t["check_problems"])
    checked = (
        f"every event in the log exactly once after {redelivered:,} cross-receiver redeliveries"
        if not failed_rounds
        else f"the exactly-once check failed in {failed_rounds} of {args.rounds} rounds"
    )
    return harness.result(
        name,
        argv,
        args.quick,
        title="PostgreSQL ingest: two receiver processes ÷ one, on one database",
        figures=[
            harness.figure(
                "pg_ingest_two",
                f"{factor:.3f} (two receivers {med(twos, 'rate'):,.0f} ÷ one"
                f" {med(ones, 'rate'):,.0f} events/s, both on core 0; CPU receiver + receiver"
                f" (+ PostgreSQL backends)/wrk"
                f" {cpus(twos)}; {checked}; medians of {args.rounds} rounds)",
                None,
            )
        ],
        method=[
            "Receivers: `billhook serve` (default settings, embedded projector on) with"
            " `[storage] url` on a throwaway database created for each run and dropped after;"
            " one run has one receiver, the other two, each with a working directory of its"
            f" own, all pinned to core 0; {harness.server_stack()}.",
            f"Database: {version}; {ones[0]['placement']}.",
            f"Load: one receiver gets `wrk -t1 -c{args.connections} -d{args.duration}s`; two"
            f" receivers get one `wrk -t1 -c{max(args.connections // 2, 1)}` each, at once; all"
            f" wrk pinned to core 1 (bench/wrk.lua); {args.rounds} rounds, one receiver then"
            " two, each on a pool of freshly signed unique events (as `python -m bench"
            " ingest`).",
            "Correctness, after each two-receiver run: both projections reach the log's head;"
            " every event sent to one receiver is delivered again to the other, which must"
            " answer `duplicate` with the seq the log holds it at (or `accepted`, only for"
            " events never acknowledged); then the log holds each sent event once, under seqs"
            " 1..N.",
            "No target (SPEC §11 asks for the figure with each process's CPU): on two cores the"
            " receivers share core 0 with each other and with PostgreSQL's backends, so this"
            " shows what a second receiver costs, not how far it scales.",
        ],
        values={
            "2xx/s, two receivers / one": f"{med(twos, 'rate'):,.0f} / {med(ones, 'rate'):,.0f}",
            "p50 / p99 latency, two receivers (the worse wrk) / one": (
                f"{med(twos, 'p50_ms'):.2f} / {med(twos, 'p99_ms'):.2f};"
                f" {med(ones, 'p50_ms'):.2f} / {med(ones, 'p99_ms'):.2f} ms"
            ),
            "CPU share, one receiver (+ backends)": (
                f"{med(ones, 'server_cpu'):.0%} (+ {med(ones, 'companion_cpu'):.0%})"
            ),
            "redelivered to the other receiver / accepted again (never acknowledged)": (
                f"{redelivered:,} / {sum(t['accepted_again'] for t in twos):,}"
            ),
            "**factor** two ÷ one (median of per-round ratios)": f"**{factor:.3f}**",
        },
        rounds=[
            {
                "round": n,
                "one receiver events/s": round(o["rate"]),
                "two receivers events/s": round(t["rate"]),
                "factor": round(t["rate"] / o["rate"], 3),
                "CPU one: receiver (+ backends)": (
                    f"{o['server_cpu']:.0%} (+ {o['companion_cpu']:.0%})"
                ),
                "CPU two: receiver + receiver (+ backends)/wrk": cpus([t]),
                "log rows after / redelivered / accepted again": (
                    f"{t['logged']:,} / {t['redelivered']:,} / {t['accepted_again']:,}"
                ),
                "exactly once": "yes" if not t["check_problems"] else "**no**",
                "others on cores 0/1": harness.noise_text([o["noise"], t["noise"]], ""),
            }
            for n, (o, t) in enumerate(runs, start=1)
        ],
        noise=harness.noise_text([r["noise"] for r in ones + twos]),
        problems=problems,
    )
