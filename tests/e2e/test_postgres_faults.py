"""When the PostgreSQL log cannot be written the answer is 503, never a 2xx (SPEC §3, §4a).

Each fault is a real one, made on the machine's PostgreSQL for this test's
throwaway database alone (the server itself keeps running: other tests use
it): the database refuses connections and its sessions are cut; another
session holds a lock on the log past the busy timeout; the database turns
read-only. Each time the provider is told to retry with `503
log_unavailable`, `/readyz` names the failing `log` check, nothing refused is
in the log, and once the cause is gone the same server (a real uvicorn) takes
the retried delivery, without a restart.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from psycopg import sql

from billhook.api.app import create_app
from billhook.log.sqlite import DEFAULT_BUSY_TIMEOUT_S
from billhook.testing.servers import serve_in_thread, wait_until
from billhook.testing.settings import SECRETS, make_settings
from billhook.testing.stripe import stripe_event_body, stripe_headers, stripe_object
from tests.contract import contract_client
from tests.e2e.hosts import connect, logged, projected
from tests.postgres import admin

# How much longer than the busy timeout a refusal may take (a pool's replacement
# connection, the group committer's turn, the answer).
REFUSAL_SLACK_S = 3.0
# Upper bound on the server taking deliveries again once the database is back.
RECOVERY_TIMEOUT_S = 20.0
# Pause between a provider's retries while waiting for the recovery.
RETRY_GAP_S = 0.2


@dataclass(frozen=True)
class Event:
    event_id: str
    body: bytes


def _event() -> Event:
    body = stripe_event_body("customer.subscription.updated", obj=stripe_object("subscription"))
    return Event(str(json.loads(body)["id"]), body)


@dataclass
class Served:
    client: httpx.Client
    url: str  # the database's URL
    database: str

    def deliver(self, event: Event) -> httpx.Response:
        """POST `event`, freshly signed, as a provider's (re)delivery would be."""
        return self.client.post(
            "/webhooks/stripe", content=event.body, headers=stripe_headers(event.body)
        )

    def readyz(self) -> tuple[int, dict[str, object]]:
        response = self.client.get("/readyz")
        body: dict[str, object] = response.json()
        return response.status_code, body

    def logged_seqs(self, event: Event) -> list[int]:
        return [seq for seq, _ in logged(self.url).get(event.event_id, [])]


@pytest.fixture
def served(tmp_path: Path, pg_url: str) -> Iterator[Served]:
    """A real uvicorn serving the app a `billhook serve` on this database would run."""
    settings = make_settings(tmp_path / "data", sections={"storage": {"url": pg_url}})
    database = urlsplit(pg_url).path.lstrip("/")
    with (
        serve_in_thread(create_app(settings)) as base_url,
        contract_client(base_url, timeout=30) as client,
    ):
        yield Served(client, pg_url, database)
    assert not list((tmp_path / "data").glob("*.db*"))


def _assert_accepted(response: httpx.Response) -> int:
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["status"] == "accepted", answer
    return int(answer["seq"])


def _assert_log_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    answer = response.json()
    assert answer["error"] == "log_unavailable"
    assert isinstance(answer["detail"], str)
    assert answer["detail"]
    assert "Traceback" not in response.text
    for secret in SECRETS:
        assert secret not in response.text


def _refused_in_time(served: Served, event: Event) -> None:
    """`event` is refused with 503 within about the busy timeout, and not logged."""
    started = time.monotonic()
    response = served.deliver(event)
    elapsed = time.monotonic() - started
    _assert_log_unavailable(response)
    assert elapsed < DEFAULT_BUSY_TIMEOUT_S + REFUSAL_SLACK_S, elapsed


def _assert_log_not_ready(served: Served) -> None:
    status, body = served.readyz()
    assert status == 503, body
    assert "log" in body["failing"]  # type: ignore[operator]
    checks = body["checks"]
    assert isinstance(checks, dict)
    assert str(checks["log"]).startswith("unavailable")


def _recovers(served: Served, refused: Event) -> None:
    """Retried as a provider would, `refused` is accepted once, and the node is ready again."""
    accepted: list[int] = []

    def retried() -> bool:
        response = served.deliver(refused)
        if response.status_code == 503:
            _assert_log_unavailable(response)
            time.sleep(RETRY_GAP_S)
            return False
        accepted.append(_assert_accepted(response))
        return True

    wait_until(retried, RECOVERY_TIMEOUT_S, "the retried delivery to be accepted")
    assert served.logged_seqs(refused) == accepted
    fresh = _assert_accepted(served.deliver(_event()))
    assert fresh > accepted[0]
    # The embedded projector recovers too: it applies everything, the refused event included.
    wait_until(
        lambda: projected(served.url) >= fresh, RECOVERY_TIMEOUT_S, f"projections at seq {fresh}"
    )
    wait_until(lambda: served.readyz()[0] == 200, RECOVERY_TIMEOUT_S, "/readyz to be 200")
    assert served.readyz()[1]["checks"] == {"log": "ok", "projections": "ok"}


def _terminate_sessions(database: str) -> datetime:
    """Cut every session of `database`; the server's time just before."""
    with admin() as conn:
        row = conn.execute("SELECT clock_timestamp()").fetchone()
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            (database,),
        )
    assert row is not None
    assert isinstance(row[0], datetime)
    return row[0]


def _projector_reconnected(served: Served, since: datetime) -> bool:
    """Whether a session opened after `since` ran the projector's read of the log (the only
    read that picks payloads by type)."""
    with admin() as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND backend_start > %s"
            " AND query LIKE %s",
            (served.database, since, "%CASE WHEN%"),
        ).fetchone()
    return row is not None and int(str(row[0])) > 0


def _alter(database: str, change: str) -> None:
    with admin() as conn:
        conn.execute(sql.SQL("ALTER DATABASE {} " + change).format(sql.Identifier(database)))


def test_an_unreachable_database_answers_503_then_recovers(served: Served) -> None:
    _assert_accepted(served.deliver(_event()))
    _alter(served.database, "WITH ALLOW_CONNECTIONS false")
    _terminate_sessions(served.database)
    event = _event()

    _refused_in_time(served, event)
    _assert_log_not_ready(served)

    _alter(served.database, "WITH ALLOW_CONNECTIONS true")
    _recovers(served, event)


@pytest.mark.parametrize("mode", ["EXCLUSIVE", "ACCESS EXCLUSIVE"])
def test_a_lock_held_past_the_busy_timeout_answers_503_then_recovers(
    served: Served, mode: str
) -> None:
    """EXCLUSIVE: a writer on another host stuck inside its append; ACCESS EXCLUSIVE:
    what an ALTER TABLE or a VACUUM FULL of the log takes (it blocks readers too)."""
    _assert_accepted(served.deliver(_event()))
    blocker = connect(served.url)
    try:
        blocker.execute("BEGIN")
        blocker.execute(f"LOCK TABLE billhook.events IN {mode} MODE")
        event = _event()
        started = time.monotonic()
        _refused_in_time(served, event)
        # It waited for the lock, the busy timeout long, before giving up.
        assert time.monotonic() - started >= DEFAULT_BUSY_TIMEOUT_S * 0.9
        _assert_log_not_ready(served)
        blocker.execute("ROLLBACK")
        _recovers(served, event)
    finally:
        blocker.close()


def test_a_read_only_database_answers_503_then_recovers(served: Served) -> None:
    _assert_accepted(served.deliver(_event()))
    _alter(served.database, "SET default_transaction_read_only = on")
    cut = _terminate_sessions(served.database)
    event = _event()

    _refused_in_time(served, event)
    _assert_log_not_ready(served)
    assert served.logged_seqs(event) == []
    # The embedded projector polls: once it read the log in a new session, its store
    # reconnected just before (the checkpoint comes first), read-only too.
    wait_until(
        lambda: _projector_reconnected(served, cut),
        RECOVERY_TIMEOUT_S,
        "the projector to reconnect",
    )

    # Writable again for new sessions; the server's own sessions are not cut this time.
    _alter(served.database, "RESET default_transaction_read_only")
    _recovers(served, event)
