"""Resolved entitlements kept between requests, for the read path's speed.

An entry is valid while the projection is unchanged (SQLite's `data_version`
on the API's own connection changes whenever any other connection commits:
the projector, a worker, a replay's swap; PostgreSQL's follows NOTIFY) and
until the first time rule of the entry fires (an override expiry, a grace
period's end, a canceling subscription's end plus the allowance, a period
turning stale). An answer a time rule flagged is handed to `on_flagged`,
which refreshes the workspace from the provider in the background.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from billhook.api.schemas import encode, entitlement_answer
from billhook.config import Settings
from billhook.domain.resolver import Entitlement, refresh_wanted, resolve
from billhook.domain.times import to_us
from billhook.projections.store import ProjectionStore

# Entries kept at most; past it the cache starts over (a full rebuild is cheap).
MAX_ENTRIES = 50_000


@dataclass(frozen=True)
class Cached:
    entitlement: Entitlement
    # The rendered `GET .../entitlements` answer.
    body: bytes


class EntitlementCache:
    def __init__(
        self,
        store: ProjectionStore,
        settings: Settings,
        now: Callable[[], datetime],
        *,
        max_entries: int = MAX_ENTRIES,
        on_flagged: Callable[[str], None] | None = None,
    ) -> None:
        self._store = store
        self._settings = settings
        self._now = now
        self._max_entries = max_entries
        self._on_flagged = on_flagged
        self._entries: dict[str, Cached] = {}
        self._version: int | None = None

    def get(self, workspace: str) -> Cached:
        """The entitlement of `workspace` now, resolved afresh only when needed."""
        version = self._store.data_version()
        if version != self._version:
            self._entries.clear()
            self._version = version
        now = self._now()
        entry = self._entries.get(workspace)
        if entry is not None:
            until = entry.entitlement.valid_until_us
            if until is None or to_us(now) < until:
                return entry
        entitlement = resolve(self._store.workspace_facts(workspace), self._settings.policy, now)
        if self._on_flagged is not None and refresh_wanted(entitlement):
            self._on_flagged(workspace)
        entry = Cached(entitlement, encode(entitlement_answer(entitlement, now)))
        if len(self._entries) >= self._max_entries:
            self._entries.clear()
        self._entries[workspace] = entry
        return entry
