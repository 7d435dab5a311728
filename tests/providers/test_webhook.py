"""Known-answer vectors and rotation for both signature schemes (SPEC §3)."""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime

import pytest
import stripe
from polar.webhooks import PolarWebhookVerificationError
from polar.webhooks import validate_event as polar_validate_event
from standardwebhooks import Webhook

from billhook.config import Secret
from billhook.errors import InvalidSignature
from billhook.providers.polar.webhook import polar_signing_keys, verify_polar
from billhook.providers.stripe.webhook import verify_stripe
from billhook.testing.polar import (
    POLAR_LEGACY_SECRET,
    POLAR_SECRET,
    polar_event_body,
    polar_headers,
)
from billhook.testing.stripe import (
    STRIPE_SECRET,
    STRIPE_SECRET_NEXT,
    stripe_event_body,
    stripe_headers,
)

# The Standard Webhooks test suite's published vector.
SW_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SW_MSG_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SW_TIMESTAMP = 1614265330
SW_PAYLOAD = b'{"test": 2432232314}'
SW_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

NOW = 1_800_000_000
TOLERANCE = 300


def _sw_headers(signature: str = SW_SIGNATURE, timestamp: int = SW_TIMESTAMP) -> dict[str, str]:
    return {
        "webhook-id": SW_MSG_ID,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature,
    }


def test_standard_webhooks_vector_is_what_the_library_signs() -> None:
    signed_at = datetime.fromtimestamp(SW_TIMESTAMP, tz=UTC)
    assert Webhook(SW_SECRET).sign(SW_MSG_ID, signed_at, SW_PAYLOAD.decode()) == SW_SIGNATURE


def test_standard_webhooks_vector_verifies() -> None:
    verified_at = verify_polar(
        SW_PAYLOAD, _sw_headers(), [Secret(SW_SECRET)], now=SW_TIMESTAMP, tolerance_s=TOLERANCE
    )
    assert verified_at == SW_TIMESTAMP


@pytest.mark.parametrize(
    "headers",
    [
        _sw_headers(signature="v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE"),  # unpadded
        _sw_headers(signature="v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc="),  # other key
        _sw_headers(signature="v2," + SW_SIGNATURE[3:]),  # unknown version
        _sw_headers(timestamp=SW_TIMESTAMP + 1),  # signed content differs
        {**_sw_headers(), "webhook-id": "msg_other"},
    ],
)
def test_standard_webhooks_vector_rejects_any_change(headers: dict[str, str]) -> None:
    with pytest.raises(InvalidSignature):
        verify_polar(
            SW_PAYLOAD, headers, [Secret(SW_SECRET)], now=SW_TIMESTAMP, tolerance_s=TOLERANCE
        )


def test_standard_webhooks_vector_fails_on_a_changed_body() -> None:
    with pytest.raises(InvalidSignature):
        verify_polar(
            b'{"test": 2432232315}',
            _sw_headers(),
            [Secret(SW_SECRET)],
            now=SW_TIMESTAMP,
            tolerance_s=TOLERANCE,
        )


@pytest.mark.parametrize(
    ("secret", "legacy"),
    [(POLAR_SECRET, False), (POLAR_LEGACY_SECRET, True)],
    ids=["standard", "legacy"],
)
def test_polar_signatures_that_polar_sdk_accepts_verify(secret: str, legacy: bool) -> None:
    body = polar_event_body("subscription.updated")
    headers = polar_headers(body, secret, legacy=legacy)
    # polar-sdk's own verifier accepts what we sign ...
    data = polar_validate_event(
        body, headers, secret, frozenset({"subscription.updated"}), lambda d: d
    )
    assert data["type"] == "subscription.updated"
    # ... and so does billhook, with the same secret string configured.
    now = int(headers["webhook-timestamp"])
    assert verify_polar(body, headers, [Secret(secret)], now=now, tolerance_s=TOLERANCE) == now


def test_polar_signature_polar_sdk_refuses_is_refused() -> None:
    body = polar_event_body()
    headers = polar_headers(body, POLAR_SECRET)
    with pytest.raises(PolarWebhookVerificationError):
        polar_validate_event(body, headers, POLAR_LEGACY_SECRET, frozenset(), lambda d: d)
    with pytest.raises(InvalidSignature):
        verify_polar(
            body,
            headers,
            [Secret(POLAR_LEGACY_SECRET)],
            now=int(headers["webhook-timestamp"]),
            tolerance_s=TOLERANCE,
        )


def test_polar_signing_keys_cover_both_schemes() -> None:
    key = b"polar-standard-key-0123456789ab"
    standard = "whsec_" + base64.b64encode(key).decode()
    assert polar_signing_keys(standard) == (key, standard.encode())
    assert polar_signing_keys(POLAR_LEGACY_SECRET) == (POLAR_LEGACY_SECRET.encode(),)


def test_polar_rotation_with_two_secrets_and_two_signatures() -> None:
    body = polar_event_body()
    old = polar_headers(body, POLAR_SECRET, msg_id="msg_1", timestamp=NOW)
    new = polar_headers(body, POLAR_LEGACY_SECRET, msg_id="msg_1", timestamp=NOW, legacy=True)
    both = {**old, "webhook-signature": f"{new['webhook-signature']} {old['webhook-signature']}"}
    for secrets in ([POLAR_SECRET], [POLAR_LEGACY_SECRET], [POLAR_LEGACY_SECRET, POLAR_SECRET]):
        configured = [Secret(s) for s in secrets]
        assert verify_polar(body, both, configured, now=NOW, tolerance_s=TOLERANCE) == NOW
    configured = [
        Secret("whsec_" + base64.b64encode(b"some other key").decode()),
        Secret(POLAR_SECRET),
    ]
    assert verify_polar(body, old, configured, now=NOW, tolerance_s=TOLERANCE) == NOW


def test_stripe_header_from_the_stripe_package_verifies() -> None:
    body = stripe_event_body()
    header = stripe_headers(body, timestamp=NOW)["Stripe-Signature"]
    assert header.startswith(f"t={NOW},v1=")
    verified_at = verify_stripe(
        body, header, [Secret(STRIPE_SECRET)], now=NOW, tolerance_s=TOLERANCE
    )
    assert verified_at == NOW


def test_stripe_rotation_with_two_configured_secrets() -> None:
    body = stripe_event_body()
    header = stripe_headers(body, STRIPE_SECRET_NEXT, timestamp=NOW)["Stripe-Signature"]
    secrets = [Secret(STRIPE_SECRET), Secret(STRIPE_SECRET_NEXT)]
    assert verify_stripe(body, header, secrets, now=NOW, tolerance_s=TOLERANCE) == NOW
    with pytest.raises(InvalidSignature):
        verify_stripe(body, header, [Secret(STRIPE_SECRET)], now=NOW, tolerance_s=TOLERANCE)


@pytest.mark.parametrize("first", ["old", "new"])
def test_stripe_two_v1_entries_in_one_header(first: str) -> None:
    body = stripe_event_body()
    old = stripe_headers(body, STRIPE_SECRET, timestamp=NOW)["Stripe-Signature"].split(",")[1]
    new = stripe_headers(body, STRIPE_SECRET_NEXT, timestamp=NOW)["Stripe-Signature"].split(",")[1]
    entries = [old, new] if first == "old" else [new, old]
    header = f"t={NOW},{entries[0]},{entries[1]}"
    for secret in (STRIPE_SECRET, STRIPE_SECRET_NEXT):
        assert verify_stripe(body, header, [Secret(secret)], now=NOW, tolerance_s=TOLERANCE) == NOW


@pytest.mark.parametrize(
    ("skew", "ok"),
    [(-TOLERANCE, True), (TOLERANCE, True), (-TOLERANCE - 1, False), (TOLERANCE + 1, False)],
)
def test_tolerance_edges_both_ways(skew: int, ok: bool) -> None:
    body = stripe_event_body()
    s_header = stripe_headers(body, timestamp=NOW + skew)["Stripe-Signature"]
    p_body = polar_event_body()
    p_headers = polar_headers(p_body, timestamp=NOW + skew)
    checks = [
        lambda: verify_stripe(
            body, s_header, [Secret(STRIPE_SECRET)], now=NOW, tolerance_s=TOLERANCE
        ),
        lambda: verify_polar(
            p_body, p_headers, [Secret(POLAR_SECRET)], now=NOW, tolerance_s=TOLERANCE
        ),
    ]
    for check in checks:
        if ok:
            assert check() == NOW + skew
        else:
            with pytest.raises(InvalidSignature, match="tolerance"):
                check()


def test_stripe_library_alone_would_accept_a_future_timestamp() -> None:
    """Why billhook checks the window itself: stripe's helper only rejects stale ones."""
    body = stripe_event_body()
    future = int(time.time()) + 3600
    header = stripe_headers(body, timestamp=future)["Stripe-Signature"]
    assert stripe.WebhookSignature.verify_header(
        body.decode(), header, STRIPE_SECRET, tolerance=300
    )
    with pytest.raises(InvalidSignature):
        verify_stripe(body, header, [Secret(STRIPE_SECRET)], now=time.time(), tolerance_s=TOLERANCE)
