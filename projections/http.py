"""Projection errors to HTTP answers, merged with ingest's handlers by the app."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from ingest.http import Handler, error_response
from projections.errors import InvalidAction, StoreUnavailable
from projections.operator import NothingToRevoke


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


def exception_handlers() -> dict[type[Exception] | int, Handler]:
    return {
        InvalidAction: _invalid,
        NothingToRevoke: _nothing_to_revoke,
        StoreUnavailable: _store_unavailable,
    }
