"""`billhook worker` on a real Redis, end to end (SPEC §1, §7).

Real `python -m billhook serve` and `python -m billhook worker` processes share a
data dir and a Redis db. With `[redis] url` set the web process only sends
coalesced wake-ups; workers project. Whatever happens to a worker (SIGKILL at
any crash point, a second worker) or to Redis (flushed, down for a while),
every acked event ends up projected exactly once: the projection equals a
from-scratch rebuild of the log.
"""

from __future__ import annotations

import signal
import subprocess
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis

from billhook.config import Settings
from billhook.log.sqlite import EventLog
from billhook.projections import actions as operator
from billhook.runners.actors import PROJECTIONS_QUEUE, declare
from billhook.runners.broker import NAMESPACE, PENDING_KEY, PENDING_TTL_S, make_broker
from billhook.runners.faults import POINTS
from billhook.runners.worker import CATCH_UP_INTERVAL_S
from billhook.testing.servers import RedisServer, redis_client, stop_process, wait_until
from billhook.testing.settings import write_config
from tests.deployment import (
    PROJECTED_TIMEOUT_S,
    Processes,
    Server,
    assert_states,
    clean_digest,
    deliver,
    deliver_all,
    live_digest,
    log_head,
    metric,
    plan,
    projected_seq,
    settings_of,
    state,
    wait_projected,
)

WAKEUPS = "billhook_wakeups_sent_total"
# About how many events a burst delivers (whole lifecycles of three events).
BURST_EVENTS = 200
# While a worker consumes, a burst sends at most one wake-up per this many events
# (one is pending at a time; how many depends on how fast the worker takes them).
MIN_EVENTS_PER_WAKEUP = 3
# How often Redis is flushed while events arrive.
FLUSHES = 4
# `billhook worker` processes running at once.
WORKERS = 2


def _readyz(server: Server) -> tuple[int, dict[str, str]]:
    with server.client() as client:
        response = client.get("/readyz")
    return response.status_code, response.json()["checks"]


def _checks(broker: str) -> dict[str, str]:
    return {"log": "ok", "projections": "ok", "broker": broker}


def _assert_matches_a_clean_rebuild(config: Path, tmp_path: Path) -> None:
    settings = settings_of(config)
    live = live_digest(settings)
    assert live == clean_digest(settings, tmp_path)
    # Not vacuous: subscriptions, history and the checkpoint are all there.
    assert {row[0] for row in live} >= {"s", "h", "c"}


def test_the_worker_projects_what_the_web_process_only_announces(
    tmp_path: Path, processes: Processes, redis_db: redis.Redis, redis_url: str
) -> None:
    config = write_config(tmp_path, redis_url=redis_url)
    settings = settings_of(config)
    server = processes.serve(config)
    status, checks = _readyz(server)
    assert (status, checks["broker"]) == (200, "ok")

    # No worker yet: a burst sends exactly one wake-up, which waits in Redis, and
    # nothing is projected (the web process does not project with Redis configured).
    first = plan("ws_first", BURST_EVENTS // 3)
    deliver_all(server, first.bodies, senders=4)
    head = log_head(settings)
    assert head == len(first.bodies)
    wait_until(lambda: metric(server, WAKEUPS) >= 1, PROJECTED_TIMEOUT_S, "a wake-up")
    assert redis_db.exists(PENDING_KEY)
    assert redis_db.llen(f"{NAMESPACE}:{PROJECTIONS_QUEUE}") == 1
    with server.client() as client:
        for workspace in list(first.expected)[:5]:
            answer = state(client, workspace)
            assert (answer["as_of_seq"], answer["tier"], answer["source"]) == (0, "solo", "default")
    assert projected_seq(settings) == 0
    assert metric(server, WAKEUPS) == 1

    worker = processes.worker(config)
    wait_projected(settings, head)
    assert_states(server, first.expected, head)

    # With a worker consuming, wake-ups still coalesce: one pending at a time.
    before = metric(server, WAKEUPS)
    burst = plan("ws_burst", BURST_EVENTS // 3)
    deliver_all(server, burst.bodies, senders=4)
    head = log_head(settings)
    wait_projected(settings, head)
    assert_states(server, burst.expected, head)
    wakeups = metric(server, WAKEUPS) - before
    print(f"\n{len(burst.bodies)} events, worker running: {wakeups:.0f} wake-up messages")
    assert 1 <= wakeups <= len(burst.bodies) / MIN_EVENTS_PER_WAKEUP
    status, checks = _readyz(server)
    assert (status, checks) == (200, {"log": "ok", "projections": "ok", "broker": "ok"})

    assert stop_process(worker) == 0
    # uvicorn shuts down gracefully, then re-raises the SIGTERM it caught.
    assert stop_process(server.process) in (0, -signal.SIGTERM)
    _assert_matches_a_clean_rebuild(config, tmp_path)


def _send_wakeups(redis_url: str, count: int) -> None:
    """Send wake-ups the way the receiver does: what a redelivered message looks like."""
    broker = make_broker(redis_url)
    try:
        actor = declare(broker, runtime=None).project
        for _ in range(count):
            actor.send()
    finally:
        broker.close()


def _append_enforcement(settings: Settings, mode: str) -> None:
    """Log an operator event directly, as `billhook override set` does."""
    record = operator.enforcement_set(
        mode=mode, approved_by="ops", reason="worker test", now=datetime.now(UTC)
    )
    log = EventLog(settings.events_path)
    try:
        log.append_batch([record])
    finally:
        log.close()


@pytest.mark.parametrize("point", POINTS)
def test_a_worker_killed_at_any_point_neither_loses_nor_doubles(
    point: str, tmp_path: Path, processes: Processes, redis_db: redis.Redis, redis_url: str
) -> None:
    config = write_config(tmp_path, redis_url=redis_url)
    settings = settings_of(config)
    marker = tmp_path / "crashed"
    crash_env = {"BILLHOOK_CRASH_AT": f"{point}:{marker}"}
    server = processes.serve(config)
    events = plan("ws", 12, noise=12)
    thirds = [events.bodies[n::3] for n in range(3)]
    assert any(b"invoice.paid" in body for body in thirds[0])

    # Logged before the worker starts: its startup catch-up applies them in one
    # transaction (before_commit dies inside it), then the wake-up waiting in
    # Redis runs the actor (before_apply and before_ack die there). Applying the
    # operator event twice would add a second enforcement version.
    deliver_all(server, thirds[0])
    _append_enforcement(settings, "enforce")
    worker = processes.worker(config, env=crash_env)
    try:
        worker.wait(timeout=PROJECTED_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the worker did not crash at {point}") from None
    assert worker.returncode == -signal.SIGKILL
    assert marker.read_text() == point

    # Acked while no worker runs; then the restarted worker (same environment: the
    # marker lets it run through) catches up and takes wake-ups again.
    deliver_all(server, thirds[1])
    worker = processes.worker(config, env=crash_env, name="worker-restarted")
    wait_projected(settings, log_head(settings))
    deliver_all(server, thirds[2])
    head = log_head(settings)
    assert head == len(events.bodies) + 1
    wait_projected(settings, head)
    assert_states(server, events.expected, head)
    with server.client() as client:
        assert state(client, "ws_0")["enforcement"] == "enforce"
    # Redelivered wake-ups (dramatiq redelivers what a dead worker never acked) are no-ops.
    _send_wakeups(redis_url, 3)
    queue = f"{NAMESPACE}:{PROJECTIONS_QUEUE}"
    wait_until(lambda: redis_db.llen(queue) == 0, PROJECTED_TIMEOUT_S, "the wake-ups to be taken")

    # SIGTERM lets the worker finish the message in hand.
    assert stop_process(worker) == 0
    stop_process(server.process)
    _assert_matches_a_clean_rebuild(config, tmp_path)


class Sender(threading.Thread):
    """Delivers bodies in the background; every one must be accepted."""

    def __init__(self, server: Server, bodies: list[bytes]) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.bodies = bodies
        self.acked = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with self.server.client() as client:
                for body in self.bodies:
                    deliver(client, body)
                    self.acked += 1
        except BaseException as e:
            self.error = e

    def finish(self) -> None:
        self.join(timeout=PROJECTED_TIMEOUT_S)
        assert not self.is_alive(), "the sender did not finish"
        if self.error is not None:
            raise self.error
        assert self.acked == len(self.bodies)


def _flush_after(redis_db: redis.Redis, sender: Sender, acks: int) -> int:
    """Flush the test db once `acks` events were acked; how many were acked by then."""
    wait_until(
        lambda: sender.acked >= acks or not sender.is_alive(),
        PROJECTED_TIMEOUT_S,
        f"{acks} acks",
    )
    redis_db.flushdb()
    return sender.acked


def test_a_flushed_redis_delays_nothing_and_loses_nothing(
    tmp_path: Path, processes: Processes, redis_db: redis.Redis, redis_url: str
) -> None:
    config = write_config(tmp_path, redis_url=redis_url)
    settings = settings_of(config)
    server = processes.serve(config)
    worker = processes.worker(config)
    events = plan("ws", 50, noise=20)
    sender = Sender(server, events.bodies)
    sender.start()
    try:
        flushed_at = [
            _flush_after(redis_db, sender, n * len(events.bodies) // (FLUSHES + 1))
            for n in range(1, FLUSHES + 1)
        ]
    finally:
        sender.join(timeout=PROJECTED_TIMEOUT_S)
    sender.finish()
    assert flushed_at[0] < len(events.bodies)  # Redis was flushed while events arrived
    head = log_head(settings)
    assert head == len(events.bodies)
    wait_projected(settings, head)
    assert_states(server, events.expected, head)

    # A pending flag whose message was lost: the receiver sends no wake-up while
    # it stands, and the worker's timer catches up from its checkpoint anyway.
    # (Set once every wake-up was taken, so that no actor run deletes it.)
    queue = f"{NAMESPACE}:{PROJECTIONS_QUEUE}"
    wait_until(
        lambda: not redis_db.exists(PENDING_KEY) and redis_db.llen(queue) == 0,
        PROJECTED_TIMEOUT_S,
        "every wake-up to be taken",
    )
    redis_db.set(PENDING_KEY, "1", ex=PENDING_TTL_S)
    before = metric(server, WAKEUPS)
    late = plan("ws_late", 2)
    deliver_all(server, late.bodies)
    head = log_head(settings)
    wait_projected(settings, head, timeout_s=CATCH_UP_INTERVAL_S * 5)
    assert_states(server, late.expected, head)
    assert metric(server, WAKEUPS) == before

    assert stop_process(worker) == 0
    stop_process(server.process)
    _assert_matches_a_clean_rebuild(config, tmp_path)


def test_redis_down_for_a_while_delays_nothing_and_loses_nothing(
    tmp_path: Path, processes: Processes, own_redis: RedisServer
) -> None:
    config = write_config(tmp_path, redis_url=own_redis.url())
    settings = settings_of(config)
    server = processes.serve(config)
    worker = processes.worker(config)
    up = plan("ws_up", 4)
    deliver_all(server, up.bodies)
    wait_projected(settings, log_head(settings))

    own_redis.stop()
    wait_until(
        lambda: _readyz(server) == (503, _checks(broker="unavailable")),
        PROJECTED_TIMEOUT_S,
        "/readyz to report the broker down",
    )
    # The receiver acks without Redis; the worker's timer projects without it.
    down = plan("ws_down", 4)
    deliver_all(server, down.bodies)
    head = log_head(settings)
    wait_projected(settings, head)
    assert_states(server, down.expected, head)
    assert worker.poll() is None
    sent_before = metric(server, WAKEUPS)

    own_redis.start()
    wait_until(
        lambda: _readyz(server) == (200, _checks(broker="ok")),
        PROJECTED_TIMEOUT_S,
        "/readyz to report the broker back",
    )
    # The receiver announces what arrived meanwhile, and a worker takes it: only
    # the actor deletes the pending flag (its TTL is longer than this wait).
    wait_until(lambda: metric(server, WAKEUPS) > sent_before, PROJECTED_TIMEOUT_S, "a wake-up")
    with redis_client(own_redis.url()) as client:
        wait_until(
            lambda: not client.exists(PENDING_KEY),
            PROJECTED_TIMEOUT_S,
            "a worker to take the wake-up",
        )
    back = plan("ws_back", 4)
    deliver_all(server, back.bodies)
    head = log_head(settings)
    wait_projected(settings, head)
    assert_states(server, {**up.expected, **down.expected, **back.expected}, head)

    assert stop_process(worker) == 0
    stop_process(server.process)
    _assert_matches_a_clean_rebuild(config, tmp_path)


def test_two_workers_at_once_equal_one_rebuild(
    tmp_path: Path, processes: Processes, redis_db: redis.Redis, redis_url: str
) -> None:
    config = write_config(tmp_path, redis_url=redis_url)
    settings = settings_of(config)
    server = processes.serve(config)
    workers = [processes.worker(config, name=f"worker-{n}", threads=2) for n in range(WORKERS)]
    events = plan("ws", 100, noise=50)
    deliver_all(server, events.bodies, senders=4)
    head = log_head(settings)
    assert head == len(events.bodies)
    wait_projected(settings, head)
    assert_states(server, events.expected, head)
    assert all(worker.poll() is None for worker in workers)

    for worker in workers:
        assert stop_process(worker) == 0
    stop_process(server.process)
    _assert_matches_a_clean_rebuild(config, tmp_path)
