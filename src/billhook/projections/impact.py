"""The impact store: checks counted by day, kept apart from the projections.

`check` is a read, never a log event, so what it decided cannot be rebuilt by a
replay — and a replay replaces the projection wholesale (a file copy in
SQLite, a schema rename in PostgreSQL). The counts therefore live in a store of
their own: `data_dir/impact.db`, or the schema `billhook_impact` beside the
log's when `[storage] url` is set. Two tables, ids and counts only:

- `blocked (day, workspace, action, reason, decision, checks)`: checks answered
  `deny` or `would_deny`;
- `seen (day, workspace, checks)`: every check, so "active workspaces" can be told.

Days are UTC `YYYY-MM-DD`. :meth:`add` adds to the counts (one transaction per
flush); :meth:`drop_before` enforces retention.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import psycopg

from billhook.config import Settings
from billhook.errors import StoreUnavailable
from billhook.log.postgres import SchemaConnection
from billhook.projections.postgres import translate

# The PostgreSQL schema of the impact counts (the log's is `billhook`).
IMPACT_SCHEMA = "billhook_impact"
# How long a statement waits for a lock or a busy SQLite file.
BUSY_TIMEOUT_S = 5.0

_TABLES = (
    "CREATE TABLE IF NOT EXISTS blocked ("
    " day text NOT NULL, workspace text NOT NULL, action text NOT NULL,"
    " reason text NOT NULL, decision text NOT NULL, checks bigint NOT NULL,"
    " PRIMARY KEY (day, workspace, action, reason, decision))",
    "CREATE TABLE IF NOT EXISTS seen ("
    " day text NOT NULL, workspace text NOT NULL, checks bigint NOT NULL,"
    " PRIMARY KEY (day, workspace))",
)
_ADD_BLOCKED = (
    "INSERT INTO blocked (day, workspace, action, reason, decision, checks)"
    " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (day, workspace, action, reason, decision)"
    " DO UPDATE SET checks = blocked.checks + excluded.checks"
)
_ADD_SEEN = (
    "INSERT INTO seen (day, workspace, checks) VALUES (?, ?, ?)"
    " ON CONFLICT (day, workspace) DO UPDATE SET checks = seen.checks + excluded.checks"
)
_BLOCKED = (
    "SELECT workspace, action, reason, SUM(checks) FROM blocked WHERE day >= ?"
    " GROUP BY workspace, action, reason ORDER BY workspace, action, reason"
)
_SEEN = "SELECT workspace, SUM(checks) FROM seen WHERE day >= ? GROUP BY workspace ORDER BY 1"
_DAYS = "SELECT MIN(day), MAX(day) FROM seen"

# A blocked count: (day, workspace, action, reason, decision, checks).
BlockedCount = tuple[str, str, str, str, str, int]
# A seen count: (day, workspace, checks).
SeenCount = tuple[str, str, int]


@dataclass(frozen=True)
class Blocked:
    """A workspace's checks of `action` that were (or would have been) refused for `reason`."""

    workspace: str
    action: str
    reason: str
    checks: int


class ImpactStore(Protocol):
    """What the recorder and the reports need of either backend."""

    def add(self, blocked: Sequence[BlockedCount], seen: Sequence[SeenCount]) -> None:
        """Add these counts (in one transaction). Raises StoreUnavailable."""
        ...

    def drop_before(self, day: str) -> None:
        """Forget every count of a day before `day`."""
        ...

    def blocked(self, since: str) -> list[Blocked]:
        """Blocked checks from `since` (a day, inclusive) on, summed per workspace,
        action and reason, ordered by them."""
        ...

    def seen(self, since: str) -> dict[str, int]:
        """Every workspace that made a check from `since` on, and how many."""
        ...

    def close(self) -> None: ...


class _Counts:
    """The reads and writes both stores share, over their own `_run` and `_query`."""

    def _run(self, statements: Sequence[tuple[str, Sequence[Sequence[Any]]]]) -> None:
        raise NotImplementedError

    def _query(self, statement: str, params: Sequence[Any]) -> list[Any]:
        raise NotImplementedError

    def add(self, blocked: Sequence[BlockedCount], seen: Sequence[SeenCount]) -> None:
        self._run([(_ADD_BLOCKED, blocked), (_ADD_SEEN, seen)])

    def drop_before(self, day: str) -> None:
        self._run(
            [
                ("DELETE FROM blocked WHERE day < ?", [(day,)]),
                ("DELETE FROM seen WHERE day < ?", [(day,)]),
            ]
        )

    def blocked(self, since: str) -> list[Blocked]:
        return [Blocked(w, a, r, int(n)) for w, a, r, n in self._query(_BLOCKED, (since,))]

    def seen(self, since: str) -> dict[str, int]:
        return {w: int(n) for w, n in self._query(_SEEN, (since,))}

    def days(self) -> tuple[str | None, str | None]:
        """The first and last day any check is counted for (None, None when none is)."""
        first, last = self._query(_DAYS, ())[0]
        return first, last


class SqliteImpactStore(_Counts):
    """`data_dir/impact.db`; one connection shared under a lock (flush thread, readers)."""

    def __init__(self, path: Path, *, busy_timeout_s: float = BUSY_TIMEOUT_S) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self._conn = sqlite3.connect(
                path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
            )
            self._conn.execute("PRAGMA journal_mode=WAL")
            for statement in _TABLES:
                self._conn.execute(statement)
        except sqlite3.Error as e:
            raise StoreUnavailable(f"impact store {path} cannot be opened: {e}") from e

    def _run(self, statements: Sequence[tuple[str, Sequence[Sequence[Any]]]]) -> None:
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    for statement, rows in statements:
                        self._conn.executemany(statement, rows)
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise
                self._conn.execute("COMMIT")
            except sqlite3.Error as e:
                raise StoreUnavailable(f"impact store {self.path}: {e}") from e

    def _query(self, statement: str, params: Sequence[Any]) -> list[Any]:
        with self._lock:
            try:
                return self._conn.execute(statement, params).fetchall()
            except sqlite3.Error as e:
                raise StoreUnavailable(f"impact store {self.path}: {e}") from e

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class PostgresImpactStore(_Counts):
    """The schema `billhook_impact`; one autocommit connection under a lock, opened (and
    the schema created) on first use and reopened when the database dropped it, so a
    server starts while the database is down, as with the log."""

    def __init__(self, url: str, *, busy_timeout_s: float = BUSY_TIMEOUT_S) -> None:
        ddl = "; ".join(_TABLES)
        self._db = SchemaConnection(
            url, IMPACT_SCHEMA, ddl, "impact store", timeout_s=busy_timeout_s
        )

    def _run(self, statements: Sequence[tuple[str, Sequence[Sequence[Any]]]]) -> None:
        with self._db.lock:
            conn = self._db.connection()
            try:
                with conn.transaction(), conn.cursor() as cursor:
                    for statement, rows in statements:
                        if rows:
                            cursor.executemany(translate(statement), rows)
            except psycopg.Error as e:
                raise self._db.unavailable(e) from e

    def _query(self, statement: str, params: Sequence[Any]) -> list[Any]:
        with self._db.lock:
            conn = self._db.connection()
            try:
                return conn.execute(translate(statement), params).fetchall()
            except psycopg.Error as e:
                raise self._db.unavailable(e) from e

    def close(self) -> None:
        self._db.close()


def impact_path(settings: Settings) -> Path:
    return settings.data_dir / "impact.db"


def open_impact(settings: Settings) -> SqliteImpactStore | PostgresImpactStore:
    """The impact store `settings` name: `[storage] url`'s database, else `data_dir/impact.db`."""
    if settings.storage_url:
        return PostgresImpactStore(settings.storage_url.reveal())
    return SqliteImpactStore(impact_path(settings))
