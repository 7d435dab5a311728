"""Rebuilding a projection from seq 1, fast: fold in memory, write rows in bulk.

The fold runs the same :func:`~projections.applier.apply_event` as the live
projector, against facts held in dictionaries; version, history and
quarantine rows are written to a fresh store with `executemany`, so the result
is row for row what the incremental projector builds, at a fraction of the
cost. The store it writes is a shadow: :func:`swap_in` replaces the live one's
rows with it in one transaction.
"""

from __future__ import annotations

import heapq
import sqlite3
import time
from collections import defaultdict
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import psycopg
from psycopg import sql as pgsql

from billhook.config import Settings
from billhook.domain.facts import (
    EndpointFact,
    EnforcementFact,
    LinkFact,
    OverrideFact,
    SubscriptionFact,
)
from billhook.domain.records import EventSubject, StoredEvent
from billhook.domain.resolver import WorkspaceFacts
from billhook.domain.times import iso_to_us
from billhook.errors import LogUnavailable, StoreUnavailable
from billhook.log.backend import Log
from billhook.log.postgres import PostgresEventLog
from billhook.log.queries import EventQueries
from billhook.log.sqlite import EventLog
from billhook.projections import codec
from billhook.projections.applier import (
    apply_in_order,
    blames_the_event,
    fire_timers,
    log_quarantined,
)
from billhook.projections.backend import Location, exists, open_store, remove
from billhook.projections.postgres import PgConnection, PgSchema, pg_storage_fault
from billhook.projections.projector import Batch, catch_up
from billhook.projections.store import (
    DEFAULT_BUSY_TIMEOUT_S,
    Connection,
    ProjectionStore,
    quarantine_hint,
    storage_fault,
)
from billhook.providers.billhook import THIN_UNFETCHED
from billhook.providers.decode import PROJECTED_TYPES, understands

# Events between progress reports and flushes, and read per query from a log that is neither
# SQLite's nor PostgreSQL's (those two are streamed).
READ_BATCH = 5_000
# Rows buffered before one executemany.
FLUSH_ROWS = 20_000
# Catch-up-and-copy rounds a swap tries before giving up on a live store that keeps moving.
SWAP_ATTEMPTS = 20
# Page cache of the fold's SQLite connection, KiB: the bulk inserts land all over four
# indexes, and SQLite's default 2 MiB spills them (on 1M events: 8.7 s of inserts, 6.0 s).
BULK_CACHE_KIB = 65_536

Progress = Callable[[int], None]
# A logged event as the fold meets it: its seq, its receipt time, and the event itself,
# None when projections do not read its type (only the time rules due before it fire).
Logged = tuple[int, str, StoredEvent | None]
# The reads of an SQLite log's table (log/sqlite.py), for the fold's own cursor.
_SQLITE_QUERIES = EventQueries("events", "?")


@dataclass(frozen=True)
class Rebuilt:
    events: int
    seconds: float
    checkpoint: int

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else float(self.events)


class MemoryFacts:
    """The Facts port over dictionaries; closed versions and new rows go to buffers."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.subs: dict[tuple[str, str], tuple[SubscriptionFact, int]] = {}
        self.links: dict[tuple[str, str], tuple[LinkFact, int]] = {}
        self.overrides: dict[tuple[str, str], tuple[OverrideFact, int]] = {}
        self.enforcement: tuple[EnforcementFact, int] | None = None
        # The endpoints standing, by id, with the seq that added them (a removal drops one).
        self.endpoints: dict[str, tuple[EndpointFact, int]] = {}
        self._subs_of_workspace: dict[str, set[tuple[str, str]]] = defaultdict(set)
        self._subs_of_customer: dict[tuple[str, str], set[tuple[str, str]]] = defaultdict(set)
        self._customers_of_workspace: dict[str, set[tuple[str, str]]] = defaultdict(set)
        self._kinds_of_workspace: dict[str, set[str]] = defaultdict(set)
        self._last_history: dict[str, tuple[str, str, str]] = {}
        self.rows: dict[str, list[tuple[object, ...]]] = defaultdict(list)
        self.skipped = 0
        # (event, reason) of each quarantine, logged once the fold is committed.
        self.quarantined: list[tuple[StoredEvent, str]] = []
        # Quarantine rows of `billhook.thin_unfetched` records, which may yet be cleared.
        self._thin_quarantines: list[list[object]] = []
        self._last_change: dict[str | None, str] = {}
        self._next_k: dict[int, int] = {}
        self.timers: dict[str, int] = {}
        # (due, workspace) of every timer set, soonest first; stale entries are skipped.
        self._due: list[tuple[int, str]] = []

    # -- reads ------------------------------------------------------------------------

    def subscription(self, provider: str, id: str) -> SubscriptionFact | None:
        current = self.subs.get((provider, id))
        return current[0] if current else None

    def link(self, provider: str, customer: str) -> LinkFact | None:
        current = self.links.get((provider, customer))
        return current[0] if current else None

    def override(self, workspace: str, kind: str) -> OverrideFact | None:
        current = self.overrides.get((workspace, kind))
        return current[0] if current else None

    def workspace_facts(self, workspace: str, seq: int) -> WorkspaceFacts:
        keys: set[tuple[str, str]] | tuple[()] = self._subs_of_workspace.get(workspace, ())
        customers = self._customers_of_workspace.get(workspace, ())
        if customers:
            keys = set(keys)
            for customer in customers:
                keys |= self._subs_of_customer.get(customer, set())
        subs = self.subs
        return WorkspaceFacts(
            workspace_id=workspace,
            subscriptions=tuple([subs[key][0] for key in keys]),
            overrides=tuple(
                self.overrides[(workspace, kind)][0]
                for kind in self._kinds_of_workspace.get(workspace, ())
            ),
            enforcement=self.enforcement[0].mode
            if self.enforcement
            else self._settings.enforcement,
            as_of_seq=seq,
        )

    def last_history(self, workspace: str) -> tuple[str, str, str] | None:
        return self._last_history.get(workspace)

    # -- writes -----------------------------------------------------------------------

    def put_subscription(
        self, fact: SubscriptionFact, previous: SubscriptionFact | None, seq: int
    ) -> None:
        key = (fact.provider, fact.id)
        if previous is not None:
            old, since = self.subs[key]
            self.rows["subscriptions"].append(_sub_row(old, since, seq))
            self._unindex(key, old)
        self.subs[key] = (fact, seq)
        if fact.workspace:
            self._subs_of_workspace[fact.workspace].add(key)
        elif fact.customer:
            self._subs_of_customer[(fact.provider, fact.customer)].add(key)

    def _unindex(self, key: tuple[str, str], old: SubscriptionFact) -> None:
        if old.workspace:
            self._subs_of_workspace[old.workspace].discard(key)
        elif old.customer:
            self._subs_of_customer[(old.provider, old.customer)].discard(key)

    def put_link(self, fact: LinkFact, previous: LinkFact | None, seq: int) -> None:
        key = (fact.provider, fact.customer)
        if previous is not None:
            old, since = self.links[key]
            self.rows["links"].append(_link_row(old, since, seq))
            self._customers_of_workspace[old.workspace].discard(key)
        self.links[key] = (fact, seq)
        self._customers_of_workspace[fact.workspace].add(key)

    def put_override(self, fact: OverrideFact, previous: OverrideFact | None, seq: int) -> None:
        key = (fact.workspace, fact.kind)
        if previous is not None:
            old, since = self.overrides[key]
            self.rows["overrides"].append((old.workspace, old.kind, since, seq, codec.dumps(old)))
        self.overrides[key] = (fact, seq)
        self._kinds_of_workspace[fact.workspace].add(fact.kind)

    def put_enforcement(self, fact: EnforcementFact, seq: int) -> None:
        if self.enforcement is not None:
            old, since = self.enforcement
            self.rows["enforcement"].append((since, seq, codec.dumps(old)))
        self.enforcement = (fact, seq)

    def put_endpoint(self, fact: EndpointFact, seq: int) -> None:
        if fact.active:
            self.endpoints[fact.endpoint_id] = (fact, seq)
        else:
            self.endpoints.pop(fact.endpoint_id, None)

    def add_history(self, workspace: str, event: StoredEvent, state: tuple[str, str, str]) -> None:
        self._last_history[workspace] = state
        self.rows["history"].append(
            (
                workspace,
                event.seq,
                event.received_at,
                event.provider,
                event.type,
                event.event_id,
                *state,
            )
        )

    def quarantine(self, event: StoredEvent, error: str, subject: EventSubject) -> None:
        row = [event.seq, event.provider, event.event_id, event.type, error]
        row += [*quarantine_hint(subject), None]
        if event.type == THIN_UNFETCHED:
            # Held until the end: a snapshot fetched later clears it (its last column).
            self._thin_quarantines.append(row)
        else:
            self.rows["quarantine"].append(tuple(row))
        self.quarantined.append((event, error))

    def clear_thin_quarantines(
        self, provider: str, subscription: str, customer: str | None, seq: int
    ) -> None:
        for row in self._thin_quarantines:
            about_provider, about_customer, about_subscription, cleared = row[6:10]
            about = about_subscription == subscription or (
                customer is not None and about_customer == customer
            )
            if cleared is None and about_provider == provider and about:
                row[9] = seq

    def enforcement_mode(self) -> str:
        return self.enforcement[0].mode if self.enforcement else self._settings.enforcement

    def last_change(self, workspace: str | None) -> str | None:
        return self._last_change.get(workspace)

    def add_change(self, seq: int, workspace: str | None, at: str, cause: str, state: str) -> None:
        k = self._next_k.get(seq, 0)
        self._next_k[seq] = k + 1
        self._last_change[workspace] = state
        self.rows["changes"].append((seq, k, workspace, at, cause, state))

    def set_timer(self, workspace: str, due_us: int | None) -> None:
        if due_us is None:
            self.timers.pop(workspace, None)
            return
        if self.timers.get(workspace) != due_us:
            self.timers[workspace] = due_us
            heapq.heappush(self._due, (due_us, workspace))

    def timer_due(self, until_us: int) -> bool:
        """Whether a timer may be due at or before `until_us` (a stale entry counts)."""
        return bool(self._due) and self._due[0][0] <= until_us

    def due_timers(self, until_us: int) -> list[tuple[str, int]]:
        due: list[tuple[str, int]] = []
        while self._due and self._due[0][0] <= until_us:
            due_us, workspace = heapq.heappop(self._due)
            if self.timers.get(workspace) == due_us:  # else set again since: stale
                due.append((workspace, due_us))
        return due

    def current_rows(self) -> dict[str, list[tuple[object, ...]]]:
        """The versions still open at the end, as rows with `to_seq` NULL."""
        rows: dict[str, list[tuple[object, ...]]] = {
            "subscriptions": [_sub_row(fact, since, None) for fact, since in self.subs.values()],
            "links": [_link_row(fact, since, None) for fact, since in self.links.values()],
            "overrides": [
                (f.workspace, f.kind, since, None, codec.dumps(f))
                for f, since in self.overrides.values()
            ],
            "enforcement": [],
            "endpoints": [
                (endpoint_id, since, codec.dumps(fact))
                for endpoint_id, (fact, since) in sorted(self.endpoints.items())
            ],
            "quarantine": [tuple(row) for row in self._thin_quarantines],
            "timers": [(workspace, due) for workspace, due in sorted(self.timers.items())],
        }
        if self.enforcement is not None:
            fact, since = self.enforcement
            rows["enforcement"].append((since, None, codec.dumps(fact)))
        return rows


def _sub_row(fact: SubscriptionFact, since: int, until: int | None) -> tuple[object, ...]:
    return (
        fact.provider,
        fact.id,
        since,
        until,
        fact.workspace,
        fact.customer,
        codec.dumps_subscription(fact),
    )


def _link_row(fact: LinkFact, since: int, until: int | None) -> tuple[object, ...]:
    return (fact.provider, fact.customer, since, until, fact.workspace, fact.time_us, fact.seq)


_INSERTS = {
    "subscriptions": "INSERT INTO subscriptions"
    " (provider, id, from_seq, to_seq, workspace, customer, fact) VALUES (?, ?, ?, ?, ?, ?, ?)",
    "links": "INSERT INTO links (provider, customer, from_seq, to_seq, workspace, time_us, seq)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)",
    "overrides": "INSERT INTO overrides (workspace, kind, from_seq, to_seq, fact)"
    " VALUES (?, ?, ?, ?, ?)",
    "enforcement": "INSERT INTO enforcement (from_seq, to_seq, fact) VALUES (?, ?, ?)",
    "endpoints": "INSERT INTO endpoints (id, from_seq, fact) VALUES (?, ?, ?)",
    "history": "INSERT INTO history"
    " (workspace, seq, at, provider, type, event_id, tier, source, status)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    "changes": "INSERT INTO changes (seq, k, workspace, at, cause, state)"
    " VALUES (?, ?, ?, ?, ?, ?)",
    "timers": "INSERT INTO timers (workspace, due_us) VALUES (?, ?)",
    "quarantine": "INSERT INTO quarantine (seq, provider, event_id, type, error,"
    " workspace, subject_provider, customer, subscription, cleared_seq)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
}


class BulkConnection(Connection, Protocol):
    def executemany(self, sql: str, rows: Any, /) -> Any: ...

    def close(self) -> None: ...


# Each table's columns, in the order of its INSERT above (what a COPY writes).
_COLUMNS = {
    table: tuple(c.strip() for c in sql.split("(", 1)[1].split(")", 1)[0].split(","))
    for table, sql in _INSERTS.items()
}


def _defer_indexes(conn: BulkConnection) -> list[str]:
    """PostgreSQL: drop the target's indexes and keys for the fold (which reads only its
    own memory), returning the statements that build them again at its end: one sorted
    build each, cheaper than keeping them up to date row by row (a key still refuses a
    duplicate then). In the fold's transaction, so a fold that fails leaves them as they
    were."""
    if not isinstance(conn, PgConnection):
        return []
    keys = conn.execute(
        "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint"
        " WHERE connamespace = current_schema()::regnamespace AND contype IN ('p', 'u')"
    ).fetchall()
    indexes = conn.execute(
        "SELECT i.indexname, i.indexdef FROM pg_indexes i"
        " WHERE i.schemaname = current_schema() AND NOT EXISTS ("
        " SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname"
        " AND c.connamespace = current_schema()::regnamespace)"
    ).fetchall()
    statements = []
    for name, definition in indexes:
        conn.execute(_sql("DROP INDEX {}", pgsql.Identifier(name)))
        statements.append(definition)
    for table, name, definition in keys:
        conn.execute(
            _sql("ALTER TABLE {} DROP CONSTRAINT {}", pgsql.SQL(table), pgsql.Identifier(name))
        )
        add = "ALTER TABLE {} ADD CONSTRAINT {} {}"
        statements.append(
            _sql(add, pgsql.SQL(table), pgsql.Identifier(name), pgsql.SQL(definition))
        )
    return statements


def _sql(template: str, *parts: pgsql.Composable) -> str:
    return pgsql.SQL(template).format(*parts).as_string(None)


def _flush(conn: BulkConnection, rows: dict[str, list[tuple[object, ...]]]) -> None:
    for table, batch in rows.items():
        if batch:
            if isinstance(conn, PgConnection):
                # PostgreSQL's bulk path: COPY, not a statement per row.
                conn.copy_rows(table, _COLUMNS[table], batch)
            else:
                conn.executemany(_INSERTS[table], batch)
            batch.clear()


def rebuild(
    log: Log,
    target: Location,
    settings: Settings,
    *,
    progress: Progress | None = None,
) -> Rebuilt:
    """Fold the whole log into a new store at `target` (which must not exist).

    An event whose payload does not decode is quarantined in the fold. Should
    applying an event raise anything else, or a folded value be refused by the
    bulk insert, the fold cannot tell which of the event's changes it already
    took, so `target` is built again by the incremental projector, which
    applies each event in its own SAVEPOINT and quarantines the one at fault:
    slower, and row for row what the live projector builds.
    """
    if exists(target):
        raise StoreUnavailable(f"{target} already exists")
    started = time.perf_counter()
    open_store(target, settings).close()  # the schema, with this code's version
    facts = MemoryFacts(settings)
    conn, errors, fault = _bulk_connection(target)
    last = events = reported = 0
    folded = True
    logged = _logged(log)
    try:
        conn.execute("BEGIN")
        deferred = _defer_indexes(conn)
        # The receipt time last converted: an ingest batch shares one, so most repeat.
        received, until_us = "", 0
        for seq, received_at, event in logged:
            if event is not None:
                facts.skipped += apply_in_order(facts, event, settings) == "skipped"
            else:
                # What apply_in_order does with an event no projection reads: fire the time
                # rules due before it, as of the seq before it; the event itself is skipped.
                if received_at != received:
                    received, until_us = received_at, iso_to_us(received_at)
                if facts.timer_due(until_us):
                    fire_timers(facts, until_us, seq - 1, settings)
                facts.skipped += 1
            last = seq
            events += 1
            if events % READ_BATCH == 0:
                if sum(len(rows) for rows in facts.rows.values()) >= FLUSH_ROWS:
                    _flush(conn, facts.rows)
                if progress is not None:
                    progress(events - reported)
                reported = events
        if progress is not None and events > reported:
            progress(events - reported)
        reported = events
        _flush(conn, facts.rows)
        _flush(conn, facts.current_rows())
        for statement in deferred:
            conn.execute(statement)
        conn.execute("UPDATE checkpoint SET seq = ?, skipped = ?", (last, facts.skipped))
        conn.execute("COMMIT")
        for event, reason in facts.quarantined:
            log_quarantined(event, reason)
    except Exception as e:
        if isinstance(e, errors) and fault(e):
            raise StoreUnavailable(f"rebuild into {target} failed: {e}") from e
        if not blames_the_event(e):
            raise
        folded = False  # an event the fold cannot apply: see the docstring
    finally:
        logged.close()
        conn.close()
    if not folded:
        return _rebuild_incrementally(log, target, settings, progress, reported, started)
    return Rebuilt(events=events, seconds=time.perf_counter() - started, checkpoint=last)


def _logged(log: Log) -> Generator[Logged, None, None]:
    """Every event of `log` in seq order, built into a :class:`StoredEvent` only when a
    projection reads its type (see :data:`Logged`).

    An SQLite log is read with one cursor of a connection of its own: one statement, so
    one consistent snapshot, without a query and a list per page. A PostgreSQL log is
    streamed the same way, by a server-side cursor in one snapshot
    (:meth:`~billhook.log.postgres.PostgresEventLog.scan`); any other log by pages of
    `READ_BATCH`.
    """
    if isinstance(log, PostgresEventLog):
        rows = log.scan(payloads_of=PROJECTED_TYPES)
        try:
            yield from _folded(rows)
        finally:
            rows.close()
        return
    if not isinstance(log, EventLog):
        last = 0
        while batch := log.read(after=last, limit=READ_BATCH, payloads_of=PROJECTED_TYPES):
            for event in batch:
                yield event.seq, event.received_at, event if understands(event) else None
            last = batch[-1].seq
        return
    sql, params = _SQLITE_QUERIES.read(
        after=0, limit=None, provider=None, type=None, payloads_of=PROJECTED_TYPES
    )
    try:
        conn = sqlite3.connect(log.path, isolation_level=None)
    except sqlite3.Error as e:
        raise LogUnavailable(f"reading {log.path} failed: {e}") from e
    try:
        yield from _folded(conn.execute(sql, params))
    except sqlite3.Error as e:
        raise LogUnavailable(f"reading {log.path} failed: {e}") from e
    finally:
        conn.close()


def _folded(rows: Iterable[Sequence[Any]]) -> Iterator[Logged]:
    """Rows of StoredEvent's fields as :data:`Logged`: built into an event only when a
    projection reads its type."""
    # (provider, type) -> whether projections read it: a few dozen types in any log.
    read: dict[tuple[str, str], bool] = {}
    for row in rows:
        kind = (row[1], row[3])
        projected = read.get(kind)
        if projected is None:
            projected = read[kind] = understands(StoredEvent(*row))
        yield row[0], row[6], StoredEvent(*row) if projected else None


def _rebuild_incrementally(
    log: Log,
    target: Location,
    settings: Settings,
    progress: Progress | None,
    reported: int,
    started: float,
) -> Rebuilt:
    """Build `target` afresh with the incremental projector (see :func:`rebuild`).

    `reported`: events the abandoned fold already counted to `progress`.
    """
    remove(target)
    store = open_store(target, settings)
    uncounted_from = reported

    def count(batch: Batch) -> None:
        nonlocal uncounted_from
        new = max(0, batch.events - uncounted_from)
        uncounted_from = max(0, uncounted_from - batch.events)
        if progress is not None and new:
            progress(new)

    try:
        result = catch_up(log, store, batch_size=READ_BATCH, on_batch=count)
    finally:
        store.close()
    return Rebuilt(
        events=result.applied + result.skipped + result.quarantined,
        seconds=time.perf_counter() - started,
        checkpoint=result.checkpoint,
    )


def swap_in(
    shadow: ProjectionStore,
    live: Location,
    log: Log,
    *,
    before_commit: Callable[[], None] | None = None,
) -> int:
    """Replace the live store's content with the shadow's, atomically for readers.

    The shadow is caught up with the log first; the copy happens in one
    transaction of the live store, under its write lock, and only when the
    shadow has applied at least every event the live store has. A live
    projector that applied events meanwhile simply makes the shadow catch up
    again: nothing it applied is lost, and the live checkpoint never moves
    backwards. Returns the checkpoint swapped in. `before_commit` runs inside
    the copy's transaction, right before COMMIT (crash tests kill the process there).

    Raises :class:`StoreUnavailable` when the live store stays ahead for
    `SWAP_ATTEMPTS` rounds (a projector outrunning the copy) or cannot be written.
    """
    for _ in range(SWAP_ATTEMPTS):
        caught_up = catch_up(log, shadow)
        if shadow.copy_over(live, before_commit=before_commit):
            return caught_up.checkpoint
    raise StoreUnavailable(f"{live} kept moving ahead of the rebuilt projection; retry the replay")


def _bulk_connection(
    target: Location,
) -> tuple[BulkConnection, tuple[type[Exception], ...], Callable[[Exception], bool]]:
    """A connection for the fold's bulk writes into `target`, what its driver raises, and
    which of those are storage faults. Not durable: a crash mid-rebuild just leaves a
    shadow to delete."""
    if isinstance(target, PgSchema):
        pg = PgConnection(target, timeout_s=DEFAULT_BUSY_TIMEOUT_S)
        pg.execute("SET synchronous_commit = off")
        return pg, (psycopg.Error,), pg_storage_fault
    conn = sqlite3.connect(target, isolation_level=None)
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute(f"PRAGMA cache_size=-{BULK_CACHE_KIB}")
    return conn, (sqlite3.Error,), storage_fault
