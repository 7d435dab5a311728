"""The log's two shapes of an event: going in, and as stored. Plain values."""

from __future__ import annotations

from dataclasses import dataclass

from billhook.domain.values import quick_init


@dataclass(frozen=True)
class EventRecord:
    """One event as it goes into the log (everything but `seq` and `received_at`)."""

    provider: str
    event_id: str
    type: str
    livemode: int | None
    occurred_at: str | None
    payload: str


@quick_init
@dataclass(frozen=True)
class StoredEvent:
    """One row of the log."""

    seq: int
    provider: str
    event_id: str
    type: str
    livemode: int | None
    occurred_at: str | None
    received_at: str
    payload: str


@dataclass(frozen=True)
class EventSubject:
    """Whom an event is about, as far as its payload can tell without being trusted.

    Read from an event that could not be applied, where any field may be the
    malformed one: `workspace` is a workspace the event names itself (metadata,
    a checkout's reference, a Polar external id, an override's workspace);
    `customer` and `subscription` are ids at `provider` whose link leads to
    one. Each is None when absent or unreadable.
    """

    workspace: str | None = None
    provider: str | None = None
    customer: str | None = None
    subscription: str | None = None
