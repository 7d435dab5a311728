"""`projections.db`: versioned facts, the checkpoint, history and quarantine.

Every fact row carries `from_seq`/`to_seq`: a new version closes the old one,
nothing is overwritten, so the state after any seq can be read back (`as_of`).
A batch of events, its history rows and the checkpoint commit in one
transaction, which makes applying idempotent: a batch is applied whole or not
at all, and re-running from the checkpoint is a no-op.

A quarantined event keeps whom it is about (the workspace it names, or its
customer and subscription ids); which workspace that is, is decided when a
workspace is read, through the links as they stood, as for subscriptions.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

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
from billhook.errors import StoreUnavailable
from billhook.projections import codec
from billhook.projections.applier import (
    apply_event,
    blames_the_event,
    fire_timers,
    log_quarantined,
    quarantine,
    unapplied_reason,
)
from billhook.projections.changes import START, ChangeRow
from billhook.providers.billhook import THIN_UNFETCHED

# Bumped whenever reducers or the schema change what a replay would produce.
PROJECTION_VERSION = 6
DEFAULT_BUSY_TIMEOUT_S = 5.0

SCHEMA = """
CREATE TABLE IF NOT EXISTS subscriptions (
    provider TEXT NOT NULL, id TEXT NOT NULL, from_seq INTEGER NOT NULL, to_seq INTEGER,
    workspace TEXT, customer TEXT, fact TEXT NOT NULL,
    PRIMARY KEY (provider, id, from_seq)
);
-- Partial indexes on current versions: finding "the current row" must not scan history.
CREATE UNIQUE INDEX IF NOT EXISTS subscriptions_current
    ON subscriptions (provider, id) WHERE to_seq IS NULL;
CREATE INDEX IF NOT EXISTS subscriptions_workspace ON subscriptions (workspace, to_seq);
CREATE INDEX IF NOT EXISTS subscriptions_customer ON subscriptions (provider, customer, to_seq);
CREATE TABLE IF NOT EXISTS links (
    provider TEXT NOT NULL, customer TEXT NOT NULL, from_seq INTEGER NOT NULL, to_seq INTEGER,
    workspace TEXT NOT NULL, time_us INTEGER NOT NULL, seq INTEGER NOT NULL,
    PRIMARY KEY (provider, customer, from_seq)
);
CREATE UNIQUE INDEX IF NOT EXISTS links_current
    ON links (provider, customer) WHERE to_seq IS NULL;
CREATE INDEX IF NOT EXISTS links_workspace ON links (workspace, to_seq);
CREATE TABLE IF NOT EXISTS overrides (
    workspace TEXT NOT NULL, kind TEXT NOT NULL, from_seq INTEGER NOT NULL, to_seq INTEGER,
    fact TEXT NOT NULL,
    PRIMARY KEY (workspace, kind, from_seq)
);
CREATE UNIQUE INDEX IF NOT EXISTS overrides_current
    ON overrides (workspace, kind) WHERE to_seq IS NULL;
CREATE TABLE IF NOT EXISTS enforcement (
    from_seq INTEGER PRIMARY KEY, to_seq INTEGER, fact TEXT NOT NULL
);
-- Outbound endpoints added through the admin API, as they now stand: a removal deletes the
-- row (the log keeps the history), an addition of the same id replaces it.
CREATE TABLE IF NOT EXISTS endpoints (
    id TEXT PRIMARY KEY, from_seq INTEGER NOT NULL, fact TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS history (
    workspace TEXT NOT NULL, seq INTEGER NOT NULL, at TEXT NOT NULL,
    provider TEXT NOT NULL, type TEXT NOT NULL, event_id TEXT NOT NULL,
    tier TEXT NOT NULL, source TEXT NOT NULL, status TEXT NOT NULL,
    PRIMARY KEY (workspace, seq)
);
CREATE TABLE IF NOT EXISTS quarantine (
    seq INTEGER PRIMARY KEY, provider TEXT NOT NULL, event_id TEXT NOT NULL,
    type TEXT NOT NULL, error TEXT NOT NULL,
    workspace TEXT, subject_provider TEXT, customer TEXT, subscription TEXT,
    cleared_seq INTEGER
);
-- The entitlement-change feed (projections/changes.py), by cursor (seq, k); workspace NULL:
-- the enforcement mode changed.
CREATE TABLE IF NOT EXISTS changes (
    seq INTEGER NOT NULL, k INTEGER NOT NULL, workspace TEXT, at TEXT NOT NULL,
    cause TEXT NOT NULL, state TEXT NOT NULL,
    PRIMARY KEY (seq, k)
);
CREATE INDEX IF NOT EXISTS changes_workspace ON changes (workspace, seq, k);
-- When each workspace's answer next changes by time alone.
CREATE TABLE IF NOT EXISTS timers (workspace TEXT PRIMARY KEY, due_us INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS timers_due ON timers (due_us, workspace);
CREATE TABLE IF NOT EXISTS checkpoint (
    id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL, version INTEGER NOT NULL,
    skipped INTEGER NOT NULL
);
INSERT OR IGNORE INTO checkpoint (id, seq, version, skipped) VALUES (1, 0, {version}, 0);
"""
# Columns added since a table was first created: (table, column, type). A store of an
# older version gains them when opened, so that a replay's swap can copy into it.
ADDED_COLUMNS = (
    ("quarantine", "workspace", "TEXT"),
    ("quarantine", "subject_provider", "TEXT"),
    ("quarantine", "customer", "TEXT"),
    ("quarantine", "subscription", "TEXT"),
    ("quarantine", "cleared_seq", "INTEGER"),
)
# Indexes on added columns, by name, created once the columns exist.
ADDED_INDEXES = {
    "quarantine_workspace": "ON quarantine (workspace, seq)",
    "quarantine_customer": "ON quarantine (subject_provider, customer, seq)",
    "quarantine_subscription": "ON quarantine (subject_provider, subscription, seq)",
}


class Connection(Protocol):
    """What the statements here need of a connection: sqlite3's, or
    :class:`billhook.projections.postgres.PgConnection` under PostgreSQL."""

    def execute(self, sql: str, parameters: Any = ..., /) -> Any: ...


def _live(alias: str, as_of: int | None) -> tuple[str, tuple[int, ...]]:
    """SQL for "the version of this row that stood right after `as_of`" (None: now)."""
    if as_of is None:
        return f"{alias}.to_seq IS NULL", ()
    return f"{alias}.from_seq <= ? AND ({alias}.to_seq IS NULL OR {alias}.to_seq > ?)", (
        as_of,
        as_of,
    )


@dataclass(frozen=True)
class Applied:
    """What one call to :meth:`ProjectionStore.apply` did."""

    last_seq: int
    applied: int
    skipped: int
    quarantined: int


@dataclass(frozen=True)
class HistoryRow:
    seq: int
    at: str
    provider: str
    type: str
    event_id: str
    tier: str
    source: str
    status: str


@dataclass(frozen=True)
class QuarantineRow:
    seq: int
    provider: str
    event_id: str
    type: str
    error: str


def read_facts(
    conn: Connection,
    settings: Settings,
    workspace: str,
    as_of: int | None,
    seq: int,
    *,
    with_quarantine: bool = True,
    enforcement: str | None = None,
) -> WorkspaceFacts:
    """The facts about `workspace`: current (`as_of` None) or right after `as_of`.

    `with_quarantine=False` leaves out the quarantined events about it, which
    change no tier, source or status (what the history records). `enforcement`:
    the current mode, when the caller knows it (a read saved).
    """
    s_live, s_params = _live("s", as_of)
    l_live, l_params = _live("l", as_of)
    o_live, o_params = _live("o", as_of)
    # A subscription's own workspace metadata wins over its customer's link.
    # CROSS JOIN fixes the join order (SQLite's documented hint): from the workspace's
    # few links into subscriptions by customer, never a scan of every unlinked subscription.
    # One statement for subscriptions and overrides: one round trip where that counts.
    rows = conn.execute(
        f"SELECT 's', s.fact FROM subscriptions s WHERE s.workspace = ? AND {s_live}"  # noqa: S608
        " UNION SELECT 's', s.fact FROM links l CROSS JOIN subscriptions s"
        " ON s.provider = l.provider AND s.customer = l.customer"
        f" WHERE l.workspace = ? AND {l_live} AND s.workspace IS NULL AND {s_live}"
        f" UNION ALL SELECT 'o', o.fact FROM overrides o WHERE o.workspace = ? AND {o_live}",
        (workspace, *s_params, workspace, *l_params, *s_params, workspace, *o_params),
    ).fetchall()
    # In the facts' own order, whatever order the database's UNION produced.
    subscriptions = sorted(row[1] for row in rows if row[0] == "s")
    overrides = sorted(row[1] for row in rows if row[0] == "o")
    return WorkspaceFacts(
        workspace_id=workspace,
        subscriptions=tuple(codec.subscription(fact) for fact in subscriptions),
        overrides=tuple(codec.override(fact) for fact in overrides),
        enforcement=enforcement or read_enforcement(conn, settings, as_of),
        as_of_seq=seq,
        quarantined=read_quarantined(conn, workspace, as_of, seq) if with_quarantine else (),
    )


def read_quarantined(
    conn: Connection, workspace: str, as_of: int | None, seq: int
) -> tuple[int, ...]:
    """The seqs (up to `seq`) of quarantined events about `workspace`: those naming it,
    else those whose customer, or whose subscription, was linked to it (`as_of` as in
    :func:`read_facts`)."""
    if conn.execute("SELECT 1 FROM quarantine LIMIT 1").fetchone() is None:
        return ()  # the usual case: spare the reads below their four index probes
    s_live, s_params = _live("s", as_of)
    l_live, l_params = _live("l", as_of)
    # Quarantined by `seq`, and not cleared by then (a thin event answered since).
    standing = "q.seq <= ? AND (q.cleared_seq IS NULL OR q.cleared_seq > ?)"
    not_named = f"q.workspace IS NULL AND {standing}"
    seqs = (seq, seq)
    rows = conn.execute(
        f"SELECT q.seq FROM quarantine q WHERE q.workspace = ? AND {standing}"  # noqa: S608
        " UNION SELECT q.seq FROM links l CROSS JOIN quarantine q"
        " ON q.subject_provider = l.provider AND q.customer = l.customer"
        f" WHERE l.workspace = ? AND {l_live} AND {not_named}"
        " UNION SELECT q.seq FROM subscriptions s CROSS JOIN quarantine q"
        " ON q.subject_provider = s.provider AND q.subscription = s.id"
        f" WHERE s.workspace = ? AND {s_live} AND {not_named}"
        " UNION SELECT q.seq FROM links l CROSS JOIN subscriptions s"
        " ON s.provider = l.provider AND s.customer = l.customer CROSS JOIN quarantine q"
        " ON q.subject_provider = s.provider AND q.subscription = s.id"
        f" WHERE l.workspace = ? AND {l_live} AND s.workspace IS NULL AND {s_live}"
        f" AND {not_named} ORDER BY 1",
        (
            *(workspace, *seqs),
            *(workspace, *l_params, *seqs),
            *(workspace, *s_params, *seqs),
            *(workspace, *l_params, *s_params, *seqs),
        ),
    ).fetchall()
    return tuple(row[0] for row in rows)


def read_enforcement(conn: Connection, settings: Settings, as_of: int | None) -> str:
    live, params = _live("e", as_of)
    row = conn.execute(
        f"SELECT e.fact FROM enforcement e WHERE {live} ORDER BY e.from_seq DESC LIMIT 1",  # noqa: S608
        params,
    ).fetchone()
    return codec.enforcement(row[0]).mode if row else settings.enforcement


def storage_fault(error: Exception) -> bool:
    """Whether `error` says projections.db cannot be used right now (retry the batch),
    rather than that the event being applied holds values it cannot store.

    Locked, busy, I/O, full and read-only are OperationalError; corruption and
    "not a database" are plain DatabaseError; InternalError is SQLite's own.
    Integrity, interface, programming and data errors come from the values.
    """
    return isinstance(error, sqlite3.OperationalError | sqlite3.InternalError) or (
        type(error) is sqlite3.DatabaseError
    )


class ProjectionStore:
    """A connection to `projections.db`. Thread-safe: one lock serializes its use.

    The PostgreSQL store (`billhook.projections.postgres`) is this class with
    another connection under it: the statements below are written once, for
    both, and the few that differ are the class attributes here.
    """

    backend = "sqlite"
    # What the database driver raises; `storage_fault` sorts them.
    _errors: tuple[type[Exception], ...] = (sqlite3.Error,)
    # Opens an apply: takes the write lock, so two projectors never apply the same batch.
    _BEGIN_WRITE = "BEGIN IMMEDIATE"
    # Opens a read of several statements that must see one commit.
    _BEGIN_READ = "BEGIN"
    # The checkpoint, read (and in PostgreSQL row-locked) inside an apply.
    _CHECKPOINT_FOR_APPLY = "SELECT seq, skipped FROM checkpoint"
    # Apply a batch without a savepoint per event first, and only when an event fails,
    # again with them (where a statement is a round trip, savepoints double the cost).
    _FAST_APPLY = False
    conn: Any

    def __init__(
        self,
        path: Path,
        settings: Settings,
        *,
        busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
        before_commit: Callable[[], None] | None = None,
    ) -> None:
        """`before_commit` runs inside each apply transaction, right before COMMIT
        (crash tests kill the process there)."""
        self.path = path
        self._settings = settings
        self._before_commit = before_commit
        self._busy_timeout_s = busy_timeout_s
        self._lock = threading.Lock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA journal_mode=WAL")
            # The log is the durable truth; a projection lost to power failure is rebuilt from it.
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(
                f"BEGIN IMMEDIATE;{SCHEMA.format(version=PROJECTION_VERSION)}COMMIT;"
            )
            _add_columns(conn)
        except (sqlite3.Error, OSError) as e:
            raise StoreUnavailable(f"cannot open the projection store at {path}: {e}") from e
        self.conn = conn

    def close(self) -> None:
        with self._lock:
            self.conn.close()

    @contextlib.contextmanager
    def _reading(self) -> Iterator[Any]:
        with self._lock:
            try:
                yield self.conn
            except self._errors as e:
                raise StoreUnavailable(str(e)) from e

    def _storage_fault(self, error: Exception) -> bool:
        return storage_fault(error)

    def _announce(self, conn: Any, checkpoint: int) -> None:
        """Runs inside an apply, before COMMIT: tells other readers of the store. SQLite's
        readers learn of commits from `data_version`; PostgreSQL's from a NOTIFY."""

    # -- reads --------------------------------------------------------------------------

    def checkpoint(self) -> int:
        with self._reading() as conn:
            return int(conn.execute("SELECT seq FROM checkpoint").fetchone()[0])

    def data_version(self) -> int:
        """Changes whenever another connection commits to the store (SQLite's data_version)."""
        # On every read request: the plain lock, without _reading's context manager.
        with self._lock:
            try:
                return int(self.conn.execute("PRAGMA data_version").fetchone()[0])
            except sqlite3.Error as e:
                raise StoreUnavailable(str(e)) from e

    def version(self) -> int:
        """The projection version this store was built with (see PROJECTION_VERSION)."""
        with self._reading() as conn:
            return int(conn.execute("SELECT version FROM checkpoint").fetchone()[0])

    def stats(self) -> tuple[int, int, int]:
        """(checkpoint seq, skipped events, quarantined events)."""
        with self._reading() as conn:
            seq, skipped = conn.execute("SELECT seq, skipped FROM checkpoint").fetchone()
            quarantined = conn.execute(
                "SELECT count(*) FROM quarantine WHERE cleared_seq IS NULL"
            ).fetchone()[0]
        return int(seq), int(skipped), int(quarantined)

    def workspace_facts(self, workspace: str, as_of_seq: int | None = None) -> WorkspaceFacts:
        """The facts about `workspace`, now or right after `as_of_seq`.

        Read in one transaction: a replay's swap is seen whole or not at all.
        """
        with self._reading() as conn:
            conn.execute(self._BEGIN_READ)
            try:
                checkpoint = int(conn.execute("SELECT seq FROM checkpoint").fetchone()[0])
                seq = checkpoint if as_of_seq is None else min(as_of_seq, checkpoint)
                as_of = None if as_of_seq is None else seq
                return read_facts(conn, self._settings, workspace, as_of, seq)
            finally:
                conn.execute("COMMIT")

    def override(self, workspace: str, kind: str) -> OverrideFact | None:
        """The current state of one override, if it was ever set."""
        with self._reading() as conn:
            row = conn.execute(
                "SELECT fact FROM overrides WHERE workspace = ? AND kind = ? AND to_seq IS NULL",
                (workspace, kind),
            ).fetchone()
        return codec.override(row[0]) if row else None

    def endpoints(self) -> list[EndpointFact]:
        """The outbound endpoints operators added and have not removed, by id."""
        with self._reading() as conn:
            rows = conn.execute("SELECT fact FROM endpoints ORDER BY id").fetchall()
        return [fact for fact in (codec.endpoint(row[0]) for row in rows) if fact.active]

    def endpoint(self, endpoint_id: str) -> EndpointFact | None:
        """One added endpoint, if it stands (added, not removed since)."""
        with self._reading() as conn:
            row = conn.execute("SELECT fact FROM endpoints WHERE id = ?", (endpoint_id,)).fetchone()
        return codec.endpoint(row[0]) if row else None

    def history(self, workspace: str) -> list[HistoryRow]:
        with self._reading() as conn:
            rows = conn.execute(
                "SELECT seq, at, provider, type, event_id, tier, source, status"
                " FROM history WHERE workspace = ? ORDER BY seq",
                (workspace,),
            ).fetchall()
        return [HistoryRow(*row) for row in rows]

    def quarantine(self) -> list[QuarantineRow]:
        with self._reading() as conn:
            rows = conn.execute(
                "SELECT seq, provider, event_id, type, error FROM quarantine"
                " WHERE cleared_seq IS NULL ORDER BY seq"
            ).fetchall()
        return [QuarantineRow(*row) for row in rows]

    def changes_after(self, cursor: tuple[int, int], limit: int) -> list[ChangeRow]:
        """The changes past `cursor`, oldest first, at most `limit`."""
        seq, k = cursor
        with self._reading() as conn:
            rows = conn.execute(
                "SELECT seq, k, workspace, at, cause, state FROM changes"
                " WHERE seq > ? OR (seq = ? AND k > ?) ORDER BY seq, k LIMIT ?",
                (seq, seq, k, limit),
            ).fetchall()
        return [ChangeRow(int(r[0]), int(r[1]), r[2], r[3], r[4], r[5]) for r in rows]

    def last_cursor(self) -> tuple[int, int]:
        """The cursor of the newest change, or the start when there is none."""
        with self._reading() as conn:
            row = conn.execute(
                "SELECT seq, k FROM changes ORDER BY seq DESC, k DESC LIMIT 1"
            ).fetchone()
        return (int(row[0]), int(row[1])) if row else START

    def fire_due(self, until_us: int) -> int:
        """Write the changes time alone makes by `until_us` (the idle projector's clock), as of
        the checkpoint, in one transaction with it locked. Returns how many timers fired.

        The caller passes an instant before the first event not yet applied was
        received, so that a replay, which fires them while applying events,
        writes them at the same position.
        """
        with self._lock:
            conn = self.conn
            try:
                conn.execute(self._BEGIN_WRITE)
                checkpoint, _ = conn.execute(self._CHECKPOINT_FOR_APPLY).fetchone()
                facts = SqliteFacts(conn, self._settings)
                fired = fire_timers(facts, until_us, int(checkpoint), self._settings)
                if fired:
                    self._announce(conn, int(checkpoint))
                    conn.execute("COMMIT")
                else:
                    conn.execute("ROLLBACK")
            except self._errors as e:
                with contextlib.suppress(*self._errors):
                    conn.execute("ROLLBACK")
                raise StoreUnavailable(str(e)) from e
            except BaseException:
                with contextlib.suppress(*self._errors):
                    conn.execute("ROLLBACK")
                raise
        return fired

    def next_timer(self) -> int | None:
        """When the soonest time rule is due (µs since the epoch); None when none is set."""
        with self._reading() as conn:
            row = conn.execute("SELECT min(due_us) FROM timers").fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def customers_of(self, workspace: str) -> set[tuple[str, str]]:
        """The (provider, customer) pairs linked to `workspace` now."""
        with self._reading() as conn:
            rows = conn.execute(
                "SELECT provider, customer FROM links WHERE workspace = ? AND to_seq IS NULL"
                " UNION SELECT provider, customer FROM subscriptions"
                " WHERE workspace = ? AND to_seq IS NULL AND customer IS NOT NULL",
                (workspace, workspace),
            ).fetchall()
        return {(row[0], row[1]) for row in rows}

    def subscription(self, provider: str, id: str) -> SubscriptionFact | None:
        """The current snapshot of one subscription."""
        with self._reading() as conn:
            return SqliteFacts(conn, self._settings).subscription(provider, id)

    def workspaces(self) -> set[str]:
        """Every workspace the projection knows of."""
        with self._reading() as conn:
            rows = conn.execute(
                "SELECT workspace FROM subscriptions WHERE workspace IS NOT NULL"
                " UNION SELECT workspace FROM links UNION SELECT workspace FROM overrides"
                " UNION SELECT workspace FROM history"
            ).fetchall()
        return {row[0] for row in rows}

    def digest_rows(self) -> list[tuple[Any, ...]]:
        """Every fact, history and quarantine row in a stable order, for comparisons."""
        with self._reading() as conn:
            return [
                *conn.execute("SELECT 's', * FROM subscriptions ORDER BY provider, id, from_seq"),
                *conn.execute("SELECT 'l', * FROM links ORDER BY provider, customer, from_seq"),
                *conn.execute("SELECT 'o', * FROM overrides ORDER BY workspace, kind, from_seq"),
                *conn.execute("SELECT 'e', * FROM enforcement ORDER BY from_seq"),
                *conn.execute("SELECT 'n', * FROM endpoints ORDER BY id"),
                *conn.execute("SELECT 'h', * FROM history ORDER BY workspace, seq"),
                *conn.execute("SELECT 'q', * FROM quarantine ORDER BY seq"),
                *conn.execute("SELECT 'f', * FROM changes ORDER BY seq, k"),
                *conn.execute("SELECT 't', * FROM timers ORDER BY workspace"),
                *conn.execute("SELECT 'c', seq, skipped FROM checkpoint"),
            ]

    # -- writes -------------------------------------------------------------------------

    def copy_over(self, live: object, *, before_commit: Callable[[], None] | None = None) -> bool:
        """Replace every row of the store at `live` with this store's, in one transaction
        there, provided this store has applied at least as far as `live` has.

        Under the live store's write lock, so no projector commits between the
        comparison and the copy: the live checkpoint never moves backwards, and
        a reader of `live` sees the old rows or the new ones, never a mix.
        Returns False, copying nothing, when `live` is ahead (catch up, retry).
        Both stores must have this code's schema. `before_commit` runs inside
        the transaction, right before COMMIT (crash tests kill the process there).
        """
        if not isinstance(live, Path):
            raise StoreUnavailable(f"cannot copy {self.path} into {live}")
        with self._lock:
            try:
                # A connection of its own, fresh for each swap: Python's sqlite3 reuses a
                # statement by its text, and a `BEGIN IMMEDIATE` prepared before the ATTACH
                # (every apply prepares one) locks `main` only, leaving `live` to any writer
                # until the copy fails to upgrade its read ("database is locked").
                conn = sqlite3.connect(
                    self.path, timeout=self._busy_timeout_s, isolation_level=None
                )
                try:
                    conn.execute("ATTACH DATABASE ? AS live", (str(live),))
                    return _copy_into_attached(conn, before_commit)
                finally:
                    conn.close()
            except sqlite3.Error as e:
                raise StoreUnavailable(f"swapping {self.path} into {live} failed: {e}") from e

    def apply(self, events: Sequence[StoredEvent], *, after: int = 0) -> Applied:
        """Apply `events`, every logged event past seq `after` in seq order, in one
        transaction.

        Events at or below the checkpoint are ignored, so a redelivered batch
        is a no-op. A batch that does not follow on from the stored checkpoint
        (`after` is past it: a replay's swap or another process moved it) is
        not applied at all: the answer's `last_seq` is the stored checkpoint,
        from which the caller reads again. An event a reducer fails on is
        quarantined and skipped.
        """
        with self._lock:
            if self._FAST_APPLY:
                try:
                    return self._apply_once(events, after, guarded=False)
                except _EventFailed:
                    pass  # rolled back: again, each event in a savepoint of its own
            return self._apply_once(events, after, guarded=True)

    def _prefetch(self, facts: SqliteFacts, events: Sequence[StoredEvent]) -> None:
        """Read ahead what applying `events` will look up, where a read is a round trip
        (PostgreSQL); SQLite reads in-process, one at a time, as cheaply."""

    def _batch(self, guarded: bool) -> contextlib.AbstractContextManager[object]:
        """Around an apply's transaction: nothing here; a pipeline in PostgreSQL's fast path."""
        return contextlib.nullcontext()

    def _apply_once(self, events: Sequence[StoredEvent], after: int, *, guarded: bool) -> Applied:
        """One attempt at :meth:`apply`. `guarded`: each event in a SAVEPOINT, so one that
        fails is quarantined and the batch goes on; unguarded (the fast path, where a
        round trip per statement is dear), an event that fails rolls the batch back and
        raises :class:`_EventFailed`, for a guarded attempt to find which one it was."""
        conn = self.conn
        try:
            with self._batch(guarded):
                conn.execute(self._BEGIN_WRITE)
                checkpoint, skipped = conn.execute(self._CHECKPOINT_FOR_APPLY).fetchone()
                if checkpoint < after:
                    # Applying would leave the events between checkpoint and `after` out forever.
                    conn.execute("ROLLBACK")
                    return Applied(last_seq=checkpoint, applied=0, skipped=0, quarantined=0)
                applied = quarantined = skipped_now = 0
                last = checkpoint
                facts = SqliteFacts(conn, self._settings, after=checkpoint, buffered=not guarded)
                self._prefetch(facts, [e for e in events if e.seq > checkpoint])
                for event in events:
                    if event.seq <= last:
                        continue
                    last = event.seq
                    # Time rules due before the event was received fire first, outside its
                    # savepoint: they stand whatever becomes of the event.
                    fire_timers(facts, iso_to_us(event.received_at), event.seq - 1, self._settings)
                    outcome = (
                        self._apply_guarded(conn, facts, event)
                        if guarded
                        else self._apply_unguarded(facts, event)
                    )
                    applied += outcome == "applied"
                    skipped_now += outcome == "skipped"
                    quarantined += outcome == "quarantined"
                facts.flush()
                conn.execute(
                    "UPDATE checkpoint SET seq = ?, skipped = ?", (last, skipped + skipped_now)
                )
                self._announce(conn, last)
                if self._before_commit is not None:
                    self._before_commit()
                conn.execute("COMMIT")
            for event, reason in facts.quarantined:
                log_quarantined(event, reason)
        except Exception as e:
            # Nothing of the batch stays, whatever went wrong.
            with contextlib.suppress(*self._errors):
                conn.execute("ROLLBACK")
            if isinstance(e, self._errors):
                if not guarded and not self._storage_fault(e):
                    # A value one of the events wrote, refused where a pipeline reports it.
                    raise _EventFailed from e
                # A storage fault, or one while undoing an event.
                raise StoreUnavailable(str(e)) from e
            raise
        except BaseException:
            # Not an event's doing (an interrupt, the before-commit hook's exit): nothing
            # of the batch stays, the lock goes.
            with contextlib.suppress(*self._errors):
                conn.execute("ROLLBACK")
            raise
        return Applied(last_seq=last, applied=applied, skipped=skipped_now, quarantined=quarantined)

    def _apply_unguarded(self, facts: SqliteFacts, event: StoredEvent) -> str:
        try:
            return apply_event(facts, event, self._settings)
        except Exception as e:
            if self._storage_fault(e) or not blames_the_event(e):
                raise
            raise _EventFailed from e

    def _apply_guarded(self, conn: Any, facts: SqliteFacts, event: StoredEvent) -> str:
        """Apply one event in a SAVEPOINT: its rows stand or fall together. An event that
        cannot be applied is quarantined and the batch goes on; a storage fault ends it."""
        conn.execute("SAVEPOINT event")
        try:
            outcome = apply_event(facts, event, self._settings)
        except Exception as e:
            if self._storage_fault(e) or not blames_the_event(e):
                raise
            conn.execute("ROLLBACK TO event")
            facts.forget(event.seq)
            quarantine(facts, event, unapplied_reason(e), self._settings)
            outcome = "quarantined"
        conn.execute("RELEASE event")
        return outcome


class _EventFailed(Exception):
    """An event failed in an unguarded apply: the batch was rolled back."""


# Every table a swap copies, checkpoint last.
TABLES = (
    "subscriptions",
    "links",
    "overrides",
    "enforcement",
    "endpoints",
    "history",
    "quarantine",
    "changes",
    "timers",
    "checkpoint",
)


def _add_columns(conn: sqlite3.Connection) -> None:
    """Give a store of an older version the columns added since (ADDED_COLUMNS), and
    their indexes, in one transaction. A store that has them all is only read: opening
    one takes no second write lock."""
    if not _missing_columns(conn) and not _missing_indexes(conn):
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        # Names and types come from this module, never from input.
        for table, column, kind in _missing_columns(conn):
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
        for name in _missing_indexes(conn):
            conn.execute(f"CREATE INDEX {name} {ADDED_INDEXES[name]}")
        conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise


def _missing_columns(conn: sqlite3.Connection) -> list[tuple[str, str, str]]:
    present = {
        (table, row[1])
        for table in {t for t, _, _ in ADDED_COLUMNS}
        for row in conn.execute(f"PRAGMA table_info({table})")
    }
    return [added for added in ADDED_COLUMNS if added[:2] not in present]


def _missing_indexes(conn: sqlite3.Connection) -> list[str]:
    rows = conn.execute("SELECT name FROM sqlite_schema WHERE type = 'index'").fetchall()
    return sorted(set(ADDED_INDEXES) - {row[0] for row in rows})


def _copy_into_attached(conn: sqlite3.Connection, before_commit: Callable[[], None] | None) -> bool:
    """Copy main's rows over the attached `live` database's, if main is not behind."""
    conn.execute("BEGIN IMMEDIATE")  # write locks on main and on live
    try:
        ours = conn.execute("SELECT seq FROM main.checkpoint").fetchone()[0]
        theirs = conn.execute("SELECT seq FROM live.checkpoint").fetchone()[0]
        if ours < theirs:
            conn.execute("ROLLBACK")
            return False
        for table in TABLES:
            columns = ", ".join(row[1] for row in conn.execute(f"PRAGMA main.table_info({table})"))
            # Table and column names come from this module and the schema, never from input.
            conn.execute(f"DELETE FROM live.{table}")  # noqa: S608
            conn.execute(
                f"INSERT INTO live.{table} ({columns}) SELECT {columns} FROM main.{table}"  # noqa: S608
            )
        if before_commit is not None:
            before_commit()
        conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise
    return True


class SqliteFacts:
    """The :class:`~projections.applier.Facts` port over an open write transaction."""

    def __init__(
        self, conn: Any, settings: Settings, *, after: int | None = None, buffered: bool = False
    ) -> None:
        """`after`: the checkpoint the transaction started from, when known: no change sits
        past it yet, so numbering one there needs no read. `buffered`: history rows,
        changes and timers, which nothing in the batch reads back from the database, are
        written together by :meth:`flush` (a statement each, not one per event); only
        where the whole batch stands or falls together, since a savepoint would not
        undo what is buffered."""
        self._conn = conn
        self._settings = settings
        self._after = after
        self._buffered = buffered
        self._history_rows: list[tuple[object, ...]] = []
        self._change_rows: list[tuple[object, ...]] = []
        self._timer_writes: dict[str, int | None] = {}
        # (event, reason) of each quarantine: the store logs them once committed.
        self.quarantined: list[tuple[StoredEvent, str]] = []
        # Read once per batch, kept up to date by this batch's own writes (a statement
        # saved per event; where a statement is a round trip, that counts).
        self._enforcement: str | None = None
        self._last_history: dict[str, tuple[str, str, str] | None] = {}
        self._subs: dict[tuple[str, str], SubscriptionFact | None] = {}
        self._links: dict[tuple[str, str], LinkFact | None] = {}
        self._last_change: dict[str | None, str | None] = {}
        self._next_k: dict[int, int] = {}
        self._timers: dict[str, int | None] = {}
        # The soonest timer, once read: most events then need no look at the timers.
        self._next_due: int | None = None
        self._next_due_known = False

    def forget(self, seq: int) -> None:
        """Drop what was kept: the event at `seq`, which may have written it, was rolled
        back (to its savepoint: what earlier events and timers wrote stands)."""
        self._enforcement = None
        self._last_history.clear()
        self._subs.clear()
        self._links.clear()
        self._last_change.clear()
        for written in [n for n in self._next_k if n >= seq]:
            del self._next_k[written]
        self._timers.clear()
        self._next_due_known = False

    def seed(
        self,
        subscriptions: dict[tuple[str, str], SubscriptionFact | None],
        links: dict[tuple[str, str], LinkFact | None],
    ) -> None:
        """Take current rows read ahead (None: known to be absent)."""
        self._subs.update(subscriptions)
        self._links.update(links)

    def seed_last(
        self,
        history: dict[str, tuple[str, str, str] | None],
        changes: dict[str, str | None],
        timers: dict[str, int | None],
    ) -> None:
        """Take workspaces' last history states, last change states and timers read ahead
        (a timer left as it was then costs no statement)."""
        self._last_history.update(history)
        self._last_change.update(changes)
        self._timers.update(timers)

    def enforcement_mode(self) -> str:
        if self._enforcement is None:
            self._enforcement = read_enforcement(self._conn, self._settings, None)
        return self._enforcement

    def last_change(self, workspace: str | None) -> str | None:
        if workspace in self._last_change:
            return self._last_change[workspace]
        where = "workspace IS NULL" if workspace is None else "workspace = ?"
        row = self._conn.execute(
            f"SELECT state FROM changes WHERE {where} ORDER BY seq DESC, k DESC LIMIT 1",  # noqa: S608
            () if workspace is None else (workspace,),
        ).fetchone()
        state = str(row[0]) if row else None
        self._last_change[workspace] = state
        return state

    def add_change(self, seq: int, workspace: str | None, at: str, cause: str, state: str) -> None:
        k = self._next_k.get(seq)
        if k is None and self._after is not None and seq > self._after:
            k = 0
        if k is None:
            row = self._conn.execute(
                "SELECT coalesce(max(k) + 1, 0) FROM changes WHERE seq = ?", (seq,)
            ).fetchone()
            k = int(row[0])
        self._next_k[seq] = k + 1
        self._last_change[workspace] = state
        self._change_rows.append((seq, k, workspace, at, cause, state))
        if not self._buffered:
            self.flush()

    def set_timer(self, workspace: str, due_us: int | None) -> None:
        if workspace in self._timers and self._timers[workspace] == due_us:
            return
        self._timers[workspace] = due_us
        self._timer_writes[workspace] = due_us
        if not self._buffered:
            self.flush()
        if due_us is None:
            return
        if self._next_due_known and (self._next_due is None or due_us < self._next_due):
            self._next_due = due_us

    def due_timers(self, until_us: int) -> list[tuple[str, int]]:
        if self._next_due_known and (self._next_due is None or self._next_due > until_us):
            return []
        self.flush()  # the timers set so far, where the query below looks
        rows = self._conn.execute(
            "SELECT workspace, due_us FROM timers WHERE due_us <= ? ORDER BY due_us, workspace",
            (until_us,),
        ).fetchall()
        later = self._conn.execute(
            "SELECT min(due_us) FROM timers WHERE due_us > ?", (until_us,)
        ).fetchone()
        # The caller resets each due timer (set_timer), which lowers this if need be.
        self._next_due = None if later is None or later[0] is None else int(later[0])
        self._next_due_known = True
        return [(str(w), int(due)) for w, due in rows]

    def subscription(self, provider: str, id: str) -> SubscriptionFact | None:
        key = (provider, id)
        if key in self._subs:
            return self._subs[key]
        row = self._conn.execute(
            "SELECT fact FROM subscriptions WHERE provider = ? AND id = ? AND to_seq IS NULL",
            key,
        ).fetchone()
        found = codec.subscription(row[0]) if row else None
        self._subs[key] = found
        return found

    def put_subscription(
        self, fact: SubscriptionFact, previous: SubscriptionFact | None, seq: int
    ) -> None:
        self._subs[(fact.provider, fact.id)] = fact
        if previous is not None:
            self._close("subscriptions", "provider = ? AND id = ?", (fact.provider, fact.id), seq)
        self._conn.execute(
            "INSERT INTO subscriptions (provider, id, from_seq, workspace, customer, fact)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (
                fact.provider,
                fact.id,
                seq,
                fact.workspace,
                fact.customer,
                codec.dumps_subscription(fact),
            ),
        )

    def link(self, provider: str, customer: str) -> LinkFact | None:
        key = (provider, customer)
        if key in self._links:
            return self._links[key]
        row = self._conn.execute(
            "SELECT workspace, time_us, seq FROM links"
            " WHERE provider = ? AND customer = ? AND to_seq IS NULL",
            key,
        ).fetchone()
        found = LinkFact(provider, customer, *row) if row else None
        self._links[key] = found
        return found

    def put_link(self, fact: LinkFact, previous: LinkFact | None, seq: int) -> None:
        self._links[(fact.provider, fact.customer)] = fact
        if previous is not None:
            self._close(
                "links", "provider = ? AND customer = ?", (fact.provider, fact.customer), seq
            )
        self._conn.execute(
            "INSERT INTO links (provider, customer, from_seq, workspace, time_us, seq)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (fact.provider, fact.customer, seq, fact.workspace, fact.time_us, fact.seq),
        )

    def override(self, workspace: str, kind: str) -> OverrideFact | None:
        row = self._conn.execute(
            "SELECT fact FROM overrides WHERE workspace = ? AND kind = ? AND to_seq IS NULL",
            (workspace, kind),
        ).fetchone()
        return codec.override(row[0]) if row else None

    def put_override(self, fact: OverrideFact, previous: OverrideFact | None, seq: int) -> None:
        if previous is not None:
            self._close("overrides", "workspace = ? AND kind = ?", (fact.workspace, fact.kind), seq)
        self._conn.execute(
            "INSERT INTO overrides (workspace, kind, from_seq, fact) VALUES (?, ?, ?, ?)",
            (fact.workspace, fact.kind, seq, codec.dumps(fact)),
        )

    def put_enforcement(self, fact: EnforcementFact, seq: int) -> None:
        self._close("enforcement", "1 = 1", (), seq)
        self._conn.execute(
            "INSERT INTO enforcement (from_seq, fact) VALUES (?, ?)", (seq, codec.dumps(fact))
        )
        self._enforcement = fact.mode

    def put_endpoint(self, fact: EndpointFact, seq: int) -> None:
        if not fact.active:
            self._conn.execute("DELETE FROM endpoints WHERE id = ?", (fact.endpoint_id,))
            return
        # An upsert both SQLite and PostgreSQL read: adding an id again replaces it.
        self._conn.execute(
            "INSERT INTO endpoints (id, from_seq, fact) VALUES (?, ?, ?) ON CONFLICT (id)"
            " DO UPDATE SET from_seq = excluded.from_seq, fact = excluded.fact",
            (fact.endpoint_id, seq, codec.dumps(fact)),
        )

    def workspace_facts(self, workspace: str, seq: int) -> WorkspaceFacts:
        # For the history only, which quarantined events never change.
        if self._enforcement is None:
            self._enforcement = read_enforcement(self._conn, self._settings, None)
        return read_facts(
            self._conn,
            self._settings,
            workspace,
            None,
            seq,
            with_quarantine=False,
            enforcement=self._enforcement,
        )

    def last_history(self, workspace: str) -> tuple[str, str, str] | None:
        if workspace in self._last_history:
            return self._last_history[workspace]
        row = self._conn.execute(
            "SELECT tier, source, status FROM history"
            " WHERE workspace = ? ORDER BY seq DESC LIMIT 1",
            (workspace,),
        ).fetchone()
        last = (row[0], row[1], row[2]) if row else None
        self._last_history[workspace] = last
        return last

    def add_history(self, workspace: str, event: StoredEvent, state: tuple[str, str, str]) -> None:
        self._last_history[workspace] = state
        self._history_rows.append(
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
        if not self._buffered:
            self.flush()

    def flush(self) -> None:
        """Write the history rows, changes and timers held back (see `buffered`)."""
        if self._history_rows:
            self._conn.executemany(
                "INSERT INTO history"
                " (workspace, seq, at, provider, type, event_id, tier, source, status)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                self._history_rows,
            )
            self._history_rows = []
        if self._change_rows:
            self._conn.executemany(
                "INSERT INTO changes (seq, k, workspace, at, cause, state)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                self._change_rows,
            )
            self._change_rows = []
        if self._timer_writes:
            # The last value each workspace's timer took: no earlier one matters.
            cleared = [(w,) for w, due in self._timer_writes.items() if due is None]
            set_to = [(w, due) for w, due in self._timer_writes.items() if due is not None]
            if cleared:
                self._conn.executemany("DELETE FROM timers WHERE workspace = ?", cleared)
            if set_to:
                self._conn.executemany(
                    "INSERT INTO timers (workspace, due_us) VALUES (?, ?)"
                    " ON CONFLICT (workspace) DO UPDATE SET due_us = excluded.due_us",
                    set_to,
                )
            self._timer_writes = {}

    def quarantine(self, event: StoredEvent, error: str, subject: EventSubject) -> None:
        # An upsert both SQLite and PostgreSQL read: a retried event's newer reason wins.
        self._conn.execute(
            "INSERT INTO quarantine (seq, provider, event_id, type, error,"
            " workspace, subject_provider, customer, subscription)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (seq) DO UPDATE SET"
            " provider = excluded.provider, event_id = excluded.event_id, type = excluded.type,"
            " error = excluded.error, workspace = excluded.workspace,"
            " subject_provider = excluded.subject_provider, customer = excluded.customer,"
            " subscription = excluded.subscription, cleared_seq = NULL",
            (
                event.seq,
                event.provider,
                event.event_id,
                event.type,
                error,
                *quarantine_hint(subject),
            ),
        )
        self.quarantined.append((event, error))

    def clear_thin_quarantines(
        self, provider: str, subscription: str, customer: str | None, seq: int
    ) -> None:
        self._conn.execute(
            "UPDATE quarantine SET cleared_seq = ? WHERE type = ? AND cleared_seq IS NULL"
            " AND subject_provider = ? AND (subscription = ? OR customer = ?)",
            (seq, THIN_UNFETCHED, provider, subscription, customer),
        )

    def _close(self, table: str, where: str, params: tuple[str, ...], seq: int) -> None:
        self._conn.execute(
            f"UPDATE {table} SET to_seq = ? WHERE {where} AND to_seq IS NULL",  # noqa: S608
            (seq, *params),
        )


def quarantine_hint(subject: EventSubject) -> tuple[str | None, str | None, str | None, str | None]:
    """A quarantine row's (workspace, subject_provider, customer, subscription)."""
    return (subject.workspace, subject.provider, subject.customer, subject.subscription)
