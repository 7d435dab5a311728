"""The entitlement-change feed over real HTTP (SPEC §6a): `GET /v1/changes` and its stream.

A lifecycle — checkout, active, past due, the grace period ending, canceling,
the period ending without the closing event, an override set and expiring —
yields exactly the expected changes, the time-driven ones included, under an
injected clock that the log and the API share. Resuming from any cursor yields
the rest exactly once; a replay writes the same changes under the same cursors;
the stream resumes after a restart from `Last-Event-ID`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from billhook.api.app import create_app
from billhook.config import Settings
from billhook.log.backend import Log, open_log
from billhook.runners.replay import replay
from billhook.testing.servers import free_port, serve_in_thread, wait_until
from billhook.testing.settings import ADMIN_TOKEN, READ_TOKEN, make_settings
from billhook.testing.stripe import (
    stripe_checkout_session,
    stripe_event_body,
    stripe_headers,
    stripe_subscription,
)
from tests.contract import contract_client

READ = {"Authorization": f"Bearer {READ_TOKEN}"}
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
T0 = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
GRACE_HOURS = 24


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Deployment:
    settings: Settings
    clock: Clock
    log: Log
    client: httpx.Client

    def deliver(self, event_type: str, obj: dict[str, Any]) -> int:
        body = stripe_event_body(event_type, obj=obj, created=int(self.clock.now.timestamp()))
        response = self.client.post("/webhooks/stripe", content=body, headers=stripe_headers(body))
        assert response.status_code == 200, response.text
        seq: int = response.json()["seq"]
        return seq

    def changes(self, after: str | None = None, **params: str) -> dict[str, Any]:
        query = {**params, **({"after": after} if after is not None else {})}
        response = self.client.get("/v1/changes", params=query, headers=READ)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def all_changes(self) -> list[dict[str, Any]]:
        return list(self.changes(limit="1000")["changes"])

    def settle(self, count: int) -> list[dict[str, Any]]:
        """Every change, once there are `count` of them (the projector and its timers run on
        a thread of the server)."""
        return wait_until(
            lambda: found if len(found := self.all_changes()) >= count else None,
            10,
            f"{count} changes",
        )


def _settings(tmp_path: Path, **sections: Any) -> Settings:
    return make_settings(tmp_path / "data", attention_grace_hours=GRACE_HOURS, sections=sections)


@contextmanager
def _serve(settings: Settings, clock: Clock, port: int = 0) -> Iterator[Deployment]:
    log = open_log(settings, clock=clock)
    app = create_app(settings, log=log, clock=clock)
    try:
        with (
            serve_in_thread(app, port=port) as url,
            contract_client(url, timeout=10) as client,
        ):
            yield Deployment(settings, clock, log, client)
    finally:
        log.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def dep(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Deployment]:
    """A deployment on each storage backend: the feed holds on both."""
    sections = {}
    if request.param == "postgresql":
        sections["storage"] = {"url": request.getfixturevalue("pg_url")}
    with _serve(_settings(tmp_path, **sections), Clock()) as deployment:
        yield deployment


def _lifecycle(dep: Deployment) -> None:
    """Events and clock moves of one workspace's billing life; nine changes."""
    clock = dep.clock
    session = stripe_checkout_session(
        customer="cus_1", subscription="sub_1", client_reference_id="ws_1"
    )
    dep.deliver("checkout.session.completed", session)  # linked: the answer stays the default
    end = int((T0 + 5 * DAY).timestamp())
    clock.now += timedelta(minutes=1)
    dep.deliver("customer.subscription.created", stripe_subscription(period_end=end))
    dep.settle(1)
    clock.now += DAY
    dep.deliver(
        "customer.subscription.updated", stripe_subscription(status="past_due", period_end=end)
    )
    dep.settle(2)
    clock.now += (GRACE_HOURS + 1) * HOUR  # the grace period ends: paid features withheld
    dep.settle(3)
    clock.now += HOUR
    canceling = stripe_subscription(cancel_at_period_end=True, period_end=end)
    dep.deliver("customer.subscription.updated", canceling)  # paid again, but canceling
    dep.settle(4)
    # The period ends; the closing event never comes: the allowance passes, the grant ends.
    clock.now = T0 + 5 * DAY + 2 * HOUR
    dep.settle(5)
    expires = T0 + 6 * DAY
    response = dep.client.post(
        "/v1/admin/overrides",
        json={
            "workspace_id": "ws_1",
            "kind": "manual_pilot",
            "tier": "team",
            "expires_at": expires.isoformat(),
            "reason": "pilot",
            "actor": "ops",
        },
        headers=ADMIN,
    )
    assert response.status_code == 201, response.text
    dep.settle(6)
    clock.now = expires + HOUR
    dep.settle(7)
    response = dep.client.put(
        "/v1/admin/enforcement",
        json={"mode": "enforce", "approved_by": "cfo", "reason": "launch"},
        headers=ADMIN,
    )
    assert response.status_code == 200, response.text
    dep.settle(8)


def _summary(change: dict[str, Any]) -> tuple[Any, ...]:
    if change["kind"] == "enforcement":
        return ("enforcement", change["cause"]["type"], change["enforcement"])
    return (
        change["workspace_id"],
        change["cause"]["kind"],
        change["tier"],
        change["status"],
        change["attention"],
        "team_sharing" in change["features"]["included"],
    )


def test_a_lifecycle_yields_exactly_its_changes_time_driven_ones_included(
    dep: Deployment,
) -> None:
    _lifecycle(dep)

    changes = dep.settle(8)

    assert [_summary(c) for c in changes] == [
        ("ws_1", "event", "team", "active", None, True),
        ("ws_1", "event", "team", "past_due", "past_due", True),
        ("ws_1", "time", "team", "past_due", "past_due", False),  # the grace period ended
        ("ws_1", "event", "team", "canceling", None, True),
        ("ws_1", "time", "solo", "inactive", None, False),  # period end + allowance
        ("ws_1", "event", "team", "active", None, True),  # the override
        ("ws_1", "time", "solo", "inactive", None, False),  # the override expired
        ("enforcement", "billhook.enforcement_set", "enforce"),
    ]
    # Time-driven changes happen at the instant the rule fired, not when it was noticed.
    grace_end = T0 + timedelta(minutes=1) + DAY + GRACE_HOURS * HOUR
    assert changes[2]["at"] == grace_end.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    assert changes[6]["at"] == (T0 + 6 * DAY).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z"
    )
    # Cursors grow; each change is what GET .../entitlements answered from then on.
    cursors = [c["cursor"] for c in changes]
    assert len(set(cursors)) == len(cursors)
    assert [tuple(map(int, c.split("-"))) for c in cursors] == sorted(
        tuple(map(int, c.split("-"))) for c in cursors
    )
    now = dep.client.get("/v1/workspaces/ws_1/entitlements", headers=READ).json()
    last = changes[6]
    for field in ("tier", "source", "status", "attention", "next_action", "seats"):
        assert last[field] == now[field]
    assert last["features"]["included"] == now["features"]["included"]
    # Nothing more happens by time alone.
    dep.clock.now += 30 * DAY
    assert len(dep.all_changes()) == 8


def test_resuming_from_every_cursor_yields_the_rest_exactly_once(dep: Deployment) -> None:
    _lifecycle(dep)
    changes = dep.settle(8)

    for n, change in enumerate(changes):
        rest, after = [], change["cursor"]
        while page := dep.changes(after, limit="2")["changes"]:
            rest += page
            after = page[-1]["cursor"]
        assert rest == changes[n + 1 :]
    assert dep.changes()["changes"] == changes[:100]
    assert dep.changes(changes[-1]["cursor"]) == {"changes": [], "next": changes[-1]["cursor"]}
    assert dep.changes("now") == {"changes": [], "next": changes[-1]["cursor"]}


def test_a_replay_writes_the_same_changes_under_the_same_cursors(dep: Deployment) -> None:
    _lifecycle(dep)
    before = dep.settle(8)

    replay(dep.log, dep.settings, dry_run=False, now=dep.clock.now)

    assert dep.all_changes() == before


def test_a_long_poll_answers_as_soon_as_a_change_is_there(dep: Deployment) -> None:
    head = dep.changes("now")["next"]
    with httpx.Client(base_url=str(dep.client.base_url), timeout=40) as other:
        end = int((T0 + 30 * DAY).timestamp())
        sub = stripe_subscription(period_end=end, metadata={"workspace_id": "ws_poll"})
        # The poll starts first and waits; the delivery comes while it does.
        import threading

        answer: dict[str, Any] = {}

        def poll() -> None:
            response = other.get("/v1/changes", params={"after": head, "wait": "20"}, headers=READ)
            answer.update(response.json())

        thread = threading.Thread(target=poll)
        thread.start()
        dep.deliver("customer.subscription.created", sub)
        thread.join(15)
        assert not thread.is_alive(), "the long poll did not answer once a change was there"
    assert [c["workspace_id"] for c in answer["changes"]] == ["ws_poll"]


@pytest.mark.parametrize(
    ("params", "detail"),
    [
        ({"after": "x"}, "after is not a cursor"),
        ({"after": "1-2-3"}, "after is not a cursor"),
        ({"after": "-1-0"}, "after is not a cursor"),
        ({"limit": "0"}, "limit must be"),
        ({"limit": "1001"}, "limit must be"),
        ({"limit": "½"}, "limit must be"),
        ({"wait": "31"}, "wait must be"),
    ],
)
def test_bad_parameters_are_a_clear_400(
    dep: Deployment, params: dict[str, str], detail: str
) -> None:
    response = dep.client.get("/v1/changes", params=params, headers=READ)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert response.json()["detail"].startswith(detail)


def test_the_feed_needs_a_token(dep: Deployment) -> None:
    assert dep.client.get("/v1/changes").status_code == 401
    assert dep.client.get("/v1/changes/stream").status_code == 401


def _stream(url: str, last_event_id: str | None, count: int) -> list[dict[str, Any]]:
    """The first `count` changes the stream sends (as `id`, `data` pairs)."""
    headers = {**READ, **({"Last-Event-ID": last_event_id} if last_event_id else {})}
    received: list[dict[str, Any]] = []
    with (
        httpx.Client(timeout=20) as client,
        client.stream("GET", f"{url}/v1/changes/stream", headers=headers) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        event: dict[str, str] = {}
        for line in response.iter_lines():
            if line.startswith(("id:", "event:", "data:")):
                name, _, value = line.partition(":")
                event[name] = value.strip()
            elif line == "" and "data" in event:
                assert event["event"] == "change"
                received.append({"id": event["id"], **json.loads(event["data"])})
                event = {}
                if len(received) == count:
                    break
    return received


def test_the_stream_resumes_after_a_restart_from_last_event_id(tmp_path: Path) -> None:
    settings, clock, port = _settings(tmp_path), Clock(), free_port()
    with _serve(settings, clock, port) as dep:
        _lifecycle(dep)
        changes = dep.settle(8)
        url = str(dep.client.base_url).rstrip("/")
        first = _stream(url, None, 3)
    assert [c["id"] for c in first] == [c["cursor"] for c in changes[:3]]
    with _serve(settings, clock, port) as dep:
        rest = _stream(url, first[-1]["id"], 5)
    assert [{k: v for k, v in c.items() if k != "id"} for c in rest] == changes[3:]
