"""The dramatiq actors on dramatiq's StubBroker: fast, in-process, real worker threads.

The wake-up flag and refresh outcomes still live in a real Redis (the test
db); only the message transport is stubbed. tests/e2e/test_redis_worker.py
runs the same actors on the RedisBroker in real processes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dramatiq
import pytest
import redis
from dramatiq.brokers.stub import StubBroker

from billhook.config import Settings
from billhook.errors import StoreUnavailable
from billhook.projections.projector import catch_up
from billhook.projections.store import ProjectionStore
from billhook.providers.stripe.webhook import stripe_record
from billhook.runners import actors
from billhook.runners.actors import PROJECTIONS_QUEUE, REFRESH_QUEUE, Runtime, declare
from billhook.runners.broker import PENDING_KEY
from billhook.testing.stripe import stripe_event_body, stripe_subscription
from tests.feed import T0, Feed, digest

# dramatiq's idle consumers look for messages this often (ms) in these tests.
WORKER_TIMEOUT_MS = 20


@pytest.fixture
def stub() -> Iterator[StubBroker]:
    broker = StubBroker()
    broker.emit_after("process_boot")
    yield broker
    broker.close()


@pytest.fixture
def runtime(feed: Feed, settings: Settings) -> Runtime:
    return Runtime(log=feed.log, store=feed.store, settings=settings, sources={})


def _append_lifecycles(feed: Feed, workspaces: int) -> int:
    """Append subscription events straight to the log (not projected); the head seq."""
    records = []
    for n in range(workspaces):
        sub = stripe_subscription(
            id=f"sub_{n}", customer=f"cus_{n}", metadata={"workspace_id": f"ws_{n}"}
        )
        body = stripe_event_body("customer.subscription.created", obj=sub, created=T0 + n)
        records.append(stripe_record(body.decode()))
    return feed.log.append_batch(records)[-1].seq


def _run(broker: StubBroker, *queues: str) -> None:
    worker = dramatiq.Worker(broker, worker_threads=2, worker_timeout=WORKER_TIMEOUT_MS)
    worker.start()
    try:
        for queue in queues:
            broker.join(queue, fail_fast=True)
        worker.join()
    finally:
        worker.stop()


def test_a_wake_up_sent_many_times_projects_every_event_once(
    stub: StubBroker, runtime: Runtime, feed: Feed, redis_db: redis.Redis, tmp_path: Path
) -> None:
    project = declare(stub, runtime, client=redis_db).project
    head = _append_lifecycles(feed, 30)
    redis_db.set(PENDING_KEY, "1")
    for _ in range(5):  # redelivered, and handled by two threads at once
        project.send()
    _run(stub, PROJECTIONS_QUEUE)

    assert feed.store.checkpoint() == head
    assert not redis_db.exists(PENDING_KEY)  # the next append sends a new wake-up
    assert digest(feed.store) == _rebuilt(feed, tmp_path / "clean.db")


def _rebuilt(feed: Feed, path: Path) -> str:
    """The digest of a store built by one catch-up over the whole log."""
    store = ProjectionStore(path, feed.settings)
    try:
        catch_up(feed.log, store)
        return digest(store)
    finally:
        store.close()


def test_a_store_that_fails_is_retried_until_it_answers(
    stub: StubBroker,
    runtime: Runtime,
    feed: Feed,
    redis_db: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = actors.catch_up
    failures = 0

    def flaky(*args: Any, **kwargs: Any) -> Any:
        nonlocal failures
        if failures < 2:
            failures += 1
            raise StoreUnavailable("database is locked")
        return real(*args, **kwargs)

    monkeypatch.setattr(actors, "catch_up", flaky)
    fast = actors.RetryPolicy(max_retries=5, min_backoff_ms=1, max_backoff_ms=10)
    monkeypatch.setattr(actors, "PROJECTIONS_RETRY", fast)
    project = declare(stub, runtime, client=redis_db).project
    head = _append_lifecycles(feed, 3)
    project.send()
    _run(stub, PROJECTIONS_QUEUE)

    assert failures == 2
    assert feed.store.checkpoint() == head


def test_a_refresh_of_an_unlinked_workspace_answers_not_linked(
    stub: StubBroker, runtime: Runtime, redis_db: redis.Redis
) -> None:
    refresh = declare(stub, runtime, client=redis_db).refresh
    refresh.send("ws_nobody", "req_1")
    _run(stub, REFRESH_QUEUE)

    outcome = json.loads(redis_db.lpop(actors.refresh_result_key("req_1")) or "null")
    assert outcome["status"] == "not_linked"
    assert redis_db.ttl(actors.refresh_result_key("req_1")) == -2  # taken: nothing left


def test_the_web_process_cannot_run_an_actor(stub: StubBroker, redis_db: redis.Redis) -> None:
    """Without a runtime (the web process only sends), running an actor fails loudly."""
    project = declare(stub, None, client=redis_db).project
    with pytest.raises(RuntimeError, match="billhook worker"):
        project.fn()
