"""The choices a caller makes, validated once, shared by the sync and the async client."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from billhook_client.answers import MAX_LIMIT, MAX_WAIT_S
from billhook_client.errors import BillhookClientError, BillhookUnavailable
from billhook_client.models import Change
from billhook_client.policy import POLICIES
from billhook_client.state import ClientState

log = logging.getLogger("billhook_client")

# The follower's page size: the largest, so an outage is caught up in few requests.
FOLLOW_LIMIT = MAX_LIMIT
# The follower's longest long poll; under billhook's 30 s cap, with room for a proxy's.
FOLLOW_WAIT_S = 25
# After a failed poll the follower waits this long, doubling up to FOLLOW_BACKOFF_MAX_S.
FOLLOW_BACKOFF_S = 0.25
FOLLOW_BACKOFF_MAX_S = 5.0
# With a long poll of 0 s (a tiny max_staleness_s) the follower pauses this long between polls.
FOLLOW_IDLE_S = 0.2

OnChange = Callable[[Change], None]


@dataclass(frozen=True, slots=True)
class Options:
    fail: str
    last_known_max_age_s: float
    max_staleness_s: float
    follow: bool
    timeout_s: float
    free_actions: frozenset[str]

    def __post_init__(self) -> None:
        if self.fail not in POLICIES:
            raise ValueError(f"fail must be one of {', '.join(POLICIES)}")
        for name in ("last_known_max_age_s", "max_staleness_s", "timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")

    @property
    def poll_wait_s(self) -> int:
        """The follower's long poll: at most half the staleness allowed, so a healthy
        follower reports in well before its cache stops being trusted."""
        return max(0, min(FOLLOW_WAIT_S, MAX_WAIT_S, int(self.max_staleness_s / 2)))

    def state(self, clock: Callable[[], float]) -> ClientState:
        return ClientState(
            follow=self.follow,
            max_staleness_s=self.max_staleness_s,
            policy=self.fail,
            last_known_max_age_s=self.last_known_max_age_s,
            free_actions=self.free_actions,
            clock=clock,
        )


def make_options(
    fail: str,
    last_known_max_age_s: float,
    max_staleness_s: float,
    follow: bool,
    timeout_s: float,
    free_actions: Iterable[str],
) -> Options:
    return Options(
        fail, last_known_max_age_s, max_staleness_s, follow, timeout_s, frozenset(free_actions)
    )


def failure_reason(e: Exception) -> str:
    """What a failed poll is called in a log line: a reason or an error code, never a body."""
    if isinstance(e, BillhookUnavailable):
        return e.reason
    if isinstance(e, BillhookClientError) and e.error is not None:
        return f"{e.status}:{e.error}"
    return type(e).__name__


def notify(on_change: OnChange | None, changes: Iterable[Change]) -> None:
    """Hand each change to the app's callback; its failure is logged, never the follower's."""
    if on_change is None:
        return
    for change in changes:
        try:
            on_change(change)
        except Exception as e:
            log.warning("on_change failed: %s", type(e).__name__)
