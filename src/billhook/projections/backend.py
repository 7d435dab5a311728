"""Opening the projections where the settings say they live, and where a replay builds."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from billhook.config import Settings
from billhook.projections.postgres import PROJECTIONS_SCHEMA, PgSchema, PostgresProjectionStore
from billhook.projections.postgres import drop as drop_schema
from billhook.projections.postgres import exists as schema_exists
from billhook.projections.store import DEFAULT_BUSY_TIMEOUT_S, ProjectionStore

# A projection store's place: an SQLite file, or a schema in PostgreSQL.
Location = Path | PgSchema


def live_location(settings: Settings) -> Location:
    if settings.storage_url:
        return PgSchema(settings.storage_url.reveal(), PROJECTIONS_SCHEMA)
    return settings.projections_path


def shadow_location(settings: Settings, *, private: bool = False) -> Location:
    """Where a replay builds; `private` adds the pid, for rebuilds several workers may run."""
    suffix = f"_{os.getpid()}" if private else ""
    if settings.storage_url:
        return PgSchema(settings.storage_url.reveal(), f"{PROJECTIONS_SCHEMA}_replay{suffix}")
    dotted = suffix.replace("_", ".")
    return settings.projections_path.with_name(f"projections.replay{dotted}.db")


def open_store(
    location: Location,
    settings: Settings,
    *,
    busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
    before_commit: Callable[[], None] | None = None,
    listen: bool = False,
) -> ProjectionStore:
    """The store at `location`, created if absent. `listen`: its `data_version` follows
    commits made by other processes (a cached reader's store; SQLite's always does)."""
    if isinstance(location, PgSchema):
        return PostgresProjectionStore(
            location,
            settings,
            busy_timeout_s=busy_timeout_s,
            before_commit=before_commit,
            listen=listen,
        )
    return ProjectionStore(
        location, settings, busy_timeout_s=busy_timeout_s, before_commit=before_commit
    )


def open_live(
    settings: Settings,
    *,
    before_commit: Callable[[], None] | None = None,
    listen: bool = False,
) -> ProjectionStore:
    """The live projection `settings` name."""
    return open_store(live_location(settings), settings, before_commit=before_commit, listen=listen)


def exists(location: Location) -> bool:
    if isinstance(location, PgSchema):
        return schema_exists(location)
    return location.exists()


def remove(location: Location) -> None:
    """Delete a shadow store: its file and WAL companions, or its schema."""
    if isinstance(location, PgSchema):
        drop_schema(location)
        return
    for suffix in ("", "-wal", "-shm"):
        location.with_name(location.name + suffix).unlink(missing_ok=True)
