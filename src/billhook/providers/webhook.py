"""What Stripe's and Polar's webhooks share: strict timestamps, the tolerance window, the
signed text, and the envelope an event is logged with.

Verification works on the exact bytes received. Each verifier takes the clock
as an argument (`now`, Unix seconds) and checks the timestamp tolerance
itself, in both directions, before any HMAC: the providers' own helpers read
the wall clock inside (and stripe's only rejects stale timestamps, not future
ones). A failure raises :class:`InvalidSignature` with a short, secret-free
reason.

Only the envelope is read at intake (id, type, livemode, time); the payload is
kept as the exact text received, and projections parse the rest later.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

from billhook.domain.times import iso_utc
from billhook.errors import InvalidPayload, InvalidSignature

# Longest timestamp we parse; anything longer is malformed, not a far-future date.
MAX_TIMESTAMP_DIGITS = 12
# Longest event id or type we accept; real ones are well under 100 characters.
MAX_IDENT_CHARS = 255


def signed_timestamp(raw: str) -> int:
    """Parse a Unix timestamp strictly: ASCII digits only, bounded length."""
    if not raw or len(raw) > MAX_TIMESTAMP_DIGITS or not (raw.isascii() and raw.isdigit()):
        raise InvalidSignature("malformed timestamp")
    return int(raw)


def check_tolerance(timestamp: int, now: float, tolerance_s: int) -> None:
    if abs(now - timestamp) > tolerance_s:
        raise InvalidSignature("timestamp outside the tolerance")


def signed_text(body: bytes) -> str:
    # Both providers sign the UTF-8 text of a JSON body; other bytes cannot verify.
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidSignature("body is not UTF-8") from None


def body_object(text: str) -> Mapping[str, Any]:
    try:
        # orjson: several times faster than json on 3 KB bodies, and strict RFC 8259.
        data = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise InvalidPayload("body is not JSON") from None
    if not isinstance(data, dict):
        raise InvalidPayload("body is not a JSON object")
    return data


def ident(value: object, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidPayload(f"event has no {what}")
    if len(value) > MAX_IDENT_CHARS:
        raise InvalidPayload(f"event {what} is longer than {MAX_IDENT_CHARS} characters")
    return value


def event_time(value: object) -> str | None:
    """An event time as the log's ISO format, or None when absent or unreadable."""
    try:
        if isinstance(value, int) and not isinstance(value, bool):
            return iso_utc(datetime.fromtimestamp(value, tz=UTC))
        if isinstance(value, str):
            moment = datetime.fromisoformat(value)
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            return iso_utc(moment)
    except (ValueError, OverflowError, OSError):
        return None
    return None
