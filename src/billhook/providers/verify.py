"""Webhook signature verification on the exact bytes received.

Both verifiers take the clock as an argument (`now`, Unix seconds) and check
the timestamp tolerance themselves, in both directions, before any HMAC: the
providers' own helpers read the wall clock inside (and stripe's only rejects
stale timestamps, not future ones). The HMACs are computed by the `stripe` and
`standardwebhooks` packages.

Each function returns the signed timestamp on success and raises
:class:`InvalidSignature` with a short, secret-free reason otherwise.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from standardwebhooks import Webhook
from stripe import SignatureVerificationError, WebhookSignature

from billhook.config import Secret
from billhook.errors import InvalidSignature

# Longest timestamp we parse; anything longer is malformed, not a far-future date.
MAX_TIMESTAMP_DIGITS = 12
# Standard Webhooks' secret prefix (Polar's "standard" scheme).
WHSEC_PREFIX = "whsec_"


def _timestamp(raw: str) -> int:
    """Parse a Unix timestamp strictly: ASCII digits only, bounded length."""
    if not raw or len(raw) > MAX_TIMESTAMP_DIGITS or not (raw.isascii() and raw.isdigit()):
        raise InvalidSignature("malformed timestamp")
    return int(raw)


def _check_tolerance(timestamp: int, now: float, tolerance_s: int) -> None:
    if abs(now - timestamp) > tolerance_s:
        raise InvalidSignature("timestamp outside the tolerance")


def _text(body: bytes) -> str:
    # Both providers sign the UTF-8 text of a JSON body; other bytes cannot verify.
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidSignature("body is not UTF-8") from None


def verify_stripe(
    body: bytes,
    header: str | None,
    secrets: Sequence[Secret],
    *,
    now: float,
    tolerance_s: int,
) -> int:
    """Check a `Stripe-Signature` header (`t=…,v1=…[,v1=…]`) against every secret."""
    if not header:
        raise InvalidSignature("missing Stripe-Signature header")
    stamps = [item[2:] for item in header.split(",") if item.startswith("t=")]
    if len(stamps) != 1:
        raise InvalidSignature("Stripe-Signature needs exactly one t= element")
    timestamp = _timestamp(stamps[0])
    _check_tolerance(timestamp, now, tolerance_s)
    text = _text(body)
    for secret in secrets:
        try:
            # tolerance=None: the window was checked above against the injected clock.
            WebhookSignature.verify_header(text, header, secret.reveal(), tolerance=None)
        except SignatureVerificationError:
            continue
        except (TypeError, ValueError):
            # hmac.compare_digest refuses non-ASCII str: a garbage signature, not a match.
            continue
        return timestamp
    raise InvalidSignature("no v1 signature matches a configured secret")


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

    `headers` is looked up with lower-case names (`webhook-id`, ...).
    """
    msg_id = headers.get("webhook-id")
    raw_timestamp = headers.get("webhook-timestamp")
    signature = headers.get("webhook-signature")
    if not (msg_id and raw_timestamp and signature):
        raise InvalidSignature("missing webhook-id, webhook-timestamp or webhook-signature")
    timestamp = _timestamp(raw_timestamp)
    _check_tolerance(timestamp, now, tolerance_s)
    passed = _passed_signatures(signature)
    if not passed:
        raise InvalidSignature("no well-formed v1 signature")
    text = _text(body)
    signed_at = datetime.fromtimestamp(timestamp, tz=UTC)
    for secret in secrets:
        for key in polar_signing_keys(secret.reveal()):
            expected = Webhook(key).sign(msg_id, signed_at, text).partition(",")[2]
            expected_bytes = base64.b64decode(expected)
            if any(hmac.compare_digest(expected_bytes, sig) for sig in passed):
                return timestamp
    raise InvalidSignature("no v1 signature matches a configured secret")
