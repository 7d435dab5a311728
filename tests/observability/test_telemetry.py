"""The request middleware: one line and one observation per request, whatever happens.

A small app with billhook's own exception handlers behind `RequestTelemetry`,
served by a real uvicorn: a handler that adds fields, one that fails
unexpectedly on a webhook path and elsewhere, a path no route matches. Then
many concurrent requests through `billhook.observability.logs`: as many
complete JSON lines on stderr, each with every field.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from billhook.api.errors import exception_handlers
from billhook.errors import InvalidAction
from billhook.observability import logs
from billhook.observability.metrics import Metrics
from billhook.observability.telemetry import RequestTelemetry, log_fields, route_templates
from billhook.testing.servers import serve_in_thread

# Requests in flight at once, and in all, in the concurrency test.
CONNECTIONS, CONCURRENT = 32, 300


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def fields(self) -> list[dict[str, object]]:
        return [dict(record.fields) for record in self.records]  # type: ignore[attr-defined]


@pytest.fixture
def lines() -> Iterator[Lines]:
    """Records of the request logger at INFO, whatever the process configured."""
    logger = logging.getLogger("billhook.observability.telemetry")
    handler, level = Lines(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


async def annotated(request: Request) -> Response:
    log_fields(request.scope).update(provider="stripe", seq=7)
    return JSONResponse({"ok": True})


async def broken_webhook(request: Request) -> Response:
    raise RuntimeError("a bug that quotes a payload: ada@example.com")


async def broken(request: Request) -> Response:
    raise RuntimeError("a bug that quotes a payload: ada@example.com")


async def invalid(request: Request) -> Response:
    raise InvalidAction("tier", "unknown tier")


def _app(metrics: Metrics) -> Starlette:
    routes = [
        Mount("/webhooks", routes=[Route("/{provider}", broken_webhook, methods=["POST"])]),
        Mount(
            "/v1",
            routes=[
                Route("/things/{thing_id}", annotated),
                Route("/boom", broken),
                Route("/invalid", invalid),
            ],
        ),
    ]
    return Starlette(
        routes=routes,
        middleware=[Middleware(RequestTelemetry, metrics=metrics, routes=routes)],
        exception_handlers=exception_handlers(),
    )


def _exposition(metrics: Metrics) -> str:
    return generate_latest(metrics.registry).decode()


def _count(metrics: Metrics, route: str, status: str) -> float:
    """Requests observed for `route` with `status` (a class, e.g. `2xx`), any method."""
    total = 0.0
    for family in text_string_to_metric_families(_exposition(metrics)):
        for sample in family.samples:
            labels = sample.labels
            if sample.name.endswith("_count") and (labels.get("route"), labels.get("status")) == (
                route,
                status,
            ):
                total += sample.value
    return total


def test_each_request_is_one_line_and_one_observation(lines: Lines) -> None:
    metrics = Metrics()
    with (
        serve_in_thread(_app(metrics)) as url,
        # uvicorn drops a connection after an exception escaped the app: one per request.
        httpx.Client(base_url=url, timeout=10, headers={"Connection": "close"}) as client,
    ):
        assert client.get("/v1/things/th_1?q=ada@example.com").status_code == 200
        webhook = client.post("/webhooks/stripe", content=b"{}")
        assert webhook.status_code == 503
        assert webhook.json()["error"] == "unavailable"
        assert client.get("/v1/boom").status_code == 500
        assert client.get("/v1/nothing/here").status_code == 404
        assert client.get("/v1/invalid").status_code == 400

    assert lines.fields() == [
        {
            "method": "GET",
            "route": "/v1/things/{thing_id}",
            "status": 200,
            "latency_ms": lines.fields()[0]["latency_ms"],
            "provider": "stripe",
            "seq": 7,
        },
        {
            "method": "POST",
            "route": "/webhooks/{provider}",
            "status": 503,
            "latency_ms": lines.fields()[1]["latency_ms"],
            "error": "RuntimeError",
        },
        {
            "method": "GET",
            "route": "/v1/boom",
            "status": 500,
            "latency_ms": lines.fields()[2]["latency_ms"],
            "error": "RuntimeError",
        },
        {
            "method": "GET",
            "route": "unmatched",
            "status": 404,
            "latency_ms": lines.fields()[3]["latency_ms"],
            "error": "not_found",
        },
        {
            "method": "GET",
            "route": "/v1/invalid",
            "status": 400,
            "latency_ms": lines.fields()[4]["latency_ms"],
            "error": "invalid_request",
        },
    ]
    assert [record.levelno for record in lines.records] == [
        logging.INFO,
        logging.WARNING,
        logging.WARNING,
        logging.INFO,
        logging.INFO,
    ]
    assert _count(metrics, "/v1/things/{thing_id}", "2xx") == 1
    assert _count(metrics, "/webhooks/{provider}", "5xx") == 1
    assert _count(metrics, "/v1/boom", "5xx") == 1
    assert _count(metrics, "unmatched", "4xx") == 1
    assert "ada@example.com" not in _exposition(metrics)


def test_an_endpoint_serving_two_templates_is_refused() -> None:
    routes = [Route("/a/{x}", annotated), Mount("/b", routes=[Route("/{y}", annotated)])]
    with pytest.raises(ValueError, match=re.escape("one endpoint serves /a/{x} and /b/{y}")):
        route_templates(routes)


def test_concurrent_requests_are_as_many_complete_json_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, restore_logging: None
) -> None:
    metrics = Metrics()
    stderr = tmp_path / "stderr.log"

    async def send_all(url: str) -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=CONNECTIONS)
        async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
            calls = (client.get(f"/v1/things/th_{n}") for n in range(CONCURRENT))
            return await asyncio.gather(*calls)

    with stderr.open("w") as out:
        monkeypatch.setattr(sys, "stderr", out)
        logs.configure("info")
        with serve_in_thread(_app(metrics)) as url:
            answers = asyncio.run(send_all(url))
        logs.close()

    assert [answer.status_code for answer in answers] == [200] * CONCURRENT
    # Every line is whole JSON (json.loads fails on a torn or merged one).
    lines = [json.loads(line) for line in stderr.read_text().splitlines()]
    requests = [line for line in lines if line["msg"] == "request"]
    assert len(requests) == CONCURRENT
    for line in requests:
        assert line.keys() == {
            *("ts", "level", "logger", "msg"),
            *("method", "route", "status", "latency_ms", "provider", "seq"),
        }
        assert {k: v for k, v in line.items() if k not in ("ts", "latency_ms")} == {
            "level": "info",
            "logger": "billhook.observability.telemetry",
            "msg": "request",
            "method": "GET",
            "route": "/v1/things/{thing_id}",
            "status": 200,
            "provider": "stripe",
            "seq": 7,
        }
        assert isinstance(line["latency_ms"], float)
        assert line["latency_ms"] >= 0
    assert _count(metrics, "/v1/things/{thing_id}", "2xx") == CONCURRENT
