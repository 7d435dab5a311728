"""The event log's guarantees, checked at the SQLite level (SPEC §4)."""

from __future__ import annotations

import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from billhook.domain.records import EventRecord
from billhook.errors import LogUnavailable
from billhook.log.sqlite import EventLog


def _record(event_id: str, provider: str = "stripe", payload: str = "{}") -> EventRecord:
    return EventRecord(
        provider=provider,
        event_id=event_id,
        type="customer.updated",
        livemode=0 if provider == "stripe" else None,
        occurred_at="2026-11-21T00:00:00.000Z",
        payload=payload,
    )


@pytest.fixture
def log(tmp_path: Path) -> EventLog:
    return EventLog(
        tmp_path / "events.db", clock=lambda: datetime(2026, 11, 21, 12, 0, 0, 123456, UTC)
    )


def test_pragmas_make_a_commit_durable(log: EventLog) -> None:
    assert log.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    # 2 = FULL: the WAL is fsynced at every commit.
    assert log.conn.execute("PRAGMA synchronous").fetchone()[0] == 2


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE events SET type = 'x'",
        "UPDATE events SET payload = '{}' WHERE seq = 1",
        "DELETE FROM events",
        "DELETE FROM events WHERE seq = 1",
    ],
)
def test_update_and_delete_fail_at_the_sqlite_level(log: EventLog, statement: str) -> None:
    log.append_batch([_record("evt_1")])
    # A separate, plain connection: what an operator's sqlite3 shell would do.
    conn = sqlite3.connect(log.path)
    try:
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute(statement)
        assert conn.execute("SELECT count(*), min(type) FROM events").fetchone() == (
            1,
            "customer.updated",
        )
    finally:
        conn.close()


def test_insert_or_replace_cannot_overwrite(log: EventLog) -> None:
    log.append_batch([_record("evt_1", payload='{"v": 1}')])
    conn = sqlite3.connect(log.path)
    try:
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute(
                "INSERT INTO events (provider, event_id, type, received_at, payload)"
                " VALUES ('stripe', 'evt_1', 't', 'now', '{\"v\": 2}')"
            )
    finally:
        conn.close()
    stored = log.get(1)
    assert stored is not None
    assert stored.payload == '{"v": 1}'


_ROW = "'stripe', 'evt_x', 't', NULL, NULL, 'now', '{\"v\": 2}'"


@pytest.mark.parametrize(
    "statement",
    [
        # REPLACE deletes the conflicting row without firing DELETE triggers.
        f"INSERT OR REPLACE INTO events VALUES (1, {_ROW})",
        f"REPLACE INTO events VALUES (1, {_ROW})",
        "INSERT OR REPLACE INTO events (provider, event_id, type, received_at, payload)"
        " VALUES ('stripe', 'evt_1', 't', 'now', '{\"v\": 2}')",
        "REPLACE INTO events (provider, event_id, type, received_at, payload)"
        " VALUES ('stripe', 'evt_1', 't', 'now', '{\"v\": 2}')",
        f"INSERT INTO events VALUES (1, {_ROW})"
        " ON CONFLICT DO UPDATE SET payload = excluded.payload",
        "INSERT INTO events (provider, event_id, type, received_at, payload)"
        " VALUES ('stripe', 'evt_1', 't', 'now', '{}')"
        " ON CONFLICT (provider, event_id) DO UPDATE SET payload = excluded.payload",
        f"INSERT OR IGNORE INTO events VALUES (1, {_ROW})",
    ],
)
def test_replacing_a_row_fails_at_the_sqlite_level(log: EventLog, statement: str) -> None:
    log.append_batch([_record("evt_1", payload='{"v": 1}')])
    before = log.read()
    conn = sqlite3.connect(log.path)
    try:
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute(statement)
        conn.commit()
    finally:
        conn.close()
    assert log.read() == before


def test_an_older_log_gains_the_replace_trigger_when_opened(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    log = EventLog(path)
    log.append_batch([_record("evt_1", payload='{"v": 1}')])
    # What a log written before the trigger existed looks like.
    log.conn.executescript("DROP TRIGGER events_no_replace; PRAGMA user_version = 1;")
    log.close()
    reopened = EventLog(path)
    try:
        conn = sqlite3.connect(path)
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute(f"REPLACE INTO events VALUES (1, {_ROW})")
        conn.close()
        assert [e.payload for e in reopened.read()] == ['{"v": 1}']
    finally:
        reopened.close()


def test_batch_dedupes_against_the_log_and_within_itself(log: EventLog) -> None:
    first = log.append_batch([_record("evt_1"), _record("evt_2")])
    assert [(a.seq, a.duplicate) for a in first] == [(1, False), (2, False)]
    second = log.append_batch(
        [_record("evt_3"), _record("evt_1"), _record("evt_3"), _record("evt_1", "polar")]
    )
    assert [(a.seq, a.duplicate) for a in second] == [(3, False), (1, True), (3, True), (4, False)]
    assert log.head_seq() == 4


def test_seq_has_no_gaps_after_duplicates(log: EventLog) -> None:
    for _ in range(3):
        log.append_batch([_record("evt_1")])
    log.append_batch([_record("evt_2")])
    assert [e.seq for e in log.read()] == [1, 2]


def test_received_at_is_the_commit_time_in_utc(log: EventLog) -> None:
    log.append_batch([_record("evt_1")])
    stored = log.get(1)
    assert stored is not None
    assert stored.received_at == "2026-11-21T12:00:00.123Z"


def test_payload_text_round_trips_byte_exact(log: EventLog) -> None:
    payload = '{"name":"Zoë \\u00e9","emoji":"🧾",  "nested": {"a" :1}}\n'
    log.append_batch([_record("evt_1", payload=payload)])
    stored = log.get(1)
    assert stored is not None
    assert stored.payload.encode() == payload.encode()


def test_read_filters_and_pages(log: EventLog) -> None:
    log.append_batch([_record(f"evt_{i}", "stripe" if i % 2 else "polar") for i in range(1, 11)])
    assert [e.seq for e in log.read(after=7)] == [8, 9, 10]
    assert [e.seq for e in log.read(limit=3)] == [1, 2, 3]
    assert [e.seq for e in log.read(provider="polar", after=2, limit=2)] == [4, 6]
    assert log.read(type="nope") == []
    assert [e.provider for e in log.find("evt_3")] == ["stripe"]
    assert log.get(99) is None


def test_reopening_keeps_rows_and_schema(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    first = EventLog(path)
    first.append_batch([_record("evt_1")])
    first.close()
    again = EventLog(path)
    assert again.head_seq() == 1
    assert again.append_batch([_record("evt_1")])[0].duplicate
    again.close()


def test_an_unopenable_log_is_unavailable(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(LogUnavailable, match="cannot open the event log"):
        EventLog(blocker / "events.db")


def test_a_corrupt_file_is_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    path.write_bytes(b"this is not an sqlite database" * 100)
    with pytest.raises(LogUnavailable):
        EventLog(path)


def test_read_can_leave_out_payloads_nobody_needs(log: EventLog) -> None:
    log.append_batch(
        [
            _record("evt_1", payload='{"a": 1}'),
            EventRecord("stripe", "evt_2", "invoice.paid", 0, None, '{"b": 2}'),
            _record("msg_1", "polar", payload='{"c": 3}'),
        ]
    )
    rows = log.read(payloads_of={"stripe": {"customer.updated"}})
    assert [(e.event_id, e.payload) for e in rows] == [
        ("evt_1", '{"a": 1}'),
        ("evt_2", ""),
        ("msg_1", ""),
    ]
    assert [e.type for e in rows] == ["customer.updated", "invoice.paid", "customer.updated"]


def test_the_checkpointer_copies_the_wal_so_commits_need_not(tmp_path: Path) -> None:
    from billhook.log.sqlite import Checkpointer

    path = tmp_path / "events.db"
    writer = EventLog(path)
    writer.defer_checkpoints()
    assert writer.conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    big = '{"pad": "' + "x" * 3000 + '"}'
    for n in range(3):
        writer.append_batch([_record(f"evt_{n}_{i}", payload=big) for i in range(500)])
    # 1,500 events of 3 KB: far past the 1,000 pages at which a commit would checkpoint.
    assert path.stat().st_size < 1_000_000
    checkpointer = Checkpointer(EventLog(path), interval_s=0.01)
    checkpointer.start()
    try:
        deadline = time.monotonic() + 10
        while path.stat().st_size < 4_000_000:
            assert time.monotonic() < deadline, "the checkpointer did not copy the WAL"
            time.sleep(0.01)
    finally:
        checkpointer.stop()
        writer.close()
