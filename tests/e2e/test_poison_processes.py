"""Poison events through real `billhook` processes (issue #11).

`billhook replay` over a log holding every poison shape exits 0 and
`billhook quarantine list` shows each one without its value; a real
`billhook worker` on Redis quarantines a subscription whose id is 2^63 (which
SQLite cannot bind) and keeps projecting, across a restart.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import redis

from billhook.config import Settings
from billhook.domain.resolver import resolve
from billhook.log.sqlite import EventLog
from billhook.projections.store import ProjectionStore
from billhook.providers.stripe.webhook import stripe_record
from billhook.runners.worker import CATCH_UP_INTERVAL_S
from billhook.testing.servers import stop_process
from billhook.testing.settings import write_config
from billhook.testing.stripe import stripe_event_body, stripe_subscription
from tests.deployment import (
    T0,
    Processes,
    deliver,
    run_cli,
    settings_of,
    state,
    wait_projected,
)
from tests.projections.test_poison import EMAIL, HUGE, POISONS

HEADER = "seq\tprovider\tevent_id\ttype\terror"


def _subscription_body(workspace: str, sub_id: object | None = None) -> bytes:
    sub = stripe_subscription(
        id=f"sub_{workspace}", customer=f"cus_{workspace}", metadata={"workspace_id": workspace}
    )
    if sub_id is not None:
        sub["id"] = sub_id
    return stripe_event_body("customer.subscription.created", obj=sub, created=T0)


def _tier(settings: Settings, workspace: str) -> str:
    store = ProjectionStore(settings.projections_path, settings)
    try:
        facts = store.workspace_facts(workspace)
    finally:
        store.close()
    return resolve(facts, settings.policy, datetime.fromtimestamp(T0, tz=UTC)).tier


def _quarantine_lines(config: Path) -> tuple[str, list[str]]:
    listed = run_cli("quarantine", "list", "--config", str(config))
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0] == HEADER
    return listed.stdout, lines[1:]


def test_replay_over_poison_events_exits_0_and_lists_them_without_values(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path, redis_url=None)
    settings = settings_of(config)
    log = EventLog(settings.events_path)
    try:
        before = log.append_batch([stripe_record(_subscription_body("ws_before").decode())])
        poisoned = log.append_batch([p.record() for p in POISONS])
        log.append_batch([stripe_record(_subscription_body("ws_after").decode())])
        events = [log.get(stored.seq) for stored in poisoned]
    finally:
        log.close()
    assert before[0].seq == 1

    result = run_cli("replay", "--config", str(config))

    assert result.returncode == 0, result.stderr
    assert "Error" not in result.stderr
    stdout, lines = _quarantine_lines(config)
    expected = []
    for event, poison in zip(events, POISONS, strict=True):
        assert event is not None
        expected.append(
            f"{event.seq}\t{poison.provider}\t{event.event_id}\t{poison.event_type}\t{poison.reason}"
        )
    assert lines == expected
    for poison in POISONS:
        assert not poison.leaks(stdout), poison.name
    assert EMAIL not in stdout
    assert (_tier(settings, "ws_before"), _tier(settings, "ws_after")) == ("team", "team")
    # A second replay quarantines them again, once each.
    assert run_cli("replay", "--config", str(config)).returncode == 0
    assert _quarantine_lines(config)[1] == expected


def test_the_worker_quarantines_an_id_sqlite_cannot_bind_and_keeps_projecting(
    tmp_path: Path, processes: Processes, redis_db: redis.Redis, redis_url: str
) -> None:
    config = write_config(tmp_path, redis_url=redis_url)
    settings = settings_of(config)
    server = processes.serve(config)
    worker = processes.worker(config)

    with server.client() as client:
        poison = deliver(client, _subscription_body("ws_poison", sub_id=HUGE))
        after = deliver(client, _subscription_body("ws_after"))
        wait_projected(settings, after)
        assert worker.poll() is None, "the worker exited"
        assert state(client, "ws_after")["tier"] == "team"
        assert state(client, "ws_poison")["tier"] == "solo"

    _, lines = _quarantine_lines(config)
    assert [line.split("\t")[0::4] for line in lines] == [
        [str(poison), "subscription id is not a string"]
    ]

    # A restart finds nothing to retry and keeps going (before, it exited on every start).
    assert stop_process(worker) == 0
    worker = processes.worker(config, name="worker-2")
    with server.client() as client:
        later = deliver(client, _subscription_body("ws_later"))
        wait_projected(settings, later)
        time.sleep(2 * CATCH_UP_INTERVAL_S)  # a couple of catch-up ticks
        assert worker.poll() is None, "the restarted worker exited"
        assert state(client, "ws_later")["tier"] == "team"
    assert _quarantine_lines(config)[1] == lines
    assert stop_process(worker) == 0
