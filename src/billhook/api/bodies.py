"""Reading API request bodies: JSON objects, with errors that name the field."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import orjson
from starlette.requests import Request

from billhook.api.body import read_limited
from billhook.errors import ApiError, PayloadTooLarge

# Largest API request body; real ones are a few hundred bytes.
MAX_REQUEST_BYTES = 65_536
# Longest URL a request may carry (browsers and providers cap near here).
MAX_URL_CHARS = 2048


def invalid(detail: str) -> ApiError:
    return ApiError(400, "invalid_request", detail)


async def json_object(request: Request) -> Mapping[str, Any]:
    try:
        body = await read_limited(request, MAX_REQUEST_BYTES)
    except PayloadTooLarge as e:
        raise ApiError(413, "payload_too_large", str(e)) from None
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise invalid("the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise invalid("the body must be a JSON object")
    return data


def text(data: Mapping[str, Any], field: str, *, required: bool = True) -> str | None:
    value = data.get(field)
    if value is None:
        if required:
            raise invalid(f"missing field: {field}")
        return None
    if not isinstance(value, str) or not value.strip():
        raise invalid(f"field {field} must be a non-empty string")
    return value


def required_text(data: Mapping[str, Any], field: str) -> str:
    value = text(data, field)
    assert value is not None
    return value


def count(data: Mapping[str, Any], field: str) -> int | None:
    value = data.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise invalid(f"field {field} must be a whole number, zero or more")
    return value


def one_of(data: Mapping[str, Any], field: str, choices: tuple[str, ...]) -> str:
    """A required string field that must be one of `choices`."""
    value = required_text(data, field)
    if value not in choices:
        raise invalid(f"field {field} must be one of {', '.join(choices)}")
    return value


def http_url(data: Mapping[str, Any], field: str) -> str:
    """A required absolute http(s) URL, such as where a provider sends a buyer back to."""
    value = required_text(data, field)
    try:
        parts = urlsplit(value)
    except ValueError:  # e.g. an unclosed IPv6 bracket
        parts = None
    if (
        parts is None
        or parts.scheme not in ("http", "https")
        or not parts.hostname
        or len(value) > MAX_URL_CHARS
        or any(c.isspace() for c in value)
    ):
        raise invalid(f"field {field} must be an absolute http or https URL")
    return value
