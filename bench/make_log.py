"""`python -m bench.make_log`: write a realistic events.db straight through EventLog.append_batch.

    python -m bench.make_log --events 1000000 --subscriptions 50000 --out PATH

A generator, not the HTTP path: bodies are built from templates
(bench/payloads.py) and appended in large batches. The log holds Stripe and
Polar subscriptions' whole lives (bench/lifecycles.py, bench/episodes.py):
checkout or API sign-ups, renewals with every invoice, payment intent and
charge event Stripe sends around them, seat and plan changes, payment
failures recovered or lost, cancellations and deletions; Polar's orders and
customer states likewise. Events are delivered about in `created` order, but
some arrive late (held back a few to a few thousand deliveries), and some are
offered again with the same id (a redelivery): those must not create rows.
`received_at` follows the simulated time, not the wall clock.

Deterministic for a given seed. Next to PATH it writes PATH.meta.json with the
parameters and what was generated; a log is only reused when that file matches.
"""

from __future__ import annotations

import argparse
import hashlib
import heapq
import itertools
import json
import random
import sys
import time
from array import array
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.episodes import timeline
from bench.lifecycles import plan
from bench.payloads import checked_record, record
from bench.tools import REPO
from billhook.domain.records import EventRecord
from billhook.log.sqlite import EventLog

# Bump whenever the generated log would differ: a log of another version is never reused.
GENERATOR_VERSION = 1
# The files the bodies are built from: when any changes, a stored log is not reused.
SOURCES = tuple(
    REPO / name
    for name in (
        "bench/templates.py",
        "bench/lifecycles.py",
        "bench/episodes.py",
        "bench/payloads.py",
        "bench/make_log.py",
        "tests/stripe_payloads.py",
        "tests/polar_payloads.py",
        "tests/support.py",
        "tests/fixtures/stripe_objects.json",
        "ingest/envelope.py",
    )
)
DEFAULT_EVENTS = 1_000_000
DEFAULT_SUBSCRIPTIONS = 50_000
DEFAULT_SEED = 20_261_121
# A late delivery is held back 1 + Exp(mean) deliveries, at most MAX_DELAY.
MEAN_DELAY = 40
MAX_DELAY = 5_000
# Seconds between an event's `created` and its receipt, in simulated time.
RECEIPT_DELAY_S = 5
PROGRESS_EVERY = 100_000
# One event in this many is also parsed by ingest's own envelope code, as a check.
CHECK_EVERY = 101
# SQLite page cache of the generator's connection, KiB.
BULK_CACHE_KIB = 512 * 1024


@dataclass(frozen=True)
class LogSpec:
    """What to generate; two logs of equal specs are identical."""

    events: int = DEFAULT_EVENTS
    subscriptions: int = DEFAULT_SUBSCRIPTIONS
    seed: int = DEFAULT_SEED
    late_share: float = 0.02
    duplicate_share: float = 0.01
    batch: int = 5_000
    version: int = GENERATOR_VERSION


@dataclass
class Stats:
    """What was generated, and how fast."""

    events: int = 0
    offered: int = 0
    duplicates_offered: int = 0
    duplicates_rejected: int = 0
    late: int = 0
    commits: int = 0
    seconds: float = 0.0
    file_bytes: int = 0
    by_provider: dict[str, int] = field(default_factory=dict)
    by_type: dict[str, int] = field(default_factory=dict)
    body_bytes: dict[str, float] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        """Events appended per second of generation."""
        return self.events / self.seconds if self.seconds > 0 else 0.0


class SimClock:
    """The receipt time EventLog stamps on a batch: simulated, never going back."""

    def __init__(self) -> None:
        """Start at the epoch; the first batch moves the clock forward."""
        self._now = datetime.fromtimestamp(0, tz=UTC)

    def advance_to(self, ts: int) -> None:
        """Move the clock to Unix time `ts`, unless it is already later."""
        moment = datetime.fromtimestamp(ts, tz=UTC)
        self._now = max(self._now, moment)

    def now(self) -> datetime:
        """The current simulated time (EventLog's clock)."""
        return self._now


def snaps_in_time_order(spec: LogSpec) -> Iterator[tuple[int, EventRecord]]:
    """Every event of every subscription, merged by `created`: (created, record)."""
    subs = plan(spec.events, spec.subscriptions, spec.seed)
    merged = heapq.merge(*(timeline(sub) for sub in subs))
    for position, snap in enumerate(merged):
        build = checked_record if position % CHECK_EVERY == 0 else record
        yield snap.created, build(snap)


def _delay(rng: random.Random) -> int:
    """How many deliveries a late event is held back."""
    return 1 + min(int(rng.expovariate(1 / MEAN_DELAY)), MAX_DELAY)


def deliveries(
    events: Iterable[tuple[int, EventRecord]], spec: LogSpec, stats: Stats
) -> Iterator[tuple[int, EventRecord]]:
    """The events as delivered: some late, some offered twice (same id)."""
    rng = random.Random(spec.seed ^ 0x5EED)
    held: list[tuple[int, int, int, EventRecord]] = []
    counter = itertools.count()
    for position, (created, event) in enumerate(events):
        if rng.random() < spec.late_share:
            heapq.heappush(held, (position + _delay(rng), next(counter), created, event))
            stats.late += 1
        else:
            yield created, event
        if rng.random() < spec.duplicate_share:
            heapq.heappush(held, (position + _delay(rng), next(counter), created, event))
            stats.duplicates_offered += 1
        while held and held[0][0] <= position:
            _, _, late_created, late_event = heapq.heappop(held)
            yield late_created, late_event
    while held:
        _, _, late_created, late_event = heapq.heappop(held)
        yield late_created, late_event


def _batches(
    stream: Iterable[tuple[int, EventRecord]], size: int
) -> Iterator[tuple[int, list[EventRecord]]]:
    """(latest `created`, records) per `size` deliveries."""
    batch: list[EventRecord] = []
    latest = 0
    for created, event in stream:
        batch.append(event)
        latest = max(latest, created)
        if len(batch) >= size:
            yield latest, batch
            batch = []
    if batch:
        yield latest, batch


def _tune_for_bulk(log: EventLog) -> None:
    """Speed up this connection's bulk appends; the file it writes is the same.

    A log cut short by a crash is never reused (no meta file), so the
    generator needs no fsync; a large page cache keeps the (provider,
    event_id) index, which time-ordered appends update all over, in memory.
    """
    log.conn.execute("PRAGMA synchronous=OFF")
    log.conn.execute(f"PRAGMA cache_size=-{BULK_CACHE_KIB}")


def remove_log(path: Path) -> None:
    """Delete a log, its WAL companions and its meta file, if present."""
    for suffix in ("", "-wal", "-shm", ".meta.json"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)


def _tally(stats: Stats, batch: Sequence[EventRecord], sizes: array[int]) -> None:
    """Count the appended events by provider and type, and keep their sizes."""
    providers = Counter(event.provider for event in batch)
    types = Counter(f"{event.provider} {event.type}" for event in batch)
    for key, count in providers.items():
        stats.by_provider[key] = stats.by_provider.get(key, 0) + count
    for key, count in types.items():
        stats.by_type[key] = stats.by_type.get(key, 0) + count
    sizes.extend(len(event.payload.encode()) for event in batch)


def _size_summary(sizes: array[int]) -> dict[str, float]:
    """Mean, min, p50, p95 and max of the body sizes."""
    ordered = sorted(sizes)
    if not ordered:
        return {}

    def at(q: float) -> float:
        """The `q` quantile (0 <= q <= 1) of the sorted sizes."""
        return float(ordered[min(int(q * len(ordered)), len(ordered) - 1)])

    return {
        "mean": sum(ordered) / len(ordered),
        "min": float(ordered[0]),
        "p50": at(0.5),
        "p95": at(0.95),
        "max": float(ordered[-1]),
    }


def generate(path: Path, spec: LogSpec, *, quiet: bool = False) -> Stats:
    """Write the log `spec` describes at `path` (replacing any); what was generated."""
    remove_log(path)
    stats = Stats()
    clock = SimClock()
    started = time.perf_counter()
    log = EventLog(path, clock=clock.now)
    _tune_for_bulk(log)
    all_sizes: array[int] = array("I")
    try:
        stream = deliveries(snaps_in_time_order(spec), spec, stats)
        for latest, batch in _batches(stream, spec.batch):
            clock.advance_to(latest + RECEIPT_DELAY_S)
            answers = log.append_batch(batch)
            fresh = [
                event for event, answer in zip(batch, answers, strict=True) if not answer.duplicate
            ]
            stats.offered += len(batch)
            stats.duplicates_rejected += len(batch) - len(fresh)
            stats.commits += 1
            before = stats.events
            stats.events += len(fresh)
            _tally(stats, fresh, all_sizes)
            if not quiet and stats.events // PROGRESS_EVERY > before // PROGRESS_EVERY:
                rate = stats.events / (time.perf_counter() - started)
                print(f"  {stats.events:>10,} events ({rate:,.0f}/s)", flush=True)
        head = log.head_seq()
    finally:
        log.close()
    stats.seconds = time.perf_counter() - started
    stats.file_bytes = path.stat().st_size
    stats.body_bytes = _size_summary(all_sizes)
    if head != spec.events or stats.events != spec.events:
        raise RuntimeError(
            f"the log has {head:,} rows and {stats.events:,} appended, not {spec.events:,}"
        )
    write_meta(path, spec, stats)
    return stats


def meta_path(path: Path) -> Path:
    """Where the meta file of the log at `path` is."""
    return path.with_name(path.name + ".meta.json")


def sources_digest() -> str:
    """A digest of every file the generated bodies depend on: a change means a new log."""
    digest = hashlib.sha256()
    for path in SOURCES:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def write_meta(path: Path, spec: LogSpec, stats: Stats) -> None:
    """Record the parameters and stats of the log at `path`."""
    meta = {"spec": asdict(spec), "sources": sources_digest(), "stats": asdict(stats)}
    meta_path(path).write_text(json.dumps(meta, indent=2), encoding="utf-8")


def existing(path: Path, spec: LogSpec) -> Stats | None:
    """The stats of the log at `path` when it was generated from `spec`, else None."""
    try:
        meta: dict[str, Any] = json.loads(meta_path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not path.is_file() or meta.get("spec") != asdict(spec):
        return None
    if meta.get("sources") != sources_digest():
        return None
    return Stats(**meta["stats"])


def ensure(path: Path, spec: LogSpec) -> tuple[Stats, bool]:
    """The log `spec` describes at `path`, generated unless already there; (stats, reused)."""
    found = existing(path, spec)
    if found is not None:
        return found, True
    return generate(path, spec), False


def describe(stats: Stats) -> list[str]:
    """What a generated log holds, in a few lines."""
    total = max(stats.events, 1)
    mix = ", ".join(f"{p} {c / total:.0%}" for p, c in sorted(stats.by_provider.items()))
    sizes = stats.body_bytes
    top = sorted(stats.by_type.items(), key=lambda kv: -kv[1])[:12]
    return [
        f"{stats.events:,} events ({mix}); {stats.offered:,} offered in {stats.commits:,}"
        f" batches: {stats.duplicates_offered:,} redeliveries of an id already offered"
        f" ({stats.duplicates_rejected:,} rejected as duplicates), {stats.late:,} delivered late",
        f"bodies: mean {sizes.get('mean', 0):,.0f} B, p50 {sizes.get('p50', 0):,.0f} B,"
        f" p95 {sizes.get('p95', 0):,.0f} B, min {sizes.get('min', 0):,.0f} B,"
        f" max {sizes.get('max', 0):,.0f} B; file {stats.file_bytes / 2**20:,.0f} MiB",
        "types: " + ", ".join(f"{t} {c / total:.1%}" for t, c in top),
    ]


def parse(argv: Sequence[str]) -> tuple[LogSpec, Path, bool]:
    """The spec, output path and reuse flag from the command line."""
    parser = argparse.ArgumentParser(prog="python -m bench.make_log", description=__doc__)
    parser.add_argument("--events", type=int, default=DEFAULT_EVENTS)
    parser.add_argument("--subscriptions", type=int, default=DEFAULT_SUBSCRIPTIONS)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--late-share", type=float, default=LogSpec.late_share)
    parser.add_argument("--duplicate-share", type=float, default=LogSpec.duplicate_share)
    parser.add_argument("--batch", type=int, default=LogSpec.batch, help="events per append_batch")
    parser.add_argument("--out", type=Path, required=True, help="the events.db to write")
    parser.add_argument("--reuse", action="store_true", help="keep a matching existing log")
    args = parser.parse_args(list(argv))
    if args.events < 1 or args.subscriptions < 1 or args.batch < 1:
        parser.error("--events, --subscriptions and --batch must be positive")
    if not (0 <= args.late_share < 1 and 0 <= args.duplicate_share < 1):
        parser.error("--late-share and --duplicate-share must be in [0, 1)")
    spec = LogSpec(
        events=args.events,
        subscriptions=args.subscriptions,
        seed=args.seed,
        late_share=args.late_share,
        duplicate_share=args.duplicate_share,
        batch=args.batch,
    )
    return spec, args.out, args.reuse


def main(argv: Sequence[str]) -> int:
    """Generate (or reuse) a log as the command line says; print what it holds."""
    spec, out, reuse = parse(argv)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        if reuse and (found := existing(out, spec)) is not None:
            print(f"{out}: reusing the log generated with these parameters")
            stats = found
        else:
            print(f"generating {spec.events:,} events over {spec.subscriptions:,} subscriptions")
            stats = generate(out, spec)
    except ValueError as e:
        print(f"make_log: {e}", file=sys.stderr)
        return 2
    print(f"generated at {stats.rate:,.0f} events/s ({stats.seconds:.1f} s) into {out}")
    for line in describe(stats):
        print("  " + line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
