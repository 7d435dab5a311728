"""`GET /v1/changes` and `GET /v1/changes/stream`: the entitlement-change feed (SPEC §6a).

Every change of a workspace's resolved entitlement, and of the enforcement
mode, oldest first, resumable from a cursor (`projections.changes`). The
list answers at once, or with `wait`, as soon as there is a change (a long
poll); the stream sends the same changes as Server-Sent Events, each with its
cursor as the event id, so a client that reconnects with `Last-Event-ID` goes
on where it stopped. Both learn of new changes from the store's
`data_version` (SQLite's, or PostgreSQL's NOTIFY), reading only when it moved.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from billhook.api import bodies as req
from billhook.api.auth import TokenGate
from billhook.config import Settings
from billhook.projections.changes import START, change_body, format_cursor, parse_cursor
from billhook.projections.store import ProjectionStore

# Changes per answer: the default, and the most a client may ask for.
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
# The longest long poll, in seconds.
MAX_WAIT_S = 30
# How often a waiting request or a stream looks whether the store changed.
POLL_S = 0.02
# Keep-alive comments on an idle stream, so proxies keep it open.
PING_S = 15
# What `after=now` means: no changes, only the cursor to follow from.
NOW = "now"


class ChangeFeed:
    def __init__(self, settings: Settings, store: ProjectionStore) -> None:
        self._store = store
        self._gate = TokenGate(settings.auth)

    @property
    def routes(self) -> list[Route]:
        """Relative to `/v1`."""
        return [
            Route("/changes", self.changes, methods=["GET"]),
            Route("/changes/stream", self.stream, methods=["GET"]),
        ]

    async def changes(self, request: Request) -> Response:
        self._gate.require(request)
        params = request.query_params
        limit = _bounded(params.get("limit"), "limit", 1, MAX_LIMIT, DEFAULT_LIMIT)
        wait = _bounded(params.get("wait"), "wait", 0, MAX_WAIT_S, 0)
        after = params.get("after")
        if after == NOW:
            head = await asyncio.to_thread(self._store.last_cursor)
            return _json({"changes": [], "next": format_cursor(head)})
        cursor = _cursor(after, "after")
        deadline = time.monotonic() + wait
        while True:
            version = self._store.data_version()
            rows = await asyncio.to_thread(self._store.changes_after, cursor, limit)
            if rows or time.monotonic() >= deadline:
                break
            await self._until_changed(version, deadline)
        next_cursor = (rows[-1].seq, rows[-1].k) if rows else cursor
        body = {"changes": [change_body(row) for row in rows], "next": format_cursor(next_cursor)}
        return _json(body)

    async def stream(self, request: Request) -> Response:
        self._gate.require(request)
        raw = request.headers.get("last-event-id") or request.query_params.get("after")
        cursor = _cursor(raw, "Last-Event-ID")
        return EventSourceResponse(self._events(request, cursor), ping=PING_S)

    async def _events(self, request: Request, cursor: tuple[int, int]) -> AsyncIterator[Any]:
        while not await request.is_disconnected():
            version = self._store.data_version()
            rows = await asyncio.to_thread(self._store.changes_after, cursor, MAX_LIMIT)
            for row in rows:
                cursor = (row.seq, row.k)
                data = orjson.dumps(change_body(row)).decode()
                yield ServerSentEvent(data=data, id=row.cursor, event="change")
            if not rows:
                await self._until_changed(version, time.monotonic() + PING_S)

    async def _until_changed(self, version: int, deadline: float) -> None:
        """Sleep until the store's data_version moves past `version`, or `deadline`."""
        while time.monotonic() < deadline:
            await asyncio.sleep(POLL_S)
            if self._store.data_version() != version:
                return


def _cursor(raw: str | None, name: str) -> tuple[int, int]:
    if raw is None or raw == "":
        return START
    cursor = parse_cursor(raw)
    if cursor is None:
        raise req.invalid(f"{name} is not a cursor of this feed (use a change's cursor)")
    return cursor


def _bounded(raw: str | None, name: str, low: int, high: int, default: int) -> int:
    if raw is None:
        return default
    if not raw.isascii() or not raw.isdigit() or len(raw) > 6 or not low <= int(raw) <= high:
        raise req.invalid(f"{name} must be a whole number from {low} to {high}")
    return int(raw)


def _json(body: dict[str, Any]) -> Response:
    return Response(orjson.dumps(body), media_type="application/json")
