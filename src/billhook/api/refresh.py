"""`POST /v1/workspaces/{id}/refresh`: reconcile one workspace from the provider APIs.

Called on checkout return, when an app cannot wait for the webhook. Without
Redis the API calls run here on a thread (they block, with retries); with
Redis they run as the `refresh_workspace` actor in a worker, with its retry
policy, and the outcome comes back through a Redis list this request waits on.
Either way the snapshots that differ are appended to the log like any event,
and the answer waits until they are projected: it is the new entitlement.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ParamSpec, TypeVar

import redis
from dramatiq.errors import DramatiqError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from billhook.api.auth import TokenGate
from billhook.api.paths import WORKSPACE_PATH, workspace_id
from billhook.config import Settings
from billhook.domain.records import EventRecord
from billhook.errors import ApiError
from billhook.log.sqlite import Appended
from billhook.projections.store import ProjectionStore
from billhook.providers.clients import ApiNotConfigured, ProviderError, SubscriptionSource
from billhook.runners.actors import refresh_result_key
from billhook.sync.reconcile import Drift, NotLinked, drift, workspace_snapshots

logger = logging.getLogger(__name__)
# How often one process refreshes a workspace a time rule flagged, at most.
BACKGROUND_EVERY_S = 600.0
# Workspaces whose last background refresh is remembered, at most.
MAX_REMEMBERED = 50_000
# Longest provider error message returned to a caller.
MAX_DETAIL_CHARS = 200
# How long a refresh waits for a worker's outcome before answering 503.
REMOTE_TIMEOUT_S = 30
P = ParamSpec("P")
T = TypeVar("T")
# Outcome statuses of the refresh actor, as HTTP answers.
_OUTCOME_ERRORS = {
    "not_linked": 409,
    "provider_not_configured": 503,
    "provider_error": 502,
}


@dataclass(frozen=True)
class RemoteRefresh:
    """How to hand a refresh to a worker and wait for its outcome."""

    send: Callable[[str, str], object]
    client: redis.Redis

    def __call__(self, workspace: str) -> dict[str, Any]:
        request_id = uuid.uuid4().hex
        self.send(workspace, request_id)
        found = self.client.blpop([refresh_result_key(request_id)], timeout=REMOTE_TIMEOUT_S)
        if found is None:
            raise ApiError(
                503, "refresh_unavailable", "no worker answered the refresh in time; retry"
            )
        outcome: dict[str, Any] = json.loads(found[1])
        return outcome


async def provider_call(call: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run a blocking provider call on a thread; its failures as 502/503 answers."""
    try:
        return await asyncio.to_thread(call, *args, **kwargs)
    except ApiNotConfigured as e:
        raise ApiError(503, "provider_not_configured", str(e)) from None
    except ProviderError as e:
        raise ApiError(502, "provider_error", str(e)[:MAX_DETAIL_CHARS]) from None


class BackgroundRefresh:
    """Refreshes, in the background, workspaces whose answer a time rule flagged.

    A canceling subscription past its end plus the allowance, or a period long
    ended without a renewal, means billhook missed the provider's event: a
    refresh asks the provider API and appends what it says. At most one
    refresh per workspace per `every_s` in this process, none without a running
    event loop; failures are logged (ids and the error's kind), never raised
    into the read that noticed.
    """

    def __init__(
        self,
        run: Callable[[str], Awaitable[None]],
        *,
        every_s: float = BACKGROUND_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._run = run
        self._every_s = every_s
        self._clock = clock
        self._last: dict[str, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def __call__(self, workspace: str) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        now = self._clock()
        last = self._last.get(workspace)
        if last is not None and now - last < self._every_s:
            return
        if len(self._last) >= MAX_REMEMBERED:
            self._last.clear()
        self._last[workspace] = now
        task = loop.create_task(self._guarded(workspace))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _guarded(self, workspace: str) -> None:
        fields = {"workspace_id": workspace, "reason": "time_rule"}
        try:
            await self._run(workspace)
        except Exception as e:  # logged, not raised: a read noticed, a read must not fail
            fields["error"] = type(e).__name__
            logger.warning("background_refresh", extra={"fields": fields})
            return
        logger.info("background_refresh", extra={"fields": {**fields, "outcome": "done"}})


class RefreshRoute:
    def __init__(
        self,
        settings: Settings,
        store: ProjectionStore,
        sources: Mapping[str, SubscriptionSource],
        *,
        append: Callable[[EventRecord], Awaitable[Appended]],
        wait_for: Callable[[int], Awaitable[None]],
        answer: Callable[[str], bytes],
        now: Callable[[], datetime],
        head: Callable[[], int],
        remote: RemoteRefresh | None = None,
    ) -> None:
        self._settings = settings
        self._store = store
        self._sources = sources
        self._append = append
        self._wait_for = wait_for
        self._answer = answer
        self._now = now
        self._head = head
        self._remote = remote
        self._gate = TokenGate(settings.auth)

    @property
    def routes(self) -> list[Route]:
        """Relative to `/v1`, like the entitlement API's."""
        return [Route(f"{WORKSPACE_PATH}/refresh", self.refresh, methods=["POST"])]

    def _drift(self, workspace: str) -> Drift:
        snapshots = workspace_snapshots(workspace, self._store, self._sources)
        return drift(snapshots, self._store, self._settings, self._now())

    async def refresh(self, request: Request) -> Response:
        self._gate.require(request)
        workspace = workspace_id(request)
        # A checkout's link may have arrived a moment ago: read a projection that has it.
        await self._wait_for(self._head())
        if self._remote is not None:
            await self._refresh_remotely(workspace)
            return Response(self._answer(workspace), media_type="application/json")
        try:
            found = await provider_call(self._drift, workspace)
        except NotLinked as e:
            raise ApiError(409, "not_linked", str(e)) from None
        last = 0
        for record in found.records:
            last = (await self._append(record)).seq
        if last:
            await self._wait_for(last)
        return Response(self._answer(workspace), media_type="application/json")

    async def in_background(self, workspace: str) -> None:
        """A refresh nobody waits for (see :class:`BackgroundRefresh`): with Redis, the
        actor's message is sent and its outcome not awaited."""
        if self._remote is not None:
            await asyncio.to_thread(self._remote.send, workspace, uuid.uuid4().hex)
            return
        found = await asyncio.to_thread(self._drift, workspace)
        for record in found.records:
            await self._append(record)

    async def _refresh_remotely(self, workspace: str) -> None:
        assert self._remote is not None
        try:
            outcome = await asyncio.to_thread(self._remote, workspace)
        except (redis.RedisError, DramatiqError):
            raise ApiError(
                503, "refresh_unavailable", "the broker cannot be reached; retry"
            ) from None
        status = outcome.get("status")
        if status in _OUTCOME_ERRORS:
            detail = str(outcome.get("detail", ""))[:MAX_DETAIL_CHARS]
            raise ApiError(_OUTCOME_ERRORS[str(status)], str(status), detail)
        await self._wait_for(int(outcome.get("seq", 0)))
