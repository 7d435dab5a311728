"""The guard in front of a real billhook: under `enforce` a handler is never entered for a
workspace without the feature and the answer is billhook's own 402, byte for byte; under
`observe` the call goes through and is counted (the example app, examples/guarded_chat.py)."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from billhook_client import AsyncBillhook, Billhook
from billhook_client.guard import Requires, add_guard_handlers, requires
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from billhook.config import Settings
from billhook.testing.servers import serve_in_thread
from billhook.testing.settings import READ_TOKEN
from tests.clients.server import BillhookServer

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "guarded_chat.py"


def _example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("guarded_chat", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def billhook(settings: Settings) -> Iterator[BillhookServer]:
    server = BillhookServer(settings)
    server.start()
    yield server
    server.stop()


@contextmanager
def _serve(app: Starlette) -> Iterator[httpx.Client]:
    """`app` under a real uvicorn (its lifespan runs), and a client of it."""
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=10) as client:
        yield client


def _chat(billhook: BillhookServer, turns: list[tuple[str, str]]) -> Any:
    client = AsyncBillhook(billhook.url, READ_TOKEN, max_staleness_s=2)
    return _serve(_example().create_app(client, turns))


def test_enforce_never_enters_the_handler(billhook: BillhookServer) -> None:
    billhook.subscribe("ws_paid")
    billhook.enforce("enforce")
    turns: list[tuple[str, str]] = []
    with _chat(billhook, turns) as app:
        denied = app.post("/workspaces/ws_free/chat", json={"text": "hello"})
        assert denied.status_code == 402
        assert turns == []  # nothing hydrated, persisted or dispatched
        assert denied.content == billhook.check("ws_free", "ai_imports").content
        body = denied.json()
        assert (body["error"], body["action"], body["required_tier"], body["reason"]) == (
            "billing_required",
            "ai_imports",
            "team",
            "tier_required",
        )
        assert (body["workspace_id"], body["next_action"]) == ("ws_free", "upgrade")
        again = app.post("/workspaces/ws_free/chat", json={"text": "hello?"})
        assert (again.status_code, again.content) == (402, denied.content)
        allowed = app.post("/workspaces/ws_paid/chat", json={"text": "hi"})
        assert allowed.status_code == 200, allowed.text
        assert turns == [("ws_paid", "hi")]
        assert app.get("/guard").json() == {"allow": 1, "would_deny": 0, "deny": 2}


def test_observe_lets_the_call_through_and_counts_it(billhook: BillhookServer) -> None:
    turns: list[tuple[str, str]] = []
    with _chat(billhook, turns) as app:
        response = app.post("/workspaces/ws_free/chat", json={"text": "hello"})
        assert response.status_code == 200, response.text
        assert turns == [("ws_free", "hello")]
        assert app.get("/guard").json() == {"allow": 0, "would_deny": 1, "deny": 0}


def test_the_dependency_with_a_sync_client(billhook: BillhookServer) -> None:
    billhook.enforce("enforce")
    entered: list[str] = []
    bh = Billhook(billhook.url, READ_TOKEN, max_staleness_s=2)
    need_ai = Requires("ai_imports", workspace=lambda request: request.path_params["ws"])

    async def imports(request: Request) -> JSONResponse:
        check = await need_ai(request)
        entered.append(check.workspace_id)
        return JSONResponse({"ok": True})

    @requires("sso", workspace=lambda request: request.path_params["ws"], client=bh)
    async def sso(request: Request) -> JSONResponse:
        entered.append("sso")
        return JSONResponse({"ok": True})

    app = Starlette(routes=[Route("/{ws}/imports", imports), Route("/{ws}/sso", sso)])
    app.state.billhook = bh
    add_guard_handlers(app)
    try:
        with _serve(app) as http:
            denied = http.get("/ws_1/imports")
            assert (denied.status_code, denied.content) == (
                402,
                billhook.check("ws_1", "ai_imports").content,
            )
            assert http.get("/ws_1/sso").status_code == 402
            assert entered == []
            billhook.stop()  # billhook unreachable, and the policy is closed
            bh.close()
            bh = Billhook(billhook.url, READ_TOKEN, follow=False, timeout_s=1)
            app.state.billhook = bh
            down = http.get("/ws_1/imports")
            assert down.status_code == 503
            assert down.json()["error"] == "billing_unavailable"
            assert down.json()["fallback_reason"] == "unreachable"
            assert entered == []
    finally:
        bh.close()
