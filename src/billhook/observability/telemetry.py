"""One log line and one latency observation per HTTP request, as pure ASGI.

The line carries the method, the route *template* (never the raw path, whose
ids would explode the histogram's label set and whose query string may carry
anything), the status and the latency, plus whatever ids and outcomes the
handler added with :func:`log_fields` (a webhook's provider, type, seq
and outcome). Never headers, bodies, tokens or query strings.

Pure ASGI rather than `BaseHTTPMiddleware`: no extra task, no body copy; the
per-request cost is two clock reads, one dict look-up and one histogram
observe (plus the line itself when INFO is enabled). The line's record is made
here and handed to the logger's handlers directly: `Logger.log` would first
walk the stack to find its caller, which no line shows (issue 17).
"""

from __future__ import annotations

import logging
import time
from collections.abc import MutableMapping, Sequence

from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from billhook.observability.metrics import Metrics

logger = logging.getLogger(__name__)

# Webhook paths: an unexpected failure there answers 503 so the provider retries.
WEBHOOK_PREFIX = "/webhooks/"
# The ASGI scope key under which a request's extra log fields are collected.
LOG_FIELDS = "billhook.log_fields"


def log_fields(scope: MutableMapping[str, object]) -> dict[str, object]:
    """The fields this request's log line will carry besides method, route, status, latency.

    Only ids, types, statuses and counts belong here (docs/entitlements.md, privacy).
    """
    fields = scope.get(LOG_FIELDS)
    if not isinstance(fields, dict):
        fields = scope[LOG_FIELDS] = {}
    return fields


def unexpected_status(path: str) -> int:
    """The status an unexpected error answers on `path`: 503 on webhooks (retry), else 500."""
    return 503 if path.startswith(WEBHOOK_PREFIX) else 500


# Methods kept as labels; anything else a scanner sends is counted as "other".
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# The route label of a request no route matched (404s of scanners and typos).
UNMATCHED = "unmatched"
# Status logged when the client went away before any answer (nginx's convention).
CLIENT_CLOSED = 499


def route_templates(routes: Sequence[BaseRoute], prefix: str = "") -> dict[int, str]:
    """Each endpoint's full path template (mount prefixes included), by the endpoint's id.

    By id: the router puts the route's own endpoint object in the scope, and
    some scope endpoints (a mount's router) are not hashable. Raises
    ValueError when one endpoint serves two templates (its label would lie).
    """
    templates: dict[int, str] = {}
    for route in routes:
        found: dict[int, str] = {}
        if isinstance(route, Mount):
            found = route_templates(route.routes, prefix + route.path)
        elif isinstance(route, Route):
            # `path_format`: the template without convertor names (`{workspace_id}`).
            found = {id(route.endpoint): prefix + route.path_format}
        for key, template in found.items():
            if templates.setdefault(key, template) != template:
                raise ValueError(f"one endpoint serves {templates[key]} and {template}")
    return templates


class RequestTelemetry:
    """Wraps the app's router; see the module docstring for what it records.

    `routes` are the app's routes, read once: the router leaves the matched
    endpoint in the scope, and its template is looked up from it.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics, routes: Sequence[BaseRoute]) -> None:
        self._app = app
        self._metrics = metrics
        self._templates = route_templates(routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        error: str | None = None
        try:
            await self._app(scope, receive, send_status)
        except Exception as e:
            # Answered by the app's outermost handler, after this returns.
            status = status or unexpected_status(scope["path"])
            error = type(e).__name__
            raise
        finally:
            self._record(scope, status or CLIENT_CLOSED, time.perf_counter() - started, error)

    def _record(self, scope: Scope, status: int, seconds: float, error: str | None) -> None:
        # A path no route matched leaves no endpoint (or a mount's router) in the scope.
        route = self._templates.get(id(scope.get("endpoint")), UNMATCHED)
        method = scope["method"] if scope["method"] in KNOWN_METHODS else "other"
        self._metrics.observe_request(route, method, f"{status // 100}xx", seconds)
        level = logging.WARNING if status >= 500 else logging.INFO
        if not logger.isEnabledFor(level):
            return
        fields: dict[str, object] = {
            "method": method,
            "route": route,
            "status": status,
            "latency_ms": round(seconds * 1000, 3),
        }
        extra = scope.get(LOG_FIELDS)
        if extra:
            fields.update(extra)
        if error is not None:
            fields["error"] = error
        # What `logger.log(level, "request", extra=...)` does, minus the caller's lookup.
        record = logger.makeRecord(
            logger.name, level, "", 0, "request", (), None, extra={"fields": fields}
        )
        logger.handle(record)
