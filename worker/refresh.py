"""`POST /v1/workspaces/{id}/refresh`: reconcile one workspace from the provider APIs.

Called on checkout return, when an app cannot wait for the webhook. The API
calls run on a thread (they block, with retries); the snapshots that differ
are appended to the log like any event and the answer waits until they are
projected, so it is the workspace's new entitlement.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ingest.envelope import EventRecord
from ingest.http import ApiError
from ingest.log import Appended
from ingest.settings import Settings
from projections.auth import TokenGate
from projections.store import ProjectionStore
from worker.providers import ApiNotConfigured, ProviderError, SubscriptionSource
from worker.sync import Drift, NotLinked, drift, workspace_snapshots

# Longest provider error message returned to a caller.
MAX_DETAIL_CHARS = 200


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
    ) -> None:
        self._settings = settings
        self._store = store
        self._sources = sources
        self._append = append
        self._wait_for = wait_for
        self._answer = answer
        self._now = now
        self._head = head
        self._gate = TokenGate(settings.auth)

    @property
    def routes(self) -> list[Route]:
        return [Route("/v1/workspaces/{workspace_id}/refresh", self.refresh, methods=["POST"])]

    def _drift(self, workspace: str) -> Drift:
        snapshots = workspace_snapshots(workspace, self._store, self._sources)
        return drift(snapshots, self._store, self._settings, self._now())

    async def refresh(self, request: Request) -> Response:
        self._gate.require(request)
        workspace = request.path_params["workspace_id"]
        # A checkout's link may have arrived a moment ago: read a projection that has it.
        await self._wait_for(self._head())
        try:
            found = await asyncio.to_thread(self._drift, workspace)
        except NotLinked as e:
            raise ApiError(409, "not_linked", str(e)) from None
        except ApiNotConfigured as e:
            raise ApiError(503, "provider_not_configured", str(e)) from None
        except ProviderError as e:
            raise ApiError(502, "provider_error", str(e)[:MAX_DETAIL_CHARS]) from None
        last = 0
        for record in found.records:
            last = (await self._append(record)).seq
        if last:
            await self._wait_for(last)
        return Response(self._answer(workspace), media_type="application/json")
