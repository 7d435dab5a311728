"""When the log cannot be written the answer is 503, never a 2xx (SPEC §1, §3).

Every failure here is a real SQLite failure: a database that may not grow
(`max_page_count`), a filesystem that is full (a tiny tmpfs), a lock held past
the busy timeout, a connection that may not write. Each time the provider is
told to retry with `503 log_unavailable`, nothing refused is in the log, and
once the cause is gone the same server takes deliveries again.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from billhook.api.app import create_app
from billhook.config import Settings
from billhook.log.sqlite import EventLog
from billhook.testing.polar import POLAR_LEGACY_SECRET, POLAR_SECRET
from billhook.testing.servers import serve_in_thread
from billhook.testing.settings import make_settings
from billhook.testing.stripe import STRIPE_SECRET, stripe_event_body, stripe_headers, stripe_object
from tests.contract import contract_client
from tests.support import fill, tmpfs

# Padding that makes each event need several fresh pages of the database.
LARGE_NOTE = "n" * 16_384
# Deliveries tried before the full database must have refused one.
MAX_DELIVERIES_UNTIL_FULL = 50
# Deliveries sent after the first refusal, all of which must be refused too.
REFUSED_AFTERWARDS = 3
# Size of the tmpfs for the full-filesystem test; the log needs far less to start.
TMPFS_SIZE = "4m"


@dataclass(frozen=True)
class Event:
    event_id: str
    body: bytes


def _event(*, large: bool = False) -> Event:
    obj = stripe_object("subscription")
    if large:
        obj["metadata"] = {**obj.get("metadata", {}), "note": LARGE_NOTE}
    body = stripe_event_body("customer.subscription.updated", obj=obj)
    return Event(json.loads(body)["id"], body)


def _deliver(client: httpx.Client, event: Event) -> httpx.Response:
    """POST `event`, freshly signed, as a provider's (re)delivery would be."""
    return client.post("/webhooks/stripe", content=event.body, headers=stripe_headers(event.body))


def _assert_accepted(response: httpx.Response) -> int:
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["status"] == "accepted"
    _assert_no_secret(response)
    return int(answer["seq"])


def _assert_log_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    answer = response.json()
    assert answer["error"] == "log_unavailable"
    assert isinstance(answer["detail"], str)
    assert answer["detail"]
    _assert_no_secret(response)


def _assert_no_secret(response: httpx.Response) -> None:
    for secret in (STRIPE_SECRET, POLAR_SECRET, POLAR_LEGACY_SECRET):
        assert secret not in response.text
        assert all(secret not in value for value in response.headers.values())


def _assert_intact(path: Path) -> None:
    """A refused write left the database file whole, as a fresh connection sees it."""
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        conn.close()


def _logged_ids(log: EventLog) -> set[str]:
    return {event.event_id for event in log.read()}


@pytest.fixture
def served(settings: Settings) -> Iterator[tuple[EventLog, httpx.Client]]:
    """A real server around an EventLog the test can reach into."""
    log = EventLog(settings.events_path)
    try:
        with (
            serve_in_thread(create_app(settings, log=log)) as url,
            contract_client(url, timeout=30) as client,
        ):
            yield log, client
    finally:
        log.close()


def _deliver_until_refused(
    client: httpx.Client,
) -> tuple[list[Event], list[Event], list[httpx.Response]]:
    """Deliver large events until one is refused; return (acked, refused, refusals)."""
    acked: list[Event] = []
    for _ in range(MAX_DELIVERIES_UNTIL_FULL):
        event = _event(large=True)
        response = _deliver(client, event)
        if response.is_success:
            _assert_accepted(response)
            acked.append(event)
            continue
        refused = [event]
        refusals = [response]
        for _ in range(REFUSED_AFTERWARDS):
            event = _event(large=True)
            refused.append(event)
            refusals.append(_deliver(client, event))
        return acked, refused, refusals
    raise AssertionError(f"{MAX_DELIVERIES_UNTIL_FULL} large events all fitted in a full log")


def test_a_database_that_may_not_grow_answers_503_then_recovers(
    served: tuple[EventLog, httpx.Client],
) -> None:
    log, client = served
    _assert_accepted(_deliver(client, _event()))
    # Nothing is in flight: the server's writer thread is idle while the limit changes.
    pages = log.conn.execute("PRAGMA page_count").fetchone()[0]
    log.conn.execute(f"PRAGMA max_page_count = {pages}")

    acked, refused, refusals = _deliver_until_refused(client)

    for response in refusals:
        _assert_log_unavailable(response)
    logged = _logged_ids(log)
    assert {e.event_id for e in acked} <= logged
    assert not {e.event_id for e in refused} & logged

    log.conn.execute("PRAGMA max_page_count = 1000000")
    retried = _assert_accepted(_deliver(client, refused[0]))
    fresh = _assert_accepted(_deliver(client, _event(large=True)))
    assert retried < fresh
    assert {refused[0].event_id, *(e.event_id for e in acked)} <= _logged_ids(log)
    _assert_intact(log.path)


def test_a_full_filesystem_answers_503_then_recovers(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "tmpfs", TMPFS_SIZE) as mount_point:
        settings = make_settings(mount_point / "data")
        filler = mount_point / "filler"
        log = EventLog(settings.events_path)
        try:
            with (
                serve_in_thread(create_app(settings, log=log)) as url,
                contract_client(url, timeout=30) as client,
            ):
                _assert_accepted(_deliver(client, _event()))
                fill(filler)

                acked, refused, refusals = _deliver_until_refused(client)

                for response in refusals:
                    _assert_log_unavailable(response)
                logged = _logged_ids(log)
                assert {e.event_id for e in acked} <= logged
                assert not {e.event_id for e in refused} & logged

                filler.unlink()
                retried = _assert_accepted(_deliver(client, refused[0]))
                fresh = _assert_accepted(_deliver(client, _event()))
                assert retried < fresh
                assert refused[0].event_id in _logged_ids(log)
                _assert_intact(log.path)
        finally:
            log.close()


def test_a_lock_held_past_the_busy_timeout_answers_503_then_recovers(
    settings: Settings,
) -> None:
    log = EventLog(settings.events_path, busy_timeout_s=0.2)
    blocker = sqlite3.connect(settings.events_path, isolation_level=None)
    try:
        with (
            serve_in_thread(create_app(settings, log=log)) as url,
            contract_client(url, timeout=30) as client,
        ):
            event = _event()
            blocker.execute("BEGIN EXCLUSIVE")
            _assert_log_unavailable(_deliver(client, event))
            assert event.event_id not in _logged_ids(log)

            blocker.execute("ROLLBACK")
            seq = _assert_accepted(_deliver(client, event))
            assert [e.seq for e in log.find(event.event_id, "stripe")] == [seq]
    finally:
        if blocker.in_transaction:
            blocker.execute("ROLLBACK")
        blocker.close()
        log.close()


def test_a_log_that_may_not_be_written_answers_503_then_recovers(
    served: tuple[EventLog, httpx.Client],
) -> None:
    log, client = served
    event = _event()
    # What SQLite answers for a read-only database: "attempt to write a readonly database".
    log.conn.execute("PRAGMA query_only = ON")
    _assert_log_unavailable(_deliver(client, event))
    assert event.event_id not in _logged_ids(log)

    log.conn.execute("PRAGMA query_only = OFF")
    seq = _assert_accepted(_deliver(client, event))
    assert [e.seq for e in log.find(event.event_id, "stripe")] == [seq]
