"""`billhook log copy`: an SQLite log moved into an empty PostgreSQL one (SPEC §4a).

The round trip runs as an operator would: the real CLI copies a log of a few
thousand Stripe and Polar events (bench/make_log.py's lives, plus operator
overrides), `billhook replay` builds the projections on each backend, and
every workspace resolves to the same entitlement on both. The refusals and the
verification are checked on real databases: a target that already holds an
event, a PostgreSQL source, a target whose database alters a row on the way
in, a source that grows during the copy.
"""

from __future__ import annotations

import getpass
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.make_log import LogSpec, generate
from billhook.config import Settings
from billhook.domain.records import EventRecord, StoredEvent
from billhook.domain.resolver import Entitlement, resolve
from billhook.log.backend import database_name
from billhook.log.copy import CopyRefused, copy_log, digest
from billhook.log.postgres import PostgresEventLog
from billhook.log.sqlite import EventLog
from billhook.projections import actions as operator
from billhook.projections.backend import open_live
from billhook.providers.stripe.webhook import stripe_record
from billhook.testing.settings import write_config
from billhook.testing.stripe import stripe_event_body, stripe_subscription
from tests.deployment import run_cli, settings_of

# The log the round trip copies: a few thousand events, a couple of hundred subscriptions.
SPEC = LogSpec(events=3_000, subscriptions=200, seed=13)
# When the operator overrides were set, and when every entitlement is resolved.
OVERRIDES_SET_AT = datetime(2026, 6, 1, tzinfo=UTC)
NOW = datetime(2026, 9, 1, tzinfo=UTC)
# (workspace, kind, tier, expires_at) of the overrides appended after the providers' events.
OVERRIDES = [
    ("ws_0000003", "enterprise_contract", "enterprise", None),
    ("ws_0000010", "manual_pilot", "team", "2027-01-01T00:00:00Z"),
    ("ws_0000042", "manual_pilot", "enterprise", "2026-07-01T00:00:00Z"),  # expired by NOW
    ("ws_pilot_only", "manual_pilot", "team", "2027-01-01T00:00:00Z"),
    ("ws_0000077", "site_owner_override", "enterprise", None),
]
# A password the target URL carries: it must never be printed.
PASSWORD = "pw-billhookCopyTest-7Qz"


def _with_password(url: str) -> tuple[str, str]:
    """`url` carrying a password (trust auth never asks for it); (the URL, its password)."""
    parts = urlsplit(url)
    if parts.password:
        return url, parts.password
    user = parts.username or getpass.getuser()
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:{PASSWORD}@{host}")), PASSWORD


def _sqlite_deployment(directory: Path, spec: LogSpec = SPEC) -> tuple[Path, Settings]:
    """A config whose SQLite log holds `spec`'s events and then OVERRIDES."""
    directory.mkdir()
    config = write_config(directory)
    settings = settings_of(config)
    generate(settings.events_path, spec)
    log = EventLog(settings.events_path)
    try:
        log.append_batch(
            [
                operator.override_set(
                    settings,
                    workspace_id=workspace,
                    kind=kind,
                    tier=tier,
                    expires_at=expires_at,
                    reason="contract signed",
                    actor="ops",
                    now=OVERRIDES_SET_AT,
                )
                for workspace, kind, tier, expires_at in OVERRIDES
            ]
        )
    finally:
        log.close()
    return config, settings


def _rows(log: EventLog | PostgresEventLog) -> list[StoredEvent]:
    return log.read()


def _entitlements(settings: Settings) -> dict[str, Entitlement]:
    store = open_live(settings)
    try:
        return {
            workspace: resolve(store.workspace_facts(workspace), settings.policy, NOW)
            for workspace in sorted(store.workspaces())
        }
    finally:
        store.close()


def _one_error_line(stderr: str) -> str:
    """The error line of a failed command: the last line, `Error: …`, and no traceback."""
    assert "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("Error: ")
    return last


def _stripe_record(n: int) -> EventRecord:
    sub = stripe_subscription(id=f"sub_extra_{n}", metadata={"workspace_id": f"ws_extra_{n}"})
    return stripe_record(
        stripe_event_body(
            "customer.subscription.created", obj=sub, created=1_790_000_000 + n
        ).decode()
    )


def test_round_trip_keeps_every_row_and_every_entitlement(tmp_path: Path, pg_url: str) -> None:
    config, settings = _sqlite_deployment(tmp_path / "sqlite")
    url, password = _with_password(pg_url)

    copied = run_cli("log", "copy", "--config", str(config), "--to", url)

    assert copied.returncode == 0, copied.stderr
    source = EventLog(settings.events_path)
    try:
        source_rows = _rows(source)
    finally:
        source.close()
    expected = digest(source_rows)
    head = source_rows[-1].seq
    assert copied.stdout.splitlines() == [
        f"copied {expected.count} events (up to seq {head}) to {database_name(url)}",
        f"verified: {expected.count} events, sha256 {expected.hexdigest()} in both logs",
        "next: set [storage] url (or BILLHOOK_DATABASE_URL) to this database, run"
        " `billhook replay` to build the projections there, then start billhook on it",
    ]
    assert f"log: {settings.events_path.absolute()}" in copied.stderr
    assert password not in copied.stdout + copied.stderr
    target = PostgresEventLog(url)
    try:
        assert _rows(target) == source_rows  # seq, ids, times and payload text, row for row
    finally:
        target.close()

    pg_config = write_config(tmp_path, name="pg.toml", sections={"storage": {"url": url}})
    for replay_config in (config, pg_config):
        replayed = run_cli("replay", "--config", str(replay_config))
        assert replayed.returncode == 0, replayed.stderr
        assert password not in replayed.stdout + replayed.stderr

    on_sqlite = _entitlements(settings)
    on_postgres = _entitlements(settings_of(pg_config))
    assert on_postgres == on_sqlite
    # The comparison covers what matters: many workspaces, paid, free and overridden ones.
    assert len(on_sqlite) > 150
    tiers = {(e.tier, e.source) for e in on_sqlite.values()}
    assert {("team", "stripe"), ("team", "polar"), ("solo", "default")} <= tiers
    assert on_sqlite["ws_0000003"].source == "enterprise_contract"
    assert on_sqlite["ws_pilot_only"].tier == "team"


def test_a_target_holding_an_event_is_refused_and_left_alone(tmp_path: Path, pg_url: str) -> None:
    config, _ = _sqlite_deployment(tmp_path / "sqlite", LogSpec(events=200, subscriptions=20))
    already = _stripe_record(1)
    target = PostgresEventLog(pg_url)
    try:
        target.append_batch([already])
    finally:
        target.close()

    result = run_cli("log", "copy", "--config", str(config), "--to", pg_url)

    assert result.returncode == 1
    assert _one_error_line(result.stderr) == (
        f"Error: the log in PostgreSQL database {database_name(pg_url)} is not empty"
        " (up to seq 1): log copy only fills an empty one"
    )
    target = PostgresEventLog(pg_url)
    try:
        assert [e.event_id for e in target.read()] == [already.event_id]
    finally:
        target.close()


def test_a_postgresql_source_is_refused(tmp_path: Path, pg_url: str) -> None:
    url, password = _with_password(pg_url)
    config = write_config(tmp_path, sections={"storage": {"url": url}})
    PostgresEventLog(url).close()

    result = run_cli("log", "copy", "--config", str(config), "--to", url)

    assert result.returncode == 1
    assert _one_error_line(result.stderr) == (
        f"Error: the configured log is already in PostgreSQL (PostgreSQL database"
        f" {database_name(url)}): log copy reads an SQLite log: use the SQLite deployment's"
        " config, with no [storage] url and no BILLHOOK_DATABASE_URL"
    )
    assert password not in result.stdout + result.stderr


def test_a_target_that_is_not_postgresql_is_refused(tmp_path: Path) -> None:
    config, _ = _sqlite_deployment(tmp_path / "sqlite", LogSpec(events=50, subscriptions=5))

    result = run_cli("log", "copy", "--config", str(config), "--to", "mysql://db/billhook")

    assert result.returncode == 1
    assert _one_error_line(result.stderr) == ("Error: --to must be a postgresql:// URL")


def test_an_unreachable_target_is_one_line_without_its_password(tmp_path: Path) -> None:
    config, _ = _sqlite_deployment(tmp_path / "sqlite", LogSpec(events=50, subscriptions=5))
    url = f"postgresql://billhook:{PASSWORD}@127.0.0.1:1/billhook"  # port 1: refused at once

    result = run_cli("log", "copy", "--config", str(config), "--to", url)

    assert result.returncode == 1
    line = _one_error_line(result.stderr)
    assert line.startswith("Error: cannot copy into PostgreSQL database 127.0.0.1/billhook: ")
    # No connection pool's retries and warnings before it: the log line, the label, the error.
    assert len(result.stderr.splitlines()) == 3
    assert PASSWORD not in result.stdout + result.stderr


def test_a_row_altered_on_the_way_in_fails_verification_and_nothing_is_kept(
    tmp_path: Path, pg_url: str
) -> None:
    _, settings = _sqlite_deployment(tmp_path / "sqlite", LogSpec(events=300, subscriptions=30))
    PostgresEventLog(pg_url).close()
    # A database that changes what it is given (a trigger here; an encoding conversion or a
    # proxy in real life): one payload gains a trailing space.
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(
            "CREATE FUNCTION billhook.tamper() RETURNS trigger LANGUAGE plpgsql AS $$"
            " BEGIN IF NEW.seq = 123 THEN NEW.payload := NEW.payload || ' '; END IF;"
            " RETURN NEW; END $$"
        )
        conn.execute(
            "CREATE TRIGGER tamper BEFORE INSERT ON billhook.events"
            " FOR EACH ROW EXECUTE FUNCTION billhook.tamper()"
        )
    source = EventLog(settings.events_path)
    try:
        with pytest.raises(CopyRefused, match=r"^verification failed: read 305 events .*"):
            copy_log(source, pg_url, batch_size=50)
    finally:
        source.close()
    target = PostgresEventLog(pg_url)
    try:
        assert target.head_seq() == 0
    finally:
        target.close()


def test_a_source_that_grows_during_the_copy_is_refused_and_nothing_is_kept(
    tmp_path: Path, pg_url: str
) -> None:
    _, settings = _sqlite_deployment(tmp_path / "sqlite", LogSpec(events=300, subscriptions=30))
    source, receiver = EventLog(settings.events_path), EventLog(settings.events_path)
    head = source.head_seq()
    seen: list[int] = []

    def a_delivery_arrives(seq: int) -> None:
        if not seen:
            receiver.append_batch([_stripe_record(1)])
        seen.append(seq)

    try:
        with pytest.raises(
            CopyRefused, match=rf"grew during the copy \(seq {head} -> {head + 1}\)"
        ):
            copy_log(source, pg_url, batch_size=100, progress=a_delivery_arrives)
    finally:
        source.close()
        receiver.close()
    assert seen == [100, 200, 300, head]  # batches of 100, up to the head it started from
    target = PostgresEventLog(pg_url)
    try:
        assert target.head_seq() == 0
    finally:
        target.close()


def test_small_batches_copy_the_same_rows(tmp_path: Path, pg_url: str) -> None:
    _, settings = _sqlite_deployment(tmp_path / "sqlite", LogSpec(events=100, subscriptions=10))
    source = EventLog(settings.events_path)
    progress: list[int] = []
    try:
        copied = copy_log(source, pg_url, batch_size=7, progress=progress.append)
        rows = _rows(source)
    finally:
        source.close()
    seqs = [e.seq for e in rows]
    assert progress == [seqs[min(i + 6, len(seqs) - 1)] for i in range(0, len(seqs), 7)]
    assert (copied.events, copied.head, copied.digest) == (
        len(rows),
        rows[-1].seq,
        digest(rows).hexdigest(),
    )
    target = PostgresEventLog(pg_url)
    try:
        assert _rows(target) == rows
    finally:
        target.close()


# -- the digest -------------------------------------------------------------------------------

BASE = StoredEvent(
    seq=7,
    provider="stripe",
    event_id="evt_1",
    type="customer.subscription.updated",
    livemode=0,
    occurred_at="2026-01-01T00:00:00.000Z",
    received_at="2026-01-01T00:00:01.000Z",
    payload='{"id": "evt_1"}',
)


@pytest.mark.parametrize(
    ("changed", "log"),
    [
        ("seq", [replace(BASE, seq=8)]),
        ("provider", [replace(BASE, provider="polar")]),
        ("event_id", [replace(BASE, event_id="evt_2")]),
        ("type", [replace(BASE, type="customer.subscription.deleted")]),
        ("livemode", [replace(BASE, livemode=None)]),
        ("occurred_at", [replace(BASE, occurred_at=None)]),
        ("received_at", [replace(BASE, received_at="2026-01-01T00:00:02.000Z")]),
        ("payload whitespace", [StoredEvent(**{**vars(BASE), "payload": '{"id":"evt_1"}'})]),
        ("payload escape", [StoredEvent(**{**vars(BASE), "payload": '{"id": "evt\\u005f1"}'})]),
        ("a row more", [BASE, replace(BASE, seq=8, event_id="evt_2")]),
        ("no row", []),
    ],
)
def test_the_digest_tells_a_changed_log_apart(changed: str, log: list[StoredEvent]) -> None:
    assert digest([BASE]).hexdigest() != digest(log).hexdigest(), changed


def test_the_digest_keeps_field_boundaries() -> None:
    one = replace(BASE, event_id="evt_1", payload="x")
    shifted = replace(BASE, event_id="evt_1x", payload="")
    assert digest([one]).hexdigest() != digest([shifted]).hexdigest()


_events = st.builds(
    StoredEvent,
    seq=st.integers(1, 3),
    provider=st.sampled_from(["stripe", "polar"]),
    event_id=st.sampled_from(["a", "ab", ""]),
    type=st.just("t"),
    livemode=st.sampled_from([None, 0, 1]),
    occurred_at=st.sampled_from([None, "", "2026"]),
    received_at=st.just("2026"),
    payload=st.text(alphabet="ab\x00é\n", max_size=3),
)


@given(st.lists(_events, max_size=3), st.lists(_events, max_size=3))
def test_two_logs_have_one_digest_exactly_when_they_hold_the_same_rows(
    a: list[StoredEvent], b: list[StoredEvent]
) -> None:
    assert (digest(a).hexdigest() == digest(b).hexdigest()) == (a == b)
    assert digest(a).count == len(a)
