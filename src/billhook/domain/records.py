"""The log's two shapes of an event: going in, and as stored. Plain values."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EventRecord:
    """One event as it goes into the log (everything but `seq` and `received_at`)."""

    provider: str
    event_id: str
    type: str
    livemode: int | None
    occurred_at: str | None
    payload: str


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
