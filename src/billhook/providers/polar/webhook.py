"""Polar webhooks: Standard Webhooks headers checked on the exact bytes, and the envelope.

The HMACs are computed by the `standardwebhooks` package, in both of Polar's
secret schemes; the timestamp window is checked first, against the injected
clock (see :mod:`billhook.providers.webhook`).
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from standardwebhooks import Webhook

from billhook.config import Secret
from billhook.domain.records import EventRecord
from billhook.errors import InvalidSignature
from billhook.providers.webhook import (
    body_object,
    check_tolerance,
    event_time,
    ident,
    signed_text,
    signed_timestamp,
)

# Standard Webhooks' secret prefix (Polar's "standard" scheme).
WHSEC_PREFIX = "whsec_"


def polar_signing_keys(secret: str) -> tuple[bytes, ...]:
    """The HMAC keys a Polar secret may stand for, in the order they are tried.

    Standard Webhooks: `whsec_` + base64 of the key (a bare base64 secret is
    read the same way). Polar's legacy scheme: the key is the UTF-8 bytes of the
    whole secret string, what Polar's SDK gets by passing `base64(secret)` to a
    Standard Webhooks verifier. polar-sdk's own `validate_event` tries the same.
    """
    keys = [secret.encode("utf-8")]
    encoded = secret.removeprefix(WHSEC_PREFIX)
    try:
        decoded = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        decoded = b""
    if decoded and decoded not in keys:
        keys.insert(0, decoded)
    return tuple(keys)


def _passed_signatures(header: str) -> list[bytes]:
    passed = []
    for entry in header.split(" "):
        version, sep, encoded = entry.partition(",")
        if version != "v1" or not sep:
            continue
        try:
            passed.append(base64.b64decode(encoded, validate=True))
        except (binascii.Error, ValueError):
            continue
    return passed


def verify_polar(
    body: bytes,
    headers: Mapping[str, str],
    secrets: Sequence[Secret],
    *,
    now: float,
    tolerance_s: int,
) -> int:
    """Check Standard Webhooks headers against every secret, in both Polar schemes.

    `headers` is looked up with lower-case names (`webhook-id`, ...). Returns
    the signed timestamp; raises :class:`InvalidSignature` otherwise.
    """
    msg_id = headers.get("webhook-id")
    raw_timestamp = headers.get("webhook-timestamp")
    signature = headers.get("webhook-signature")
    if not (msg_id and raw_timestamp and signature):
        raise InvalidSignature("missing webhook-id, webhook-timestamp or webhook-signature")
    timestamp = signed_timestamp(raw_timestamp)
    check_tolerance(timestamp, now, tolerance_s)
    passed = _passed_signatures(signature)
    if not passed:
        raise InvalidSignature("no well-formed v1 signature")
    text = signed_text(body)
    signed_at = datetime.fromtimestamp(timestamp, tz=UTC)
    for secret in secrets:
        for key in polar_signing_keys(secret.reveal()):
            expected = Webhook(key).sign(msg_id, signed_at, text).partition(",")[2]
            expected_bytes = base64.b64decode(expected)
            if any(hmac.compare_digest(expected_bytes, sig) for sig in passed):
                return timestamp
    raise InvalidSignature("no v1 signature matches a configured secret")


def polar_record(text: str, webhook_id: str, webhook_timestamp: int) -> EventRecord:
    """A Polar event from its verified body; its id is the `webhook-id` header."""
    data = body_object(text)
    occurred = event_time(data.get("timestamp")) or event_time(webhook_timestamp)
    return EventRecord(
        provider="polar",
        event_id=ident(webhook_id, "id"),
        type=ident(data.get("type"), "type"),
        livemode=None,
        occurred_at=occurred,
        payload=text,
    )
