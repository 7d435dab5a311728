"""`billhook replay` while webhooks arrive: no acked event is ever left out (SPEC §7).

A log large enough that the replay takes seconds, signed events for new
workspaces arriving all the while, then: every acked event shows in its
workspace's entitlement, a dry run finds nothing to change, and the live
projection equals a clean rebuild of the log. The same with Redis workers,
with a worker SIGKILLed while the replay runs, and with the replay itself
SIGKILLed inside its swap transaction.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import redis

from billhook.config import Settings
from billhook.log.sqlite import EventLog
from billhook.projections.backend import shadow_location
from billhook.providers.stripe.webhook import stripe_record
from billhook.testing.servers import wait_until
from billhook.testing.settings import write_config
from billhook.testing.stripe import stripe_event_body, stripe_subscription
from tests.deployment import (
    CLI_TIMEOUT_S,
    PROJECTED_TIMEOUT_S,
    ROOT,
    T0,
    Arrivals,
    Processes,
    Server,
    clean_digest,
    live_digest,
    log_head,
    run_cli,
    settings_of,
    state,
    wait_projected,
)

# Events already in the log: enough that a rebuild and its comparison take seconds.
FILLER_EVENTS = 30_000
FILLER_WORKSPACES = 3_000
# Events that must arrive while the replay runs for the test to mean anything.
MIN_DURING_REPLAY = 5
NO_CHANGE = "0 workspace(s) would change (tier/source/status); nothing swapped"


def _write_filler(settings: Settings) -> None:
    bodies = []
    for n in range(FILLER_EVENTS):
        k = n % FILLER_WORKSPACES
        sub = stripe_subscription(
            id=f"sub_filler_{k}", customer=f"cus_filler_{k}", metadata={"workspace_id": f"ws_{k}"}
        )
        event_type = (
            "customer.subscription.created"
            if n < FILLER_WORKSPACES
            else ("customer.subscription.updated")
        )
        bodies.append(stripe_event_body(event_type, obj=sub, created=T0 + n).decode())
    log = EventLog(settings.events_path)
    try:
        log.append_batch([stripe_record(body) for body in bodies])
    finally:
        log.close()


def _replay(config: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "billhook", "replay", "--config", str(config)],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )


def _replay_during_arrivals(
    server: Server, config: Path, env: dict[str, str] | None = None
) -> tuple[list[str], subprocess.CompletedProcess[str]]:
    """Run `billhook replay` while events arrive; the workspaces acked, the replay's result."""
    arrivals = Arrivals(server)
    arrivals.start()
    try:
        arrivals.wait_for(5)
        before = len(arrivals.acked)
        replayed = _replay(config, env)
        during = len(arrivals.acked) - before
        arrivals.wait_for(len(arrivals.acked) + 5)
    finally:
        acked = arrivals.finish()
    assert during >= MIN_DURING_REPLAY, f"only {during} events arrived during the replay"
    return acked, replayed


def _assert_nothing_left_out(
    server: Server, config: Path, acked: list[str], tmp_path: Path
) -> None:
    settings = settings_of(config)
    wait_projected(settings, log_head(settings))
    with server.client() as client:
        missing = [
            workspace
            for workspace in acked
            if (answer := state(client, workspace))["tier"] != "team"
            or answer["status"] != "active"
        ]
    assert missing == []
    dry = run_cli("replay", "--dry-run", "--config", str(config))
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.splitlines() == [NO_CHANGE]
    directory = tmp_path / f"clean-{len(acked)}"
    directory.mkdir()
    assert live_digest(settings) == clean_digest(settings, directory)


def test_replay_under_traffic_with_the_embedded_projector(
    tmp_path: Path, processes: Processes
) -> None:
    config = write_config(tmp_path, redis_url=None)
    settings = settings_of(config)
    _write_filler(settings)
    server = processes.serve(config)
    wait_projected(settings, FILLER_EVENTS)

    acked, replayed = _replay_during_arrivals(server, config)

    assert replayed.returncode == 0, replayed.stderr
    _assert_nothing_left_out(server, config, acked, tmp_path)


def test_a_replay_killed_inside_its_swap_changes_nothing_and_the_next_one_completes(
    tmp_path: Path, processes: Processes
) -> None:
    config = write_config(tmp_path, redis_url=None)
    settings = settings_of(config)
    _write_filler(settings)
    server = processes.serve(config)
    wait_projected(settings, FILLER_EVENTS)
    marker = tmp_path / "crashed"

    acked, killed = _replay_during_arrivals(server, config, {"BILLHOOK_CRASH_AT": f"swap:{marker}"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert marker.exists()
    # The half-done swap rolled back: the live projection is whole and keeps projecting.
    _assert_nothing_left_out(server, config, acked, tmp_path)

    again, replayed = _replay_during_arrivals(server, config)
    assert replayed.returncode == 0, replayed.stderr
    assert not shadow_location(settings).exists()
    _assert_nothing_left_out(server, config, acked + again, tmp_path)


def test_replay_under_traffic_with_redis_workers_one_of_them_killed(
    tmp_path: Path, processes: Processes, redis_db: redis.Redis, redis_url: str
) -> None:
    config = write_config(tmp_path, redis_url=redis_url)
    settings = settings_of(config)
    _write_filler(settings)
    server = processes.serve(config)
    first = processes.worker(config, name="worker-1")
    processes.worker(config, name="worker-2")
    wait_projected(settings, FILLER_EVENTS)

    def kill_first_worker_once_replay_builds() -> None:
        wait_until(shadow_location(settings).exists, CLI_TIMEOUT_S, "the replay to start building")
        first.send_signal(signal.SIGKILL)

    killer = threading.Thread(target=kill_first_worker_once_replay_builds, daemon=True)
    killer.start()
    acked, replayed = _replay_during_arrivals(server, config)
    killer.join(timeout=CLI_TIMEOUT_S)
    assert first.wait(timeout=PROJECTED_TIMEOUT_S) == -signal.SIGKILL
    assert replayed.returncode == 0, replayed.stderr
    processes.worker(config, name="worker-1-restarted")
    _assert_nothing_left_out(server, config, acked, tmp_path)
