"""A chat-like endpoint guarded by billhook before anything is persisted.

    BILLHOOK_URL=http://127.0.0.1:8000 BILLHOOK_TOKEN=... \
        uvicorn --factory examples.guarded_chat:app_from_environment

`POST /workspaces/{workspace}/chat` with `{"text": "..."}` stores the turn and
answers it — but only when billhook allows `ai_imports` for the workspace:
under `enforce` a workspace without it gets billhook's own 402
`billing_required` body (the UI's billing dialog reads it) and nothing is
stored; under `observe` the turn goes through and `GET /guard` counts it as a
`would_deny`.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from billhook_client import AsyncBillhook
from billhook_client.guard import requires
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


def create_app(billhook: AsyncBillhook, turns: list[tuple[str, str]] | None = None) -> Starlette:
    """The chat app; `turns` is its "database" (a list the caller may keep to look at)."""
    stored = [] if turns is None else turns

    @requires("ai_imports", workspace=lambda request: request.path_params["workspace"])
    async def chat(request: Request) -> JSONResponse:
        # Past the guard: hydrate the chat, persist the turn, dispatch the model.
        body = await request.json()
        workspace = request.path_params["workspace"]
        stored.append((workspace, str(body["text"])))
        return JSONResponse({"reply": f"echo: {body['text']}", "turns": len(stored)})

    async def guard_counts(request: Request) -> JSONResponse:
        counts = billhook.guard_counts
        return JSONResponse({d: counts.get(decision=d) for d in ("allow", "would_deny", "deny")})

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.billhook = billhook
        async with billhook:
            yield

    return Starlette(
        routes=[
            Route("/workspaces/{workspace}/chat", chat, methods=["POST"]),
            Route("/guard", guard_counts, methods=["GET"]),
        ],
        lifespan=lifespan,
    )


def app_from_environment() -> Starlette:
    """The app for `uvicorn --factory`: billhook's URL, read token and outage policy from
    BILLHOOK_URL, BILLHOOK_TOKEN and BILLHOOK_FAIL."""
    url = os.environ.get("BILLHOOK_URL", "http://127.0.0.1:8000")
    token = os.environ["BILLHOOK_TOKEN"]
    return create_app(AsyncBillhook(url, token, fail=os.environ.get("BILLHOOK_FAIL", "closed")))
