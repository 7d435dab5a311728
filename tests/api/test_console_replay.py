"""The console's Replay button (issue 15): `billhook replay` in the background of the web
process, one at a time, whose outcome the quarantine page shows."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from billhook.api.app import create_app
from billhook.api.console import replays
from billhook.api.console.replays import BackgroundReplay
from billhook.config import Settings
from billhook.errors import StoreUnavailable
from billhook.log.sqlite import EventLog
from billhook.projections.store import ProjectionStore
from billhook.runners.replay import Change
from billhook.testing.servers import serve_in_thread
from billhook.testing.settings import READ_TOKEN, make_settings
from billhook.testing.stripe import stripe_subscription
from tests.api.test_console import Operator
from tests.feed import NOW, Feed

READ = {"Authorization": f"Bearer {READ_TOKEN}"}
# Longer than a workspace id may be: an event naming it so is quarantined.
LONG_WORKSPACE = "w" * 501
_STATE = re.compile(r'id="replay-state" data-state="(\w+)"')


def _state(page: str) -> str | None:
    found = _STATE.search(page)
    return found.group(1) if found else None


def _wait_finished(op: Operator, timeout_s: float = 30) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        page = op.http.get("/console/quarantine").text
        if _state(page) in ("finished", "failed"):
            return page
        assert time.monotonic() < deadline, page
        time.sleep(0.05)


@pytest.fixture
def fixed_by_config(tmp_path: Path) -> tuple[Settings, int]:
    """A log with an event quarantined under the old config (its `workspace_id` metadata is
    too long) that the new one, reading the workspace from `org_id`, accepts."""
    old = make_settings(tmp_path / "data")
    feed = Feed(old)
    sub = stripe_subscription(
        id="sub_fix",
        customer="cus_fix",
        metadata={"workspace_id": LONG_WORKSPACE, "org_id": "ws_fixed"},
    )
    seq = feed.stripe("customer.subscription.created", sub, event_id="evt_fix")
    [row] = feed.store.quarantine()
    assert (row.seq, row.error) == (seq, "subscription metadata.workspace_id is too long")
    feed.close()
    return make_settings(tmp_path / "data", workspace_key="org_id"), seq


@pytest.fixture
def operator_of(fixed_by_config: tuple[Settings, int]) -> Iterator[tuple[Operator, str]]:
    settings, _ = fixed_by_config
    with serve_in_thread(create_app(settings)) as base:
        op = Operator(base)
        assert op.sign_in().status_code == 303
        yield op, base
        op.http.close()


def test_a_replay_retries_a_quarantined_event_whose_cause_was_fixed(
    operator_of: tuple[Operator, str], fixed_by_config: tuple[Settings, int]
) -> None:
    op, base = operator_of
    settings, seq = fixed_by_config
    before = op.http.get("/console/quarantine").text
    assert "evt_fix" in before
    assert _state(before) is None  # no replay yet
    url = f"{base}/v1/workspaces/ws_fixed/entitlements"
    assert httpx.get(url, headers=READ).json()["tier"] == "solo"

    answer = op.post("/console/quarantine/replay", {}, page="/console/quarantine")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/console/quarantine"
    page = _wait_finished(op)

    assert _state(page) == "finished", page
    assert "Nothing in quarantine" in page
    assert 'id="replay-changed">1<' in page
    assert '<a href="/console/workspaces/ws_fixed">ws_fixed</a>' in page
    assert "solo / default / none</td><td>team / stripe / active" in page
    assert f'id="head">{seq}<' in page
    assert f'id="checkpoint">{seq}<' in page
    assert httpx.get(url, headers=READ).json()["tier"] == "team"
    store = ProjectionStore(settings.projections_path, settings)
    try:
        assert store.quarantine() == []
        assert store.checkpoint() == seq
    finally:
        store.close()


def test_a_replay_form_without_its_csrf_token_starts_nothing(
    operator_of: tuple[Operator, str],
) -> None:
    op, _ = operator_of
    for data in ({}, {"csrf": "wrong"}):
        answer = op.http.post("/console/quarantine/replay", data=data)
        assert answer.status_code == 403
        assert "CSRF" in answer.text
    page = op.http.get("/console/quarantine").text
    assert _state(page) is None
    assert "evt_fix" in page


def test_a_second_press_while_a_replay_runs_says_so(
    fixed_by_config: tuple[Settings, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real replay, held back until the second press was answered."""
    settings, seq = fixed_by_config
    release = threading.Event()
    real = replays.replay

    def held(*args: Any, **kwargs: Any) -> list[Change]:
        assert release.wait(30)
        return real(*args, **kwargs)

    monkeypatch.setattr(replays, "replay", held)
    with serve_in_thread(create_app(settings)) as base:
        op = Operator(base)
        assert op.sign_in().status_code == 303
        first = op.post("/console/quarantine/replay", {}, page="/console/quarantine")
        assert first.status_code == 303
        running = op.http.get("/console/quarantine").text
        assert _state(running) == "running"
        assert '<meta http-equiv="refresh" content="2">' in running
        second = op.post("/console/quarantine/replay", {}, page="/console/quarantine")
        assert second.status_code == 409
        assert "a replay is already running (started at " in second.text
        release.set()
        page = _wait_finished(op)
        op.http.close()
    assert _state(page) == "finished"
    assert f'id="checkpoint">{seq}<' in page


# -- BackgroundReplay on its own ---------------------------------------------------------------


def test_one_replay_at_a_time_then_its_outcome(settings: Settings, event_log: EventLog) -> None:
    release = threading.Event()
    calls: list[dict[str, Any]] = []
    change = Change("ws_a", ("solo", "default", "none"), ("team", "stripe", "active"))

    def run(log: Any, settings: Settings, **kwargs: Any) -> list[Change]:
        calls.append(kwargs)
        kwargs["progress"](3)
        assert release.wait(10)
        return [change]

    background = BackgroundReplay(settings, now=lambda: NOW, run=run)
    assert background.last is None
    started, first = background.start()
    assert started
    assert first.running
    again, same = background.start()
    assert not again
    assert same.started_at == first.started_at
    release.set()
    background.join(10)
    last = background.last
    assert last is not None
    assert not last.running
    assert (last.changes, last.error, last.done) == ((change,), None, 3)
    assert len(calls) == 1
    assert (calls[0]["dry_run"], calls[0]["now"], calls[0]["private"]) == (False, NOW, True)
    # Once it ended, the next press starts another.
    assert background.start()[0]
    background.join(10)


@pytest.mark.parametrize(
    ("error", "shown"),
    [
        (StoreUnavailable("projections.db is locked"), "projections.db is locked"),
        (RuntimeError("boom at /secret/path"), "unexpected RuntimeError; nothing was swapped"),
    ],
)
def test_a_failed_replay_is_one_line(
    settings: Settings, event_log: EventLog, error: Exception, shown: str
) -> None:
    def run(*args: Any, **kwargs: Any) -> list[Change]:
        raise error

    background = BackgroundReplay(settings, now=lambda: NOW, run=run)
    background.start()
    background.join(10)
    last = background.last
    assert last is not None
    assert (last.running, last.error, last.changes) == (False, shown, ())
