"""Reading API request bodies into their Structs (`api.schemas`), with errors that name the field.

msgspec decodes and validates a body in one pass; its error becomes a 400
`invalid_request` whose detail names the field ("missing field: action",
"field seats must be a whole number, zero or more").
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, TypeVar, get_args
from urllib.parse import urlsplit

import msgspec
from starlette.requests import Request

from billhook.api.body import receive_limited
from billhook.errors import ApiError, PayloadTooLarge

# Largest API request body; real ones are a few hundred bytes.
MAX_REQUEST_BYTES = 65_536
# Longest URL a request may carry (browsers and providers cap near here).
MAX_URL_CHARS = 2048
# msgspec's message for a required field that is absent.
_MISSING = re.compile(r"Object missing required field `(\w+)`")
# One decoder per model, made on first use.
_DECODERS: dict[type[Any], msgspec.json.Decoder[Any]] = {}

B = TypeVar("B", bound=msgspec.Struct)


def invalid(detail: str) -> ApiError:
    return ApiError(400, "invalid_request", detail)


async def read(request: Request, model: type[B]) -> B:
    """The request's body as `model`: 413 `payload_too_large` past MAX_REQUEST_BYTES,
    400 `invalid_request` naming the field at fault."""
    try:
        # The ASGI messages themselves: Starlette's Request.body() builds a stream and
        # copies (a fifth of a check's time); a handler reads its body once.
        body = await receive_limited(request.scope, request.receive, MAX_REQUEST_BYTES)
    except PayloadTooLarge as e:
        raise ApiError(413, "payload_too_large", str(e)) from None
    return decode(body, model)


def decode(body: bytes, model: type[B]) -> B:
    """`body` (JSON) as `model`, or ApiError 400 `invalid_request` naming the field at fault."""
    decoder = _DECODERS.get(model) or _DECODERS.setdefault(model, msgspec.json.Decoder(model))
    try:
        value: B = decoder.decode(body)
    except msgspec.ValidationError as e:
        raise invalid(_explain(str(e), model)) from None
    except msgspec.DecodeError:
        raise invalid("the body is not valid JSON") from None
    return value


def one_of(field: str, value: str, choices: Sequence[str]) -> str:
    """`value`, if one of `choices`: the configured values a model cannot know (tiers)."""
    if value not in choices:
        raise invalid(f"field {field} must be one of {', '.join(choices)}")
    return value


def http_url(field: str, value: str) -> str:
    """`value`, if an absolute http(s) URL, such as where a provider sends a buyer back to."""
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


def _explain(message: str, model: type[msgspec.Struct]) -> str:
    """msgspec's "Expected `int` >= 0 - at `$.seats`" as "field seats must be a whole number,
    zero or more"; a field sent as null is missing, as one left out is."""
    problem, _, where = message.partition(" - at `$")
    if missing := _MISSING.fullmatch(problem):
        return f"missing field: {missing[1]}"
    name = where.strip(".`")
    if not name:
        return "the body must be a JSON object"
    if problem.endswith("got `null`"):
        return f"missing field: {name}"
    if problem.startswith("Invalid enum value"):
        kind = next(f.type for f in msgspec.structs.fields(model) if f.name == name)
        return f"field {name} must be one of {', '.join(get_args(kind))}"
    if "<=" in problem:
        return f"field {name} must be a whole number, at most {problem.rsplit(' ', 1)[1]}"
    if "`int" in problem:
        return f"field {name} must be a whole number, zero or more"
    return f"field {name} must be a non-empty string"
