"""`billhook replay`: rebuild every projection from seq 1, then swap it in.

The rebuild goes to a shadow store beside the live one; the live projection
keeps serving meanwhile. The shadow is caught up with events that arrived
during the rebuild, then swapped in atomically. `--dry-run` compares shadow
and live per workspace and swaps nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

from billhook.config import Settings
from billhook.domain.resolver import resolve
from billhook.log.backend import Log
from billhook.projections.backend import (
    Location,
    live_location,
    open_store,
    remove,
    shadow_location,
)
from billhook.projections.projector import catch_up
from billhook.projections.rebuild import Progress, Rebuilt, rebuild, swap_in
from billhook.projections.store import PROJECTION_VERSION, ProjectionStore
from billhook.runners.faults import crash_point

# (tier, source, status): what a dry run compares.
State = tuple[str, str, str]


@dataclass(frozen=True)
class Change:
    workspace: str
    before: State
    after: State


@contextmanager
def _shadow(settings: Settings, private: bool) -> Iterator[Location]:
    path = shadow_location(settings, private=private)
    remove(path)  # a leftover of an interrupted replay is never reused
    try:
        yield path
    finally:
        remove(path)


def diff(
    live: ProjectionStore, shadow: ProjectionStore, settings: Settings, now: datetime
) -> list[Change]:
    """Workspaces whose (tier, source, status) differs between two stores, sorted."""
    changes = []
    for workspace in sorted(live.workspaces() | shadow.workspaces()):
        before = resolve(live.workspace_facts(workspace), settings.policy, now)
        after = resolve(shadow.workspace_facts(workspace), settings.policy, now)
        old = (before.tier, before.source, before.status)
        new = (after.tier, after.source, after.status)
        if old != new:
            changes.append(Change(workspace, old, new))
    return changes


def replay(
    log: Log,
    settings: Settings,
    *,
    dry_run: bool,
    now: datetime,
    progress: Progress | None = None,
    report: Callable[[Rebuilt], None] | None = None,
    private: bool = False,
) -> list[Change]:
    """Rebuild into a shadow; swap it in unless `dry_run`. Returns what changes."""
    with _shadow(settings, private) as path:
        rebuilt = rebuild(log, path, settings, progress=progress)
        if report is not None:
            report(rebuilt)
        shadow = open_store(path, settings)
        live = open_store(live_location(settings), settings)
        try:
            catch_up(log, live)
            catch_up(log, shadow)  # events that arrived while the rebuild ran
            changes = diff(live, shadow, settings, now)
            if not dry_run:
                swap_in(
                    shadow,
                    live_location(settings),
                    log,
                    before_commit=lambda: crash_point("swap"),
                )
        finally:
            shadow.close()
            live.close()
    return changes


logger = logging.getLogger(__name__)


def rebuild_if_outdated(log: Log, store: ProjectionStore, settings: Settings) -> bool:
    """Rebuild and swap when `store` was built by another projection version.

    Meanwhile the old projection keeps serving (and `/readyz` says so).
    """
    stored = store.version()
    if stored == PROJECTION_VERSION:
        return False
    fields = {"outcome": "started", "from_version": stored, "to_version": PROJECTION_VERSION}
    logger.info("rebuild", extra={"fields": fields})
    replay(log, settings, dry_run=False, now=datetime.now(UTC), private=True)
    logger.info("rebuild", extra={"fields": {**fields, "outcome": "swapped"}})
    return True
