"""The thin-event follower thread (`billhook.runners.thin`): woken, leased, stopped.

Against a real SQLite log, the Stripe fake through the real `stripe` package,
and, for the workers' lease, a real Redis (`redis_db`).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from billhook.config import Settings
from billhook.log.sqlite import EventLog
from billhook.providers.billhook import RECONCILED
from billhook.providers.stripe.client import StripeSource
from billhook.providers.stripe.webhook import stripe_record
from billhook.runners.thin import RedisLease, ThinFollower, stripe_objects
from billhook.testing.fakes.stripe_api import StripeState, stripe_fake
from billhook.testing.servers import serve_in_thread
from billhook.testing.settings import STRIPE_API_KEY, make_settings, provider_apis
from billhook.testing.stripe import stripe_subscription, stripe_thin_event_body

# How long a follower may take to answer once woken.
ANSWER_TIMEOUT_S = 10.0


@pytest.fixture
def fake() -> Iterator[tuple[StripeState, str]]:
    state = StripeState()
    state.add(stripe_subscription(id="sub_1", customer="cus_1"))
    with serve_in_thread(stripe_fake(state)) as url:
        yield state, url


def settings_for(tmp_path: Path, url: str, *, keyed: bool) -> Settings:
    api, _ = provider_apis(url, url, stripe_key=keyed, polar_token=False)
    return make_settings(tmp_path / "data", stripe=api)


def snapshots(log: EventLog) -> int:
    return len(log.read(after=0, provider="billhook", type=RECONCILED))


def answered(log: EventLog, count: int) -> bool:
    return snapshots(log) == count


def wait_until(condition: Callable[[], bool], timeout_s: float = ANSWER_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_the_source_is_the_configured_api_or_none(tmp_path: Path) -> None:
    assert stripe_objects(settings_for(tmp_path, "http://127.0.0.1:9", keyed=False)) is None
    keyed = stripe_objects(settings_for(tmp_path, "http://127.0.0.1:9", keyed=True))
    assert isinstance(keyed, StripeSource)


def test_a_woken_follower_answers_and_stops(tmp_path: Path, fake: tuple[StripeState, str]) -> None:
    state, url = fake
    settings = settings_for(tmp_path, url, keyed=True)
    log = EventLog(settings.events_path)
    follower = ThinFollower(log, settings, interval_s=30)  # only a wake-up can start it
    follower.start()
    try:
        log.append_batch([stripe_record(stripe_thin_event_body("subscription", "sub_1").decode())])
        follower.wake()
        wait_until(lambda: snapshots(log) == 1)
    finally:
        follower.stop()
        log.close()
    assert len(state.requests_to("/v1/subscriptions/sub_1")) == 1


def test_the_lease_is_held_by_one_holder_at_a_time(redis_db: redis.Redis) -> None:
    first, second = RedisLease(redis_db, ttl_s=5), RedisLease(redis_db, ttl_s=5)

    assert first() is True
    assert second() is False
    assert first() is True  # renewed by its holder
    redis_db.delete("billhook:thin:lease")  # the holder's lease lapsed
    assert second() is True
    assert first() is False


def test_two_workers_fetch_each_object_once(
    tmp_path: Path, fake: tuple[StripeState, str], redis_db: redis.Redis
) -> None:
    state, url = fake
    settings = settings_for(tmp_path, url, keyed=True)
    logs = [EventLog(settings.events_path) for _ in range(2)]
    source = StripeSource(STRIPE_API_KEY, url)
    followers = [
        ThinFollower(log, settings, source=source, interval_s=0.02, lease=RedisLease(redis_db))
        for log in logs
    ]
    for follower in followers:
        follower.start()
    try:
        for n in range(3):
            body = stripe_thin_event_body("subscription", "sub_1", event_id=f"evt_{n}")
            logs[0].append_batch([stripe_record(body.decode())])
            wait_until(functools.partial(answered, logs[0], n + 1))
        time.sleep(0.2)  # time enough for a second fetch, were there one
    finally:
        for follower in followers:
            follower.stop()
        for log in logs:
            log.close()
    assert len(state.requests_to("/v1/subscriptions/sub_1")) == 3
