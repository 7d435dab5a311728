"""The client's memory: a cache of billhook's answers kept true by the change feed.

Shared by the sync and the async client; every write holds one lock (the sync
client's follower is a thread), a cached read takes none.

Why a cached answer can be trusted:
- an answer is cached only once the follower has a cursor, and only when no
  change touched its workspace (nor the enforcement mode) while it was being
  fetched: each workspace has a generation, bumped by every change about it,
  and an answer fetched under an older generation is used once, not cached;
- the follower resumes from its cursor after any outage, so no change is
  missed: an `entitlement` change drops its workspace's answers, an
  `enforcement` change (or one of a kind this client does not know) drops all;
- the follower has heard from billhook — and caught up — within
  `max_staleness_s`; after that, nothing cached is trusted until it has again.

Without a follower (`follow=False`) an answer is trusted for `max_staleness_s`
after it was fetched.

What is *known* outlives the cache: the last answers and changes stay for the
outage policy (`policy.py`), aged from when billhook last confirmed them.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from billhook_client.models import (
    Change,
    ChangePage,
    Check,
    EnforcementChange,
    Entitlement,
    EntitlementChange,
)
from billhook_client.policy import (
    Basis,
    Known,
    fallback_check,
    fallback_entitlement,
    known_from_entitlement,
)

# A check's key within its workspace: (action, seats_in_use).
Key = tuple[str, int | None]


@dataclass(frozen=True, slots=True)
class Token:
    """Taken before asking billhook; the answer is cached only if it still matches."""

    workspace: str
    epoch: int
    started: bool
    generation: int
    global_generation: int


@dataclass(slots=True)
class _Entry:
    check: Check
    fetched_at: float


@dataclass(slots=True)
class _Known:
    known: Known
    learned_at: float
    # The follower epoch that has tracked it since; None: learned while no follower had a cursor.
    epoch: int | None


class ClientState:
    """The cache, what is known for the outage policy, and the follower's progress."""

    def __init__(
        self,
        *,
        follow: bool,
        max_staleness_s: float,
        policy: str,
        last_known_max_age_s: float,
        free_actions: Iterable[str],
        clock: Callable[[], float],
    ) -> None:
        self._follow = follow
        self._max_staleness_s = max_staleness_s
        self._policy = policy
        self._max_age_s = last_known_max_age_s
        self._free = frozenset(free_actions)
        self._clock = clock
        self._lock = threading.Lock()
        self._checks: dict[str, dict[Key, _Entry]] = {}
        self._entitlements: dict[str, tuple[Entitlement, float]] = {}
        self._generations: dict[str, int] = {}
        self._global_generation = 0
        # Bumped when the follower loses its place (its cursor refused): nothing is tracked then.
        self._epoch = 0
        self._started = False
        self._heard_at: float | None = None
        # With a follower: nothing is trusted until it has caught up once.
        self._fresh_until = -math.inf if follow else math.inf
        # Per entry: how long after its fetch it is trusted (for ever with a follower).
        self._ttl = math.inf if follow else max_staleness_s
        self._known: dict[str, _Known] = {}
        self._enforcement: str | None = None
        self._default_features: frozenset[str] = frozenset()

    # -- the cache --------------------------------------------------------------------------

    def cached_check(self, workspace: str, action: str, seats_in_use: int | None) -> Check | None:
        """billhook's cached answer, when it can be trusted now; else None (ask billhook)."""
        by_workspace = self._checks.get(workspace)
        if by_workspace is None:
            return None
        entry = by_workspace.get((action, seats_in_use))
        if entry is None:
            return None
        now = self._clock()
        if now > self._fresh_until or now > entry.fetched_at + self._ttl:
            return None
        return entry.check

    def cached_entitlement(self, workspace: str) -> Entitlement | None:
        entry = self._entitlements.get(workspace)
        if entry is None:
            return None
        now = self._clock()
        if now > self._fresh_until or now > entry[1] + self._ttl:
            return None
        return entry[0]

    def token(self, workspace: str) -> Token:
        return Token(
            workspace,
            self._epoch,
            self._started or not self._follow,
            self._generations.get(workspace, 0),
            self._global_generation,
        )

    def _current(self, token: Token) -> bool:
        return token.started and token == self.token(token.workspace)

    def store_check(
        self, token: Token, action: str, seats_in_use: int | None, check: Check
    ) -> None:
        """Cache billhook's answer to a check of the token's workspace, unless a change
        overtook it while it was fetched."""
        with self._lock:
            if self._enforcement is None and check.enforcement is not None:
                self._enforcement = check.enforcement
            if not self._current(token):
                return
            if check.enforcement is not None:
                self._enforcement = check.enforcement
            entry = _Entry(check, self._clock())
            self._checks.setdefault(token.workspace, {})[(action, seats_in_use)] = entry

    def store_entitlement(self, token: Token, entitlement: Entitlement) -> None:
        """Remember billhook's answer (for the policy) and cache it unless overtaken."""
        with self._lock:
            now = self._clock()
            ws = token.workspace
            current = self._current(token)
            if entitlement.source == "default":
                self._default_features = frozenset(entitlement.features.included)
            if current or ws not in self._known:
                tracked = self._epoch if current and self._follow else None
                self._known[ws] = _Known(known_from_entitlement(entitlement), now, tracked)
            if self._enforcement is None or current:
                self._enforcement = entitlement.enforcement
            if current:
                self._entitlements[ws] = (entitlement, now)

    # -- the follower -----------------------------------------------------------------------

    def apply(self, page: ChangePage, caught_up: bool) -> None:
        """Apply one page of the feed; `caught_up`: it was the last one for now."""
        with self._lock:
            now = self._clock()
            for change in page.changes:
                self._apply(change, now)
            self._started = True
            if caught_up:
                self._heard_at = now
                self._fresh_until = now + self._max_staleness_s

    def _apply(self, change: Change, now: float) -> None:
        if isinstance(change, EntitlementChange):
            ws = change.workspace_id
            self._generations[ws] = self._generations.get(ws, 0) + 1
            self._checks.pop(ws, None)
            self._entitlements.pop(ws, None)
            if change.source == "default":
                self._default_features = frozenset(change.included)
            known = Known(
                tier=change.tier,
                included=frozenset(change.included),
                seats=change.seats,
                next_action=change.next_action,
                as_of_seq=change.seq,
                entitlement=None,
            )
            self._known[ws] = _Known(known, now, self._epoch)
            return
        self._global_generation += 1
        self._checks.clear()
        self._entitlements.clear()
        if isinstance(change, EnforcementChange):
            self._enforcement = change.enforcement

    def reset(self) -> None:
        """The follower lost its place (billhook refused its cursor): it starts again at
        the head, and nothing learned so far is tracked any more."""
        with self._lock:
            self._epoch += 1
            self._started = False
            self._heard_at = None
            self._fresh_until = -math.inf
            self._checks.clear()
            self._entitlements.clear()
            for workspace, known in self._known.items():
                self._known[workspace] = dataclasses.replace(known, epoch=None)

    @property
    def heard_at(self) -> float | None:
        """When (by the client's clock) the follower last caught up with billhook."""
        return self._heard_at

    # -- the outage policy ------------------------------------------------------------------

    def _age(self, learned_at: float, epoch: int | None) -> float:
        """Seconds since billhook last confirmed something learned at `learned_at`: a
        tracked fact is confirmed again each time the follower catches up."""
        confirmed = learned_at
        if epoch == self._epoch and self._heard_at is not None:
            confirmed = max(confirmed, self._heard_at)
        return max(0.0, self._clock() - confirmed)

    def fallback_check(
        self, workspace: str, action: str, seats_in_use: int | None, reason: str
    ) -> Check:
        with self._lock:
            entry = self._checks.get(workspace, {}).get((action, seats_in_use))
            known = self._known.get(workspace)
            tracked = self._epoch if self._follow else None
            basis = Basis(
                cached=None if entry is None else entry.check,
                cached_age=math.inf if entry is None else self._age(entry.fetched_at, tracked),
                known=None if known is None else known.known,
                known_age=math.inf if known is None else self._age(known.learned_at, known.epoch),
                enforcement=self._enforcement,
                free=self._default_features | self._free,
            )
        return fallback_check(
            self._policy, self._max_age_s, workspace, action, seats_in_use, reason, basis
        )

    def fallback_entitlement(self, workspace: str, reason: str) -> Entitlement:
        with self._lock:
            known = self._known.get(workspace)
            age = math.inf if known is None else self._age(known.learned_at, known.epoch)
        return fallback_entitlement(
            self._policy, self._max_age_s, reason, None if known is None else known.known, age
        )
