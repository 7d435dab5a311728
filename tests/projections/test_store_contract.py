"""One contract, two projection stores: SQLite files and PostgreSQL schemas (SPEC §4a, §7).

The same log applied to either store gives the same rows; the checkpoint
commits with them; two projectors never apply a batch twice; a replay's swap
is seen whole or not at all; a store's readers on other connections learn of
commits (SQLite's data_version, PostgreSQL's LISTEN/NOTIFY).
"""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from billhook.config import Settings
from billhook.domain.records import EventRecord, StoredEvent
from billhook.domain.resolver import resolve
from billhook.errors import StoreUnavailable
from billhook.log.postgres import PostgresEventLog
from billhook.log.sqlite import EventLog
from billhook.projections import applier
from billhook.projections.backend import Location, open_store, remove
from billhook.projections.postgres import PROJECTIONS_SCHEMA, PgSchema
from billhook.projections.projector import catch_up
from billhook.projections.rebuild import rebuild, swap_in
from billhook.projections.store import ProjectionStore
from billhook.providers.billhook import OVERRIDE_SET
from billhook.providers.decode import PROJECTED_TYPES
from billhook.providers.stripe.webhook import stripe_record
from billhook.testing.servers import wait_until
from billhook.testing.settings import make_settings
from billhook.testing.stripe import stripe_event_body, stripe_subscription
from tests.feed import NOW, T0

STATUSES = ["trialing", "active", "past_due", "canceled", "unpaid"]
WORKSPACES = 5


def _records(count: int, seed: int) -> list[EventRecord]:
    """Subscription events over a few workspaces, an override, and one poison event."""
    rng = random.Random(seed)
    records = []
    for n in range(count):
        k = rng.randrange(8)
        sub = stripe_subscription(
            id=f"sub_{k}",
            customer=f"cus_{k}",
            status=rng.choice(STATUSES),
            metadata={"workspace_id": f"ws_{k % WORKSPACES}"},
        )
        body = stripe_event_body(
            "customer.subscription.updated", event_id=f"evt_{seed}_{n}", obj=sub, created=T0 + n
        )
        records.append(stripe_record(body.decode()))
    poison = stripe_event_body(
        "customer.subscription.updated",
        event_id=f"evt_{seed}_poison",
        obj={"object": "subscription", "id": 7, "status": []},
        created=T0,
    )
    records.insert(count // 2, stripe_record(poison.decode()))
    override = {"workspace_id": "ws_1", "kind": "manual_pilot", "tier": "team"}
    records.append(
        EventRecord(
            "billhook",
            f"op_{seed}",
            OVERRIDE_SET,
            None,
            None,
            json.dumps({**override, "reason": "r", "actor": "a"}),
        )
    )
    return records


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path / "data")


@pytest.fixture
def log(settings: Settings) -> Iterator[EventLog]:
    opened = EventLog(settings.events_path)
    opened.append_batch(_records(60, seed=1))
    yield opened
    opened.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def live(request: pytest.FixtureRequest, tmp_path: Path) -> Location:
    if request.param == "sqlite":
        return tmp_path / "live.db"
    return PgSchema(request.getfixturevalue("pg_url"))


def _shadow(live: Location) -> Location:
    if isinstance(live, PgSchema):
        return live.sibling(f"{PROJECTIONS_SCHEMA}_replay")
    return live.with_name("shadow.db")


def _answers(store: ProjectionStore, settings: Settings) -> dict[str, tuple[object, ...]]:
    answers = {}
    for workspace in sorted(store.workspaces()):
        e = resolve(store.workspace_facts(workspace), settings.policy, NOW)
        answers[workspace] = (e.tier, e.source, e.status, e.next_action, e.as_of_seq)
    return answers


def test_sqlite_and_postgresql_project_the_same_rows(
    log: EventLog, settings: Settings, tmp_path: Path, pg_url: str
) -> None:
    sqlite_store = open_store(tmp_path / "p.db", settings)
    pg_store = open_store(PgSchema(pg_url), settings)
    try:
        catch_up(log, sqlite_store, batch_size=7)
        catch_up(log, pg_store, batch_size=13)
        assert pg_store.digest_rows() == sqlite_store.digest_rows()
        assert pg_store.quarantine() == sqlite_store.quarantine() != []
        assert _answers(pg_store, settings) == _answers(sqlite_store, settings)
        for workspace in sorted(sqlite_store.workspaces()):
            assert pg_store.history(workspace) == sqlite_store.history(workspace)
            for as_of in (5, 20, 40):
                assert pg_store.workspace_facts(workspace, as_of) == (
                    sqlite_store.workspace_facts(workspace, as_of)
                )
    finally:
        sqlite_store.close()
        pg_store.close()


def test_the_checkpoint_commits_with_the_rows(
    log: EventLog, settings: Settings, live: Location
) -> None:
    failures = iter([True])

    def fail_once() -> None:
        if next(failures, False):
            raise RuntimeError("crash before commit")

    store = open_store(live, settings, before_commit=fail_once)
    try:
        events = log.read(limit=20, payloads_of=PROJECTED_TYPES)
        with pytest.raises(RuntimeError):
            store.apply(events)
        assert store.checkpoint() == 0
        assert store.workspaces() == set()
        assert store.apply(events).last_seq == 20
        # The same batch again, or a part of it, changes nothing.
        before = store.digest_rows()
        assert store.apply(events[5:]).applied == 0
        assert store.digest_rows() == before
        # A batch that does not follow on from the checkpoint is refused whole.
        later = log.read(after=30, limit=5, payloads_of=PROJECTED_TYPES)
        refused = store.apply(later, after=30)
        assert (refused.last_seq, refused.applied) == (20, 0)
        assert store.checkpoint() == 20
    finally:
        store.close()


def test_two_projectors_at_once_never_apply_a_batch_twice(
    log: EventLog, settings: Settings, live: Location, tmp_path: Path
) -> None:
    first, second = open_store(live, settings), open_store(live, settings)
    clean = open_store(tmp_path / "clean.db", settings)
    errors: list[BaseException] = []

    def project(store: ProjectionStore, size: int) -> None:
        try:
            catch_up(log, store, batch_size=size)
        except BaseException as e:
            errors.append(e)

    try:
        threads = [
            threading.Thread(target=project, args=(first, 3)),
            threading.Thread(target=project, args=(second, 4)),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        catch_up(log, clean)
        assert first.digest_rows() == clean.digest_rows()
    finally:
        for store in (first, second, clean):
            store.close()


def _catalog(url: str, schema: str) -> set[tuple[str, str]]:
    """The indexes and keys of `schema`'s tables, named as if the schema had no name."""
    with psycopg.connect(url) as conn:
        indexes = conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = %s", (schema,)
        ).fetchall()
        keys = conn.execute(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint"
            " WHERE connamespace = %s::regnamespace",
            (schema,),
        ).fetchall()
    return {(n, d.replace(f"{schema}.", "")) for n, d in [*indexes, *keys]}


def test_a_rebuild_from_a_postgresql_log_equals_the_live_store_keys_and_indexes_included(
    settings: Settings, pg_url: str
) -> None:
    """A replay on PostgreSQL scans the log in one snapshot and builds its indexes and keys
    after the rows: the result is the live store's, row for row and index for index."""
    log = PostgresEventLog(pg_url)
    live_at = PgSchema(pg_url)
    shadow_at = live_at.sibling(f"{PROJECTIONS_SCHEMA}_replay")
    live = open_store(live_at, settings)
    try:
        log.append_batch(_records(60, seed=1))
        log.append_batch(_records(20, seed=2))
        catch_up(log, live, batch_size=9)
        rebuilt = rebuild(log, shadow_at, settings)
        assert rebuilt.events == rebuilt.checkpoint == log.head_seq() == 84
        shadow = open_store(shadow_at, settings)
        try:
            assert shadow.digest_rows() == live.digest_rows()
            assert shadow.quarantine() == live.quarantine() != []
            assert _answers(shadow, settings) == _answers(live, settings)
        finally:
            shadow.close()
        built = _catalog(pg_url, shadow_at.schema)
        assert built == _catalog(pg_url, live_at.schema)
        names = {name for name, _ in built}
        assert {"subscriptions_pkey", "subscriptions_current", "changes_workspace"} <= names
    finally:
        live.close()
        log.close()
        remove(shadow_at)


def test_a_replay_swap_is_seen_whole(log: EventLog, settings: Settings, live: Location) -> None:
    store = open_store(live, settings)
    reader = open_store(live, settings)
    shadow_at = _shadow(live)
    try:
        catch_up(log, store, batch_size=10)
        before = _answers(reader, settings)
        # More events: the live store has them, so a shadow built before them is behind.
        log.append_batch(_records(10, seed=2))
        remove(shadow_at)
        rebuild(log, shadow_at, settings)
        shadow = open_store(shadow_at, settings)
        catch_up(log, store)
        log.append_batch(_records(5, seed=3))
        catch_up(log, store)
        assert shadow.copy_over(live) is False, "a shadow behind the live store is refused"
        assert swap_in(shadow, live, log) == log.head_seq()
        shadow.close()
        # A reader opened before the swap reads the swapped-in rows, as a new one does.
        fresh = open_store(live, settings)
        try:
            assert _answers(reader, settings) == _answers(fresh, settings) != before
            assert reader.digest_rows() == fresh.digest_rows()
            assert fresh.checkpoint() == log.head_seq()
        finally:
            fresh.close()
        # The projector goes on applying into the swapped-in store.
        log.append_batch(_records(3, seed=4))
        catch_up(log, store)
        assert reader.checkpoint() == log.head_seq()
    finally:
        store.close()
        reader.close()
        remove(shadow_at)


def test_a_reader_learns_of_commits_made_elsewhere(
    log: EventLog, settings: Settings, live: Location
) -> None:
    reader = open_store(live, settings, listen=True)
    writer = open_store(live, settings)
    try:
        reader.checkpoint()
        before = reader.data_version()
        assert reader.data_version() == before, "no commit, no change"
        catch_up(log, writer, batch_size=10)
        wait_until(lambda: reader.data_version() != before, 5, "the commit to be announced")
    finally:
        reader.close()
        writer.close()


def test_the_live_projection_is_never_dropped(pg_url: str) -> None:
    with pytest.raises(StoreUnavailable):
        remove(PgSchema(pg_url))


# -- PostgreSQL applies a batch in a pipeline, without savepoints, until an event fails -------

PG_EVENT_FAULTS = [
    OverflowError("int too large"),
    psycopg.errors.NumericValueOutOfRange("bigint out of range"),
    psycopg.errors.UntranslatableCharacter("unsupported Unicode escape sequence"),
    ValueError("a reducer's bug"),
]


def _fail_on_the_second_event(monkeypatch: pytest.MonkeyPatch, error: BaseException) -> None:
    """Raise `error` whenever the event at seq 2 is applied, after its subscription row was
    written (an unguarded attempt and the guarded one after it both meet it)."""
    real = applier._record_history

    def record_history(facts: Any, event: StoredEvent, *args: Any) -> None:
        if event.seq == 2:
            raise error
        real(facts, event, *args)

    monkeypatch.setattr(applier, "_record_history", record_history)


def _three_subscriptions(log: EventLog) -> None:
    for n in range(3):
        sub = stripe_subscription(
            id=f"sub_ws_{n}", customer=f"cus_{n}", metadata={"workspace_id": f"ws_{n}"}
        )
        body = stripe_event_body("customer.subscription.created", obj=sub, created=T0 + n)
        log.append_batch([stripe_record(body.decode())])


@pytest.mark.parametrize("error", PG_EVENT_FAULTS, ids=[type(e).__name__ for e in PG_EVENT_FAULTS])
def test_postgresql_quarantines_the_event_that_fails_and_applies_the_rest(
    settings: Settings, pg_url: str, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    log = EventLog(settings.events_path)
    store = open_store(PgSchema(pg_url), settings)
    try:
        _three_subscriptions(log)
        _fail_on_the_second_event(monkeypatch, error)

        result = catch_up(log, store)

        assert (result.applied, result.quarantined, result.checkpoint) == (2, 1, 3)
        [quarantined] = store.quarantine()
        assert (quarantined.seq, quarantined.error) == (
            2,
            f"could not be applied ({type(error).__name__})",
        )
        # The fast attempt was rolled back whole, the guarded one undid the second event.
        assert store.subscription("stripe", "sub_ws_1") is None
        assert store.history("ws_1") == []
        tiers = [
            resolve(store.workspace_facts(f"ws_{n}"), settings.policy, NOW).tier for n in range(3)
        ]
        assert tiers == ["team", "solo", "team"]
    finally:
        store.close()
        log.close()


def test_a_postgresql_storage_fault_keeps_nothing_and_is_not_quarantined(
    settings: Settings, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = EventLog(settings.events_path)
    store = open_store(PgSchema(pg_url), settings)
    try:
        _three_subscriptions(log)
        _fail_on_the_second_event(monkeypatch, psycopg.errors.DiskFull("could not extend file"))

        with pytest.raises(StoreUnavailable):
            catch_up(log, store)

        assert (store.checkpoint(), store.quarantine(), store.workspaces()) == (0, [], set())
        monkeypatch.undo()
        assert catch_up(log, store).applied == 3
    finally:
        store.close()
        log.close()
