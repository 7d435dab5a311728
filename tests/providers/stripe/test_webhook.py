"""The envelope `stripe_record` logs a verified Stripe body with."""

from __future__ import annotations

import json

import pytest

from billhook.providers.stripe.webhook import stripe_record


def _body(**fields: object) -> str:
    return json.dumps({"id": "evt_1", "type": "invoice.paid", "object": "event", **fields})


@pytest.mark.parametrize(
    ("created", "occurred_at"),
    [
        (1_700_000_000, "2023-11-14T22:13:20.000Z"),
        (0, "1970-01-01T00:00:00.000Z"),
        ("2024-05-01T10:00:00.123456Z", "2024-05-01T10:00:00.123Z"),  # thin events: ISO 8601
        ("2024-05-01T10:00:00", "2024-05-01T10:00:00.000Z"),  # naive means UTC
        (True, None),  # a bool is no time, though Python counts it an int
        (1.5, None),
        (10**20, None),
        ("yesterday", None),
        (None, None),
    ],
)
def test_occurred_at_is_created_in_the_log_format(created: object, occurred_at: str | None) -> None:
    assert stripe_record(_body(created=created)).occurred_at == occurred_at


def test_the_same_created_gives_the_same_time_again() -> None:
    """Repeated seconds are answered from a cache: the answer must not change."""
    first = stripe_record(_body(created=1_700_000_001)).occurred_at
    assert first == "2023-11-14T22:13:21.000Z"
    assert stripe_record(_body(created=1_700_000_001)).occurred_at == first
    assert stripe_record(_body(created=1_700_000_002)).occurred_at == "2023-11-14T22:13:22.000Z"
