"""What an attempt's answer means, and when to try again. Pure.

An answer in 2xx delivers. Timeouts, connection errors, redirects (never
followed: the endpoint's URL is what was configured), 408, 409, 429 and 5xx
are retried with exponential backoff and jitter, or after the endpoint's
`Retry-After` when it gives one; any other 4xx is final (410 says the
endpoint is gone). A change is retried until `give_up_us` (its creation plus
`[outbound] retry_span_s`); an attempt that would fall after it gives the
delivery up instead.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

# Delivery outcomes, as the outbox stores them.
DELIVERED = "delivered"
FAILED = "failed"
RETRY = "pending"
# Statuses retried although they are 4xx.
RETRIED_4XX = frozenset({408, 409, 429})
# Why a retried delivery was given up, as its last error.
GAVE_UP = "gave_up"


def outcome_of(status: int | None) -> str:
    """DELIVERED, RETRY or FAILED for an answer's status (None: no answer)."""
    if status is None:
        return RETRY
    if 200 <= status < 300:
        return DELIVERED
    if 400 <= status < 500 and status not in RETRIED_4XX:
        return FAILED
    return RETRY


def backoff_s(attempts: int, first_s: float, max_s: float, rand: float) -> float:
    """The wait after the `attempts`-th failed attempt: `first_s` doubling up to `max_s`,
    with "equal jitter" (between half and all of it; `rand` in [0, 1)), so endpoints that
    fail together are not retried in lockstep."""
    base = min(max_s, first_s * (1 << min(attempts - 1, 62)))
    return base / 2 + base / 2 * rand


def retry_after_s(value: str | None, now: datetime) -> float | None:
    """An answer's `Retry-After` in seconds from `now`: delay-seconds or an HTTP date.
    None when absent or unreadable; never negative."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(min(int(value[:12]), 10**9))
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def next_step(
    status: int | None,
    *,
    attempts: int,
    retry_after: float | None,
    now_us: int,
    give_up_us: int,
    first_s: float,
    max_s: float,
    rand: float,
) -> tuple[str, int | None]:
    """(outcome, next attempt's time) after the `attempts`-th attempt answered `status`."""
    outcome = outcome_of(status)
    if outcome != RETRY:
        return outcome, None
    wait_s = retry_after if retry_after is not None else backoff_s(attempts, first_s, max_s, rand)
    next_at_us = now_us + int(wait_s * 1_000_000)
    if next_at_us > give_up_us:
        return FAILED, None
    return RETRY, next_at_us
