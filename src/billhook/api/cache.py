"""Resolved entitlements kept between requests, for the read path's speed.

An entry is valid while the projection is unchanged (SQLite's `data_version`
on the API's own connection changes whenever any other connection commits:
the projector, a worker, a replay's swap; PostgreSQL's follows NOTIFY) and
until the first time rule of the entry fires (an override expiry, a grace
period's end, a canceling subscription's end plus the allowance, a period
turning stale). An answer a time rule flagged is handed to `on_flagged`,
which refreshes the workspace from the provider in the background.

Asking SQLite for `data_version` costs a shared-memory lock (two `fcntl`
calls, the GIL released and taken back): under load it was the read path's
largest single cost. On the event loop the version read is therefore shared
by everything that runs in the same loop iteration, and read again in the
next one. That keeps "a read after a write sees it": whatever triggered a
callback (a request's bytes arriving, a sleep ending, a write's answer seen
by its client) happened before the callback was queued, and every callback
queued after a version read runs after the `call_soon` that forgets it, so it
reads the version anew. A caller that has just seen newer state itself (a
route that waited for its own write to be projected) passes `fresh=True`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from billhook.api.schemas import CheckAnswer, encode, entitlement_answer
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
    # Feature checks answered from this entry (the check route's): action → (answer, its JSON).
    checks: dict[str, tuple[CheckAnswer, bytes]] = field(default_factory=dict)


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
        # Whether `_version` was read in this loop iteration (see the module doc).
        self._version_current = False

    def get(self, workspace: str, *, fresh: bool = False) -> Cached:
        """The entitlement of `workspace` now, resolved afresh only when needed.

        `fresh`: read the store's version even if this loop iteration already did
        (the caller has just seen a newer checkpoint)."""
        if fresh or not self._version_current or asyncio._get_running_loop() is None:
            self._check_version()
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

    def _check_version(self) -> None:
        loop = asyncio._get_running_loop()
        if loop is not None and not self._version_current:
            # Queued before the read: a callback queued after the read runs after this one.
            loop.call_soon(self._forget_version)
        version = self._store.data_version()
        if version != self._version:
            self._entries.clear()
            self._version = version
        # Off the event loop (a thread, a command) every call reads the version.
        self._version_current = loop is not None

    def _forget_version(self) -> None:
        self._version_current = False
