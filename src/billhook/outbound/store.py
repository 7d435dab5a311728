"""The outbox: outbound deliveries that survive restarts, and their log (SPEC §6b).

A delivery is born in the same transaction that moves the fan-out cursor, so a
change is turned into deliveries once, whichever dispatcher got there first
(the cursor is compare-and-set), and a crash in between loses nothing. It is
kept apart from the projections for the reason the impact counts are: a replay
replaces the projection wholesale, and what was sent, when and how often
cannot be rebuilt from the log. `data_dir/outbound.db`, or the schema
`billhook_outbound` beside the log's when `[storage] url` is set.

Order per workspace comes from the claim: only the head of each (endpoint,
workspace) queue — its smallest id still pending or sending — is claimable, and
not while another row of the queue is out under a live lease. A claim is a lease
with a random token; :meth:`OutboxStore.record` writes a result only while the
token still matches, so a dispatcher that outlived its lease cannot overwrite
the row another one re-claimed. PostgreSQL claims with `FOR UPDATE SKIP LOCKED`,
SQLite under its write lock, so two processes never claim the same row.

The delivery log keeps ids, statuses, attempts and status codes; the body is
kept only to be sent and never listed.
"""

from __future__ import annotations

import secrets as tokens
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import psycopg

from billhook.config import Settings
from billhook.errors import StoreUnavailable
from billhook.log.postgres import SchemaConnection
from billhook.projections.postgres import translate

# Delivery statuses.
PENDING, SENDING, DELIVERED, FAILED, CANCELED = (
    "pending",
    "sending",
    "delivered",
    "failed",
    "canceled",
)
# The statuses a delivery ends in (until it is redelivered).
FINAL = (DELIVERED, FAILED, CANCELED)
# Every status, in the order `counts` lists them.
STATUSES = (PENDING, SENDING, DELIVERED, FAILED, CANCELED)
# The PostgreSQL schema of the outbox (the log's is `billhook`).
OUTBOUND_SCHEMA = "billhook_outbound"
# How long a statement waits for a lock or a busy SQLite file.
BUSY_TIMEOUT_S = 5.0
# How many rows one statement leases (SQLite allows 32,766 parameters).
LEASE_CHUNK = 500
# The longest `last_error` kept: a reason in a few words, never a response body.
MAX_ERROR_CHARS = 200

# `{id}` and `{blob}` are the two column types the backends spell differently.
_TABLES = (
    "CREATE TABLE IF NOT EXISTS deliveries ("
    " {id}, endpoint text NOT NULL, seq bigint NOT NULL, k integer NOT NULL,"
    " workspace text NOT NULL, body {blob} NOT NULL, status text NOT NULL,"
    " attempts integer NOT NULL, next_at_us bigint, give_up_us bigint NOT NULL,"
    " last_status integer, last_error text, created_us bigint NOT NULL,"
    " updated_us bigint NOT NULL, token text, lease_until_us bigint,"
    " UNIQUE (endpoint, seq, k))",
    # The claim's head-of-queue test, cancel, and the pending counts: non-final rows only.
    "CREATE INDEX IF NOT EXISTS deliveries_queue ON deliveries (endpoint, workspace, id)"
    " WHERE status IN ('pending', 'sending')",
    # The claim's live-lease test.
    "CREATE INDEX IF NOT EXISTS deliveries_leases"
    " ON deliveries (endpoint, workspace, lease_until_us) WHERE status = 'sending'",
    # Listings, newest first, by status, endpoint or workspace; counts by status.
    "CREATE INDEX IF NOT EXISTS deliveries_status ON deliveries (status, id)",
    "CREATE INDEX IF NOT EXISTS deliveries_endpoint ON deliveries (endpoint, id)",
    "CREATE INDEX IF NOT EXISTS deliveries_workspace ON deliveries (workspace, id)",
    "CREATE TABLE IF NOT EXISTS attempts ("
    " delivery bigint NOT NULL, n integer NOT NULL, at_us bigint NOT NULL,"
    " status integer, error text, duration_ms integer NOT NULL, PRIMARY KEY (delivery, n))",
    "CREATE TABLE IF NOT EXISTS fanout ("
    " one integer PRIMARY KEY CHECK (one = 1), seq bigint NOT NULL, k integer NOT NULL)",
    "CREATE TABLE IF NOT EXISTS endpoint_starts ("
    " endpoint text PRIMARY KEY, seq bigint NOT NULL, k integer NOT NULL)",
    "CREATE TABLE IF NOT EXISTS secrets ("
    " endpoint text NOT NULL, secret text NOT NULL, created_us bigint NOT NULL,"
    " expires_us bigint, PRIMARY KEY (endpoint, secret))",
    "CREATE TABLE IF NOT EXISTS health ("
    " endpoint text PRIMARY KEY, last_success_us bigint, failing_since_us bigint)",
)
_SQLITE_TYPES = {"id": "id INTEGER PRIMARY KEY AUTOINCREMENT", "blob": "blob"}
_PG_TYPES = {"id": "id bigserial PRIMARY KEY", "blob": "bytea"}

_DELIVERY = (
    "id, endpoint, seq, k, workspace, status, attempts, next_at_us, give_up_us,"
    " last_status, last_error, created_us, updated_us"
)
_INSERT = (
    "INSERT INTO deliveries (endpoint, seq, k, workspace, body, status, attempts,"
    " next_at_us, give_up_us, created_us, updated_us)"
    " VALUES (?, ?, ?, ?, ?, 'pending', 0, ?, ?, ?, ?)"
    " ON CONFLICT (endpoint, seq, k) DO NOTHING"
)
# The claimable heads of one endpoint's queues, oldest first. A head is the smallest
# non-final id of its (endpoint, workspace); it is due when pending and its time came,
# or when sending under a lease that ended; and no other row of its queue is out under
# a live lease (a row redelivered behind one in flight waits for it).
_CLAIM = (
    "SELECT d.id, d.endpoint, d.seq, d.k, d.workspace, d.body, d.attempts, d.give_up_us"
    " FROM (SELECT MIN(q.id) AS head FROM deliveries q"
    "  WHERE q.endpoint = ? AND q.status IN ('pending', 'sending') GROUP BY q.workspace) h"
    # SQLite's join-order hint (a plain JOIN in PostgreSQL): from each head to its row,
    # not through every pending row of the status index.
    " CROSS JOIN deliveries d ON d.id = h.head"
    " WHERE ((d.status = 'pending' AND d.next_at_us <= ?)"
    "  OR (d.status = 'sending' AND d.lease_until_us <= ?))"
    " AND NOT EXISTS (SELECT 1 FROM deliveries s WHERE s.endpoint = d.endpoint"
    "  AND s.workspace = d.workspace AND s.status = 'sending' AND s.lease_until_us > ?)"
    " ORDER BY d.id LIMIT ?"
)
_LEASE = "UPDATE deliveries SET status = 'sending', token = ?, lease_until_us = ?, updated_us = ?"
_RECORD = (
    "UPDATE deliveries SET attempts = attempts + 1, status = ?, next_at_us = ?,"
    " last_status = ?, last_error = ?, updated_us = ?, token = NULL, lease_until_us = NULL"
    " WHERE id = ? AND token = ? AND status = 'sending' RETURNING endpoint, attempts"
)
_ATTEMPT = (
    "INSERT INTO attempts (delivery, n, at_us, status, error, duration_ms)"
    " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (delivery, n) DO NOTHING"
)
# A success (last_success_us set) clears failing_since_us; a failure (failing_since_us
# set) starts it unless it was already running.
_HEALTH = (
    "INSERT INTO health (endpoint, last_success_us, failing_since_us) VALUES (?, ?, ?)"
    " ON CONFLICT (endpoint) DO UPDATE SET"
    " last_success_us = COALESCE(excluded.last_success_us, health.last_success_us),"
    " failing_since_us = CASE WHEN excluded.last_success_us IS NOT NULL THEN NULL"
    "  ELSE COALESCE(health.failing_since_us, excluded.failing_since_us) END"
)
# Every endpoint with deliveries, one index seek each (a loose index scan).
_ENDPOINTS = (
    "WITH RECURSIVE e(x) AS (SELECT MIN(endpoint) FROM deliveries"
    " UNION ALL SELECT (SELECT MIN(endpoint) FROM deliveries WHERE endpoint > e.x)"
    " FROM e WHERE e.x IS NOT NULL) SELECT x FROM e WHERE x IS NOT NULL"
)


@dataclass(frozen=True)
class NewDelivery:
    """One change for one endpoint, as the fan-out makes it."""

    endpoint: str
    seq: int
    k: int
    workspace: str
    body: bytes


def _webhook_id(endpoint: str, seq: int, k: int) -> str:
    return f"{endpoint}_{seq}_{k}"


@dataclass(frozen=True)
class Delivery:
    """A delivery as the log lists it: never its body."""

    id: int
    endpoint: str
    seq: int
    k: int
    workspace: str
    status: str
    attempts: int
    next_at_us: int | None
    give_up_us: int
    last_status: int | None
    last_error: str | None
    created_us: int
    updated_us: int

    @property
    def cursor(self) -> str:
        """The change's cursor in the feed."""
        return f"{self.seq}-{self.k}"

    @property
    def webhook_id(self) -> str:
        """The `webhook-id`: stable per change and endpoint, so a receiver drops duplicates."""
        return _webhook_id(self.endpoint, self.seq, self.k)


@dataclass(frozen=True)
class Attempt:
    """One try at a delivery: the answer's status code, or the error when there was none."""

    delivery: int
    n: int
    at_us: int
    status: int | None
    error: str | None
    duration_ms: int


@dataclass(frozen=True)
class Claim:
    """A delivery leased to one dispatcher; `token` proves the lease to :meth:`record`."""

    id: int
    endpoint: str
    seq: int
    k: int
    workspace: str
    body: bytes
    attempts: int
    give_up_us: int
    token: str

    @property
    def webhook_id(self) -> str:
        return _webhook_id(self.endpoint, self.seq, self.k)


@dataclass(frozen=True)
class Result:
    """How a claimed attempt ended, and what becomes of the delivery: DELIVERED, FAILED, or
    PENDING again from `next_at_us`."""

    id: int
    token: str
    at_us: int
    status: int | None
    error: str | None
    duration_ms: int
    outcome: str
    next_at_us: int | None


@dataclass(frozen=True)
class EndpointHealth:
    """An endpoint's last success, the start of its current failures, and its backlog."""

    endpoint: str
    last_success_us: int | None
    failing_since_us: int | None
    pending: int
    # created_us of the oldest non-final delivery.
    oldest_pending_us: int | None


class OutboxStore(Protocol):
    """What the dispatcher, the admin routes and the CLI need of either backend. Every
    method raises StoreUnavailable when the database cannot be used."""

    def fanout_cursor(self) -> tuple[int, int] | None:
        """The last change fanned out; None before the first fan-out."""
        ...

    def enqueue(
        self,
        expected: tuple[int, int] | None,
        new_cursor: tuple[int, int],
        rows: Sequence[NewDelivery],
        now_us: int,
        give_up_us: int,
    ) -> bool:
        """Move the fan-out cursor from `expected` to `new_cursor` and add `rows` (pending,
        due now; a row whose (endpoint, seq, k) exists is skipped), in one transaction.
        False, writing nothing, when the cursor was not `expected`."""
        ...

    def endpoint_start(self, endpoint: str, default: tuple[int, int]) -> tuple[int, int]:
        """The cursor after which `endpoint` receives changes, stored as `default` the first
        time it is asked."""
        ...

    def claim(self, now_us: int, limits: Mapping[str, int], lease_us: int) -> list[Claim]:
        """Lease the due heads of the queues of the endpoints in `limits`, at most
        `limits[endpoint]` each, oldest first, until `now_us + lease_us`."""
        ...

    def record(self, results: Sequence[Result]) -> int:
        """Write the results whose lease still holds, with an attempt each and the
        endpoints' health, in one transaction; how many were written."""
        ...

    def cancel(self, endpoint: str, now_us: int) -> int:
        """Cancel `endpoint`'s deliveries not yet final; how many."""
        ...

    def deliveries(
        self,
        *,
        status: str | None = None,
        endpoint: str | None = None,
        workspace: str | None = None,
        before_id: int | None = None,
        limit: int = 100,
    ) -> list[Delivery]:
        """Deliveries matching every filter given, newest first, ids below `before_id`."""
        ...

    def delivery(self, delivery_id: int) -> Delivery | None: ...

    def attempts(self, delivery_id: int) -> list[Attempt]:
        """A delivery's attempts, oldest first."""
        ...

    def redeliver(
        self, *, ids: Sequence[int] = (), since_us: int | None = None, now_us: int, give_up_us: int
    ) -> int:
        """Make final deliveries pending again (attempts kept): those in `ids`, and every one
        created at or after `since_us`. How many."""
        ...

    def health(self) -> dict[str, EndpointHealth]:
        """Every endpoint that has deliveries or a recorded attempt."""
        ...

    def counts(self) -> dict[str, int]:
        """Deliveries by status, every status listed."""
        ...

    def oldest_pending_us(self) -> int | None:
        """created_us of the oldest delivery not yet final."""
        ...

    def prune(self, before_us: int) -> int:
        """Forget final deliveries (and their attempts) last updated before `before_us`."""
        ...

    def add_secret(self, endpoint: str, secret: str, now_us: int) -> None: ...

    def expire_secrets(self, endpoint: str, keep: str, at_us: int) -> None:
        """Every secret of `endpoint` but `keep` expires at `at_us`, or earlier if it
        already did."""
        ...

    def secrets(self, endpoint: str, now_us: int) -> list[str]:
        """`endpoint`'s unexpired secrets, newest first."""
        ...

    def close(self) -> None: ...


class _Tx(Protocol):
    """One transaction's statements, in SQLite's dialect."""

    def rows(
        self, statement: str, params: Sequence[Any] = (), *, plan_each: bool = False
    ) -> list[Any]:
        """The rows a query returns; `plan_each`: planned for these parameters each time,
        never from a cached generic plan (which PostgreSQL may pick after five runs)."""
        ...

    def run(self, statement: str, params: Sequence[Any] = ()) -> int:
        """Run a write; how many rows it changed."""
        ...

    def many(self, statement: str, rows: Sequence[Sequence[Any]]) -> None: ...

    def each(self, statement: str, rows: Sequence[Sequence[Any]]) -> list[list[Any]]:
        """Run a `RETURNING` statement once per row of parameters; the rows each returned."""
        ...


class _Outbox:
    """The statements both backends share, over their own `_tx`."""

    # The PostgreSQL claim locks what it reads and passes over what others locked.
    _claim_lock = ""

    def _tx(self, *, write: bool) -> AbstractContextManager[_Tx]:
        raise NotImplementedError

    def fanout_cursor(self) -> tuple[int, int] | None:
        with self._tx(write=False) as tx:
            found = tx.rows("SELECT seq, k FROM fanout WHERE one = 1")
        return (int(found[0][0]), int(found[0][1])) if found else None

    def enqueue(
        self,
        expected: tuple[int, int] | None,
        new_cursor: tuple[int, int],
        rows: Sequence[NewDelivery],
        now_us: int,
        give_up_us: int,
    ) -> bool:
        with self._tx(write=True) as tx:
            if expected is None:
                moved = tx.run(
                    "INSERT INTO fanout (one, seq, k) VALUES (1, ?, ?)"
                    " ON CONFLICT (one) DO NOTHING",
                    new_cursor,
                )
            else:
                moved = tx.run(
                    "UPDATE fanout SET seq = ?, k = ? WHERE one = 1 AND seq = ? AND k = ?",
                    (*new_cursor, *expected),
                )
            if not moved:
                return False  # nothing was written: the commit is empty
            keys = [(r.endpoint, r.seq, r.k, r.workspace, r.body) for r in rows]
            tx.many(_INSERT, [(*key, now_us, give_up_us, now_us, now_us) for key in keys])
        return True

    def endpoint_start(self, endpoint: str, default: tuple[int, int]) -> tuple[int, int]:
        with self._tx(write=True) as tx:
            tx.run(
                "INSERT INTO endpoint_starts (endpoint, seq, k) VALUES (?, ?, ?)"
                " ON CONFLICT (endpoint) DO NOTHING",
                (endpoint, *default),
            )
            found = tx.rows("SELECT seq, k FROM endpoint_starts WHERE endpoint = ?", (endpoint,))
        return int(found[0][0]), int(found[0][1])

    def claim(self, now_us: int, limits: Mapping[str, int], lease_us: int) -> list[Claim]:
        # One token per claim is enough: a row claimed again gets another claim's token.
        token = tokens.token_hex(16)
        claims: list[Claim] = []
        with self._tx(write=True) as tx:
            for endpoint in sorted(limits):
                if limits[endpoint] <= 0:
                    continue
                params = (endpoint, now_us, now_us, now_us, limits[endpoint])
                # A generic plan of the claim walks every pending row of the status index,
                # not the heads of the endpoint's queues: several times slower at 100k rows.
                for row in tx.rows(_CLAIM + self._claim_lock, params, plan_each=True):
                    claims.append(_claim(row, token))
            for start in range(0, len(claims), LEASE_CHUNK):
                ids = [c.id for c in claims[start : start + LEASE_CHUNK]]
                marks = ", ".join("?" * len(ids))
                tx.run(_LEASE + f" WHERE id IN ({marks})", (token, now_us + lease_us, now_us, *ids))
        return sorted(claims, key=lambda c: c.id)

    def record(self, results: Sequence[Result]) -> int:
        updates = [_record_row(r) for r in results]
        if not updates:
            return 0
        with self._tx(write=True) as tx:
            returned = tx.each(_RECORD, updates)
            attempts: list[tuple[Any, ...]] = []
            health: list[tuple[str, int | None, int | None]] = []
            for result, found in zip(results, returned, strict=True):
                if not found:
                    continue  # the lease ended and the row was claimed again, or canceled
                endpoint, n = found[0]
                error = _error(result.error)
                attempts.append(
                    (result.id, n, result.at_us, result.status, error, result.duration_ms)
                )
                if result.outcome == DELIVERED:
                    health.append((endpoint, result.at_us, None))
                elif result.outcome == FAILED:
                    health.append((endpoint, None, result.at_us))
            tx.many(_ATTEMPT, attempts)
            tx.many(_HEALTH, health)
        return len(attempts)

    def cancel(self, endpoint: str, now_us: int) -> int:
        with self._tx(write=True) as tx:
            return tx.run(
                "UPDATE deliveries SET status = 'canceled', next_at_us = NULL, updated_us = ?,"
                " token = NULL, lease_until_us = NULL WHERE endpoint = ?"
                " AND status IN ('pending', 'sending')",
                (now_us, endpoint),
            )

    def deliveries(
        self,
        *,
        status: str | None = None,
        endpoint: str | None = None,
        workspace: str | None = None,
        before_id: int | None = None,
        limit: int = 100,
    ) -> list[Delivery]:
        # Only fixed fragments go into the statement; every value is a parameter.
        filters: dict[str, str | int | None] = {
            "status = ?": status,
            "endpoint = ?": endpoint,
            "workspace = ?": workspace,
            "id < ?": before_id,
        }
        where = [(clause, value) for clause, value in filters.items() if value is not None]
        statement = f"SELECT {_DELIVERY} FROM deliveries"  # noqa: S608
        if where:
            statement += " WHERE " + " AND ".join(clause for clause, _ in where)
        params = [value for _, value in where] + [max(0, limit)]
        with self._tx(write=False) as tx:
            found = tx.rows(statement + " ORDER BY id DESC LIMIT ?", params)
        return [Delivery(*row) for row in found]

    def delivery(self, delivery_id: int) -> Delivery | None:
        with self._tx(write=False) as tx:
            statement = f"SELECT {_DELIVERY} FROM deliveries WHERE id = ?"  # noqa: S608
            found = tx.rows(statement, (delivery_id,))
        return Delivery(*found[0]) if found else None

    def attempts(self, delivery_id: int) -> list[Attempt]:
        with self._tx(write=False) as tx:
            found = tx.rows(
                "SELECT delivery, n, at_us, status, error, duration_ms FROM attempts"
                " WHERE delivery = ? ORDER BY n",
                (delivery_id,),
            )
        return [Attempt(*row) for row in found]

    def redeliver(
        self, *, ids: Sequence[int] = (), since_us: int | None = None, now_us: int, give_up_us: int
    ) -> int:
        again = (
            "UPDATE deliveries SET status = 'pending', next_at_us = ?, give_up_us = ?,"
            " updated_us = ?, token = NULL, lease_until_us = NULL"
            " WHERE status IN ('delivered', 'failed', 'canceled')"
        )
        times = (now_us, give_up_us, now_us)
        count = 0
        with self._tx(write=True) as tx:
            for delivery_id in dict.fromkeys(ids):
                count += tx.run(again + " AND id = ?", (*times, delivery_id))
            if since_us is not None:
                count += tx.run(again + " AND created_us >= ?", (*times, since_us))
        return count

    def health(self) -> dict[str, EndpointHealth]:
        with self._tx(write=False) as tx:
            endpoints = [row[0] for row in tx.rows(_ENDPOINTS)]
            known = {
                row[0]: (row[1], row[2])
                for row in tx.rows("SELECT endpoint, last_success_us, failing_since_us FROM health")
            }
            backlog = {
                row[0]: (int(row[1]), row[2])
                for row in tx.rows(
                    "SELECT endpoint, COUNT(*), MIN(created_us) FROM deliveries"
                    " WHERE status IN ('pending', 'sending') GROUP BY endpoint"
                )
            }
        return {
            endpoint: EndpointHealth(
                endpoint,
                *known.get(endpoint, (None, None)),
                *backlog.get(endpoint, (0, None)),
            )
            for endpoint in sorted({*endpoints, *known})
        }

    def counts(self) -> dict[str, int]:
        with self._tx(write=False) as tx:
            found = tx.rows("SELECT status, COUNT(*) FROM deliveries GROUP BY status")
        return dict.fromkeys(STATUSES, 0) | {row[0]: int(row[1]) for row in found}

    def oldest_pending_us(self) -> int | None:
        with self._tx(write=False) as tx:
            found = tx.rows(
                "SELECT MIN(created_us) FROM deliveries WHERE status IN ('pending', 'sending')"
            )
        return None if found[0][0] is None else int(found[0][0])

    def prune(self, before_us: int) -> int:
        with self._tx(write=True) as tx:
            tx.run(
                "DELETE FROM attempts WHERE delivery IN (SELECT id FROM deliveries"
                " WHERE status IN ('delivered', 'failed', 'canceled') AND updated_us < ?)",
                (before_us,),
            )
            return tx.run(
                "DELETE FROM deliveries"
                " WHERE status IN ('delivered', 'failed', 'canceled') AND updated_us < ?",
                (before_us,),
            )

    def add_secret(self, endpoint: str, secret: str, now_us: int) -> None:
        # Adding a secret again makes it current again.
        with self._tx(write=True) as tx:
            tx.run(
                "INSERT INTO secrets (endpoint, secret, created_us, expires_us)"
                " VALUES (?, ?, ?, NULL) ON CONFLICT (endpoint, secret)"
                " DO UPDATE SET created_us = excluded.created_us, expires_us = NULL",
                (endpoint, secret, now_us),
            )

    def expire_secrets(self, endpoint: str, keep: str, at_us: int) -> None:
        with self._tx(write=True) as tx:
            tx.run(
                "UPDATE secrets SET expires_us = ? WHERE endpoint = ? AND secret <> ?"
                " AND (expires_us IS NULL OR expires_us > ?)",
                (at_us, endpoint, keep, at_us),
            )

    def secrets(self, endpoint: str, now_us: int) -> list[str]:
        with self._tx(write=False) as tx:
            found = tx.rows(
                "SELECT secret FROM secrets WHERE endpoint = ?"
                " AND (expires_us IS NULL OR expires_us > ?) ORDER BY created_us DESC, secret",
                (endpoint, now_us),
            )
        return [row[0] for row in found]


def _record_row(result: Result) -> tuple[Any, ...]:
    """`_RECORD`'s parameters for `result`; a ValueError for an outcome a delivery cannot
    take (a bug in the caller, not a database fault)."""
    if result.outcome not in (DELIVERED, FAILED, PENDING):
        raise ValueError(f"a delivery cannot end {result.outcome!r}")
    next_at_us = None
    if result.outcome == PENDING:
        next_at_us = result.at_us if result.next_at_us is None else result.next_at_us
    return (
        result.outcome,
        next_at_us,
        result.status,
        _error(result.error),
        result.at_us,
        result.id,
        result.token,
    )


def _claim(row: Sequence[Any], token: str) -> Claim:
    id_, endpoint, seq, k, workspace, body, attempts, give_up_us = row
    return Claim(id_, endpoint, seq, k, workspace, bytes(body), attempts, give_up_us, token)


def _error(error: str | None) -> str | None:
    return None if error is None else error[:MAX_ERROR_CHARS]


class _SqliteTx:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def rows(
        self, statement: str, params: Sequence[Any] = (), *, plan_each: bool = False
    ) -> list[Any]:
        return self._conn.execute(statement, params).fetchall()

    def run(self, statement: str, params: Sequence[Any] = ()) -> int:
        return self._conn.execute(statement, params).rowcount

    def many(self, statement: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            self._conn.executemany(statement, rows)

    def each(self, statement: str, rows: Sequence[Sequence[Any]]) -> list[list[Any]]:
        return [self._conn.execute(statement, row).fetchall() for row in rows]


class SqliteOutbox(_Outbox):
    """`data_dir/outbound.db`: one connection shared under a lock (the dispatcher's thread,
    the API's and the CLI's); other processes wait on SQLite's write lock."""

    def __init__(self, path: Path, *, busy_timeout_s: float = BUSY_TIMEOUT_S) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self._conn = sqlite3.connect(
                path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
            )
            self._conn.execute("PRAGMA journal_mode=WAL")
            # A delivery acknowledged to the fan-out survives a power cut, not just a crash.
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute("BEGIN IMMEDIATE")
            for statement in _TABLES:
                self._conn.execute(statement.format(**_SQLITE_TYPES))
            self._conn.execute("COMMIT")
        except sqlite3.Error as e:
            raise StoreUnavailable(f"outbox store {path} cannot be opened: {e}") from e

    @contextmanager
    def _tx(self, *, write: bool) -> Iterator[_Tx]:
        with self._lock:
            try:
                # A write takes SQLite's write lock first, so a claim reads what it updates.
                self._conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                try:
                    yield _SqliteTx(self._conn)
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise
                self._conn.execute("COMMIT")
            except sqlite3.Error as e:
                raise StoreUnavailable(f"outbox store {self.path}: {e}") from e

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class _PgTx:
    def __init__(self, cursor: psycopg.Cursor[Any]) -> None:
        self._cursor = cursor

    def rows(
        self, statement: str, params: Sequence[Any] = (), *, plan_each: bool = False
    ) -> list[Any]:
        prepare = False if plan_each else None
        return self._cursor.execute(translate(statement), params, prepare=prepare).fetchall()

    def run(self, statement: str, params: Sequence[Any] = ()) -> int:
        return self._cursor.execute(translate(statement), params).rowcount

    def many(self, statement: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            self._cursor.executemany(translate(statement), rows)

    def each(self, statement: str, rows: Sequence[Sequence[Any]]) -> list[list[Any]]:
        if not rows:
            return []
        # One round trip (a pipeline) for the lot, each statement's rows kept apart.
        self._cursor.executemany(translate(statement), rows, returning=True)
        found = [self._cursor.fetchall()]
        while self._cursor.nextset():  # `results()` is psycopg 3.3's; `nextset` is 3.1's
            found.append(self._cursor.fetchall())
        return found


class PostgresOutbox(_Outbox):
    """The schema `billhook_outbound`; one autocommit connection under a lock, opened (and
    the schema created) on first use and reopened when the database dropped it, so a
    server starts while the database is down, as with the log."""

    _claim_lock = " FOR UPDATE OF d SKIP LOCKED"

    def __init__(self, url: str, *, busy_timeout_s: float = BUSY_TIMEOUT_S) -> None:
        ddl = "; ".join(s.format(**_PG_TYPES) for s in _TABLES)
        self._db = SchemaConnection(
            url, OUTBOUND_SCHEMA, ddl, "outbox store", timeout_s=busy_timeout_s
        )

    @contextmanager
    def _tx(self, *, write: bool) -> Iterator[_Tx]:
        with self._db.lock:
            conn = self._db.connection()
            try:
                with conn.transaction(), conn.cursor() as cursor:
                    yield _PgTx(cursor)
            except psycopg.Error as e:
                raise self._db.unavailable(e) from e

    def close(self) -> None:
        self._db.close()


def outbound_path(settings: Settings) -> Path:
    return settings.data_dir / "outbound.db"


def open_outbox(settings: Settings) -> SqliteOutbox | PostgresOutbox:
    """The outbox `settings` name: `[storage] url`'s database, else `data_dir/outbound.db`."""
    if settings.storage_url:
        return PostgresOutbox(settings.storage_url.reveal())
    return SqliteOutbox(outbound_path(settings))
