"""The web process: the receiver, and the ops routes, in one Starlette app."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ingest.committer import GroupCommitter
from ingest.http import exception_handlers
from ingest.log import EventLog
from ingest.receiver import Receiver
from ingest.settings import Settings


async def healthz(request: Request) -> Response:
    """The process is alive and its event loop answers."""
    return JSONResponse({"status": "ok"})


def create_app(
    settings: Settings,
    *,
    log: EventLog | None = None,
    now: Callable[[], float] = time.time,
) -> Starlette:
    """Build the web app. A `log` passed in stays the caller's to close."""
    owns_log = log is None
    event_log = log if log is not None else EventLog(settings.events_path)
    committer = GroupCommitter(event_log)
    receiver = Receiver(settings, committer, now=now)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await committer.aclose()
        if owns_log:
            event_log.close()

    app = Starlette(
        routes=[*receiver.routes, Route("/healthz", healthz, methods=["GET"])],
        exception_handlers=exception_handlers(),
        lifespan=lifespan,
    )
    app.state.log = event_log
    app.state.settings = settings
    return app
