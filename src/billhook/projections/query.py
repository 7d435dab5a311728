"""Resolving a workspace now or as it stood at some point of the log."""

from __future__ import annotations

from datetime import UTC, datetime

from billhook.config import Settings
from billhook.domain.resolver import Entitlement, resolve
from billhook.domain.times import iso_utc, parse_time
from billhook.errors import InvalidAction
from billhook.log.backend import Log
from billhook.projections.store import ProjectionStore

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# The largest seq SQLite can store (a signed 64-bit INTEGER), and its length in digits.
MAX_SEQ = 2**63 - 1
MAX_SEQ_DIGITS = len(str(MAX_SEQ))


def as_of_point(raw: str, log: Log) -> tuple[int, datetime]:
    """`?as_of=` as (last seq at or before it, the time to evaluate rules at).

    A seq is evaluated at the time it was committed; an ISO time at itself.
    """
    if raw.isascii() and raw.isdigit():
        # Past SQLite's 64-bit integers (and Python's digit limit) no seq can exist.
        digits = raw.lstrip("0") or "0"
        seq = int(digits) if len(digits) <= MAX_SEQ_DIGITS else MAX_SEQ + 1
        if seq == 0:
            return 0, EPOCH
        event = log.get(seq) if seq <= MAX_SEQ else None
        if event is None:
            raise InvalidAction("as_of", f"as_of: no event with seq {digits[:MAX_SEQ_DIGITS]}")
        return seq, parse_time(event.received_at)
    try:
        at = datetime.fromisoformat(raw)
    except ValueError:
        raise InvalidAction("as_of", "as_of must be a seq or an ISO 8601 time") from None
    at = at if at.tzinfo else at.replace(tzinfo=UTC)
    try:
        instant = iso_utc(at)
    except OverflowError:  # year 1 at +01:00, year 9999 at -10:00: not a time in UTC
        raise InvalidAction("as_of", "as_of is out of range") from None
    return log.last_seq_at(instant), at


def entitlement_at(
    store: ProjectionStore,
    log: Log,
    settings: Settings,
    workspace: str,
    as_of: str | None,
    now: datetime,
) -> tuple[Entitlement, datetime]:
    """The entitlement now, or at `as_of`, and the time it was evaluated at."""
    if as_of is None:
        return resolve(store.workspace_facts(workspace), settings.policy, now), now
    seq, at = as_of_point(as_of, log)
    return resolve(store.workspace_facts(workspace, seq), settings.policy, at), at
