"""dramatiq actors and their retry policies.

Messages carry no events and no objects, only "go": every actor is safe to
run twice, at once in two workers, or after a crash at any point, because the
work it does is idempotent (dramatiq's best practice; docs/architecture.md).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker

from billhook.config import Settings
from billhook.log.backend import Log
from billhook.projections.projector import catch_up, log_batch
from billhook.projections.store import ProjectionStore
from billhook.providers.clients import ApiNotConfigured, ProviderError, SubscriptionSource
from billhook.runners.broker import PENDING_KEY
from billhook.runners.faults import crash_point
from billhook.sync.reconcile import NotLinked, drift, workspace_snapshots

# The queue the projection wake-ups go to.
PROJECTIONS_QUEUE = "billhook-projections"
# The queue of refresh requests (provider API calls: kept apart from projecting).
REFRESH_QUEUE = "billhook-refresh"
# How long a refresh's outcome waits in Redis for the web process to take it.
RESULT_TTL_S = 120


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


# A refresh failing on storage is retried; provider errors are answered, not retried
# here (the provider calls already retry with backoff).
REFRESH_RETRY = RetryPolicy(max_retries=3, min_backoff_ms=500, max_backoff_ms=5_000)


def refresh_result_key(request_id: str) -> str:
    """The Redis list a refresh's outcome is pushed to."""
    return f"billhook:refresh:{request_id}"


@dataclass
class Runtime:
    """What actors work on; set only in worker processes (None in the web process)."""

    log: Log
    store: ProjectionStore
    settings: Settings
    sources: Mapping[str, SubscriptionSource]


@dataclass(frozen=True)
class Actors:
    project: dramatiq.Actor[[], None]
    refresh: dramatiq.Actor[[str, str], None]


def declare(
    broker: dramatiq.Broker, runtime: Runtime | None, *, client: redis.Redis | None = None
) -> Actors:
    """Declare billhook's actors on `broker` and return them (to send or to run).

    `client` is the Redis that holds the wake-up flag and refresh outcomes:
    by default the broker's own (a RedisBroker's); tests that run the actors
    on dramatiq's StubBroker pass one.
    """
    flags = client if client is not None else cast(RedisBroker, broker).client

    def project_projections() -> None:
        if runtime is None:
            raise RuntimeError("project_projections runs in `billhook worker` only")
        # Clear the pending flag first: an event appended from now on sends a new wake-up.
        flags.delete(PENDING_KEY)
        crash_point("before_apply")
        catch_up(runtime.log, runtime.store, on_batch=log_batch)
        crash_point("before_ack")

    def refresh_workspace(workspace: str, request_id: str) -> None:
        if runtime is None:
            raise RuntimeError("refresh_workspace runs in `billhook worker` only")
        outcome = refresh_outcome(runtime, workspace)
        key = refresh_result_key(request_id)
        flags.rpush(key, json.dumps(outcome))
        flags.expire(key, RESULT_TTL_S)

    project: dramatiq.Actor[[], None] = dramatiq.actor(
        broker=broker,
        actor_name="project_projections",
        queue_name=PROJECTIONS_QUEUE,
        **PROJECTIONS_RETRY.options(),
    )(project_projections)
    refresh: dramatiq.Actor[[str, str], None] = dramatiq.actor(
        broker=broker,
        actor_name="refresh_workspace",
        queue_name=REFRESH_QUEUE,
        **REFRESH_RETRY.options(),
    )(refresh_workspace)
    return Actors(project=project, refresh=refresh)


def refresh_outcome(runtime: Runtime, workspace: str) -> dict[str, Any]:
    """Reconcile `workspace` and say how it went, as the web process will answer it.

    Storage errors raise (and the actor is retried); everything else is an outcome.
    """
    try:
        snapshots = workspace_snapshots(workspace, runtime.store, runtime.sources)
    except NotLinked as e:
        return {"status": "not_linked", "detail": str(e)}
    except ApiNotConfigured as e:
        return {"status": "provider_not_configured", "detail": str(e)}
    except ProviderError as e:
        return {"status": "provider_error", "detail": str(e)}
    found = drift(snapshots, runtime.store, runtime.settings, datetime.now(UTC))
    appended = runtime.log.append_batch(found.records) if found.records else []
    catch_up(runtime.log, runtime.store, on_batch=log_batch)
    return {"status": "ok", "seq": max((a.seq for a in appended), default=0)}
