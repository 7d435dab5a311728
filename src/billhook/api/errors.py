"""Errors to HTTP answers, in one place: every error body is `{"error", "detail"}`.

Handlers log nothing themselves: they add ids and outcomes to their request's
log line (:func:`log_fields`), which the app writes once the answer is sent.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from billhook.errors import (
    ApiError,
    InvalidAction,
    InvalidPayload,
    InvalidSignature,
    LogUnavailable,
    PayloadTooLarge,
    ProviderNotConfigured,
    StoreUnavailable,
)
from billhook.observability.telemetry import WEBHOOK_PREFIX, log_fields, unexpected_status
from billhook.projections.actions import NothingToRevoke

Handler = Callable[[Request, Exception], Awaitable[Response]]

# Status code and `error` code for each ingest error (docs/api.md).
INGEST_ERRORS: Mapping[type[Exception], tuple[int, str]] = {
    InvalidSignature: (400, "invalid_signature"),
    InvalidPayload: (400, "invalid_payload"),
    PayloadTooLarge: (413, "payload_too_large"),
    ProviderNotConfigured: (404, "provider_not_configured"),
    LogUnavailable: (503, "log_unavailable"),
}

# Short names for the HTTP errors Starlette raises itself (unknown path, wrong method).
_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


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


async def _invalid(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, InvalidAction)
    return error_response(request, 400, "invalid_request", exc.detail)


async def _nothing_to_revoke(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, InvalidAction)
    return error_response(request, 404, "not_found", exc.detail)


async def _store_unavailable(request: Request, exc: Exception) -> Response:
    return error_response(
        request, 503, "projections_unavailable", "projections cannot be read; retry later"
    )


async def _unexpected(request: Request, exc: Exception) -> Response:
    # Not logged here: the request's one log line (observability.telemetry) names its type.
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
    handlers[InvalidAction] = _invalid
    handlers[NothingToRevoke] = _nothing_to_revoke
    handlers[StoreUnavailable] = _store_unavailable
    handlers[Exception] = _unexpected
    return handlers
