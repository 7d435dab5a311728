"""Projections in PostgreSQL: the SQLite store's statements, in a schema of their own.

:class:`PostgresProjectionStore` is :class:`~billhook.projections.store.ProjectionStore`
over a :class:`PgConnection`, which takes the store's sqlite3-style calls
(`?` placeholders, transactions opened and closed by statement). What differs:

- an apply locks the checkpoint row (`SELECT … FOR UPDATE`): projectors on
  several hosts queue there, and the second one finds the batch applied;
- each apply and each swap sends a NOTIFY; every store's :class:`Listener`
  hears it and changes :meth:`~PostgresProjectionStore.data_version`, so the
  API's cache on every host drops what a commit elsewhere made stale;
- a replay builds a shadow schema and swaps it in by renaming schemas in one
  transaction, under ACCESS EXCLUSIVE locks on the live tables: a reader on
  any host sees the old state or the new one, never a mix.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
import psycopg.errors
from psycopg import sql as pgsql
from psycopg.pq import TransactionStatus

from billhook.config import Settings
from billhook.domain.facts import LinkFact, SubscriptionFact
from billhook.domain.records import StoredEvent
from billhook.domain.resolver import WorkspaceFacts
from billhook.errors import StoreUnavailable
from billhook.log.postgres import _reason, create_schema, session_settings
from billhook.projections import codec
from billhook.projections.store import (
    DEFAULT_BUSY_TIMEOUT_S,
    PROJECTION_VERSION,
    TABLES,
    ProjectionStore,
    SqliteFacts,
)
from billhook.providers.decode import decode, understands

logger = logging.getLogger(__name__)

# The live projection's schema; a replay builds beside it in `<this>_replay[_<pid>]`.
PROJECTIONS_SCHEMA = "billhook_projections"
# Where applies and swaps announce a commit (payload: the checkpoint seq).
CHANNEL = "billhook_projections"
# How long the listener waits for a notification before checking it should stop.
LISTEN_POLL_S = 0.25
# How long a swap waits for the live tables' readers and projector to let go.
SWAP_LOCK_TIMEOUT_S = 60
# A schema name billhook makes: lowercase letters, digits and underscores.
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")

SCHEMA = """
CREATE SCHEMA IF NOT EXISTS {schema};
SET LOCAL search_path = {schema};
CREATE TABLE IF NOT EXISTS subscriptions (
    provider text COLLATE "C" NOT NULL, id text COLLATE "C" NOT NULL,
    from_seq bigint NOT NULL, to_seq bigint,
    workspace text COLLATE "C", customer text COLLATE "C", fact text NOT NULL,
    PRIMARY KEY (provider, id, from_seq)
);
CREATE UNIQUE INDEX IF NOT EXISTS subscriptions_current
    ON subscriptions (provider, id) WHERE to_seq IS NULL;
CREATE INDEX IF NOT EXISTS subscriptions_workspace ON subscriptions (workspace, to_seq);
CREATE INDEX IF NOT EXISTS subscriptions_customer ON subscriptions (provider, customer, to_seq);
CREATE TABLE IF NOT EXISTS links (
    provider text COLLATE "C" NOT NULL, customer text COLLATE "C" NOT NULL,
    from_seq bigint NOT NULL, to_seq bigint,
    workspace text COLLATE "C" NOT NULL, time_us bigint NOT NULL, seq bigint NOT NULL,
    PRIMARY KEY (provider, customer, from_seq)
);
CREATE UNIQUE INDEX IF NOT EXISTS links_current ON links (provider, customer) WHERE to_seq IS NULL;
CREATE INDEX IF NOT EXISTS links_workspace ON links (workspace, to_seq);
CREATE TABLE IF NOT EXISTS overrides (
    workspace text COLLATE "C" NOT NULL, kind text COLLATE "C" NOT NULL,
    from_seq bigint NOT NULL, to_seq bigint, fact text NOT NULL,
    PRIMARY KEY (workspace, kind, from_seq)
);
CREATE UNIQUE INDEX IF NOT EXISTS overrides_current
    ON overrides (workspace, kind) WHERE to_seq IS NULL;
CREATE TABLE IF NOT EXISTS enforcement (
    from_seq bigint PRIMARY KEY, to_seq bigint, fact text NOT NULL
);
CREATE TABLE IF NOT EXISTS endpoints (
    id text COLLATE "C" PRIMARY KEY, from_seq bigint NOT NULL, fact text NOT NULL
);
CREATE TABLE IF NOT EXISTS history (
    workspace text COLLATE "C" NOT NULL, seq bigint NOT NULL, at text NOT NULL,
    provider text NOT NULL, type text NOT NULL, event_id text NOT NULL,
    tier text NOT NULL, source text NOT NULL, status text NOT NULL,
    PRIMARY KEY (workspace, seq)
);
CREATE TABLE IF NOT EXISTS quarantine (
    seq bigint PRIMARY KEY, provider text NOT NULL, event_id text NOT NULL,
    type text NOT NULL, error text NOT NULL,
    workspace text COLLATE "C", subject_provider text COLLATE "C", customer text COLLATE "C",
    subscription text COLLATE "C", cleared_seq bigint
);
CREATE INDEX IF NOT EXISTS quarantine_workspace ON quarantine (workspace, seq);
CREATE INDEX IF NOT EXISTS quarantine_customer ON quarantine (subject_provider, customer, seq);
CREATE INDEX IF NOT EXISTS quarantine_subscription
    ON quarantine (subject_provider, subscription, seq);
CREATE TABLE IF NOT EXISTS changes (
    seq bigint NOT NULL, k integer NOT NULL, workspace text COLLATE "C", at text NOT NULL,
    cause text NOT NULL, state text NOT NULL,
    PRIMARY KEY (seq, k)
);
CREATE INDEX IF NOT EXISTS changes_workspace ON changes (workspace, seq, k);
CREATE TABLE IF NOT EXISTS timers (
    workspace text COLLATE "C" PRIMARY KEY, due_us bigint NOT NULL
);
CREATE INDEX IF NOT EXISTS timers_due ON timers (due_us, workspace);
CREATE TABLE IF NOT EXISTS checkpoint (
    id integer PRIMARY KEY CHECK (id = 1), seq bigint NOT NULL, version integer NOT NULL,
    skipped bigint NOT NULL
);
INSERT INTO checkpoint (id, seq, version, skipped) VALUES (1, 0, {version}, 0)
    ON CONFLICT (id) DO NOTHING;
"""
# A workspace's current facts in one statement (one snapshot, one round trip): the
# checkpoint, the enforcement mode, its subscriptions (its own, then through its
# customers' links), its overrides and its standing quarantined events. The statements of
# projections/store.py's read_facts and read_quarantined for `as_of` None, tagged by kind.
CURRENT_FACTS = """
SELECT 'c', seq::text FROM checkpoint
UNION ALL (SELECT 'e', fact FROM enforcement WHERE to_seq IS NULL ORDER BY from_seq DESC LIMIT 1)
UNION ALL SELECT 's', fact FROM (
    SELECT s.fact FROM subscriptions s WHERE s.workspace = %(w)s AND s.to_seq IS NULL
    UNION SELECT s.fact FROM links l JOIN subscriptions s
        ON s.provider = l.provider AND s.customer = l.customer
        WHERE l.workspace = %(w)s AND l.to_seq IS NULL AND s.workspace IS NULL
        AND s.to_seq IS NULL
) AS subs
UNION ALL SELECT 'o', o.fact FROM overrides o WHERE o.workspace = %(w)s AND o.to_seq IS NULL
UNION ALL SELECT 'q', standing.seq::text FROM (
    SELECT q.seq FROM quarantine q WHERE q.workspace = %(w)s AND q.cleared_seq IS NULL
    UNION SELECT q.seq FROM links l JOIN quarantine q
        ON q.subject_provider = l.provider AND q.customer = l.customer
        WHERE l.workspace = %(w)s AND l.to_seq IS NULL
        AND q.workspace IS NULL AND q.cleared_seq IS NULL
    UNION SELECT q.seq FROM subscriptions s JOIN quarantine q
        ON q.subject_provider = s.provider AND q.subscription = s.id
        WHERE s.workspace = %(w)s AND s.to_seq IS NULL
        AND q.workspace IS NULL AND q.cleared_seq IS NULL
    UNION SELECT q.seq FROM links l JOIN subscriptions s
        ON s.provider = l.provider AND s.customer = l.customer
        JOIN quarantine q ON q.subject_provider = s.provider AND q.subscription = s.id
        WHERE l.workspace = %(w)s AND l.to_seq IS NULL AND s.workspace IS NULL
        AND s.to_seq IS NULL AND q.workspace IS NULL AND q.cleared_seq IS NULL
) AS standing
"""
# What an apply reads ahead (PostgresProjectionStore._prefetch).
# Each prefetch probes an index once per key (a LATERAL subquery with LIMIT, which the planner
# cannot turn into a join): a join or `= ANY` lets a planner that has not analyzed a young,
# fast-growing table (a replay's new schema, a new deployment) scan all of it per batch.
PREFETCH_SUBSCRIPTIONS = (
    "SELECT k.provider, k.id, s.fact FROM unnest(%s::text[], %s::text[]) AS k(provider, id)"
    " CROSS JOIN LATERAL (SELECT fact FROM subscriptions s WHERE s.provider = k.provider"
    " AND s.id = k.id AND s.to_seq IS NULL LIMIT 1) s"
)
PREFETCH_LINKS = (
    "SELECT k.provider, k.customer, l.workspace, l.time_us, l.seq"
    " FROM unnest(%s::text[], %s::text[]) AS k(provider, customer)"
    " CROSS JOIN LATERAL (SELECT workspace, time_us, seq FROM links l"
    " WHERE l.provider = k.provider AND l.customer = k.customer AND l.to_seq IS NULL LIMIT 1) l"
)
PREFETCH_HISTORY = (
    "SELECT k.workspace, h.tier, h.source, h.status FROM unnest(%s::text[]) AS k(workspace)"
    " CROSS JOIN LATERAL (SELECT tier, source, status FROM history h"
    " WHERE h.workspace = k.workspace ORDER BY h.seq DESC LIMIT 1) h"
)
PREFETCH_CHANGES = (
    "SELECT k.workspace, c.state FROM unnest(%s::text[]) AS k(workspace)"
    " CROSS JOIN LATERAL (SELECT state FROM changes c"
    " WHERE c.workspace = k.workspace ORDER BY c.seq DESC, c.k DESC LIMIT 1) c"
)
PREFETCH_TIMERS = (
    "SELECT k.workspace, t.due_us FROM unnest(%s::text[]) AS k(workspace)"
    " CROSS JOIN LATERAL (SELECT due_us FROM timers t WHERE t.workspace = k.workspace LIMIT 1) t"
)


@dataclass(frozen=True)
class PgSchema:
    """Where a PostgreSQL projection lives: a database and a schema in it."""

    url: str = field(repr=False)  # may hold a password
    schema: str = PROJECTIONS_SCHEMA

    def __post_init__(self) -> None:
        if not _SCHEMA_NAME.fullmatch(self.schema):
            raise ValueError(f"not a schema name billhook makes: {self.schema!r}")

    def __str__(self) -> str:
        return f"PostgreSQL schema {self.schema}"

    def sibling(self, schema: str) -> PgSchema:
        return PgSchema(self.url, schema)


@functools.lru_cache(maxsize=512)
def translate(statement: str) -> str:
    """A statement of the SQLite store, as PostgreSQL reads it.

    Placeholders become `%s` (no statement of the store holds a `?` or a `%`
    in a literal); `BEGIN IMMEDIATE` (SQLite's write lock) a plain BEGIN, the
    apply locks the checkpoint row instead; `CROSS JOIN … ON`, SQLite's
    join-order hint, an inner JOIN, which PostgreSQL's planner orders itself.
    """
    if statement == "BEGIN IMMEDIATE":
        return "BEGIN"
    return statement.replace("?", "%s").replace(" CROSS JOIN ", " JOIN ")


class PgConnection:
    """One psycopg connection under the sqlite3-style calls of the projection store.

    Autocommit, so BEGIN, SAVEPOINT and COMMIT are statements as in SQLite;
    the search path is the projection's schema, so statements name tables
    bare. A connection that broke (the database restarted) is replaced on the
    next call: the store recovers without a restart.
    """

    def __init__(self, location: PgSchema, *, timeout_s: float) -> None:
        self.location = location
        self._timeout_s = timeout_s
        self._conn: psycopg.Connection[Any] | None = None
        # A write was refused as read-only: replace the session once its transaction ended.
        self._read_only = False

    def _connection(self) -> psycopg.Connection[Any]:
        conn = self._conn
        # A session opened while the database was read-only (`default_transaction_read_only`,
        # a standby) stays so after the database is writable again; a fresh one does not.
        stale = self._read_only and (
            conn is None or conn.info.transaction_status == TransactionStatus.IDLE
        )
        if conn is None or conn.closed or conn.broken or stale:
            if conn is not None:
                with contextlib.suppress(psycopg.Error):
                    conn.close()
            self._conn = None
            self._read_only = False
            conn = psycopg.connect(
                self.location.url, autocommit=True, connect_timeout=max(1, int(self._timeout_s))
            )
            session_settings(conn, lock_timeout_s=self._timeout_s)
            conn.execute(
                pgsql.SQL("SET search_path = {}").format(pgsql.Identifier(self.location.schema))
            )
            self._conn = conn
        return conn

    @property
    def raw(self) -> psycopg.Connection[Any]:
        """The psycopg connection itself, (re)opened if need be."""
        return self._connection()

    def execute(self, statement: str, parameters: Sequence[Any] = (), /) -> psycopg.Cursor[Any]:
        conn = self._connection()
        try:
            return conn.execute(translate(statement).encode(), parameters)
        except psycopg.errors.ReadOnlySqlTransaction:
            self._read_only = True
            raise

    def executemany(self, statement: str, rows: Iterable[Sequence[Any]], /) -> None:
        with self._connection().cursor() as cursor:
            try:
                cursor.executemany(translate(statement).encode(), rows)
            except psycopg.errors.ReadOnlySqlTransaction:
                self._read_only = True
                raise

    def copy_rows(self, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
        """Write `rows` into `table` with COPY (a rebuild's bulk writes)."""
        statement = pgsql.SQL("COPY {} ({}) FROM STDIN").format(
            pgsql.Identifier(table), pgsql.SQL(", ").join(map(pgsql.Identifier, columns))
        )
        with self._connection().cursor() as cursor, cursor.copy(statement) as copy:
            for row in rows:
                copy.write_row(row)

    @contextlib.contextmanager
    def pipeline(self) -> Iterator[None]:
        """psycopg's pipeline mode on this connection: statements are sent without
        waiting; a fetch, or the end of the block, waits for what is outstanding (and
        raises what the database refused, a read-only session included)."""
        try:
            with self._connection().pipeline():
                yield
        except psycopg.errors.ReadOnlySqlTransaction:
            self._read_only = True
            raise

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
            self._conn = None


def create(location: PgSchema, *, timeout_s: float = DEFAULT_BUSY_TIMEOUT_S) -> None:
    """Create the projection schema at `location` if it is not there (this code's version)."""
    statements = SCHEMA.format(schema=location.schema, version=PROJECTION_VERSION)
    try:
        with psycopg.connect(location.url, autocommit=True) as conn:
            session_settings(conn, lock_timeout_s=timeout_s)
            create_schema(conn, statements)
    except psycopg.Error as e:
        raise StoreUnavailable(f"cannot open the projections in {location}: {_reason(e)}") from e


def exists(location: PgSchema) -> bool:
    try:
        with psycopg.connect(location.url, autocommit=True) as conn:
            row = conn.execute(
                "SELECT 1 FROM pg_namespace WHERE nspname = %s", (location.schema,)
            ).fetchone()
    except psycopg.Error as e:
        raise StoreUnavailable(f"cannot reach {location}: {_reason(e)}") from e
    return row is not None


def drop(location: PgSchema) -> None:
    """Drop the schema at `location` and everything in it, if it is there."""
    if location.schema == PROJECTIONS_SCHEMA:
        raise StoreUnavailable("the live projection is never dropped")
    try:
        with psycopg.connect(location.url, autocommit=True) as conn:
            conn.execute(
                pgsql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                    pgsql.Identifier(location.schema)
                )
            )
    except psycopg.Error as e:
        raise StoreUnavailable(f"cannot drop {location}: {_reason(e)}") from e


def pg_storage_fault(error: Exception) -> bool:
    """Whether `error` says the database cannot be used right now (retry the batch),
    rather than that the event being applied holds values it cannot store.

    Connection loss, timeouts, lock waits, a full disk, shutdown (OperationalError),
    a read-only transaction and other transaction-state errors (InternalError).
    Integrity, data and programming errors come from the values.
    """
    return isinstance(error, psycopg.OperationalError | psycopg.InternalError)


class Listener:
    """Counts the projection commits announced on :data:`CHANNEL`, from a thread of its own.

    While its connection is down (the database restarted), :meth:`version`
    changes on every call: the cache then trusts nothing, the polling
    fall-back, until the listener is connected again.
    """

    def __init__(self, url: str) -> None:
        self._url = url
        self._count = itertools.count(1)
        self._version = 0
        self._connected = False
        self._stopping = threading.Event()
        self._conn: psycopg.Connection[Any] | None = None
        self._thread = threading.Thread(target=self._run, name="billhook-listen", daemon=True)
        self._thread.start()

    def version(self) -> int:
        if not self._connected:
            self._version = next(self._count)
        return self._version

    def bump(self) -> None:
        self._version = next(self._count)

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=LISTEN_POLL_S * 3)

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                with psycopg.connect(self._url, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(pgsql.SQL("LISTEN {}").format(pgsql.Identifier(CHANNEL)))
                    self._connected = True
                    self.bump()  # commits made while it was away
                    while not self._stopping.is_set():
                        for _ in conn.notifies(timeout=LISTEN_POLL_S):
                            self.bump()
            except psycopg.Error as e:
                logger.warning("listen", extra={"fields": {"error": _reason(e)}})
            finally:
                self._connected = False
            self._stopping.wait(LISTEN_POLL_S)


class PostgresProjectionStore(ProjectionStore):
    """The projection store in a PostgreSQL schema (see the module's docstring)."""

    backend = "postgresql"
    _errors = (psycopg.Error,)
    _BEGIN_WRITE = "BEGIN"
    _BEGIN_READ = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
    _CHECKPOINT_FOR_APPLY = "SELECT seq, skipped FROM checkpoint FOR UPDATE"
    _FAST_APPLY = True

    def __init__(
        self,
        location: PgSchema,
        settings: Settings,
        *,
        busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
        before_commit: Callable[[], None] | None = None,
        listen: bool = False,
    ) -> None:
        """`listen`: keep a :class:`Listener`, for a store whose reads are cached."""
        self.location = location
        self._settings = settings
        self._before_commit = before_commit
        self._busy_timeout_s = busy_timeout_s
        self._lock = threading.Lock()
        create(location, timeout_s=busy_timeout_s)
        self.conn = PgConnection(location, timeout_s=busy_timeout_s)
        self._listener = Listener(location.url) if listen else None
        self._seen_checkpoint = -1
        self._uncached = itertools.count(1)

    def close(self) -> None:
        if self._listener is not None:
            self._listener.stop()
        super().close()

    def _storage_fault(self, error: Exception) -> bool:
        return pg_storage_fault(error)

    def _prefetch(self, facts: SqliteFacts, events: Sequence[StoredEvent]) -> None:
        """The current subscription and link of every id the batch's events name, in two
        statements: most events then need no read of their own before their writes."""
        subs: set[tuple[str, str]] = set()
        links: set[tuple[str, str]] = set()
        for event in events:
            if not understands(event):
                continue
            try:
                decoded = decode(event, self._settings.workspace_key)
            except Exception:  # noqa: S112 - applying it will say what is wrong with it
                continue
            for fact in decoded:
                if isinstance(fact, SubscriptionFact):
                    subs.add((fact.provider, fact.id))
                    if fact.customer:
                        links.add((fact.provider, fact.customer))
                elif isinstance(fact, LinkFact):
                    links.add((fact.provider, fact.customer))
        if not subs and not links:
            return
        conn = self.conn.raw
        found_subs: dict[tuple[str, str], SubscriptionFact | None] = dict.fromkeys(subs)
        found_links: dict[tuple[str, str], LinkFact | None] = dict.fromkeys(links)
        # Both statements go out before either answer is read: in the fast path's pipeline,
        # one round trip for the two (and one for the three below).
        rows_s = rows_l = None
        if subs:
            providers, ids = zip(*sorted(subs), strict=True)
            rows_s = conn.execute(PREFETCH_SUBSCRIPTIONS, (list(providers), list(ids)))
        if links:
            providers, customers = zip(*sorted(links), strict=True)
            rows_l = conn.execute(PREFETCH_LINKS, (list(providers), list(customers)))
        for provider, id, fact in rows_s or ():
            found_subs[(provider, id)] = codec.subscription(fact)
        for provider, customer, workspace, time_us, seq in rows_l or ():
            found_links[(provider, customer)] = LinkFact(
                provider, customer, workspace, time_us, seq
            )
        workspaces = {f.workspace for f in found_subs.values() if f is not None and f.workspace}
        workspaces |= {link.workspace for link in found_links.values() if link is not None}
        facts.seed(found_subs, found_links)
        if workspaces:
            # Whose answers the batch will resolve: their last history row and last change.
            named = sorted(workspaces)
            rows_h = conn.execute(PREFETCH_HISTORY, (named,))
            rows_c = conn.execute(PREFETCH_CHANGES, (named,))
            rows_t = conn.execute(PREFETCH_TIMERS, (named,))
            history = dict.fromkeys(named)
            for workspace, tier, source, status in rows_h:
                history[workspace] = (tier, source, status)
            changes = dict.fromkeys(named)
            for workspace, state in rows_c:
                changes[workspace] = state
            timers: dict[str, int | None] = dict.fromkeys(named)
            for workspace, due_us in rows_t:
                timers[workspace] = due_us
            facts.seed_last(history, changes, timers)

    def _batch(self, guarded: bool) -> contextlib.AbstractContextManager[object]:
        """The fast path runs in a pipeline: writes go out without waiting for their
        answers, so an event costs a round trip per read, not per statement."""
        return contextlib.nullcontext() if guarded else self.conn.pipeline()

    def _announce(self, conn: Any, checkpoint: int) -> None:
        conn.execute("SELECT pg_notify(?, ?)", (CHANNEL, str(checkpoint)))

    def workspace_facts(self, workspace: str, as_of_seq: int | None = None) -> WorkspaceFacts:
        """As the SQLite store's; the current facts (`as_of_seq` None, every read of the
        API) in one statement, which sees one snapshot: no transaction to open and close."""
        if as_of_seq is not None:
            return super().workspace_facts(workspace, as_of_seq)
        with self._reading() as conn:
            rows = conn.raw.execute(CURRENT_FACTS, {"w": workspace}).fetchall()
        found: dict[str, list[str]] = {"c": [], "e": [], "s": [], "o": [], "q": []}
        for kind, value in rows:
            found[kind].append(value)
        [checkpoint] = found["c"]
        self._saw_checkpoint(int(checkpoint))
        return WorkspaceFacts(
            workspace_id=workspace,
            subscriptions=tuple(codec.subscription(f) for f in sorted(found["s"])),
            overrides=tuple(codec.override(f) for f in sorted(found["o"])),
            enforcement=(
                codec.enforcement(found["e"][0]).mode if found["e"] else self._settings.enforcement
            ),
            as_of_seq=int(checkpoint),
            quarantined=tuple(sorted(int(q) for q in found["q"])),
        )

    def checkpoint(self) -> int:
        seq = super().checkpoint()
        self._saw_checkpoint(seq)
        return seq

    def _saw_checkpoint(self, seq: int) -> None:
        if seq != self._seen_checkpoint:
            # A reader that waited for this seq must not be answered from older cache
            # entries, even if the notification is still on its way to the listener.
            self._seen_checkpoint = seq
            if self._listener is not None:
                self._listener.bump()

    def data_version(self) -> int:
        """Changes whenever a projection commit was announced (or, with no listener or
        while it is disconnected, on every call)."""
        if self._listener is None:
            return next(self._uncached)
        return self._listener.version()

    def copy_over(self, live: Any, *, before_commit: Callable[[], None] | None = None) -> bool:
        """Swap this store's schema in for `live`'s, in one transaction, provided this
        store has applied at least as far as `live` has (as the SQLite store's copy).

        Returns False, changing nothing, when `live` is ahead (catch up, retry).
        """
        if not isinstance(live, PgSchema):
            raise StoreUnavailable(f"cannot swap {self.location} into {live}")
        ident = pgsql.Identifier
        old = ident(f"{live.schema}_old")
        with self._lock:
            try:
                with psycopg.connect(live.url, autocommit=True) as conn:
                    session_settings(conn, lock_timeout_s=SWAP_LOCK_TIMEOUT_S)
                    with conn.transaction():
                        for table in TABLES:
                            conn.execute(
                                pgsql.SQL("LOCK TABLE {}.{} IN ACCESS EXCLUSIVE MODE").format(
                                    ident(live.schema), ident(table)
                                )
                            )
                        ours = _checkpoint_seq(conn, self.location.schema)
                        theirs = _checkpoint_seq(conn, live.schema)
                        if ours < theirs:
                            raise _Behind
                        conn.execute(pgsql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(old))
                        conn.execute(
                            pgsql.SQL("ALTER SCHEMA {} RENAME TO {}").format(
                                ident(live.schema), old
                            )
                        )
                        conn.execute(
                            pgsql.SQL("ALTER SCHEMA {} RENAME TO {}").format(
                                ident(self.location.schema), ident(live.schema)
                            )
                        )
                        conn.execute(pgsql.SQL("DROP SCHEMA {} CASCADE").format(old))
                        conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, str(ours)))
                        if before_commit is not None:
                            before_commit()
            except _Behind:
                return False
            except psycopg.Error as e:
                raise StoreUnavailable(
                    f"swapping {self.location} into {live} failed: {_reason(e)}"
                ) from e
        # This store's schema is the live one now; its connection still names the old one.
        self.conn.close()
        return True


class _Behind(Exception):
    """The live projection is ahead of the shadow: roll the swap back."""


def _checkpoint_seq(conn: psycopg.Connection[Any], schema: str) -> int:
    row = conn.execute(
        pgsql.SQL("SELECT seq FROM {}.checkpoint").format(pgsql.Identifier(schema))
    ).fetchone()
    return int(row[0]) if row else 0
