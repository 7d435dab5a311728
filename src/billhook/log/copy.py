"""`billhook log copy`: an SQLite log moved into an empty PostgreSQL log, every row as it was.

`append_batch` would stamp new seqs and receipt times, so rows go in by COPY
with their own: seq, provider, event id, type, livemode, both times and the
payload's exact text. The whole copy is one transaction under the log's
append lock (`LOCK TABLE … IN EXCLUSIVE MODE`, what every append takes), so
no receiver can append in between, and anything short of a verified copy
(an error, a non-empty target, a digest that differs, a source that grew)
rolls back and leaves the target as empty as it was, ready for another try.

The source is read in batches of :data:`BATCH_SIZE` and the target read back
through a server-side cursor: memory stays bounded whatever the log's size.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import psycopg

from billhook.domain.records import StoredEvent
from billhook.errors import BillhookError, LogUnavailable
from billhook.log.backend import database_name
from billhook.log.postgres import LOG_SCHEMA, PostgresEventLog, _reason, session_settings
from billhook.log.sqlite import EventLog

# Events read from the source and written to the target per round.
BATCH_SIZE = 1_000
# How long the copy waits for the target's append lock (a receiver mid-commit) before giving up.
LOCK_TIMEOUT_S = 5.0

_COLUMNS = "seq, provider, event_id, type, livemode, occurred_at, received_at, payload"
_LOCK = f"LOCK TABLE {LOG_SCHEMA}.events IN EXCLUSIVE MODE"
_HEAD = f"SELECT coalesce(max(seq), 0) FROM {LOG_SCHEMA}.events"  # noqa: S608
_COPY_IN = f"COPY {LOG_SCHEMA}.events ({_COLUMNS}) FROM STDIN"
_READ_BACK = f"SELECT {_COLUMNS} FROM {LOG_SCHEMA}.events ORDER BY seq"  # noqa: S608


class CopyRefused(BillhookError):
    """The copy was not made: the target is not empty, the source grew meanwhile, or the
    rows read back differ from the rows read. Nothing was kept in the target."""


@dataclass
class Digest:
    """How many rows a log holds and a sha256 over all of them, in the order they were added.

    Every column counts, the payload as its exact UTF-8 bytes: two logs have
    the same digest only if they hold the same rows. Each row is its seven
    other columns as a JSON array (None and "" stay apart) followed by the
    payload's length and bytes, so no two different rows hash alike.
    """

    count: int = 0
    _sha: Any = field(default_factory=hashlib.sha256, repr=False)

    def add(self, event: StoredEvent) -> None:
        head = [
            event.seq,
            event.provider,
            event.event_id,
            event.type,
            event.livemode,
            event.occurred_at,
            event.received_at,
        ]
        payload = event.payload.encode()
        self._sha.update(json.dumps(head).encode())
        self._sha.update(b"%d:" % len(payload))
        self._sha.update(payload)
        self.count += 1

    def hexdigest(self) -> str:
        return str(self._sha.hexdigest())


def digest(events: Iterable[StoredEvent]) -> Digest:
    """The :class:`Digest` of `events`, taken in the order given (a log's: seq order)."""
    d = Digest()
    for event in events:
        d.add(event)
    return d


@dataclass(frozen=True)
class Copied:
    """What a copy moved and how it was checked: `events` rows up to seq `head`, whose
    digest read from the source and read back from the target is `digest`."""

    events: int
    head: int
    digest: str


def copy_log(
    source: EventLog,
    url: str,
    *,
    batch_size: int = BATCH_SIZE,
    progress: Callable[[int], None] | None = None,
) -> Copied:
    """Copy every event of `source` into the empty PostgreSQL log at `url` (created if absent).

    `progress` is called with the last seq copied after each batch. The rows
    are read back inside the transaction and compared, count and digest,
    with those read from `source` before it commits.

    Raises :class:`CopyRefused` (the target holds events, `source` grew
    during the copy, or the read-back differs) and
    :class:`~billhook.errors.LogUnavailable` (PostgreSQL failed); in both
    cases the target keeps nothing of the copy.
    """
    where = database_name(url)
    head = source.head_seq()
    try:
        # Connecting first makes an unreachable target one error at once, not the pool's retries.
        with psycopg.connect(url, autocommit=True, connect_timeout=int(LOCK_TIMEOUT_S)) as conn:
            PostgresEventLog(url).close()  # creates the schema and its triggers where absent
            session_settings(conn, lock_timeout_s=LOCK_TIMEOUT_S)
            with conn.transaction():
                conn.execute(_LOCK)
                _refuse_non_empty(conn, where)
                written = _write(conn, source, head, batch_size, progress)
                read_back = _read_back(conn, batch_size)
                if (read_back.count, read_back.hexdigest()) != (
                    written.count,
                    written.hexdigest(),
                ):
                    raise CopyRefused(
                        f"verification failed: read {written.count} events from SQLite"
                        f" (sha256 {written.hexdigest()}) but {read_back.count} back from"
                        f" {where} (sha256 {read_back.hexdigest()}); nothing was kept"
                    )
                grown = source.head_seq()
                if grown != head:
                    raise CopyRefused(
                        f"the SQLite log grew during the copy (seq {head} -> {grown}): stop"
                        " billhook serve and workers, then copy again; nothing was kept"
                    )
    except psycopg.Error as e:
        raise LogUnavailable(f"cannot copy into PostgreSQL database {where}: {_reason(e)}") from e
    return Copied(events=written.count, head=head, digest=written.hexdigest())


def _refuse_non_empty(conn: psycopg.Connection[Any], where: str) -> None:
    row = conn.execute(_HEAD).fetchone()
    target_head = int(row[0]) if row else 0
    if target_head:
        raise CopyRefused(
            f"the log in PostgreSQL database {where} is not empty (up to seq {target_head}):"
            " log copy only fills an empty one"
        )


def _write(
    conn: psycopg.Connection[Any],
    source: EventLog,
    head: int,
    batch_size: int,
    progress: Callable[[int], None] | None,
) -> Digest:
    """COPY the source's events up to `head` into the target; the digest of what was read."""
    written = Digest()
    after = 0
    while after < head:
        rows = [e for e in source.read(after=after, limit=batch_size) if e.seq <= head]
        if not rows:
            break
        with conn.cursor() as cur, cur.copy(_COPY_IN) as copy:
            for e in rows:
                copy.write_row(
                    (
                        e.seq,
                        e.provider,
                        e.event_id,
                        e.type,
                        e.livemode,
                        e.occurred_at,
                        e.received_at,
                        e.payload,
                    )
                )
                written.add(e)
        after = rows[-1].seq
        if progress is not None:
            progress(after)
    return written


def _read_back(conn: psycopg.Connection[Any], batch_size: int) -> Digest:
    """The digest of the target's rows as PostgreSQL now returns them, in seq order."""
    read = Digest()
    with conn.cursor(name="billhook_log_copy") as cur:
        cur.itersize = batch_size
        cur.execute(_READ_BACK)
        for row in cur:
            read.add(StoredEvent(*row))
    return read
