"""Outbound endpoints operators add, event-sourced (SPEC §6b), on both projection stores.

`billhook.endpoint_added` and `billhook.endpoint_removed` in the log become the
`endpoints` table: the live projector and a replay agree on it, a removal
removes, an id may be added again, a malformed event is quarantined with a
readable reason, and none of them is a change of the entitlement feed.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from billhook.config import Settings
from billhook.domain.facts import EndpointFact
from billhook.domain.records import EventRecord
from billhook.log.sqlite import EventLog
from billhook.projections.backend import Location, open_store, remove
from billhook.projections.changes import START
from billhook.projections.postgres import PROJECTIONS_SCHEMA, PgSchema
from billhook.projections.projector import catch_up
from billhook.projections.rebuild import rebuild, swap_in
from billhook.projections.store import ProjectionStore
from billhook.providers.billhook import ENDPOINT_ADDED, ENDPOINT_REMOVED, OVERRIDE_SET
from billhook.providers.reasons import DEFAULT, family
from billhook.testing.settings import make_settings


def _operator(event_type: str, **payload: Any) -> EventRecord:
    return EventRecord(
        "billhook", str(uuid.uuid4()), event_type, None, None, json.dumps(payload, sort_keys=True)
    )


def _added(endpoint_id: str, url: str, workspaces: list[str] | None = None) -> EventRecord:
    return _operator(
        ENDPOINT_ADDED,
        endpoint_id=endpoint_id,
        url=url,
        workspaces=workspaces or [],
        actor="ops",
        reason="r",
    )


def _removed(endpoint_id: str) -> EventRecord:
    return _operator(ENDPOINT_REMOVED, endpoint_id=endpoint_id, actor="ops", reason="r")


# An operator fact that does change the feed, so "no change" is measured against one.
_OVERRIDE = _operator(
    OVERRIDE_SET, workspace_id="ws_1", kind="manual_pilot", tier="team", actor="a", reason="r"
)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path / "data")


@pytest.fixture
def log(settings: Settings) -> Iterator[EventLog]:
    opened = EventLog(settings.events_path)
    yield opened
    opened.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def live(request: pytest.FixtureRequest, tmp_path: Path) -> Location:
    if request.param == "sqlite":
        return tmp_path / "live.db"
    return PgSchema(request.getfixturevalue("pg_url"))


@pytest.fixture
def store(live: Location, settings: Settings) -> Iterator[ProjectionStore]:
    opened = open_store(live, settings)
    yield opened
    opened.close()


def _shadow(live: Location) -> Location:
    if isinstance(live, PgSchema):
        return live.sibling(f"{PROJECTIONS_SCHEMA}_replay")
    return live.with_name("shadow.db")


def _rebuilt(log: EventLog, live: Location, settings: Settings) -> ProjectionStore:
    """A replay of the whole log, beside the live store."""
    at = _shadow(live)
    remove(at)
    rebuild(log, at, settings)
    return open_store(at, settings)


def _append(log: EventLog, *records: EventRecord) -> list[int]:
    return [event.seq for event in log.append_batch(list(records))]


def test_the_live_projector_and_a_replay_give_the_same_endpoints(
    log: EventLog, settings: Settings, live: Location, store: ProjectionStore
) -> None:
    seqs = _append(
        log,
        _OVERRIDE,
        _added("ep_b", "https://b.example/hook"),
        _added("ep_a", "https://a.example/hook", ["ws_1", "ws_2"]),
        _added("ep_c", "https://c.example/hook", ["ws_3"]),
        _removed("ep_c"),
        _added("ep_d", "https://d.example/hook"),
    )
    catch_up(log, store, batch_size=2)  # batches that split the adds from their removal
    expected = [
        EndpointFact("ep_a", "https://a.example/hook", ("ws_1", "ws_2"), True, seqs[2]),
        EndpointFact("ep_b", "https://b.example/hook", (), True, seqs[1]),
        EndpointFact("ep_d", "https://d.example/hook", (), True, seqs[5]),
    ]
    assert store.endpoints() == expected
    shadow = _rebuilt(log, live, settings)
    try:
        assert shadow.endpoints() == expected
        assert shadow.digest_rows() == store.digest_rows()
        # A swap carries them into the live store, whatever it held.
        _append(log, _removed("ep_b"))
        assert swap_in(shadow, live, log) == log.head_seq()
    finally:
        shadow.close()
        remove(_shadow(live))
    assert [e.endpoint_id for e in store.endpoints()] == ["ep_a", "ep_d"]


def test_a_removal_removes_only_that_endpoint(
    log: EventLog, settings: Settings, live: Location, store: ProjectionStore
) -> None:
    _append(log, _added("ep_a", "https://a.example/h"), _added("ep_b", "https://b.example/h"))
    catch_up(log, store)
    assert store.endpoint("ep_a") is not None
    _append(log, _removed("ep_a"), _removed("ep_never_added"))
    catch_up(log, store)
    assert [e.endpoint_id for e in store.endpoints()] == ["ep_b"]
    assert store.endpoint("ep_a") is None
    assert store.quarantine() == [], "removing an unknown id is no fault"
    shadow = _rebuilt(log, live, settings)
    try:
        assert shadow.endpoints() == store.endpoints()
    finally:
        shadow.close()
        remove(_shadow(live))


def test_an_id_removed_can_be_added_again(
    log: EventLog, settings: Settings, live: Location, store: ProjectionStore
) -> None:
    seqs = _append(
        log,
        _added("ep_a", "https://old.example/h", ["ws_1"]),
        _removed("ep_a"),
        _added("ep_a", "https://new.example/h", ["ws_2"]),
    )
    catch_up(log, store, batch_size=1)
    expected = [EndpointFact("ep_a", "https://new.example/h", ("ws_2",), True, seqs[2])]
    assert store.endpoints() == expected
    # Added again without a removal between: the newest addition stands.
    seqs += _append(log, _added("ep_a", "https://newer.example/h"))
    catch_up(log, store)
    expected = [EndpointFact("ep_a", "https://newer.example/h", (), True, seqs[3])]
    assert store.endpoints() == expected
    shadow = _rebuilt(log, live, settings)
    try:
        assert shadow.endpoints() == expected
        assert shadow.digest_rows() == store.digest_rows()
    finally:
        shadow.close()
        remove(_shadow(live))


@pytest.mark.parametrize(
    ("event_type", "payload", "reason"),
    [
        (ENDPOINT_ADDED, {"url": "https://x.example/h"}, "endpoint endpoint_id is missing"),
        (
            ENDPOINT_ADDED,
            {"endpoint_id": 7, "url": "https://x"},
            "endpoint endpoint_id is not a string",
        ),
        (ENDPOINT_ADDED, {"endpoint_id": "ep_x"}, "endpoint url is missing"),
        (ENDPOINT_ADDED, {"endpoint_id": "ep_x", "url": ""}, "endpoint url is empty"),
        (
            ENDPOINT_ADDED,
            {"endpoint_id": "ep_x", "url": "https://x", "workspaces": "ws_1"},
            "endpoint workspaces is not an array",
        ),
        (
            ENDPOINT_ADDED,
            {"endpoint_id": "ep_x", "url": "https://x", "workspaces": ["ws_1", 3]},
            "endpoint workspaces[1] is not a string",
        ),
        (ENDPOINT_REMOVED, {"endpoint_id": ""}, "endpoint endpoint_id is empty"),
        (ENDPOINT_REMOVED, [], "payload is not a JSON object"),
    ],
)
def test_a_malformed_event_is_quarantined_with_a_readable_reason(
    log: EventLog,
    settings: Settings,
    live: Location,
    store: ProjectionStore,
    event_type: str,
    payload: Any,
    reason: str,
) -> None:
    bad = EventRecord("billhook", "op_bad", event_type, None, None, json.dumps(payload))
    seqs = _append(log, _added("ep_a", "https://a.example/h"), bad, _added("ep_b", "https://b"))
    catch_up(log, store)
    [quarantined] = store.quarantine()
    assert (quarantined.seq, quarantined.type, quarantined.error) == (seqs[1], event_type, reason)
    assert family(reason) is not DEFAULT, "an operator gets a hint for it"
    # The events around it stand: the malformed one changed nothing.
    assert [e.endpoint_id for e in store.endpoints()] == ["ep_a", "ep_b"]
    shadow = _rebuilt(log, live, settings)
    try:
        assert shadow.quarantine() == store.quarantine()
        assert shadow.endpoints() == store.endpoints()
    finally:
        shadow.close()
        remove(_shadow(live))


def test_endpoint_events_change_nothing_in_the_feed(
    log: EventLog, settings: Settings, live: Location, store: ProjectionStore
) -> None:
    _append(log, _OVERRIDE)
    catch_up(log, store)
    feed = store.changes_after(START, 100)
    assert len(feed) == 1, "the override is a change"
    cursor = store.last_cursor()
    history = store.history("ws_1")
    _append(
        log,
        _added("ep_a", "https://a.example/h", ["ws_1"]),
        _added("ep_b", "https://b.example/h"),
        _removed("ep_a"),
    )
    catch_up(log, store)
    assert store.changes_after(START, 100) == feed
    assert store.last_cursor() == cursor
    assert store.history("ws_1") == history
    shadow = _rebuilt(log, live, settings)
    try:
        assert shadow.changes_after(START, 100) == feed
    finally:
        shadow.close()
        remove(_shadow(live))


def test_a_store_from_before_endpoints_gains_the_table(
    log: EventLog, settings: Settings, live: Location
) -> None:
    """An older store (no `endpoints` table) gets it when opened, so a replay swaps into it."""
    open_store(live, settings).close()
    if isinstance(live, PgSchema):
        with psycopg.connect(live.url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP TABLE {}.endpoints").format(sql.Identifier(live.schema)))
    else:
        older = sqlite3.connect(live)
        older.execute("DROP TABLE endpoints")
        older.close()
    _append(log, _added("ep_a", "https://a.example/h"))
    store = open_store(live, settings)
    shadow = _rebuilt(log, live, settings)
    try:
        assert swap_in(shadow, live, log) == log.head_seq()
        assert [e.endpoint_id for e in store.endpoints()] == ["ep_a"]
    finally:
        shadow.close()
        store.close()
        remove(_shadow(live))
