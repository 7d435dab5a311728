"""Opening the event log where the settings say it lives: SQLite files or PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from urllib.parse import urlsplit

from billhook.config import Settings
from billhook.log.postgres import PostgresEventLog
from billhook.log.sqlite import DEFAULT_BUSY_TIMEOUT_S, EventLog

# Either log: both keep every promise of SPEC §4 behind the same methods.
Log = EventLog | PostgresEventLog


def open_log(
    settings: Settings,
    *,
    busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
    clock: Callable[[], datetime] | None = None,
) -> Log:
    """The event log `settings` name: `[storage] url` if set, else `data_dir/events.db`.

    Raises :class:`~billhook.errors.LogUnavailable` when it cannot be opened.
    """
    if settings.storage_url:
        url = settings.storage_url.reveal()
        # Without a clock of the caller's, the database's stamps each append.
        return PostgresEventLog(url, busy_timeout_s=busy_timeout_s, clock=clock)
    return EventLog(settings.events_path, busy_timeout_s=busy_timeout_s, clock=clock or _utcnow)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def describe(settings: Settings) -> str:
    """Where the log lives, for people: a path, or the database without its password."""
    if settings.storage_url:
        return f"PostgreSQL database {database_name(settings.storage_url.reveal())}"
    return str(settings.events_path.absolute())


def database_name(url: str) -> str:
    """`host/dbname` of a PostgreSQL URL, never its user or password."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    return f"{host}{parts.path or '/'}"
