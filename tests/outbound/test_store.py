"""One contract, two outboxes: a SQLite file and a PostgreSQL schema (SPEC §6b).

The fan-out cursor is compare-and-set; only the head of each (endpoint,
workspace) queue is claimed, under a lease whose token guards the result;
retries, final outcomes, cancels and redeliveries move the queue as the
dispatcher needs; two processes never claim the same row; and whatever order
claims and results interleave in, each workspace is delivered in id order.
"""

from __future__ import annotations

import multiprocessing
import threading
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billhook.errors import StoreUnavailable
from billhook.outbound.store import (
    CANCELED,
    DELIVERED,
    FAILED,
    PENDING,
    SENDING,
    Claim,
    Delivery,
    NewDelivery,
    OutboxStore,
    PostgresOutbox,
    Result,
    SqliteOutbox,
    open_outbox,
)
from billhook.testing.settings import make_settings

T0 = 1_700_000_000_000_000
GIVE_UP = T0 + 86_400_000_000
LEASE = 30_000_000

Factory = Callable[[], OutboxStore]


@pytest.fixture(params=["sqlite", "postgresql"])
def make(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Factory]:
    """Opens outboxes on one database: each call another connection, as another process's."""
    opened: list[OutboxStore] = []

    def factory() -> OutboxStore:
        if request.param == "sqlite":
            store: OutboxStore = SqliteOutbox(tmp_path / "outbound.db")
        else:
            store = PostgresOutbox(request.getfixturevalue("pg_url"))
        opened.append(store)
        return store

    yield factory
    for store in opened:
        store.close()


@pytest.fixture
def outbox(make: Factory) -> OutboxStore:
    return make()


def _rows(endpoint: str, workspaces: list[str], first_seq: int = 1) -> list[NewDelivery]:
    """One change per workspace given, seqs counting from `first_seq`."""
    return [
        NewDelivery(endpoint, first_seq + n, 0, ws, f"body-{first_seq + n}".encode())
        for n, ws in enumerate(workspaces)
    ]


def _fill(outbox: OutboxStore, rows: list[NewDelivery], now_us: int = T0) -> None:
    cursor = outbox.fanout_cursor()
    last = max((r.seq, r.k) for r in rows)
    assert outbox.enqueue(cursor, last, rows, now_us, GIVE_UP)


def _result(claim: Claim, outcome: str, at_us: int, **fields: Any) -> Result:
    values: dict[str, Any] = {"status": 200, "error": None, "duration_ms": 12, "next_at_us": None}
    values.update(fields)
    return Result(claim.id, claim.token, at_us, outcome=outcome, **values)


def _seqs(claims: list[Claim]) -> list[int]:
    return [c.seq for c in claims]


def _all(outbox: OutboxStore) -> dict[int, Delivery]:
    return {d.seq: d for d in outbox.deliveries(limit=10_000)}


# -- fan-out ---------------------------------------------------------------------------------


def test_enqueue_compares_and_sets_the_cursor(outbox: OutboxStore) -> None:
    assert outbox.fanout_cursor() is None
    assert outbox.enqueue(None, (2, 0), _rows("ep_a", ["ws_1", "ws_2"]), T0, GIVE_UP)
    assert outbox.fanout_cursor() == (2, 0)
    # Another dispatcher that read "not set yet" lost the race: nothing of its batch is written.
    assert not outbox.enqueue(None, (3, 0), _rows("ep_a", ["ws_3"], 3), T0, GIVE_UP)
    assert not outbox.enqueue((1, 0), (3, 0), _rows("ep_a", ["ws_3"], 3), T0, GIVE_UP)
    assert outbox.fanout_cursor() == (2, 0)
    assert sorted(_all(outbox)) == [1, 2]
    assert outbox.enqueue((2, 0), (3, 1), _rows("ep_a", ["ws_3"], 3), T0 + 5, GIVE_UP)
    assert outbox.fanout_cursor() == (3, 1)
    row = _all(outbox)[3]
    assert (row.status, row.attempts, row.next_at_us, row.give_up_us) == (
        PENDING,
        0,
        T0 + 5,
        GIVE_UP,
    )
    assert (row.created_us, row.updated_us, row.last_status, row.last_error) == (
        T0 + 5,
        T0 + 5,
        None,
        None,
    )
    assert (row.cursor, row.webhook_id) == ("3-0", "ep_a_3_0")


def test_enqueue_without_rows_only_moves_the_cursor(outbox: OutboxStore) -> None:
    assert outbox.enqueue(None, (9, 2), [], T0, T0)
    assert outbox.fanout_cursor() == (9, 2)
    assert outbox.counts() == dict.fromkeys([PENDING, SENDING, DELIVERED, FAILED, CANCELED], 0)


def test_a_row_enqueued_twice_is_kept_once(outbox: OutboxStore) -> None:
    _fill(outbox, _rows("ep_a", ["ws_1"]))
    [claim] = outbox.claim(T0, {"ep_a": 5}, LEASE)
    again = [NewDelivery("ep_a", 1, 0, "ws_9", b"other"), *_rows("ep_b", ["ws_1"])]
    assert outbox.enqueue((1, 0), (2, 0), again, T0 + 1, GIVE_UP)
    rows = outbox.deliveries()
    assert [(d.endpoint, d.seq, d.workspace, d.status) for d in rows] == [
        ("ep_b", 1, "ws_1", PENDING),
        ("ep_a", 1, "ws_1", SENDING),
    ]
    assert claim.body == b"body-1"


def test_an_endpoint_starts_where_it_was_first_seen(outbox: OutboxStore) -> None:
    assert outbox.endpoint_start("ep_a", (5, 1)) == (5, 1)
    assert outbox.endpoint_start("ep_a", (9, 0)) == (5, 1)
    assert outbox.endpoint_start("ep_b", (9, 0)) == (9, 0)


# -- claims ----------------------------------------------------------------------------------


def test_only_the_head_of_each_workspace_queue_is_claimed(outbox: OutboxStore) -> None:
    _fill(outbox, _rows("ep_a", ["ws_1", "ws_1", "ws_2", "ws_1", "ws_3", "ws_2"]))
    claims = outbox.claim(T0, {"ep_a": 10}, LEASE)
    assert _seqs(claims) == [1, 3, 5]
    assert all(c.token and c.attempts == 0 for c in claims)
    assert [c.webhook_id for c in claims] == ["ep_a_1_0", "ep_a_3_0", "ep_a_5_0"]
    assert [c.body for c in claims] == [b"body-1", b"body-3", b"body-5"]
    # Heads in flight hold their queues back.
    assert outbox.claim(T0, {"ep_a": 10}, LEASE) == []
    assert outbox.record([_result(c, DELIVERED, T0 + 1) for c in claims]) == 3
    assert _seqs(outbox.claim(T0 + 2, {"ep_a": 10}, LEASE)) == [2, 6]


def test_claims_respect_each_endpoints_limit_oldest_first(outbox: OutboxStore) -> None:
    rows = _rows("ep_a", ["w1", "w2", "w3", "w4"]) + _rows("ep_b", ["w1", "w2", "w3"], 5)
    rows += _rows("ep_c", ["w1"], 8)
    _fill(outbox, rows)
    claims = outbox.claim(T0, {"ep_a": 2, "ep_b": 5, "ep_c": 0}, LEASE)
    assert [(c.endpoint, c.seq) for c in claims] == [
        ("ep_a", 1),
        ("ep_a", 2),
        ("ep_b", 5),
        ("ep_b", 6),
        ("ep_b", 7),
    ]
    # An endpoint the dispatcher does not name (or gives no room) is never claimed.
    assert outbox.claim(T0, {"ep_a": 1}, LEASE)[0].seq == 3
    assert outbox.claim(T0, {"ep_z": 5}, LEASE) == []


def test_a_claim_is_leased_until_it_ends(outbox: OutboxStore) -> None:
    _fill(outbox, _rows("ep_a", ["ws_1", "ws_1"]))
    [first] = outbox.claim(T0, {"ep_a": 5}, LEASE)
    assert outbox.claim(T0 + LEASE - 1, {"ep_a": 5}, LEASE) == []
    assert _all(outbox)[1].status == SENDING
    [again] = outbox.claim(T0 + LEASE, {"ep_a": 5}, LEASE)
    assert (again.id, again.seq) == (first.id, 1)
    assert again.token != first.token
    # The first dispatcher outlived its lease: its result is not written over the new claim.
    assert outbox.record([_result(first, DELIVERED, T0 + LEASE + 1)]) == 0
    row = _all(outbox)[1]
    assert (row.status, row.attempts) == (SENDING, 0)
    assert outbox.attempts(first.id) == []
    assert outbox.record([_result(again, DELIVERED, T0 + LEASE + 2)]) == 1
    assert outbox.record([_result(again, DELIVERED, T0 + LEASE + 3)]) == 0
    assert (_all(outbox)[1].status, _all(outbox)[1].attempts) == (DELIVERED, 1)


def test_a_result_with_a_stale_token_changes_nothing(outbox: OutboxStore) -> None:
    _fill(outbox, _rows("ep_a", ["ws_1"]))
    [claim] = outbox.claim(T0, {"ep_a": 5}, LEASE)
    before = outbox.delivery(claim.id)
    forged = Result(claim.id, "0" * 32, T0 + 1, 200, None, 3, DELIVERED, None)
    assert outbox.record([forged]) == 0
    assert outbox.delivery(claim.id) == before
    assert outbox.attempts(claim.id) == []
    assert outbox.health() == {"ep_a": outbox.health()["ep_a"]}
    assert outbox.health()["ep_a"].last_success_us is None


def test_a_retry_is_claimable_from_its_time_and_holds_its_queue(outbox: OutboxStore) -> None:
    _fill(outbox, _rows("ep_a", ["ws_1", "ws_1", "ws_2"]))
    claims = outbox.claim(T0, {"ep_a": 5}, LEASE)
    retry_at = T0 + 60_000_000
    results = [
        _result(claims[0], PENDING, T0 + 1, status=503, error=None, next_at_us=retry_at),
        _result(claims[1], PENDING, T0 + 2, status=None, error="timeout", next_at_us=retry_at),
    ]
    assert outbox.record(results) == 2
    row = _all(outbox)[1]
    assert (row.status, row.attempts, row.next_at_us) == (PENDING, 1, retry_at)
    assert (row.last_status, row.last_error) == (503, None)
    assert (_all(outbox)[3].last_status, _all(outbox)[3].last_error) == (None, "timeout")
    # Seq 2 waits behind seq 1's retry, whatever its own time.
    assert outbox.claim(retry_at - 1, {"ep_a": 5}, LEASE) == []
    claims = outbox.claim(retry_at, {"ep_a": 5}, LEASE)
    assert [(c.seq, c.attempts) for c in claims] == [(1, 1), (3, 1)]
    assert outbox.record([_result(claims[0], DELIVERED, retry_at + 1)]) == 1
    assert [a.n for a in outbox.attempts(claims[0].id)] == [1, 2]
    assert [(a.status, a.error) for a in outbox.attempts(claims[1].id)] == [(None, "timeout")]
    assert _seqs(outbox.claim(retry_at + 2, {"ep_a": 5}, LEASE)) == [2]


@pytest.mark.parametrize("outcome", [DELIVERED, FAILED])
def test_a_final_outcome_frees_the_next_row_of_the_workspace(
    outbox: OutboxStore, outcome: str
) -> None:
    _fill(outbox, _rows("ep_a", ["ws_1", "ws_1"]))
    [claim] = outbox.claim(T0, {"ep_a": 5}, LEASE)
    assert outbox.record([_result(claim, outcome, T0 + 1, status=410)]) == 1
    row = outbox.delivery(claim.id)
    assert row is not None
    assert (row.status, row.next_at_us, row.last_status, row.updated_us) == (
        outcome,
        None,
        410,
        T0 + 1,
    )
    assert _seqs(outbox.claim(T0 + 2, {"ep_a": 5}, LEASE)) == [2]


def test_an_unknown_outcome_is_refused(outbox: OutboxStore) -> None:
    _fill(outbox, _rows("ep_a", ["ws_1"]))
    [claim] = outbox.claim(T0, {"ep_a": 5}, LEASE)
    with pytest.raises(ValueError, match="sending"):
        outbox.record([_result(claim, SENDING, T0 + 1)])


# -- cancel, redeliver, prune ---------------------------------------------------------------


def test_cancel_ends_what_a_removed_endpoint_had_left(outbox: OutboxStore) -> None:
    _fill(outbox, _rows("ep_a", ["ws_1", "ws_2", "ws_2"]) + _rows("ep_b", ["ws_1"], 4))
    first, second, other = outbox.claim(T0, {"ep_a": 5, "ep_b": 5}, LEASE)
    assert outbox.record([_result(first, DELIVERED, T0 + 1)]) == 1
    assert outbox.cancel("ep_a", T0 + 2) == 2
    statuses = {seq: d.status for seq, d in _all(outbox).items()}
    assert statuses == {1: DELIVERED, 2: CANCELED, 3: CANCELED, 4: SENDING}
    # The attempt in flight when it was canceled comes back to nothing.
    assert outbox.record([_result(second, DELIVERED, T0 + 3)]) == 0
    assert outbox.claim(T0 + LEASE, {"ep_a": 5}, LEASE) == []
    assert outbox.cancel("ep_a", T0 + 4) == 0
    assert other.endpoint == "ep_b"


def test_redeliver_by_ids_and_since(outbox: OutboxStore) -> None:
    _fill(outbox, _rows("ep_a", ["w1", "w2", "w3"]), now_us=T0)
    assert outbox.enqueue((3, 0), (5, 0), _rows("ep_a", ["w4", "w5"], 4), T0 + 100, GIVE_UP)
    claims = outbox.claim(T0 + 100, {"ep_a": 10}, LEASE)
    done = {c.seq: c for c in claims}
    outbox.record(
        [
            _result(done[1], DELIVERED, T0 + 101),
            _result(done[2], FAILED, T0 + 101, status=400),
            _result(done[4], DELIVERED, T0 + 101),
            _result(done[5], DELIVERED, T0 + 101),
        ]
    )
    later, give_up = T0 + 500, T0 + 9_000
    # Seq 3 is still sending: not final, not redelivered; an unknown id is nothing.
    assert (
        outbox.redeliver(ids=[done[2].id, done[3].id, 999_999], now_us=later, give_up_us=give_up)
        == 1
    )
    row = _all(outbox)[2]
    assert (row.status, row.attempts, row.next_at_us, row.give_up_us) == (
        PENDING,
        1,
        later,
        give_up,
    )
    assert (row.updated_us, row.last_status) == (later, 400)
    assert outbox.redeliver(since_us=T0 + 100, now_us=later, give_up_us=give_up) == 2
    assert {s: d.status for s, d in _all(outbox).items()} == {
        1: DELIVERED,
        2: PENDING,
        3: SENDING,
        4: PENDING,
        5: PENDING,
    }
    assert _seqs(outbox.claim(later, {"ep_a": 10}, LEASE)) == [2, 4, 5]
    assert outbox.redeliver(now_us=later, give_up_us=give_up) == 0


def test_prune_forgets_old_final_rows_and_their_attempts(outbox: OutboxStore) -> None:
    _fill(outbox, _rows("ep_a", ["w1", "w2", "w3", "w4"]))
    c1, c2, c3, c4 = outbox.claim(T0, {"ep_a": 10}, LEASE)
    outbox.record([_result(c1, DELIVERED, T0 + 10), _result(c2, FAILED, T0 + 10)])
    outbox.record([_result(c3, DELIVERED, T0 + 20)])
    outbox.record([_result(c4, PENDING, T0 + 10, next_at_us=T0 + 99)])
    assert outbox.prune(T0 + 20) == 2
    assert sorted(_all(outbox)) == [3, 4]
    assert outbox.attempts(c1.id) == outbox.attempts(c2.id) == []
    assert len(outbox.attempts(c3.id)) == len(outbox.attempts(c4.id)) == 1
    assert outbox.prune(T0 + 20) == 0


# -- the log -------------------------------------------------------------------------------


def test_deliveries_are_listed_newest_first_with_filters(outbox: OutboxStore) -> None:
    _fill(outbox, _rows("ep_a", ["w1", "w2", "w1"]) + _rows("ep_b", ["w1", "w2"], 4))
    claims = outbox.claim(T0, {"ep_a": 10, "ep_b": 10}, LEASE)
    outbox.record([_result(claims[0], DELIVERED, T0 + 1)])
    assert [d.seq for d in outbox.deliveries()] == [5, 4, 3, 2, 1]
    assert [d.seq for d in outbox.deliveries(endpoint="ep_a")] == [3, 2, 1]
    assert [d.seq for d in outbox.deliveries(workspace="w1")] == [4, 3, 1]
    assert [d.seq for d in outbox.deliveries(status=SENDING)] == [5, 4, 2]
    assert [d.seq for d in outbox.deliveries(status=DELIVERED, endpoint="ep_a")] == [1]
    page = outbox.deliveries(limit=2)
    assert [d.seq for d in page] == [5, 4]
    assert [d.seq for d in outbox.deliveries(before_id=page[-1].id, limit=2)] == [3, 2]
    assert outbox.deliveries(status=FAILED) == []
    first = outbox.delivery(claims[0].id)
    assert first is not None
    assert first.status == DELIVERED
    assert not hasattr(first, "body")
    assert outbox.delivery(999_999) is None
    [attempt] = outbox.attempts(claims[0].id)
    assert (attempt.delivery, attempt.n, attempt.at_us, attempt.status, attempt.duration_ms) == (
        claims[0].id,
        1,
        T0 + 1,
        200,
        12,
    )


def test_counts_oldest_pending_and_health(outbox: OutboxStore) -> None:
    assert outbox.oldest_pending_us() is None
    assert outbox.health() == {}
    _fill(outbox, _rows("ep_a", ["w1", "w2", "w3"]), now_us=T0)
    assert outbox.enqueue((3, 0), (4, 0), _rows("ep_b", ["w1"], 4), T0 + 7, GIVE_UP)
    assert outbox.oldest_pending_us() == T0
    a1, a2, a3, b1 = outbox.claim(T0 + 7, {"ep_a": 10, "ep_b": 10}, LEASE)
    outbox.record([_result(a1, FAILED, T0 + 10, status=404), _result(b1, DELIVERED, T0 + 11)])
    outbox.record([_result(a2, FAILED, T0 + 20, status=404)])
    health = outbox.health()
    assert (health["ep_a"].last_success_us, health["ep_a"].failing_since_us) == (None, T0 + 10)
    assert (health["ep_a"].pending, health["ep_a"].oldest_pending_us) == (1, T0)
    assert (health["ep_b"].last_success_us, health["ep_b"].failing_since_us) == (T0 + 11, None)
    assert (health["ep_b"].pending, health["ep_b"].oldest_pending_us) == (0, None)
    # A success ends the failing spell; the next failure starts another.
    outbox.record([_result(a3, DELIVERED, T0 + 30)])
    assert (outbox.health()["ep_a"].last_success_us, outbox.health()["ep_a"].failing_since_us) == (
        T0 + 30,
        None,
    )
    assert outbox.oldest_pending_us() is None
    assert outbox.counts() == {PENDING: 0, SENDING: 0, DELIVERED: 2, FAILED: 2, CANCELED: 0}
    outbox.redeliver(ids=[a1.id], now_us=T0 + 40, give_up_us=GIVE_UP)
    [again] = outbox.claim(T0 + 40, {"ep_a": 10}, LEASE)
    outbox.record([_result(again, FAILED, T0 + 50, status=404)])
    assert outbox.health()["ep_a"].failing_since_us == T0 + 50
    # Retries are not failures yet (the span has not run out).
    outbox.redeliver(ids=[a1.id], now_us=T0 + 60, give_up_us=GIVE_UP)
    [again] = outbox.claim(T0 + 60, {"ep_a": 10}, LEASE)
    outbox.record([_result(again, PENDING, T0 + 70, status=503, next_at_us=T0 + 80)])
    assert outbox.health()["ep_a"].failing_since_us == T0 + 50
    assert outbox.health()["ep_a"].pending == 1
    assert outbox.counts()[PENDING] == 1


# -- secrets ---------------------------------------------------------------------------------


def test_secrets_are_added_expired_and_listed_newest_first(outbox: OutboxStore) -> None:
    outbox.add_secret("ep_a", "whsec_one", T0)
    outbox.add_secret("ep_a", "whsec_two", T0 + 1)
    outbox.add_secret("ep_b", "whsec_other", T0)
    assert outbox.secrets("ep_a", T0 + 2) == ["whsec_two", "whsec_one"]
    outbox.expire_secrets("ep_a", keep="whsec_two", at_us=T0 + 100)
    assert outbox.secrets("ep_a", T0 + 99) == ["whsec_two", "whsec_one"]
    assert outbox.secrets("ep_a", T0 + 100) == ["whsec_two"]
    # An expiry is never pushed later; a secret added again is current again.
    outbox.expire_secrets("ep_a", keep="whsec_two", at_us=T0 + 500)
    assert outbox.secrets("ep_a", T0 + 100) == ["whsec_two"]
    outbox.add_secret("ep_a", "whsec_one", T0 + 200)
    assert outbox.secrets("ep_a", T0 + 300) == ["whsec_one", "whsec_two"]
    assert outbox.secrets("ep_b", T0 + 300) == ["whsec_other"]
    assert outbox.secrets("ep_c", T0) == []


# -- backends --------------------------------------------------------------------------------


def test_open_outbox_follows_the_storage_setting(tmp_path: Path, pg_url: str) -> None:
    sqlite = open_outbox(make_settings(tmp_path / "data"))
    try:
        assert isinstance(sqlite, SqliteOutbox)
        assert sqlite.path == tmp_path / "data" / "outbound.db"
    finally:
        sqlite.close()
    settings = make_settings(tmp_path / "data", sections={"storage": {"url": pg_url}})
    pg = open_outbox(settings)
    try:
        assert isinstance(pg, PostgresOutbox)
        pg.add_secret("ep_a", "whsec_x", T0)
        assert pg.secrets("ep_a", T0) == ["whsec_x"]
    finally:
        pg.close()


def test_an_unusable_database_is_store_unavailable(tmp_path: Path) -> None:
    (tmp_path / "outbound.db").mkdir()
    with pytest.raises(StoreUnavailable, match="outbox store"):
        SqliteOutbox(tmp_path / "outbound.db")
    pg = PostgresOutbox("postgresql://billhook@127.0.0.1:1/nowhere", busy_timeout_s=1)
    with pytest.raises(StoreUnavailable, match="outbox store"):
        pg.fanout_cursor()
    pg.close()


# -- concurrency -----------------------------------------------------------------------------

ROWS = 500
WORKSPACES = 50


def _drain(outbox: OutboxStore, out: list[int]) -> None:
    """Claim and deliver until the outbox has nothing left; every id claimed into `out`."""
    for _ in range(100_000):
        claims = outbox.claim(T0, {"ep_a": 7}, LEASE)
        out.extend(c.id for c in claims)
        if claims:
            outbox.record([_result(c, DELIVERED, T0 + 1) for c in claims])
            continue
        counts = outbox.counts()
        if counts[PENDING] == counts[SENDING] == 0:
            return
    raise AssertionError("the outbox was not drained")


def _drain_in_process(path: str, start: Any, ids: Any) -> None:
    outbox = SqliteOutbox(Path(path))
    out: list[int] = []
    start.wait()
    _drain(outbox, out)
    outbox.close()
    ids.put(out)


def _concurrent_rows() -> list[NewDelivery]:
    return _rows("ep_a", [f"ws_{n % WORKSPACES}" for n in range(ROWS)])


def _assert_claimed_once(claimed: list[list[int]], outbox: OutboxStore) -> None:
    every = [i for ids in claimed for i in ids]
    assert len(every) == ROWS
    assert sorted(every) == sorted(d.id for d in outbox.deliveries(limit=ROWS))
    assert outbox.counts()[DELIVERED] == ROWS
    assert all(len(a) == 1 for a in map(outbox.attempts, every))


def test_two_sqlite_processes_never_claim_the_same_row(tmp_path: Path) -> None:
    path = tmp_path / "outbound.db"
    outbox = SqliteOutbox(path)
    try:
        _fill(outbox, _concurrent_rows())
        ctx = multiprocessing.get_context("spawn")
        start, ids = ctx.Barrier(2), ctx.Queue()
        workers = [
            ctx.Process(target=_drain_in_process, args=(str(path), start, ids)) for _ in range(2)
        ]
        for worker in workers:
            worker.start()
        claimed = [ids.get(timeout=120) for _ in workers]
        for worker in workers:
            worker.join(timeout=30)
            assert worker.exitcode == 0
        _assert_claimed_once(claimed, outbox)
    finally:
        outbox.close()


def test_two_postgresql_stores_never_claim_the_same_row(pg_url: str) -> None:
    stores = [PostgresOutbox(pg_url) for _ in range(3)]
    try:
        _fill(stores[0], _concurrent_rows())
        claimed: list[list[int]] = [[], []]
        start = threading.Barrier(2)
        errors: list[BaseException] = []

        def run(n: int) -> None:
            try:
                start.wait()
                _drain(stores[n], claimed[n])
            except BaseException as e:  # surfaced below, with the thread's traceback
                errors.append(e)

        threads = [threading.Thread(target=run, args=(n,)) for n in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        _assert_claimed_once(claimed, stores[2])
    finally:
        for store in stores:
            store.close()


# -- ordering, as a property -----------------------------------------------------------------

_steps = st.lists(
    st.one_of(
        st.tuples(st.just("claim"), st.integers(1, 4)),
        st.tuples(st.just("deliver"), st.integers(0, 20)),
        st.tuples(st.just("retry"), st.integers(0, 20)),
        st.tuples(st.just("expire"), st.just(0)),
    ),
    max_size=40,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    workspaces=st.lists(st.sampled_from(["w1", "w2", "w3"]), min_size=1, max_size=12), steps=_steps
)
def test_each_workspace_is_delivered_in_id_order(
    tmp_path: Path, workspaces: list[str], steps: list[tuple[str, int]]
) -> None:
    """Any interleaving of claims, results, retries and leases running out delivers each
    workspace's rows once each, in id order."""
    outbox = SqliteOutbox(tmp_path / f"{uuid.uuid4().hex}.db")
    try:
        _fill(outbox, _rows("ep_a", workspaces))
        now = T0
        in_flight: list[Claim] = []
        delivered: dict[str, list[int]] = defaultdict(list)

        def deliver(claim: Claim) -> None:
            if outbox.record([_result(claim, DELIVERED, now)]):
                delivered[claim.workspace].append(claim.id)

        for step, n in steps:
            now += 1
            if step == "claim":
                in_flight += outbox.claim(now, {"ep_a": n}, LEASE)
            elif step == "expire":
                now += LEASE  # every lease runs out; late results must not count
            elif in_flight:
                claim = in_flight.pop(n % len(in_flight))
                if step == "deliver":
                    deliver(claim)
                else:
                    outbox.record([_result(claim, PENDING, now, status=503, next_at_us=now + 5)])
        for claim in in_flight:
            deliver(claim)  # stale ones count for nothing
        for _ in range(len(workspaces) * 4):
            now += LEASE
            for claim in outbox.claim(now, {"ep_a": 3}, LEASE):
                deliver(claim)
        rows = outbox.deliveries(limit=100)
        assert {d.status for d in rows} == {DELIVERED}
        by_workspace: dict[str, list[int]] = defaultdict(list)
        for d in sorted(rows, key=lambda d: d.id):
            by_workspace[d.workspace].append(d.id)
        assert delivered == by_workspace
    finally:
        outbox.close()
