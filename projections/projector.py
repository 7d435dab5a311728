"""Catching a projection store up with the log, from its checkpoint.

The log is the queue: whoever runs this (the embedded projector thread, a
dramatiq actor, a replay) only needs to know that there may be new events.
"""

from __future__ import annotations

from dataclasses import dataclass

from ingest.log import EventLog
from projections.decode import PROJECTED_TYPES
from projections.store import ProjectionStore

# Events read and applied per transaction.
BATCH_SIZE = 1000


@dataclass(frozen=True)
class CatchUp:
    """What one catch-up did."""

    applied: int
    skipped: int
    quarantined: int
    checkpoint: int


def catch_up(log: EventLog, store: ProjectionStore, *, batch_size: int = BATCH_SIZE) -> CatchUp:
    """Apply every event past the store's checkpoint, one batch per transaction.

    Safe to run concurrently with itself and to re-run at any point: each batch
    commits together with its checkpoint, and events at or below the
    checkpoint are ignored.
    """
    applied = skipped = quarantined = 0
    checkpoint = store.checkpoint()
    while True:
        events = log.read(after=checkpoint, limit=batch_size, payloads_of=PROJECTED_TYPES)
        if not events:
            return CatchUp(applied, skipped, quarantined, checkpoint)
        result = store.apply(events)
        applied += result.applied
        skipped += result.skipped
        quarantined += result.quarantined
        checkpoint = max(checkpoint, result.last_seq)
