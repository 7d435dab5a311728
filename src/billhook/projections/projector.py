"""Catching a projection store up with the log, from its checkpoint.

The log is the queue: whoever runs this (the embedded projector thread, a
dramatiq actor, a replay) only needs to know that there may be new events.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from billhook.log.backend import Log
from billhook.projections.store import ProjectionStore
from billhook.providers.decode import PROJECTED_TYPES

# Where every process (web or `billhook worker`) logs its projection batches.
projector_logger = logging.getLogger(__name__)
# Events read and applied per transaction.
BATCH_SIZE = 1000


@dataclass(frozen=True)
class CatchUp:
    """What one catch-up did."""

    applied: int
    skipped: int
    quarantined: int
    checkpoint: int


@dataclass(frozen=True)
class Batch:
    """One committed batch: the seqs it read, what became of them, how long it took."""

    first_seq: int
    last_seq: int
    events: int
    applied: int
    skipped: int
    quarantined: int
    seconds: float


def catch_up(
    log: Log,
    store: ProjectionStore,
    *,
    batch_size: int = BATCH_SIZE,
    on_batch: Callable[[Batch], None] | None = None,
) -> CatchUp:
    """Apply every event past the store's checkpoint, one batch per transaction.

    Safe to run concurrently with itself and to re-run at any point: each batch
    commits together with its checkpoint, events at or below the checkpoint
    are ignored, and a batch that does not follow on from the stored
    checkpoint is read again from there. `on_batch` hears of each batch once it committed.
    """
    applied = skipped = quarantined = 0
    while True:
        started = time.perf_counter()
        # Read from the stored checkpoint, never from one remembered here: a replay's swap
        # or another projector may have moved it since the last batch.
        checkpoint = store.checkpoint()
        events = log.read(after=checkpoint, limit=batch_size, payloads_of=PROJECTED_TYPES)
        if not events:
            return CatchUp(applied, skipped, quarantined, checkpoint)
        result = store.apply(events, after=checkpoint)
        if on_batch is not None:
            seconds = time.perf_counter() - started
            on_batch(
                Batch(
                    first_seq=events[0].seq,
                    last_seq=events[-1].seq,
                    events=len(events),
                    applied=result.applied,
                    skipped=result.skipped,
                    quarantined=result.quarantined,
                    seconds=seconds,
                )
            )
        applied += result.applied
        skipped += result.skipped
        quarantined += result.quarantined


def log_batch(batch: Batch) -> None:
    """One line per committed projection batch: its seqs, counts and latency."""
    projector_logger.info(
        "batch",
        extra={
            "fields": {
                "first_seq": batch.first_seq,
                "last_seq": batch.last_seq,
                "count": batch.events,
                "applied": batch.applied,
                "skipped": batch.skipped,
                "quarantined": batch.quarantined,
                "latency_ms": round(batch.seconds * 1000, 3),
            }
        },
    )
