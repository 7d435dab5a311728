"""`projections.db`: versioned facts, the checkpoint, history and quarantine.

Every fact row carries `from_seq`/`to_seq`: a new version closes the old one,
nothing is overwritten, so the state after any seq can be read back (`as_of`).
A batch of events, its history rows and the checkpoint commit in one
transaction, which makes applying idempotent: a batch is applied whole or not
at all, and re-running from the checkpoint is a no-op.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ingest.log import StoredEvent
from ingest.settings import Settings
from projections import codec
from projections.decode import decode, understands
from projections.errors import DecodeError, StoreUnavailable
from projections.facts import EnforcementFact, Fact, LinkFact, OverrideFact, SubscriptionFact
from projections.reducers import merge_link, merge_override, merge_subscription
from projections.resolver import WorkspaceFacts, resolve

# Bumped whenever reducers or the schema change what a replay would produce.
PROJECTION_VERSION = 1
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
CREATE TABLE IF NOT EXISTS history (
    workspace TEXT NOT NULL, seq INTEGER NOT NULL, at TEXT NOT NULL,
    provider TEXT NOT NULL, type TEXT NOT NULL, event_id TEXT NOT NULL,
    tier TEXT NOT NULL, source TEXT NOT NULL, status TEXT NOT NULL,
    PRIMARY KEY (workspace, seq)
);
CREATE TABLE IF NOT EXISTS quarantine (
    seq INTEGER PRIMARY KEY, provider TEXT NOT NULL, event_id TEXT NOT NULL,
    type TEXT NOT NULL, error TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS checkpoint (
    id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL, version INTEGER NOT NULL,
    skipped INTEGER NOT NULL
);
INSERT OR IGNORE INTO checkpoint (id, seq, version, skipped) VALUES (1, 0, {version}, 0);
"""


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


def parse_time(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class ProjectionStore:
    """A connection to `projections.db`. Thread-safe: one lock serializes its use."""

    def __init__(
        self, path: Path, settings: Settings, *, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S
    ) -> None:
        self.path = path
        self._settings = settings
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
        except (sqlite3.Error, OSError) as e:
            raise StoreUnavailable(f"cannot open the projection store at {path}: {e}") from e
        self.conn = conn

    def close(self) -> None:
        with self._lock:
            self.conn.close()

    @contextlib.contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                yield self.conn
            except sqlite3.Error as e:
                raise StoreUnavailable(str(e)) from e

    # -- reads --------------------------------------------------------------------------

    def checkpoint(self) -> int:
        with self._reading() as conn:
            return int(conn.execute("SELECT seq FROM checkpoint").fetchone()[0])

    def stats(self) -> tuple[int, int, int]:
        """(checkpoint seq, skipped events, quarantined events)."""
        with self._reading() as conn:
            seq, skipped = conn.execute("SELECT seq, skipped FROM checkpoint").fetchone()
            quarantined = conn.execute("SELECT count(*) FROM quarantine").fetchone()[0]
        return int(seq), int(skipped), int(quarantined)

    def workspace_facts(self, workspace: str, as_of_seq: int | None = None) -> WorkspaceFacts:
        """The facts about `workspace`, now or right after `as_of_seq`."""
        with self._reading() as conn:
            checkpoint = int(conn.execute("SELECT seq FROM checkpoint").fetchone()[0])
            seq = checkpoint if as_of_seq is None else min(as_of_seq, checkpoint)
            return self._facts(conn, workspace, None if as_of_seq is None else seq, seq)

    def _facts(
        self, conn: sqlite3.Connection, workspace: str, as_of: int | None, seq: int
    ) -> WorkspaceFacts:
        s_live, s_params = _live("s", as_of)
        l_live, l_params = _live("l", as_of)
        o_live, o_params = _live("o", as_of)
        # A subscription's own workspace metadata wins over its customer's link.
        subscriptions = conn.execute(
            f"SELECT s.fact FROM subscriptions s WHERE s.workspace = ? AND {s_live}"  # noqa: S608
            " UNION SELECT s.fact FROM subscriptions s JOIN links l"
            " ON l.provider = s.provider AND l.customer = s.customer"
            f" WHERE l.workspace = ? AND s.workspace IS NULL AND {s_live} AND {l_live}",
            (workspace, *s_params, workspace, *s_params, *l_params),
        ).fetchall()
        overrides = conn.execute(
            f"SELECT o.fact FROM overrides o WHERE o.workspace = ? AND {o_live}",  # noqa: S608
            (workspace, *o_params),
        ).fetchall()
        return WorkspaceFacts(
            workspace_id=workspace,
            subscriptions=tuple(codec.subscription(row[0]) for row in subscriptions),
            overrides=tuple(codec.override(row[0]) for row in overrides),
            enforcement=self._enforcement(conn, as_of),
            as_of_seq=seq,
        )

    def _enforcement(self, conn: sqlite3.Connection, as_of: int | None) -> str:
        live, params = _live("e", as_of)
        row = conn.execute(
            f"SELECT e.fact FROM enforcement e WHERE {live} ORDER BY e.from_seq DESC LIMIT 1",  # noqa: S608
            params,
        ).fetchone()
        return codec.enforcement(row[0]).mode if row else self._settings.enforcement

    def enforcement(self) -> str:
        with self._reading() as conn:
            return self._enforcement(conn, None)

    def override(self, workspace: str, kind: str) -> OverrideFact | None:
        """The current state of one override, if it was ever set."""
        with self._reading() as conn:
            row = conn.execute(
                "SELECT fact FROM overrides WHERE workspace = ? AND kind = ? AND to_seq IS NULL",
                (workspace, kind),
            ).fetchone()
        return codec.override(row[0]) if row else None

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
                "SELECT seq, provider, event_id, type, error FROM quarantine ORDER BY seq"
            ).fetchall()
        return [QuarantineRow(*row) for row in rows]

    def digest_rows(self) -> list[tuple[Any, ...]]:
        """Every fact, history and quarantine row in a stable order, for comparisons."""
        with self._reading() as conn:
            return [
                *conn.execute("SELECT 's', * FROM subscriptions ORDER BY provider, id, from_seq"),
                *conn.execute("SELECT 'l', * FROM links ORDER BY provider, customer, from_seq"),
                *conn.execute("SELECT 'o', * FROM overrides ORDER BY workspace, kind, from_seq"),
                *conn.execute("SELECT 'e', * FROM enforcement ORDER BY from_seq"),
                *conn.execute("SELECT 'h', * FROM history ORDER BY workspace, seq"),
                *conn.execute("SELECT 'q', * FROM quarantine ORDER BY seq"),
                *conn.execute("SELECT 'c', seq, skipped FROM checkpoint"),
            ]

    # -- writes -------------------------------------------------------------------------

    def apply(self, events: Sequence[StoredEvent]) -> Applied:
        """Apply `events` (in seq order) past the checkpoint, in one transaction.

        Events at or below the checkpoint are ignored, so a redelivered batch
        is a no-op. An event a reducer fails on is quarantined and skipped.
        """
        with self._lock:
            conn = self.conn
            try:
                conn.execute("BEGIN IMMEDIATE")
                checkpoint, skipped = conn.execute("SELECT seq, skipped FROM checkpoint").fetchone()
                applied = quarantined = skipped_now = 0
                last = checkpoint
                for event in events:
                    if event.seq <= last:
                        continue
                    last = event.seq
                    outcome = self._apply_one(conn, event)
                    applied += outcome == "applied"
                    skipped_now += outcome == "skipped"
                    quarantined += outcome == "quarantined"
                conn.execute(
                    "UPDATE checkpoint SET seq = ?, skipped = ?", (last, skipped + skipped_now)
                )
                conn.execute("COMMIT")
            except sqlite3.Error as e:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise StoreUnavailable(str(e)) from e
        return Applied(last_seq=last, applied=applied, skipped=skipped_now, quarantined=quarantined)

    def _apply_one(self, conn: sqlite3.Connection, event: StoredEvent) -> str:
        if not understands(event):
            return "skipped"
        try:
            facts = decode(event, self._settings.workspace_key)
        except DecodeError as e:
            conn.execute(
                "INSERT OR REPLACE INTO quarantine (seq, provider, event_id, type, error)"
                " VALUES (?, ?, ?, ?, ?)",
                (event.seq, event.provider, event.event_id, event.type, str(e)[:500]),
            )
            return "quarantined"
        affected: set[str] = set()
        for fact in facts:
            affected.update(self._put(conn, fact, event.seq))
        self._record_history(conn, event, affected)
        return "applied"

    def _put(self, conn: sqlite3.Connection, fact: Fact, seq: int) -> Iterable[str]:
        """Store `fact` merged into the current version; yield the workspaces it touches."""
        if isinstance(fact, SubscriptionFact):
            return self._put_subscription(conn, fact, seq)
        if isinstance(fact, LinkFact):
            return self._put_link(conn, fact, seq)
        if isinstance(fact, OverrideFact):
            return self._put_override(conn, fact, seq)
        return self._put_enforcement(conn, fact, seq)

    def _put_subscription(
        self, conn: sqlite3.Connection, fact: SubscriptionFact, seq: int
    ) -> Iterable[str]:
        row = conn.execute(
            "SELECT fact FROM subscriptions WHERE provider = ? AND id = ? AND to_seq IS NULL",
            (fact.provider, fact.id),
        ).fetchone()
        previous = codec.subscription(row[0]) if row else None
        merged = merge_subscription(previous, fact)
        if merged != previous:
            self._close(
                conn, "subscriptions", "provider = ? AND id = ?", (fact.provider, fact.id), seq
            )
            conn.execute(
                "INSERT INTO subscriptions (provider, id, from_seq, workspace, customer, fact)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    fact.provider,
                    fact.id,
                    seq,
                    merged.workspace,
                    merged.customer,
                    codec.dumps_subscription(merged),
                ),
            )
        touched = {merged.workspace} if merged.workspace else set()
        if previous is not None and previous.workspace:
            touched.add(previous.workspace)
        if merged.customer and not merged.workspace:
            link = conn.execute(
                "SELECT workspace FROM links"
                " WHERE provider = ? AND customer = ? AND to_seq IS NULL",
                (merged.provider, merged.customer),
            ).fetchone()
            if link:
                touched.add(link[0])
        return touched

    def _put_link(self, conn: sqlite3.Connection, fact: LinkFact, seq: int) -> Iterable[str]:
        row = conn.execute(
            "SELECT workspace, time_us, seq FROM links"
            " WHERE provider = ? AND customer = ? AND to_seq IS NULL",
            (fact.provider, fact.customer),
        ).fetchone()
        previous = LinkFact(fact.provider, fact.customer, *row) if row else None
        merged = merge_link(previous, fact)
        if merged != previous:
            self._close(
                conn, "links", "provider = ? AND customer = ?", (fact.provider, fact.customer), seq
            )
            conn.execute(
                "INSERT INTO links (provider, customer, from_seq, workspace, time_us, seq)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    merged.provider,
                    merged.customer,
                    seq,
                    merged.workspace,
                    merged.time_us,
                    merged.seq,
                ),
            )
        return {merged.workspace} | ({previous.workspace} if previous else set())

    def _put_override(
        self, conn: sqlite3.Connection, fact: OverrideFact, seq: int
    ) -> Iterable[str]:
        row = conn.execute(
            "SELECT fact FROM overrides WHERE workspace = ? AND kind = ? AND to_seq IS NULL",
            (fact.workspace, fact.kind),
        ).fetchone()
        previous = codec.override(row[0]) if row else None
        merged = merge_override(previous, fact)
        if merged != previous:
            self._close(
                conn, "overrides", "workspace = ? AND kind = ?", (fact.workspace, fact.kind), seq
            )
            conn.execute(
                "INSERT INTO overrides (workspace, kind, from_seq, fact) VALUES (?, ?, ?, ?)",
                (fact.workspace, fact.kind, seq, codec.dumps(merged)),
            )
        return {fact.workspace}

    def _put_enforcement(
        self, conn: sqlite3.Connection, fact: EnforcementFact, seq: int
    ) -> Iterable[str]:
        self._close(conn, "enforcement", "1 = 1", (), seq)
        conn.execute(
            "INSERT INTO enforcement (from_seq, fact) VALUES (?, ?)", (seq, codec.dumps(fact))
        )
        return ()

    @staticmethod
    def _close(
        conn: sqlite3.Connection, table: str, where: str, params: tuple[str, ...], seq: int
    ) -> None:
        conn.execute(
            f"UPDATE {table} SET to_seq = ? WHERE {where} AND to_seq IS NULL",  # noqa: S608
            (seq, *params),
        )

    def _record_history(
        self, conn: sqlite3.Connection, event: StoredEvent, workspaces: Iterable[str]
    ) -> None:
        at = parse_time(event.received_at)
        for workspace in sorted(workspaces):
            entitlement = resolve(self._facts(conn, workspace, None, event.seq), self._settings, at)
            last = conn.execute(
                "SELECT tier, source, status FROM history"
                " WHERE workspace = ? ORDER BY seq DESC LIMIT 1",
                (workspace,),
            ).fetchone()
            now = (entitlement.tier, entitlement.source, entitlement.status)
            if last is None or tuple(last) != now:
                conn.execute(
                    "INSERT INTO history"
                    " (workspace, seq, at, provider, type, event_id, tier, source, status)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        workspace,
                        event.seq,
                        event.received_at,
                        event.provider,
                        event.type,
                        event.event_id,
                        *now,
                    ),
                )
