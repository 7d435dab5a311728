"""dramatiq actors and their retry policies.

Messages carry no events and no objects, only "go": every actor is safe to
run twice, at once in two workers, or after a crash at any point, because the
work it does is idempotent (dramatiq's best practice; SPEC §7).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from ingest.log import EventLog
from projections.projector import catch_up
from projections.store import ProjectionStore
from worker.broker import PENDING_KEY
from worker.faults import crash_point

# The queue the projection wake-ups go to.
PROJECTIONS_QUEUE = "billhook-projections"


@dataclass(frozen=True)
class RetryPolicy:
    """How dramatiq retries an actor that raised (exponential backoff, bounded)."""

    max_retries: int
    min_backoff_ms: int
    max_backoff_ms: int

    def options(self) -> dict[str, Any]:
        return {
            "max_retries": self.max_retries,
            "min_backoff": self.min_backoff_ms,
            "max_backoff": self.max_backoff_ms,
        }


# Catching up only fails when a store is unavailable; retry briefly, since the
# worker's timer catches up anyway once it is back.
PROJECTIONS_RETRY = RetryPolicy(max_retries=5, min_backoff_ms=200, max_backoff_ms=5_000)


@dataclass
class Runtime:
    """What actors work on; set only in worker processes (None in the web process)."""

    log: EventLog
    store: ProjectionStore


def declare(broker: RedisBroker, runtime: Runtime | None) -> dramatiq.Actor[[], None]:
    """Declare the projection actor on `broker` and return it (to send or to run)."""

    def project_projections() -> None:
        if runtime is None:
            raise RuntimeError("project_projections runs in `billhook worker` only")
        # Clear the pending flag first: an event appended from now on sends a new wake-up.
        broker.client.delete(PENDING_KEY)
        crash_point("before_apply")
        catch_up(runtime.log, runtime.store)
        crash_point("before_ack")

    decorate = dramatiq.actor(
        broker=broker,
        actor_name="project_projections",
        queue_name=PROJECTIONS_QUEUE,
        **PROJECTIONS_RETRY.options(),
    )
    actor: dramatiq.Actor[[], None] = decorate(project_projections)
    return actor
