"""The shipped servers: an ASGI app under a real uvicorn, a redis-server of one's own."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from billhook.testing.servers import (
    RedisServer,
    free_port,
    redis_answers,
    serve_in_thread,
    wait_until,
)
from tests.support import unavailable


async def _hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse("hello")


def test_an_app_is_served_until_the_block_ends() -> None:
    app = Starlette(routes=[Route("/", _hello)])
    with serve_in_thread(app) as url:
        assert httpx.get(url, timeout=5).text == "hello"
    with pytest.raises(httpx.ConnectError):
        httpx.get(url, timeout=5)


def test_a_wait_returns_what_came_true_or_times_out() -> None:
    values = iter([0, "", "done"])
    assert wait_until(lambda: next(values), 5, "the third value") == "done"
    with pytest.raises(TimeoutError, match="waiting for nothing"):
        wait_until(lambda: None, 0.1, "nothing")


def test_a_redis_server_starts_stops_and_restarts(tmp_path: Path) -> None:
    binary = shutil.which("redis-server")
    if binary is None:
        unavailable("redis-server is not on PATH")
        return
    server = RedisServer(binary, free_port(), tmp_path)
    try:
        server.start()
        assert redis_answers(server.url())
        server.stop()
        assert not redis_answers(server.url())
        server.start()
        assert redis_answers(server.url(3))
    finally:
        server.stop()
