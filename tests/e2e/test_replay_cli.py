"""`billhook replay` and `billhook quarantine list`, run as an operator runs them (SPEC §7).

The situation a replay exists for: `projections.db` was built by a reducer
that has since been fixed. Here the "old" reducer is the real one with one
test-made change (Stripe's `past_due` normalized to `active`); the log is
folded with it into `projections.db`, then a real server serves that stale
projection while the real `billhook replay` CLI rebuilds with the real
reducers and swaps. Readers hammering the API must only ever see the complete
old answer or the complete new one.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from billhook.config import Settings
from billhook.log.sqlite import EventLog
from billhook.projections.backend import shadow_location
from billhook.projections.rebuild import rebuild
from billhook.providers import statuses as decode
from billhook.providers.stripe.webhook import stripe_record
from billhook.testing.servers import wait_until
from billhook.testing.settings import write_config
from billhook.testing.stripe import stripe_event_body, stripe_subscription
from tests.deployment import (
    PROJECTED_TIMEOUT_S,
    T0,
    Processes,
    Server,
    clean_digest,
    live_digest,
    run_cli,
    settings_of,
    state,
)

# Workspaces whose subscription is past_due: the stale reducer called it active.
CHANGED = [f"ws_changed_{n}" for n in range(5)]
# Workspaces both reducers agree on.
UNCHANGED = [f"ws_same_{n}" for n in range(3)]
# Events that only make the replay take a while (their workspaces never change).
FILLER_EVENTS = 5_000
FILLER_SUBSCRIPTIONS = 50
# Threads reading entitlements while the replay runs.
READERS = 2

Answer = tuple[str, str, str | None]  # (tier, status, attention)
OLD_CHANGED: Answer = ("team", "active", None)
NEW_CHANGED: Answer = ("team", "past_due", "past_due")
ACTIVE: Answer = ("team", "active", None)
CHANGE_LINE = "{}: team/stripe/active -> team/stripe/past_due"


def _event(event_type: str, sub: dict[str, object], created: int) -> str:
    return stripe_event_body(event_type, obj=sub, created=created).decode()


def _subscription(workspace: str, status: str) -> dict[str, object]:
    return stripe_subscription(
        id=f"sub_{workspace}",
        customer=f"cus_{workspace}",
        status=status,
        metadata={"workspace_id": workspace},
    )


def _write_log(settings: Settings) -> tuple[int, str]:
    """The log; returns the seq and event id of the one event a reducer fails on."""
    bodies: list[str] = []
    for workspace in CHANGED:
        bodies.append(
            _event("customer.subscription.created", _subscription(workspace, "active"), T0)
        )
        bodies.append(
            _event("customer.subscription.updated", _subscription(workspace, "past_due"), T0 + 1)
        )
    for workspace in UNCHANGED:
        bodies.append(
            _event("customer.subscription.created", _subscription(workspace, "active"), T0)
        )
    for n in range(FILLER_EVENTS):
        k = n % FILLER_SUBSCRIPTIONS
        sub = _subscription(f"ws_filler_{k}", "active")
        bodies.append(_event("customer.subscription.updated", sub, T0 + n))
    broken = _subscription("ws_broken", "active")
    del broken["status"]
    bodies.append(_event("customer.subscription.updated", broken, T0))
    log = EventLog(settings.events_path)
    try:
        appended = log.append_batch([stripe_record(body) for body in bodies])
        broken_event = log.get(appended[-1].seq)
    finally:
        log.close()
    assert broken_event is not None
    return broken_event.seq, broken_event.event_id


def _fold_with_the_old_reducer(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """projections.db as a reducer that normalized `past_due` to `active` built it."""
    log = EventLog(settings.events_path)
    try:
        with monkeypatch.context() as patched:
            patched.setitem(decode.NORMALIZED, "past_due", "active")
            rebuild(log, settings.projections_path, settings)
    finally:
        log.close()


@dataclass
class Deployment:
    config: Path
    settings: Settings
    quarantined: str  # the `quarantine list` line of the broken event


@pytest.fixture
def stale(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Deployment:
    config = write_config(tmp_path, redis_url=None)
    settings = settings_of(config)
    seq, event_id = _write_log(settings)
    _fold_with_the_old_reducer(settings, monkeypatch)
    line = (
        f"{seq}\tstripe\t{event_id}\tcustomer.subscription.updated\tsubscription status is missing"
    )
    return Deployment(config, settings, line)


def _answer(server_answer: dict[str, object]) -> Answer:
    attention = server_answer["attention"]
    assert attention is None or isinstance(attention, str)
    return (str(server_answer["tier"]), str(server_answer["status"]), attention)


class Reader(threading.Thread):
    """Reads every workspace in turn, recording answers in order, until stopped."""

    def __init__(self, server: Server, workspaces: list[str]) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.workspaces = workspaces
        self.stopping = threading.Event()
        self.seen: list[tuple[str, Answer]] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with self.server.client() as client:
                while not self.stopping.is_set():
                    for workspace in self.workspaces:
                        self.seen.append((workspace, _answer(state(client, workspace))))
        except BaseException as e:
            self.error = e

    def latest(self, workspace: str) -> Answer | None:
        for seen_workspace, answer in reversed(self.seen):
            if seen_workspace == workspace:
                return answer
        return None


def _quarantine_lines(config: Path) -> list[str]:
    listed = run_cli("quarantine", "list", "--config", str(config))
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0] == "seq\tprovider\tevent_id\ttype\terror"
    return lines[1:]


def test_dry_run_prints_what_would_change_and_swaps_nothing(stale: Deployment) -> None:
    before = live_digest(stale.settings)
    result = run_cli("replay", "--dry-run", "--config", str(stale.config))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        *(CHANGE_LINE.format(workspace) for workspace in CHANGED),
        f"{len(CHANGED)} workspace(s) would change (tier/source/status); nothing swapped",
    ]
    assert "events/s" in result.stderr
    assert live_digest(stale.settings) == before
    assert not shadow_location(stale.settings).exists()


def test_replay_under_reads_swaps_whole_and_keeps_quarantine(
    stale: Deployment, processes: Processes, tmp_path: Path
) -> None:
    assert _quarantine_lines(stale.config) == [stale.quarantined]
    server = processes.serve(stale.config)
    watched = [*CHANGED, *UNCHANGED]
    with server.client() as client:
        old = {workspace: _answer(state(client, workspace)) for workspace in watched}
    assert old == {**dict.fromkeys(CHANGED, OLD_CHANGED), **dict.fromkeys(UNCHANGED, ACTIVE)}
    new = {**old, **dict.fromkeys(CHANGED, NEW_CHANGED)}

    readers = [Reader(server, watched) for _ in range(READERS)]
    for reader in readers:
        reader.start()
    try:
        # Each reader has read every workspace before the replay starts.
        wait_until(
            lambda: all(
                reader.error is not None or reader.seen[len(watched) - 1 :] for reader in readers
            ),
            PROJECTED_TIMEOUT_S,
            "readers to read every workspace once",
        )
        replayed = run_cli("replay", "--config", str(stale.config))
        # Keep reading until every reader has seen the new answers (no restart needed).
        wait_until(
            lambda: all(
                reader.error is not None or reader.latest(w) == new[w]
                for reader in readers
                for w in CHANGED
            ),
            PROJECTED_TIMEOUT_S,
            "readers to see the replayed projection",
        )
    finally:
        for reader in readers:
            reader.stopping.set()
        for reader in readers:
            reader.join(timeout=PROJECTED_TIMEOUT_S)
    assert replayed.returncode == 0, replayed.stderr
    assert replayed.stdout.splitlines() == [
        *(CHANGE_LINE.format(workspace) for workspace in CHANGED),
        f"{len(CHANGED)} workspace(s) changed (tier/source/status)",
    ]

    for reader in readers:
        assert not reader.is_alive()
        assert reader.error is None
        assert reader.seen
        # Every answer is the complete old one or the complete new one, and once a
        # reader has seen the new projection it never sees the old one again.
        for workspace in watched:
            answers = [answer for w, answer in reader.seen if w == workspace]
            assert set(answers) <= {old[workspace], new[workspace]}
            if old[workspace] != new[workspace]:
                assert old[workspace] in answers  # the reader did run across the swap
                first_new = answers.index(new[workspace])
                assert set(answers[first_new:]) == {new[workspace]}
    with server.client() as client:
        assert {workspace: _answer(state(client, workspace)) for workspace in watched} == new

    assert not shadow_location(stale.settings).exists()
    assert live_digest(stale.settings) == clean_digest(stale.settings, tmp_path)
    # Replay retried the broken event: with the same reducers it is quarantined again, once.
    assert _quarantine_lines(stale.config) == [stale.quarantined]
