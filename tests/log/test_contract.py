"""One contract, two logs: every promise of SPEC §4 checked on SQLite and on PostgreSQL.

Like eventsourcing's recorder test cases: the same tests run against each
backend, so neither can drift from what the other promises.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest
from psycopg import sql

from billhook.domain.records import EventRecord
from billhook.errors import LogUnavailable
from billhook.log.backend import Log
from billhook.log.postgres import PostgresEventLog
from billhook.log.sqlite import EventLog
from billhook.testing.servers import wait_until
from tests.postgres import admin

T0 = datetime(2026, 12, 1, 12, 0, 0, 123456, UTC)
# A refusal longer than psycopg-pool's back-off reaches in its default five minutes' patience
# (1, 2, 4, 8 s...): its next attempt would come some 10 s after the database is back.
OUTAGE_S = 18.0
# How soon after the database takes connections again the log appends.
RECONNECTED_S = 8.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def _record(
    event_id: str, provider: str = "stripe", payload: str = "{}", type: str = "t"
) -> EventRecord:
    return EventRecord(
        provider=provider,
        event_id=event_id,
        type=type,
        livemode=0 if provider == "stripe" else None,
        occurred_at="2026-12-01T00:00:00.000Z",
        payload=payload,
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, object]]:
    """(backend name, where): a path for SQLite, a throwaway database URL for PostgreSQL."""
    if request.param == "sqlite":
        yield "sqlite", tmp_path / "events.db"
    else:
        yield "postgresql", request.getfixturevalue("pg_url")


def _open(backend: tuple[str, object], clock: Clock, **options: float) -> Log:
    name, where = backend
    if name == "sqlite":
        assert isinstance(where, Path)
        return EventLog(where, clock=clock, **options)
    assert isinstance(where, str)
    return PostgresEventLog(where, clock=clock, **options)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def log(backend: tuple[str, object], clock: Clock) -> Iterator[Log]:
    opened = _open(backend, clock)
    yield opened
    opened.close()


def _raw(backend: tuple[str, object], statement: str) -> None:
    """Run `statement` on a connection of its own, outside billhook."""
    name, where = backend
    if name == "sqlite":
        conn = sqlite3.connect(str(where), isolation_level=None)
        try:
            conn.execute(statement.replace("billhook.events", "events"))
        finally:
            conn.close()
        return
    with psycopg.connect(str(where), autocommit=True) as pg:
        pg.execute(statement.encode())


def test_appends_get_consecutive_seqs_and_the_commit_time(log: Log) -> None:
    appended = log.append_batch([_record("evt_1"), _record("evt_2"), _record("a", "polar")])
    assert [(a.seq, a.duplicate) for a in appended] == [(1, False), (2, False), (3, False)]
    assert [a.seq for a in log.append_batch([_record("evt_3")])] == [4]
    stored = log.read()
    assert [e.seq for e in stored] == [1, 2, 3, 4]
    assert {e.received_at for e in stored} == {"2026-12-01T12:00:00.123Z"}
    assert log.head_seq() == 4


def test_a_duplicate_answers_the_original_seq_within_and_across_batches(log: Log) -> None:
    first = log.append_batch([_record("evt_1"), _record("evt_2"), _record("evt_1")])
    assert [(a.seq, a.duplicate) for a in first] == [(1, False), (2, False), (1, True)]
    again = log.append_batch([_record("evt_2", payload='{"x": 1}'), _record("evt_3")])
    assert [(a.seq, a.duplicate) for a in again] == [(2, True), (3, False)]
    # The same event id at another provider is another event.
    assert log.append_batch([_record("evt_1", "polar")])[0].seq == 4
    # The duplicate's payload never replaced the original's.
    event = log.get(2)
    assert event is not None
    assert event.payload == "{}"
    assert len(log.read()) == 4


@pytest.mark.parametrize(
    "payload",
    [
        '{"a":1}',
        '{\n  "a" : 1 ,\t"b": [1, 2]\n}\n',
        '{"name": "Zoë \\u00e9 \\ud83d\\ude00 😀", "n": 1.0e3, "z": -0.0}',
        '{"key": "\\u0000 escaped nul"}',
        "   {}   ",
    ],
)
def test_payload_text_comes_back_exactly(log: Log, payload: str) -> None:
    log.append_batch([_record("evt_1", payload=payload)])
    event = log.get(1)
    assert event is not None
    assert event.payload == payload
    assert event.payload.encode() == payload.encode()


def test_reads_filter_and_page_in_seq_order(log: Log) -> None:
    log.append_batch(
        [
            _record("evt_1", type="customer.updated", payload='{"one": 1}'),
            _record("p_1", "polar", type="subscription.updated", payload='{"two": 2}'),
            _record("evt_2", type="invoice.paid", payload='{"three": 3}'),
        ]
    )
    assert [e.seq for e in log.read(after=1)] == [2, 3]
    assert [e.seq for e in log.read(limit=2)] == [1, 2]
    assert [e.event_id for e in log.read(provider="stripe")] == ["evt_1", "evt_2"]
    assert [e.seq for e in log.read(type="invoice.paid")] == [3]
    sparse = log.read(payloads_of={"stripe": {"customer.updated"}, "polar": set()})
    assert [e.payload for e in sparse] == ['{"one": 1}', "", ""]
    assert [e.seq for e in log.find("evt_2")] == [3]
    assert log.find("evt_2", provider="polar") == []
    assert log.get(9) is None


def test_time_lookups(log: Log, clock: Clock) -> None:
    log.append_batch([_record("evt_1")])
    clock.now = T0 + timedelta(seconds=10)
    log.append_batch([_record("evt_2")])
    assert log.last_seq_at("2026-12-01T12:00:05.000Z") == 1
    assert log.last_seq_at("2026-12-01T11:00:00.000Z") == 0
    assert log.received_after(0) == "2026-12-01T12:00:00.123Z"
    assert log.received_after(1) == "2026-12-01T12:00:10.123Z"
    assert log.received_after(2) is None


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE billhook.events SET type = 'x'",
        "UPDATE billhook.events SET payload = '{}' WHERE seq = 1",
        "DELETE FROM billhook.events",
        "DELETE FROM billhook.events WHERE seq = 1",
    ],
)
def test_the_database_refuses_to_change_or_remove_an_event(
    log: Log, backend: tuple[str, object], statement: str
) -> None:
    log.append_batch([_record("evt_1", payload='{"kept": true}')])
    with pytest.raises((sqlite3.Error, psycopg.Error), match="append-only"):
        _raw(backend, statement)
    event = log.get(1)
    assert event is not None
    assert event.payload == '{"kept": true}'


def test_postgresql_refuses_truncate(pg_url: str) -> None:
    log = PostgresEventLog(pg_url)
    try:
        log.append_batch([_record("evt_1")])
        with pytest.raises(psycopg.Error, match="append-only: TRUNCATE"):
            _raw(("postgresql", pg_url), "TRUNCATE billhook.events")
        assert log.head_seq() == 1
    finally:
        log.close()


def test_postgresql_compresses_payloads_with_lz4_and_keeps_them_exact(pg_url: str) -> None:
    """Payloads of a few KB are stored compressed (lz4: the machine's PostgreSQL has it),
    and read back byte for byte."""
    payload = json.dumps(
        {"id": "evt_big", "lines": [{"n": n, "text": "é" * 40} for n in range(60)]}
    )
    assert len(payload.encode()) > 4_000
    log = PostgresEventLog(pg_url)
    try:
        log.append_batch([_record("evt_big", payload=payload)])
        with psycopg.connect(pg_url) as conn:
            row = conn.execute(
                "SELECT pg_column_compression(payload), length(payload), pg_column_size(payload)"
                " FROM billhook.events WHERE seq = 1"
            ).fetchone()
        assert row is not None
        method, chars, stored = row
        assert method == "lz4"
        assert chars == len(payload)
        assert stored < len(payload.encode())
        event = log.get(1)
        assert event is not None
        assert event.payload.encode() == payload.encode()
    finally:
        log.close()


def test_postgresql_commits_synchronously_whatever_the_server_default(pg_url: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("SELECT current_database()")
        name = conn.execute("SELECT current_database()").fetchone()
        assert name is not None
        conn.execute(f'ALTER DATABASE "{name[0]}" SET synchronous_commit = off')
    log = PostgresEventLog(pg_url)
    try:
        with log._pool.connection() as conn:
            row = conn.execute("SHOW synchronous_commit").fetchone()
        assert row is not None
        assert row[0] == "on"
    finally:
        log.close()


def test_a_failed_batch_keeps_nothing(log: Log, backend: tuple[str, object]) -> None:
    log.append_batch([_record("evt_1")])
    # A provider the log's CHECK refuses fails the whole batch, the good record too.
    with pytest.raises(LogUnavailable):
        log.append_batch([_record("evt_2"), _record("evt_3", provider="paypal")])
    assert [e.event_id for e in log.read()] == ["evt_1"]
    assert log.append_batch([_record("evt_2")])[0].seq == 2


def test_probes_write_nothing(log: Log) -> None:
    log.append_batch([_record("evt_1")])
    log.probe_writable()
    log.probe_writable(durable=True)
    assert log.head_seq() == 1
    assert log.append_batch([_record("evt_2")])[0].seq == 2


def test_reopening_keeps_the_log(backend: tuple[str, object], clock: Clock) -> None:
    first = _open(backend, clock)
    first.append_batch([_record("evt_1"), _record("evt_2")])
    first.close()
    again = _open(backend, clock)
    try:
        assert [e.event_id for e in again.read()] == ["evt_1", "evt_2"]
        assert again.append_batch([_record("evt_1")])[0].duplicate
    finally:
        again.close()


def test_postgresql_reconnects_soon_after_a_long_outage(pg_url: str) -> None:
    """Refused for longer than psycopg-pool's doubling back-off would wait (its next attempt
    would come about as long after the database is back as the outage lasted), the log
    appends again within seconds of the database taking connections again."""
    name = urlsplit(pg_url).path.strip("/")
    log = PostgresEventLog(pg_url)
    try:
        log.append_batch([_record("evt_before")])
        with admin() as conn:
            conn.execute(
                sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(sql.Identifier(name))
            )
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
            )
        outage_ends = time.monotonic() + OUTAGE_S
        while time.monotonic() < outage_ends:
            with pytest.raises(LogUnavailable):
                log.append_batch([_record("evt_refused")])
        with admin() as conn:
            conn.execute(
                sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(sql.Identifier(name))
            )
        back = time.monotonic()
        appended = []

        def append() -> bool:
            try:
                appended.extend(log.append_batch([_record("evt_after")]))
            except LogUnavailable:
                return False
            return True

        wait_until(append, RECONNECTED_S, "the log to append again")
        assert time.monotonic() - back < RECONNECTED_S
        assert [a.seq for a in appended] == [2]
    finally:
        log.close()
