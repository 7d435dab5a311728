"""The append-only event log: `events.db`, the source of truth and the queue.

SQLite in WAL mode with `synchronous=FULL`, so a committed row has reached the
disk before :meth:`EventLog.append_batch` returns. The table refuses UPDATE,
DELETE and any INSERT that would replace a row with triggers: append-only is
enforced by the database, not by habit.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlite_utils

from billhook.domain.records import EventRecord, StoredEvent
from billhook.domain.times import iso_utc
from billhook.errors import LogUnavailable
from billhook.log.queries import EventQueries

# Bumped when the schema below changes; stored as PRAGMA user_version. Every statement is
# IF NOT EXISTS, so opening an older log runs the whole script and adds what it lacks.
SCHEMA_VERSION = 2
# How long a writer waits for another writer's lock before answering 503.
DEFAULT_BUSY_TIMEOUT_S = 5.0
# How often the background checkpointer copies the WAL into the database.
CHECKPOINT_INTERVAL_S = 0.5

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    provider TEXT NOT NULL CHECK (provider IN ('stripe', 'polar', 'billhook')),
    event_id TEXT NOT NULL,
    type TEXT NOT NULL,
    livemode INTEGER CHECK (livemode IN (0, 1)),
    occurred_at TEXT,
    received_at TEXT NOT NULL,
    payload TEXT NOT NULL,
    UNIQUE (provider, event_id)
);
CREATE TRIGGER IF NOT EXISTS events_no_update BEFORE UPDATE ON events
BEGIN
    SELECT RAISE(ABORT, 'events is append-only: UPDATE is not allowed');
END;
CREATE TRIGGER IF NOT EXISTS events_no_delete BEFORE DELETE ON events
BEGIN
    SELECT RAISE(ABORT, 'events is append-only: DELETE is not allowed');
END;
-- REPLACE's conflict resolution deletes the old row without firing DELETE triggers (while
-- recursive_triggers is off): an insert that would meet an existing seq or event id stops here.
CREATE TRIGGER IF NOT EXISTS events_no_replace BEFORE INSERT ON events
WHEN EXISTS (SELECT 1 FROM events WHERE seq = NEW.seq)
  OR EXISTS (SELECT 1 FROM events WHERE provider = NEW.provider AND event_id = NEW.event_id)
BEGIN
    SELECT RAISE(ABORT, 'events is append-only: this seq or event id is logged already');
END;
"""

_INSERT = (
    "INSERT INTO events (provider, event_id, type, livemode, occurred_at, received_at, payload)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_SEQ_OF = "SELECT seq FROM events WHERE provider = ? AND event_id = ?"
# The reads of `get`, `find` and `read` (shared with the PostgreSQL log).
_QUERIES = EventQueries("events", "?")


@dataclass(frozen=True)
class Appended:
    """Where an event sits in the log; `duplicate` when it was there already."""

    seq: int
    duplicate: bool


def _utcnow() -> datetime:
    return datetime.now(UTC)


class EventLog:
    """A connection to `events.db`. Thread-safe: one lock serializes its use.

    :class:`billhook.log.postgres.PostgresEventLog` has the same methods.

    Raises :class:`LogUnavailable` whenever SQLite cannot do what was asked.
    """

    def __init__(
        self,
        path: Path,
        *,
        busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.path = path
        self.backend = "sqlite"
        self._clock = clock
        self._lock = threading.Lock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
            )
            self.db = sqlite_utils.Database(conn)
            self.db.enable_wal()
            conn.execute("PRAGMA synchronous=FULL")
            if conn.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
                conn.executescript(
                    f"BEGIN IMMEDIATE;{SCHEMA}PRAGMA user_version={SCHEMA_VERSION};COMMIT;"
                )
        except (sqlite3.Error, OSError) as e:
            raise LogUnavailable(f"cannot open the event log at {path}: {e}") from e
        self.conn = conn

    def close(self) -> None:
        with self._lock:
            self.conn.close()

    def defer_checkpoints(self) -> None:
        """Stop this connection's commits from checkpointing the WAL themselves.

        SQLite checkpoints inside the COMMIT that crosses `wal_autocheckpoint`:
        copying the WAL into the database and fsyncing it there holds that
        commit's deliveries for tens of milliseconds. A :class:`Checkpointer`
        on another connection does it instead.
        """
        with self._lock:
            self.conn.execute("PRAGMA wal_autocheckpoint=0")

    def checkpoint(self) -> None:
        """Copy what the WAL holds into the database, without blocking writers."""
        with self._lock:
            try:
                self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            except sqlite3.Error as e:
                raise LogUnavailable(str(e)) from e

    def append_batch(self, records: Sequence[EventRecord]) -> list[Appended]:
        """Append `records` in one transaction and return where each one sits.

        A record whose (provider, event_id) is already in the log, or earlier
        in the same batch, is not written again: its answer carries the seq of
        the original and `duplicate=True`. Nothing is returned before the
        commit is durable; on any storage error nothing of the batch is kept.
        """
        with self._lock:
            conn = self.conn
            try:
                conn.execute("BEGIN IMMEDIATE")
                # Read the clock once the write lock is ours, not before waiting for it.
                received_at = iso_utc(self._clock())
                results = self._insert_new(conn, records, received_at)
                conn.execute("COMMIT")
            except sqlite3.Error as e:
                if conn.in_transaction:
                    # A failed COMMIT may have rolled back already; report the first error.
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                raise LogUnavailable(str(e)) from e
        return results

    @staticmethod
    def _insert_new(
        conn: sqlite3.Connection, records: Sequence[EventRecord], received_at: str
    ) -> list[Appended]:
        """Insert the records not yet in the log; where each one sits, in order.

        Runs inside the write transaction, so the look-up cannot race. Looking
        before inserting, unlike ON CONFLICT, leaves no gap in AUTOINCREMENT's
        sequence, and one executemany keeps the writer's Python cost low.
        """
        known: dict[tuple[str, str], int] = {}
        for r in records:
            key = (r.provider, r.event_id)
            if key not in known:
                row = conn.execute(_SEQ_OF, key).fetchone()
                known[key] = row[0] if row else 0
        fresh: dict[tuple[str, str], EventRecord] = {}
        for r in records:
            key = (r.provider, r.event_id)
            if known[key] == 0 and key not in fresh:
                fresh[key] = r
        if fresh:
            head = conn.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0]
            conn.executemany(
                _INSERT,
                [
                    (
                        r.provider,
                        r.event_id,
                        r.type,
                        r.livemode,
                        r.occurred_at,
                        received_at,
                        r.payload,
                    )
                    for r in fresh.values()
                ],
            )
            # One writer holds the lock, so AUTOINCREMENT hands out consecutive seqs,
            # unless an earlier sequence value was burnt: read them back to be sure.
            last = conn.execute("SELECT max(seq) FROM events").fetchone()[0]
            if last - head == len(fresh):
                for offset, key in enumerate(fresh, start=1):
                    known[key] = head + offset
            else:
                for key in fresh:
                    known[key] = conn.execute(_SEQ_OF, key).fetchone()[0]
        results = []
        first_seen: set[tuple[str, str]] = set()
        for r in records:
            key = (r.provider, r.event_id)
            new = key in fresh and key not in first_seen
            first_seen.add(key)
            results.append(Appended(seq=known[key], duplicate=not new))
        return results

    def head_seq(self) -> int:
        """The highest seq in the log, 0 when it is empty."""
        return int(self._one("SELECT coalesce(max(seq), 0) FROM events", ())[0])

    def last_seq_at(self, received_at: str) -> int:
        """The last seq committed at or before `received_at` (the log's ISO format), else 0."""
        sql = "SELECT coalesce(max(seq), 0) FROM events WHERE received_at <= ?"
        return int(self._one(sql, (received_at,))[0])

    def received_after(self, seq: int) -> str | None:
        """`received_at` of the first event past `seq` (the oldest one not yet
        projected, for a checkpoint `seq`); None when there is none."""
        sql = "SELECT received_at FROM events WHERE seq > ? ORDER BY seq LIMIT 1"
        rows = self._fetch(sql, (seq,))
        return str(rows[0][0]) if rows else None

    def probe_writable(self, *, durable: bool = False) -> None:
        """Show that this connection could append now, without appending.

        Takes the write lock and lets it go (BEGIN IMMEDIATE, ROLLBACK): a
        lock held past the busy timeout, or a file that cannot be opened for
        writing, fails here. With `durable`, it also commits a write that
        changes no row, `user_version` set to its own value, fsynced like an
        append: a full disk or a read-only filesystem fails that too. The
        events table, and so the log's seqs, are never touched.

        Raises :class:`LogUnavailable` with SQLite's reason.
        """
        with self._lock:
            conn = self.conn
            try:
                conn.execute("BEGIN IMMEDIATE")
                if durable:
                    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
                    conn.execute(f"PRAGMA user_version = {version}")
                    conn.execute("COMMIT")
                else:
                    conn.execute("ROLLBACK")
            except sqlite3.Error as e:
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                raise LogUnavailable(str(e)) from e

    def backup(self, target: Path) -> int:
        """Copy the log to `target`, a new file, while appends go on; the head seq copied.

        SQLite's online backup, in one step from a read transaction of a
        connection of its own: the copy is the log as it stood at one commit
        (every event acknowledged before the call is in it), and writers are
        never blocked (WAL). The copy is a complete log, triggers included.
        Raises :class:`LogUnavailable` when `target` exists or cannot be written.
        """
        if target.exists():
            raise LogUnavailable(f"{target} exists already; back up to a new file")
        try:
            source = sqlite3.connect(self.path)
            try:
                copy = sqlite3.connect(target)
                try:
                    source.backup(copy)
                    head = copy.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0]
                finally:
                    copy.close()
            finally:
                source.close()
        except sqlite3.Error as e:
            target.unlink(missing_ok=True)
            raise LogUnavailable(f"backing up {self.path} to {target} failed: {e}") from e
        return int(head)

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
        """Events with seq > `after`, oldest first, optionally filtered.

        With `payloads_of` ({provider: types}), only those events carry their
        payload; the others come with an empty one. A projector that skips most
        events then never reads their kilobytes.
        """
        query = _QUERIES.read(
            after=after, limit=limit, provider=provider, type=type, payloads_of=payloads_of
        )
        return self._rows(*query)

    def _rows(self, sql: str, params: tuple[object, ...]) -> list[StoredEvent]:
        return [StoredEvent(*row) for row in self._fetch(sql, params)]

    def _one(self, sql: str, params: tuple[object, ...]) -> Any:
        return self._fetch(sql, params)[0]

    def _fetch(self, sql: str, params: tuple[object, ...]) -> list[Any]:
        with self._lock:
            try:
                return self.conn.execute(sql, params).fetchall()
            except sqlite3.Error as e:
                raise LogUnavailable(str(e)) from e


class Checkpointer:
    """Checkpoints the log's WAL from a thread of its own, every `interval_s`."""

    def __init__(self, log: EventLog, *, interval_s: float = CHECKPOINT_INTERVAL_S) -> None:
        self.log = log
        self._interval_s = interval_s
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="billhook-checkpoint", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stopping.wait(self._interval_s):
            # A failed checkpoint is retried next tick; the WAL only grows meanwhile.
            with contextlib.suppress(LogUnavailable):
                self.log.checkpoint()
