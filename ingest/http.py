"""Errors to HTTP answers, in one place: every error body is `{"error", "detail"}`.

Handlers log nothing themselves: they add ids and outcomes to their request's
log line (:func:`log_fields`), which the app writes once the answer is sent.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, MutableMapping

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from ingest.errors import (
    InvalidPayload,
    InvalidSignature,
    LogUnavailable,
    PayloadTooLarge,
    ProviderNotConfigured,
)

Handler = Callable[[Request, Exception], Awaitable[Response]]

# Status code and `error` code for each ingest error (SPEC §3).
INGEST_ERRORS: Mapping[type[Exception], tuple[int, str]] = {
    InvalidSignature: (400, "invalid_signature"),
    InvalidPayload: (400, "invalid_payload"),
    PayloadTooLarge: (413, "payload_too_large"),
    ProviderNotConfigured: (404, "provider_not_configured"),
    LogUnavailable: (503, "log_unavailable"),
}

# Short names for the HTTP errors Starlette raises itself (unknown path, wrong method).
_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}

# Webhook paths: an unexpected failure there answers 503 so the provider retries.
WEBHOOK_PREFIX = "/webhooks/"
# The ASGI scope key under which a request's extra log fields are collected.
LOG_FIELDS = "billhook.log_fields"


def log_fields(scope: MutableMapping[str, object]) -> dict[str, object]:
    """The fields this request's log line will carry besides method, route, status, latency.

    Only ids, types, statuses and counts belong here (SPEC §10).
    """
    fields = scope.get(LOG_FIELDS)
    if not isinstance(fields, dict):
        fields = scope[LOG_FIELDS] = {}
    return fields


def unexpected_status(path: str) -> int:
    """The status an unexpected error answers on `path`: 503 on webhooks (retry), else 500."""
    return 503 if path.startswith(WEBHOOK_PREFIX) else 500


class ApiError(Exception):
    """An answer other than success, raised anywhere a request is handled.

    `extra` adds fields to the error body (the 402 answer of a check carries
    the whole decision).
    """

    def __init__(
        self, status: int, error: str, detail: str, extra: Mapping[str, object] | None = None
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.error = error
        self.detail = detail
        self.extra = dict(extra or {})


class RequestTimeout(ApiError):
    """The request body did not arrive within `timeout_s` of its headers (408)."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__(
            408,
            "request_timeout",
            f"the request body did not arrive within {timeout_s:g} s of its headers",
        )


def error_response(request: Request, status: int, error: str, detail: str) -> JSONResponse:
    """The `{"error", "detail"}` answer; the request's log line names `error` too."""
    log_fields(request.scope)["error"] = error
    return JSONResponse({"error": error, "detail": detail}, status_code=status)


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    log_fields(request.scope)["error"] = exc.error  # as error_response does
    return JSONResponse(
        {**exc.extra, "error": exc.error, "detail": exc.detail}, status_code=exc.status
    )


def _provider(request: Request) -> str:
    path = request.url.path
    return path[len(WEBHOOK_PREFIX) :] if path.startswith(WEBHOOK_PREFIX) else ""


def _mapped(status: int, error: str) -> Handler:
    async def handle(request: Request, exc: Exception) -> Response:
        detail = str(exc)
        if status == 503:
            detail = f"the event log cannot be written ({detail}); retry later"
        provider = _provider(request)
        if provider:
            log_fields(request.scope).update(provider=provider, outcome=error)
            metrics = getattr(request.app.state, "metrics", None)
            if metrics is not None:
                metrics.webhooks.labels(provider, error).inc()
        return error_response(request, status, error, detail)

    return handle


_request_timeout = _mapped(408, "request_timeout")


async def _timed_out(request: Request, exc: Exception) -> Response:
    response = await _request_timeout(request, exc)
    # The rest of the body may still be trickling in: end the connection instead of reading it.
    response.headers["connection"] = "close"
    return response


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    return error_response(request, exc.status_code, code, str(exc.detail))


async def _client_gone(request: Request, exc: Exception) -> Response:
    # The sender hung up mid-body: nothing was stored and nobody reads this answer.
    return error_response(
        request, 400, "client_disconnected", "the request body was not received in full"
    )


async def _unexpected(request: Request, exc: Exception) -> Response:
    # Not logged here: the request's one log line (worker.telemetry) names the exception's type.
    if unexpected_status(request.url.path) == 503:
        return error_response(request, 503, "unavailable", "the event was not stored; retry later")
    return error_response(request, 500, "internal_error", "an unexpected error occurred")


def exception_handlers() -> dict[type[Exception] | int, Handler]:
    """Handlers to pass to `Starlette(exception_handlers=...)`."""
    handlers: dict[type[Exception] | int, Handler] = {
        exc: _mapped(status, error) for exc, (status, error) in INGEST_ERRORS.items()
    }
    handlers[ApiError] = _api_error
    handlers[RequestTimeout] = _timed_out
    handlers[HTTPException] = _http_exception
    handlers[ClientDisconnect] = _client_gone
    handlers[Exception] = _unexpected
    return handlers
