"""What an attempt's answer means and when the next one is made (SPEC §6b)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billhook.outbound import retry

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
NOW_US = int(NOW.timestamp() * 1_000_000)
DAY_US = 86_400 * 1_000_000


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, retry.DELIVERED),
        (204, retry.DELIVERED),
        (299, retry.DELIVERED),
        (None, retry.RETRY),  # timeout or connection error
        (301, retry.RETRY),  # redirects are not followed: the configured URL failed
        (408, retry.RETRY),
        (409, retry.RETRY),
        (429, retry.RETRY),
        (500, retry.RETRY),
        (503, retry.RETRY),
        (400, retry.FAILED),
        (401, retry.FAILED),
        (404, retry.FAILED),
        (410, retry.FAILED),
        (422, retry.FAILED),
    ],
)
def test_outcome_of_an_answer(status: int | None, outcome: str) -> None:
    assert retry.outcome_of(status) == outcome


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("120", 120.0),
        (" 7 ", 7.0),
        ("0", 0.0),
        ((NOW + timedelta(seconds=90)).strftime("%a, %d %b %Y %H:%M:%S GMT"), 90.0),
        ((NOW - timedelta(seconds=90)).strftime("%a, %d %b %Y %H:%M:%S GMT"), 0.0),
        ("soon", None),
        ("-5", None),
        ("", None),
        (None, None),
    ],
)
def test_retry_after_seconds_or_date(value: str | None, seconds: float | None) -> None:
    assert retry.retry_after_s(value, NOW) == seconds


def step(status: int | None, attempts: int = 1, **kw: object) -> tuple[str, int | None]:
    args: dict[str, object] = {
        "attempts": attempts,
        "retry_after": None,
        "now_us": NOW_US,
        "give_up_us": NOW_US + DAY_US,
        "first_s": 5.0,
        "max_s": 3600.0,
        "rand": 0.5,
    }
    args.update(kw)
    return retry.next_step(status, **args)  # type: ignore[arg-type]


def test_retry_after_wins_over_the_backoff() -> None:
    assert step(429, retry_after=600.0) == (retry.RETRY, NOW_US + 600_000_000)
    assert step(503, retry_after=0.0) == (retry.RETRY, NOW_US)


def test_a_retry_past_the_span_gives_the_delivery_up() -> None:
    assert step(500, give_up_us=NOW_US + 1_000_000) == (retry.FAILED, None)
    assert step(429, retry_after=7200.0, give_up_us=NOW_US + 3600_000_000) == (retry.FAILED, None)


def test_final_answers_are_not_retried() -> None:
    assert step(410) == (retry.FAILED, None)
    assert step(200) == (retry.DELIVERED, None)


@given(
    attempts=st.integers(min_value=1, max_value=200),
    first=st.floats(min_value=0.001, max_value=60),
    cap=st.floats(min_value=0.001, max_value=86_400),
    rand=st.floats(min_value=0, max_value=1, exclude_max=True),
)
def test_backoff_doubles_within_jitter_and_never_passes_the_cap(
    attempts: int, first: float, cap: float, rand: float
) -> None:
    base = min(cap, first * 2 ** (attempts - 1))
    wait = retry.backoff_s(attempts, first, cap, rand)
    assert base / 2 <= wait <= base * (1 + 1e-9)
    assert wait <= cap * (1 + 1e-9)
    # Later attempts never wait less (with the same jitter draw).
    assert retry.backoff_s(attempts + 1, first, cap, rand) >= wait * (1 - 1e-9)
