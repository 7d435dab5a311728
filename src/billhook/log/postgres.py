"""The event log in PostgreSQL: the promises of `events.db`, on a database several hosts share.

Every promise of the SQLite log holds (SPEC §4, §4a): an append returns only
after its COMMIT did, with `synchronous_commit = on` set by billhook for its
own sessions whatever the server's default; `UNIQUE (provider, event_id)`;
the payload's exact text; triggers that refuse UPDATE, DELETE and TRUNCATE.

Seq order is commit order. Each append takes `LOCK TABLE … IN EXCLUSIVE MODE`
inside its transaction (as eventsourcing's PostgreSQL recorder does): writers
on every host queue there, readers do not, and the next seq is `max(seq) + 1`
under that lock. A transaction that took seq N therefore commits before any
other can take N + 1, so a reader that has seen N never later finds a newly
committed event below it, and no seq is ever burnt.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable, Collection, Generator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import psycopg.errors
from psycopg import sql as pgsql
from psycopg_pool import ConnectionPool

from billhook.domain.records import EventRecord, StoredEvent
from billhook.domain.times import iso_utc
from billhook.errors import LogUnavailable, StoreUnavailable
from billhook.log.queries import EventQueries
from billhook.log.sqlite import DEFAULT_BUSY_TIMEOUT_S, Appended

# The schema that holds the log; projections have their own (billhook.projections.postgres).
LOG_SCHEMA = "billhook"
# Bumped when the statements below change; stored in billhook.log_meta (SCHEMA sets it).
SCHEMA_VERSION = 3
# pg_advisory_xact_lock key under which processes create or upgrade schemas, one at a time.
SCHEMA_LOCK_KEY = 0x6269_6C6C  # "bill"
# The pool reports each failed reconnection as a warning: in `serve` and `worker` those go to
# the JSON log like every line; a CLI command, which configures no logging, keeps them off
# its stderr (its own error says what failed, in one line).
logging.getLogger("psycopg.pool").addHandler(logging.NullHandler())
# Rows a scan (`PostgresEventLog.scan`) fetches per round trip.
SCAN_PAGE = 5_000
# Connections one log object keeps open at most.
DEFAULT_POOL_SIZE = 4

SCHEMA = """
CREATE SCHEMA IF NOT EXISTS billhook;
CREATE TABLE IF NOT EXISTS billhook.events (
    seq bigint PRIMARY KEY CHECK (seq > 0),
    provider text NOT NULL CHECK (provider IN ('stripe', 'polar', 'billhook')),
    event_id text NOT NULL,
    type text NOT NULL,
    livemode smallint CHECK (livemode IN (0, 1)),
    occurred_at text,
    received_at text NOT NULL,
    payload text NOT NULL,
    UNIQUE (provider, event_id)
);
CREATE INDEX IF NOT EXISTS events_received_at ON billhook.events (received_at);
-- Payloads of a few KB are compressed: with lz4 where the server has it, which costs a
-- fraction of pglz's CPU per append and per read (compression applies to new rows only).
DO $$
BEGIN
    IF EXISTS (
        SELECT 1 FROM pg_attribute WHERE attrelid = 'billhook.events'::regclass
            AND attname = 'payload' AND attcompression <> 'l'
    ) THEN
        ALTER TABLE billhook.events ALTER COLUMN payload SET COMPRESSION lz4;
    END IF;
EXCEPTION WHEN feature_not_supported THEN
    NULL;  -- built without lz4: the default compression stays
END
$$;
CREATE OR REPLACE FUNCTION billhook.events_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events is append-only: % is not allowed', TG_OP;
END
$$;
CREATE OR REPLACE TRIGGER events_no_update_or_delete BEFORE UPDATE OR DELETE
    ON billhook.events FOR EACH ROW EXECUTE FUNCTION billhook.events_append_only();
CREATE OR REPLACE TRIGGER events_no_truncate BEFORE TRUNCATE
    ON billhook.events FOR EACH STATEMENT EXECUTE FUNCTION billhook.events_append_only();
-- One append in one statement (so one round trip, its own transaction in autocommit): the
-- lock, the look-up of ids already logged, the next seqs under the lock and the insert.
-- `p_received_at` NULL stamps the database's clock, read once the lock is held.
CREATE OR REPLACE FUNCTION billhook.append_events(
    p_provider text[], p_event_id text[], p_type text[], p_livemode smallint[],
    p_occurred_at text[], p_payload text[], p_received_at text
) RETURNS TABLE (out_ord bigint, out_seq bigint, out_new boolean)
LANGUAGE plpgsql AS $$
DECLARE
    head bigint;
    stamp text;
BEGIN
    LOCK TABLE billhook.events IN EXCLUSIVE MODE;
    stamp := coalesce(
        p_received_at,
        to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
    );
    SELECT coalesce(max(e.seq), 0) INTO head FROM billhook.events e;
    RETURN QUERY
    WITH batch AS (
        SELECT b.* FROM unnest(
            p_provider, p_event_id, p_type, p_livemode, p_occurred_at, p_payload
        ) WITH ORDINALITY AS b(provider, event_id, type, livemode, occurred_at, payload, ord)
    ), known AS (
        -- One index probe per event, whatever the table's statistics say: a join lets a
        -- planner that has not analyzed a young, fast-growing log pick a scan of all of it.
        SELECT b.ord, e.seq FROM batch b CROSS JOIN LATERAL (
            SELECT x.seq FROM billhook.events x
            WHERE x.provider = b.provider AND x.event_id = b.event_id LIMIT 1
        ) e
    ), numbered AS (
        SELECT b.*, head + row_number() OVER (ORDER BY b.ord) AS new_seq
        FROM batch b WHERE NOT EXISTS (SELECT 1 FROM known k WHERE k.ord = b.ord)
    ), inserted AS (
        INSERT INTO billhook.events
            (seq, provider, event_id, type, livemode, occurred_at, received_at, payload)
        SELECT n.new_seq, n.provider, n.event_id, n.type, n.livemode, n.occurred_at, stamp,
            n.payload
        FROM numbered n
    )
    SELECT k.ord, k.seq, false FROM known k
    UNION ALL SELECT n.ord, n.new_seq, true FROM numbered n;
END
$$;
CREATE TABLE IF NOT EXISTS billhook.log_meta (
    id integer PRIMARY KEY CHECK (id = 1), version integer NOT NULL
);
INSERT INTO billhook.log_meta (id, version) VALUES (1, $version)
    ON CONFLICT (id) DO UPDATE SET version = excluded.version;
"""
SCHEMA = SCHEMA.replace("$version", str(SCHEMA_VERSION))

# The reads of `get`, `find` and `read` (shared with the SQLite log).
_QUERIES = EventQueries(f"{LOG_SCHEMA}.events", "%s")
_LOCK = f"LOCK TABLE {LOG_SCHEMA}.events IN EXCLUSIVE MODE"
# Binary parameters (%b): text arrays in text format escape every payload with a regex per
# element, a third of the writer's time.
_APPEND = (
    "SELECT out_ord, out_seq, out_new FROM billhook.append_events("
    "%b::text[], %b::text[], %b::text[], %b::smallint[], %b::text[], %b::text[], %b::text)"
)


def session_settings(conn: psycopg.Connection[Any], *, lock_timeout_s: float) -> None:
    """What billhook sets on each of its sessions, whatever the server's defaults.

    `synchronous_commit = on`: a COMMIT returns once its WAL is flushed, the
    durability an acknowledgement promises. `lock_timeout`: a writer waiting
    on another's lock past it gets an error (a 503), not an endless wait.
    """
    conn.execute("SET synchronous_commit = on")
    conn.execute("SET application_name = 'billhook'")
    conn.execute(f"SET lock_timeout = {int(lock_timeout_s * 1000)}")
    if not conn.autocommit:
        conn.commit()


def make_pool(url: str, *, size: int, timeout_s: float, name: str) -> ConnectionPool[Any]:
    """A pool of autocommit connections to `url`, each set up by :func:`session_settings`.

    Opening does not wait for the database: a database that is down fails the
    first use, with :class:`LogUnavailable` there, and a broken connection is
    replaced on its next use, so a process recovers without a restart.
    """

    def configure(conn: psycopg.Connection[Any]) -> None:
        session_settings(conn, lock_timeout_s=timeout_s)

    return ConnectionPool(
        url,
        min_size=1,
        max_size=size,
        timeout=timeout_s,
        # psycopg-pool doubles the wait between reconnection attempts until this runs out
        # (five minutes by default): after an outage of a minute, the pool would try again
        # only a minute after the database was back. Giving up after a few seconds lets the
        # next caller start a fresh attempt, which connects at once.
        reconnect_timeout=RECONNECT_S,
        kwargs={"autocommit": True, "connect_timeout": max(1, int(timeout_s))},
        configure=configure,
        check=_check_if_idle,
        name=name,
        open=True,
    )


# How long one reconnection attempt of a pool backs off before it gives up (see make_pool).
RECONNECT_S = 4.0
# A pooled connection used this recently is handed out unchecked; one idle longer is
# checked first (a round trip), so one broken by a database restart is replaced unseen.
IDLE_CHECK_S = 1.0
_last_used: weakref.WeakKeyDictionary[psycopg.Connection[Any], float] = weakref.WeakKeyDictionary()


def _check_if_idle(conn: psycopg.Connection[Any]) -> None:
    """The pool's check: psycopg-pool's own, but only for a connection idle a while."""
    last = _last_used.get(conn)
    now = time.monotonic()
    if last is None or now - last > IDLE_CHECK_S:
        ConnectionPool.check_connection(conn)
    _last_used[conn] = now


def create_schema(conn: psycopg.Connection[Any], statements: str) -> None:
    """Run `statements` in one transaction, one process at a time (CREATE … IF NOT EXISTS
    is not safe against a concurrent CREATE of the same name in PostgreSQL)."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK_KEY,))
        conn.execute(statements.encode())


def log_exists(url: str) -> bool:
    """Whether the database at `url` holds a billhook log. Raises :class:`LogUnavailable`
    when it cannot be asked."""
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
            row = conn.execute(
                "SELECT to_regclass(%s) IS NOT NULL", (f"{LOG_SCHEMA}.log_meta",)
            ).fetchone()
    except psycopg.Error as e:
        raise LogUnavailable(f"cannot reach the PostgreSQL database: {_reason(e)}") from e
    return bool(row and row[0])


@dataclass(frozen=True)
class DatabaseReport:
    """What `billhook check-config --online` says about a PostgreSQL database."""

    server_version: str
    # The log's schema version; None when the database holds no log yet.
    log_version: int | None
    # `synchronous_commit` as billhook's own sessions see it (they set it to `on`).
    synchronous_commit: str


def inspect(url: str, *, timeout_s: float = DEFAULT_BUSY_TIMEOUT_S) -> DatabaseReport:
    """Connect to `url` as billhook does, and report. Raises :class:`LogUnavailable`."""
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=max(1, int(timeout_s))) as conn:
            session_settings(conn, lock_timeout_s=timeout_s)
            version = conn.execute("SHOW server_version").fetchone()
            sync = conn.execute("SHOW synchronous_commit").fetchone()
            present = conn.execute(
                "SELECT to_regclass(%s) IS NOT NULL", (f"{LOG_SCHEMA}.log_meta",)
            ).fetchone()
            log_version = None
            if present and present[0]:
                row = conn.execute(f"SELECT version FROM {LOG_SCHEMA}.log_meta").fetchone()  # noqa: S608
                log_version = int(row[0]) if row else None
    except psycopg.Error as e:
        raise LogUnavailable(_reason(e)) from e
    return DatabaseReport(
        server_version=str(version[0]) if version else "unknown",
        log_version=log_version,
        synchronous_commit=str(sync[0]) if sync else "unknown",
    )


class PostgresEventLog:
    """The event log in a PostgreSQL database. Thread-safe: each call takes a pooled
    connection. Raises :class:`LogUnavailable` whenever PostgreSQL cannot do what was asked.

    `received_at` is the database's clock, read once the append lock is held, so it
    never goes backwards along the seqs whichever host appends; tests pass a `clock`.
    """

    backend = "postgresql"

    def __init__(
        self,
        url: str,
        *,
        busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
        clock: Callable[[], datetime] | None = None,
        pool_size: int = DEFAULT_POOL_SIZE,
    ) -> None:
        self.url = url
        self._clock = clock
        # One connection first, not the pool: a database that is down is one clear error
        # now, not the pool's reconnection attempts until its timeout.
        try:
            with psycopg.connect(
                url, autocommit=True, connect_timeout=max(1, int(busy_timeout_s))
            ) as conn:
                session_settings(conn, lock_timeout_s=busy_timeout_s)
                present = conn.execute(
                    "SELECT to_regclass(%s) IS NOT NULL", (f"{LOG_SCHEMA}.log_meta",)
                ).fetchone()
                current = (
                    conn.execute(f"SELECT version FROM {LOG_SCHEMA}.log_meta").fetchone()  # noqa: S608
                    if present and present[0]
                    else None
                )
                if current is None or current[0] < SCHEMA_VERSION:
                    create_schema(conn, SCHEMA)
        except psycopg.Error as e:
            raise LogUnavailable(f"cannot open the event log in PostgreSQL: {_reason(e)}") from e
        self._pool = make_pool(url, size=pool_size, timeout_s=busy_timeout_s, name="billhook-log")
        self._closed = threading.Event()

    def close(self) -> None:
        self._closed.set()
        self._pool.close()

    @contextmanager
    def _writer(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection to write with. A session opened while the database was
        read-only (`default_transaction_read_only`, a standby) stays read-only after the
        database is writable again, so such a connection is closed: the pool replaces it
        and the next write, in a fresh session, succeeds without a restart."""
        with self._pool.connection() as conn:
            try:
                yield conn
            except psycopg.errors.ReadOnlySqlTransaction:
                conn.close()
                raise

    def defer_checkpoints(self) -> None:
        """Nothing to defer: PostgreSQL checkpoints on its own."""

    def checkpoint(self) -> None:
        """Nothing to do: PostgreSQL checkpoints on its own."""

    def append_batch(self, records: Sequence[EventRecord]) -> list[Appended]:
        """Append `records` in one transaction and return where each one sits.

        As :meth:`billhook.log.sqlite.EventLog.append_batch`: duplicates (in
        the log or earlier in the batch) answer the original's seq; nothing is
        returned before the COMMIT is durable; on any error nothing is kept.
        """
        firsts: dict[tuple[str, str], EventRecord] = {}
        for r in records:
            firsts.setdefault((r.provider, r.event_id), r)
        unique = list(firsts.values())
        stamp = None if self._clock is None else iso_utc(self._clock())
        try:
            with self._writer() as conn:
                rows = conn.execute(
                    _APPEND,
                    (
                        [r.provider for r in unique],
                        [r.event_id for r in unique],
                        [r.type for r in unique],
                        [r.livemode for r in unique],
                        [r.occurred_at for r in unique],
                        [r.payload for r in unique],
                        stamp,
                    ),
                ).fetchall()
        except psycopg.Error as e:
            raise LogUnavailable(_reason(e)) from e
        # Each distinct id's seq, and whether this append logged it; later copies of an id
        # within the batch are duplicates of the first.
        placed = {
            (unique[ord - 1].provider, unique[ord - 1].event_id): (int(seq), bool(new))
            for ord, seq, new in rows
        }
        results = []
        seen: set[tuple[str, str]] = set()
        for r in records:
            key = (r.provider, r.event_id)
            seq, new = placed[key]
            results.append(Appended(seq=seq, duplicate=not new or key in seen))
            seen.add(key)
        return results

    def head_seq(self) -> int:
        """The highest seq in the log, 0 when it is empty."""
        sql = f"SELECT coalesce(max(seq), 0) FROM {LOG_SCHEMA}.events"  # noqa: S608
        return int(self._fetch(sql, ())[0][0])

    def last_seq_at(self, received_at: str) -> int:
        """The last seq committed at or before `received_at` (the log's ISO format), else 0."""
        sql = f"SELECT coalesce(max(seq), 0) FROM {LOG_SCHEMA}.events WHERE received_at <= %s"  # noqa: S608
        return int(self._fetch(sql, (received_at,))[0][0])

    def received_after(self, seq: int) -> str | None:
        """`received_at` of the first event past `seq`; None when there is none."""
        sql = (
            f"SELECT received_at FROM {LOG_SCHEMA}.events"  # noqa: S608
            " WHERE seq > %s ORDER BY seq LIMIT 1"
        )
        rows = self._fetch(sql, (seq,))
        return str(rows[0][0]) if rows else None

    def probe_writable(self, *, durable: bool = False) -> None:
        """Show that this log could append now, without appending.

        Takes the append lock and lets it go; with `durable`, also commits a
        write that changes no value (log_meta's version set to itself), flushed
        like an append: a read-only or full database fails that too. The
        events table, and so the log's seqs, are never touched.
        """
        try:
            with self._writer() as conn, conn.transaction():
                conn.execute(_LOCK)
                if durable:
                    conn.execute(f"UPDATE {LOG_SCHEMA}.log_meta SET version = version")  # noqa: S608
        except psycopg.Error as e:
            raise LogUnavailable(_reason(e)) from e

    def backup(self, target: Path) -> int:
        """Refused: a PostgreSQL log is backed up with PostgreSQL's own tools."""
        raise LogUnavailable(
            "the log is in PostgreSQL: back it up with pg_dump or the database's own backups"
            " (docs/operations.md)"
        )

    def get(self, seq: int) -> StoredEvent | None:
        rows = self._rows(*_QUERIES.get(seq))
        return rows[0] if rows else None

    def find(self, event_id: str, provider: str | None = None) -> list[StoredEvent]:
        """Every event with this provider event id (one per provider at most)."""
        return self._rows(*_QUERIES.find(event_id, provider))

    def read(
        self,
        *,
        after: int = 0,
        limit: int | None = None,
        provider: str | None = None,
        type: str | None = None,
        payloads_of: Mapping[str, Collection[str]] | None = None,
    ) -> list[StoredEvent]:
        """Events with seq > `after`, oldest first, optionally filtered (as the SQLite log's
        :meth:`~billhook.log.sqlite.EventLog.read`, `payloads_of` included)."""
        query = _QUERIES.read(
            after=after, limit=limit, provider=provider, type=type, payloads_of=payloads_of
        )
        return self._rows(*query)

    def scan(
        self, *, payloads_of: Mapping[str, Collection[str]]
    ) -> Generator[tuple[Any, ...], None, None]:
        """Every event as a row of :class:`StoredEvent`'s fields, in seq order, from one
        snapshot, with payloads as :meth:`read` gives them: what a replay folds.

        Streamed by a server-side cursor, a page of rows per round trip, never a
        list of the whole log; the connection is held until the iterator is closed.
        """
        sql, params = _QUERIES.read(
            after=0, limit=None, provider=None, type=None, payloads_of=payloads_of
        )
        try:
            with self._pool.connection() as conn, conn.transaction():
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                with conn.cursor(name="billhook_scan") as cursor:
                    cursor.itersize = SCAN_PAGE
                    cursor.execute(sql.encode(), params)
                    yield from cursor
        except psycopg.Error as e:
            raise LogUnavailable(_reason(e)) from e

    def _rows(self, sql: str, params: tuple[object, ...]) -> list[StoredEvent]:
        return [StoredEvent(*row) for row in self._fetch(sql, params)]

    def _fetch(self, sql: str, params: tuple[object, ...]) -> list[Any]:
        try:
            with self._pool.connection() as conn:
                rows: list[Any] = conn.execute(sql.encode(), params).fetchall()
                return rows
        except psycopg.Error as e:
            raise LogUnavailable(_reason(e)) from e


class SchemaConnection:
    """One autocommit connection whose search_path is `schema`, for a small store beside the
    log (the impact counts, the outbox): opened, with billhook's session settings and the
    schema created (`ddl`, under create_schema's lock), on first use, and opened again when
    the database dropped it, so a server starts while the database is down. Callers hold
    `lock` around `connection()` and their statements; errors say `what` failed."""

    def __init__(self, url: str, schema: str, ddl: str, what: str, *, timeout_s: float) -> None:
        self.lock = threading.Lock()
        self._url = url
        self._schema = schema
        self._ddl = ddl
        self._what = what
        self._timeout_s = timeout_s
        self._conn: psycopg.Connection[Any] | None = None

    def connection(self) -> psycopg.Connection[Any]:
        conn = self._conn
        if conn is not None and not conn.closed and not conn.broken:
            return conn
        if conn is not None:
            conn.close()
            self._conn = None
        conn = None
        try:
            conn = psycopg.connect(
                self._url, autocommit=True, connect_timeout=max(1, int(self._timeout_s))
            )
            session_settings(conn, lock_timeout_s=self._timeout_s)
            # One process at a time, as the log's and the projection's schemas are made.
            create_schema(
                conn,
                f"CREATE SCHEMA IF NOT EXISTS {self._schema};"
                f" SET LOCAL search_path = {self._schema}; {self._ddl}",
            )
            conn.execute(pgsql.SQL("SET search_path = {}").format(pgsql.Identifier(self._schema)))
        except psycopg.Error as e:
            if conn is not None:  # connected, then the session or the schema failed
                conn.close()
            raise self.unavailable(e) from e
        self._conn = conn
        return conn

    def unavailable(self, error: psycopg.Error) -> StoreUnavailable:
        return StoreUnavailable(f"{self._what}: {_reason(error)}")

    def close(self) -> None:
        with self.lock:
            if self._conn is not None:
                self._conn.close()


def _reason(error: Exception) -> str:
    """PostgreSQL's reason in one line: its primary message, without the DETAIL (which may
    quote a row's values) or the query."""
    diag = getattr(error, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    lines = str(error).splitlines()
    text = primary or (lines[0] if lines else "")
    return " ".join(text.split()) or error.__class__.__name__
