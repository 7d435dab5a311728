"""Poison events: signed and acked, but holding values a projection cannot store (issue #11).

Each one is quarantined with a reason that names the field and the kind of
problem, never the value (SPEC §10), and every later event is projected. An
exception while applying one event quarantines that event alone; a storage
fault keeps nothing of the batch and is retried. A replay treats them the
same way and builds what the live projector builds.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from billhook.api.app import create_app
from billhook.config import Settings
from billhook.domain.facts import Fact, SubscriptionFact
from billhook.domain.records import EventRecord, StoredEvent
from billhook.domain.resolver import resolve
from billhook.errors import StoreUnavailable
from billhook.log.sqlite import EventLog
from billhook.projections import applier
from billhook.projections.projector import catch_up
from billhook.projections.rebuild import rebuild
from billhook.projections.store import ProjectionStore
from billhook.providers.decode import decode as real_decode
from billhook.providers.polar.webhook import polar_record
from billhook.providers.stripe.webhook import stripe_record
from billhook.testing.polar import (
    POLAR_LEGACY_SECRET,
    polar_customer,
    polar_event,
    polar_headers,
    polar_subscription,
)
from billhook.testing.servers import serve_in_thread
from billhook.testing.settings import ADMIN_TOKEN, PRODUCT_TEAM, READ_TOKEN
from billhook.testing.stripe import (
    STRIPE_PII,
    stripe_checkout_session,
    stripe_customer,
    stripe_event_body,
    stripe_headers,
    stripe_subscription,
)
from tests.contract import contract_client
from tests.feed import NOW, T0, Feed

# A marker planted in every malformed value: no reason may contain it.
MARK = "planted7f3a"
EMAIL = STRIPE_PII[0]
# Past SQLite's signed 64-bit INTEGER, but still an integer once orjson reads it.
HUGE = 2**63
OBJECT = {"planted": MARK}
ARRAY = [MARK]
# One character past MAX_ID_CHARS.
LONG_ID = (MARK * 30)[:256]
# One character past MAX_WORKSPACE_CHARS.
LONG_WORKSPACE = (MARK * 60)[:501]

# (name, value, problem) of every malformed id.
ID_SHAPES: list[tuple[str, object, str]] = [
    ("object", OBJECT, "is not a string"),
    ("array", ARRAY, "is not a string"),
    ("int 2^63", HUGE, "is not a string"),
    ("empty", "", "is empty"),
    ("too long", LONG_ID, "is too long"),
]


@dataclass(frozen=True)
class Poison:
    """One malformed event: where the bad value goes, and the reason it must be given."""

    name: str
    provider: str
    event_type: str
    make: Callable[[], dict[str, Any]]  # the well-formed object the value is planted in
    path: tuple[str | int, ...]
    value: object
    reason: str

    def data(self) -> dict[str, Any]:
        obj = self.make()
        target: Any = obj
        for step in self.path[:-1]:
            target = target[step]
        target[self.path[-1]] = copy.deepcopy(self.value)
        return obj

    def body(self) -> bytes:
        if self.provider == "stripe":
            return stripe_event_body(self.event_type, obj=self.data(), created=T0)
        return polar_event(self.event_type, self.data())

    def record(self) -> EventRecord:
        if self.provider == "stripe":
            return stripe_record(self.body().decode())
        return polar_record(self.body().decode(), f"msg_{uuid.uuid4().hex}", 0)

    def leaks(self, text: str) -> bool:
        """Whether `text` quotes any part of the planted value."""
        planted = repr(self.value)
        fragments = [MARK, str(HUGE)[:8], EMAIL.split("@")[0], "example.com"]
        if isinstance(self.value, int) and self.value not in (0, 1):
            fragments.append(str(self.value))
        return any(fragment in text for fragment in fragments if fragment in planted)


def _stripe_sub() -> dict[str, Any]:
    return stripe_subscription(
        id="sub_poison", customer="cus_poison", metadata={"workspace_id": "ws_poison"}
    )


def _stripe_customer() -> dict[str, Any]:
    return stripe_customer(id="cus_poison", metadata={"workspace_id": "ws_poison"})


def _stripe_session() -> dict[str, Any]:
    return stripe_checkout_session(
        customer="cus_poison", subscription="sub_poison", client_reference_id="ws_poison"
    )


def _polar_sub() -> dict[str, Any]:
    return polar_subscription(
        id="5d4c3b2a-1f0e-4d9c-8b7a-6e5d4c3b2a19",
        customer_id="0b6c3f9e-1d2a-4e5b-8c7d-6f5e4d3c2b1a",
        product_id=PRODUCT_TEAM,
        external_customer_id="ws_poison",
        seats=3,
    )


def _polar_customer() -> dict[str, Any]:
    return polar_customer(id="0b6c3f9e-1d2a-4e5b-8c7d-6f5e4d3c2b1a", external_id="ws_poison")


STRIPE_SUB = "customer.subscription.updated"
POISONS: list[Poison] = [
    *(
        Poison(f"stripe subscription id {name}", "stripe", STRIPE_SUB, _stripe_sub, ("id",),
               value, f"subscription id {problem}")
        for name, value, problem in ID_SHAPES
    ),
    Poison("stripe quantity 2^63", "stripe", STRIPE_SUB, _stripe_sub,
           ("items", "data", 0, "quantity"), HUGE,
           "subscription items.data[0].quantity is out of range"),
    Poison("stripe quantity negative", "stripe", STRIPE_SUB, _stripe_sub,
           ("items", "data", 0, "quantity"), -1,
           "subscription items.data[0].quantity is out of range"),
    Poison("stripe quantity boolean", "stripe", STRIPE_SUB, _stripe_sub,
           ("items", "data", 0, "quantity"), True,
           "subscription items.data[0].quantity is not an integer"),
    Poison("stripe status e-mail", "stripe", STRIPE_SUB, _stripe_sub, ("status",), EMAIL,
           "subscription status is unknown"),
    Poison("stripe status object", "stripe", STRIPE_SUB, _stripe_sub, ("status",), OBJECT,
           "subscription status is not a string"),
    Poison("stripe customer 2^63", "stripe", STRIPE_SUB, _stripe_sub, ("customer",), HUGE,
           "subscription customer is not a string"),
    Poison("stripe price id object", "stripe", STRIPE_SUB, _stripe_sub,
           ("items", "data", 0, "price", "id"), OBJECT,
           "subscription items.data[0].price.id is not a string"),
    Poison("stripe workspace too long", "stripe", STRIPE_SUB, _stripe_sub,
           ("metadata", "workspace_id"), LONG_WORKSPACE,
           "subscription metadata.workspace_id is too long"),
    Poison("stripe cancel_at_period_end string", "stripe", STRIPE_SUB, _stripe_sub,
           ("cancel_at_period_end",), MARK,
           "subscription cancel_at_period_end is not a boolean"),
    Poison("stripe period end string", "stripe", STRIPE_SUB, _stripe_sub,
           ("items", "data", 0, "current_period_end"), MARK,
           "subscription items.data[0].current_period_end is not an integer"),
    *(
        Poison(f"stripe customer id {name}", "stripe", "customer.created", _stripe_customer,
               ("id",), value, f"customer id {problem}")
        for name, value, problem in ID_SHAPES
    ),
    Poison("stripe checkout customer id object", "stripe", "checkout.session.completed",
           _stripe_session, ("customer",), {"id": OBJECT},
           "checkout session customer.id is not a string"),
    *(
        Poison(f"stripe checkout customer {name}", "stripe", "checkout.session.completed",
               _stripe_session, ("customer",), value, f"checkout session customer {problem}")
        for name, value, problem in ID_SHAPES[1:]
    ),
    Poison("stripe checkout workspace 2^63", "stripe", "checkout.session.completed",
           _stripe_session, ("client_reference_id",), HUGE,
           "checkout session client_reference_id is not a string"),
    *(
        Poison(f"polar subscription id {name}", "polar", "subscription.updated", _polar_sub,
               ("id",), value, f"subscription id {problem}")
        for name, value, problem in ID_SHAPES
    ),
    Poison("polar seats 2^63", "polar", "subscription.updated", _polar_sub, ("seats",), HUGE,
           "subscription seats is out of range"),
    Poison("polar status e-mail", "polar", "subscription.updated", _polar_sub, ("status",),
           EMAIL, "subscription status is unknown"),
    Poison("polar customer_id array", "polar", "subscription.updated", _polar_sub,
           ("customer_id",), ARRAY, "subscription customer_id is not a string"),
    Poison("polar product_id 2^63", "polar", "subscription.updated", _polar_sub,
           ("product_id",), HUGE, "subscription product_id is not a string"),
    Poison("polar period end not a time", "polar", "subscription.updated", _polar_sub,
           ("current_period_end",), EMAIL,
           "subscription current_period_end is not an ISO 8601 time"),
    *(
        Poison(f"polar customer id {name}", "polar", "customer.created", _polar_customer,
               ("id",), value, f"customer id {problem}")
        for name, value, problem in ID_SHAPES
    ),
    Poison("polar external_id object", "polar", "customer.created", _polar_customer,
           ("external_id",), OBJECT, "customer external_id is not a string"),
]  # fmt: skip


def _good_event(workspace: str) -> EventRecord:
    sub = stripe_subscription(
        id=f"sub_{workspace}", customer=f"cus_{workspace}", metadata={"workspace_id": workspace}
    )
    return stripe_record(
        stripe_event_body("customer.subscription.created", obj=sub, created=T0).decode()
    )


# -- each poison shape, applied by the live projector ---------------------------------------


@pytest.mark.parametrize("poison", POISONS, ids=[p.name for p in POISONS])
def test_a_poison_event_is_quarantined_and_later_events_are_projected(
    feed: Feed, poison: Poison
) -> None:
    seq = feed.append(poison.record())

    [quarantined] = feed.store.quarantine()
    assert (quarantined.seq, quarantined.type) == (seq, poison.event_type)
    assert quarantined.error == poison.reason
    assert not poison.leaks(quarantined.error)
    assert feed.store.workspace_facts("ws_poison").subscriptions == ()
    # Nothing stalls: the checkpoint moved past it and the next event, for another
    # workspace, is projected.
    next_seq = feed.append(_good_event("ws_next"))
    assert feed.store.checkpoint() == next_seq
    assert feed.entitlement("ws_next").tier == "team"


def test_what_providers_may_send_is_still_read(feed: Feed) -> None:
    """Only malformed values are refused: absent or unusable workspace hints are not errors."""
    # Polar metadata values may be numbers; Stripe sends "" for no client_reference_id.
    sub = _polar_sub()
    sub["customer"]["external_id"] = None
    sub["metadata"] = {"workspace_id": 42}
    feed.polar(polar_event("subscription.updated", sub))
    session = _stripe_session()
    session.update(client_reference_id="", metadata={"workspace_id": "ws_meta"}, customer=None)
    feed.stripe("checkout.session.completed", session)
    session.update(customer={"id": "cus_meta", "object": "customer"})
    feed.stripe("checkout.session.completed", session)
    metered = stripe_subscription(
        id="sub_meta", customer="cus_meta", items=(("price_team_monthly", None),)
    )
    feed.stripe("customer.subscription.created", metered)

    assert feed.store.quarantine() == []
    assert feed.store.customers_of("ws_meta") == {("stripe", "cus_meta")}
    entitlement = feed.entitlement("ws_meta")
    assert (entitlement.tier, entitlement.seats) == ("team", None)


# -- a quarantined event in its workspace's problems -----------------------------------------

POISON_WS = "ws_poison"


def _problems_at(feed: Feed, workspace: str, seq: int | None = None) -> tuple[str, ...]:
    """The workspace's problems now, or as of `seq`."""
    facts = feed.store.workspace_facts(workspace, seq)
    return resolve(facts, feed.settings.policy, NOW).problems


def _link_poison_customers(feed: Feed) -> None:
    """Good events first: ws_poison's Stripe and Polar customers are linked to it."""
    feed.stripe("customer.created", _stripe_customer())
    feed.polar(polar_event("customer.created", _polar_customer()))


@pytest.mark.parametrize("poison", POISONS, ids=[p.name for p in POISONS])
def test_a_quarantined_event_shows_in_its_workspaces_problems(
    feed: Feed, poison: Poison, caplog: pytest.LogCaptureFixture
) -> None:
    """Whichever field is malformed, the event names its workspace through another: its
    metadata, a checkout's reference, a Polar external id, or its customer's link."""
    _link_poison_customers(feed)
    feed.append(_good_event("ws_other"))

    with caplog.at_level(logging.WARNING, logger="billhook.projections.applier"):
        seq = feed.append(poison.record())

    entitlement = feed.entitlement(POISON_WS)
    assert entitlement.problems == (f"quarantined:{seq}",)
    assert entitlement.next_action == "contact_support"
    assert _problems_at(feed, POISON_WS, seq - 1) == ()
    assert _problems_at(feed, POISON_WS, seq) == (f"quarantined:{seq}",)
    assert feed.entitlement("ws_other").problems == ()
    # Logged once, at warning level, with ids and the reason only.
    [record] = caplog.records
    assert (record.levelno, record.getMessage()) == (logging.WARNING, "quarantined")
    quarantined = {"provider": poison.provider, "type": poison.event_type, "reason": poison.reason}
    assert record.fields == {  # type: ignore[attr-defined]
        "seq": seq,
        "event_id": feed.log.get(seq).event_id,  # type: ignore[union-attr]
        **quarantined,
    }
    assert not poison.leaks(repr(record.fields)), poison.name  # type: ignore[attr-defined]


def test_a_link_arriving_after_the_quarantine_names_the_workspace_from_then_on(
    feed: Feed,
) -> None:
    """Order of arrival does not matter: the customer's link decides when it is read."""
    sub = stripe_subscription(id="sub_late", customer="cus_late")
    sub["status"] = OBJECT
    poison = feed.stripe("customer.subscription.updated", sub)
    assert _problems_at(feed, "ws_late") == ()

    link = feed.stripe(
        "checkout.session.completed",
        stripe_checkout_session(customer="cus_late", client_reference_id="ws_late"),
    )

    assert _problems_at(feed, "ws_late") == (f"quarantined:{poison}",)
    assert _problems_at(feed, "ws_late", link - 1) == ()


def test_a_known_subscription_names_the_workspace_when_nothing_else_is_readable(
    feed: Feed,
) -> None:
    """Stripe: the subscription's own metadata, then its customer's link. Polar: the
    customer's link. The poisoned update carries no readable workspace or customer."""
    feed.stripe(
        "customer.subscription.created",
        stripe_subscription(id="sub_meta", customer="cus_meta", metadata={"workspace_id": "ws_m"}),
    )
    feed.stripe(
        "customer.created", stripe_customer(id="cus_link", metadata={"workspace_id": "ws_l"})
    )
    feed.stripe(
        "customer.subscription.created", stripe_subscription(id="sub_link", customer="cus_link")
    )
    polar_sub = _polar_sub()
    feed.polar(polar_event("subscription.created", polar_sub))
    seqs = []
    for sub_id in ("sub_meta", "sub_link"):
        bad = stripe_subscription(id=sub_id, customer="cus_x")
        bad["customer"] = HUGE
        seqs.append(feed.stripe("customer.subscription.updated", bad, created=T0 + 60))
    polar_sub["customer_id"] = ARRAY
    polar_sub["customer"] = MARK
    polar_sub["modified_at"] = "2026-11-02T00:00:00Z"
    seqs.append(feed.polar(polar_event("subscription.updated", polar_sub)))

    assert len(feed.store.quarantine()) == 3
    assert _problems_at(feed, "ws_m") == (f"quarantined:{seqs[0]}",)
    assert _problems_at(feed, "ws_l") == (f"quarantined:{seqs[1]}",)
    assert _problems_at(feed, POISON_WS) == (f"quarantined:{seqs[2]}",)


def test_an_event_that_names_no_one_is_in_no_workspaces_problems(feed: Feed) -> None:
    _link_poison_customers(feed)
    body = stripe_event_body(STRIPE_SUB, obj=_stripe_sub(), created=T0)
    unreadable = body.replace(b'"object": {', b'"object": "x", "was": {', 1)
    assert unreadable != body
    feed.append(stripe_record(unreadable.decode()))

    assert [q.error for q in feed.store.quarantine()] == ["event data.object is not an object"]
    assert feed.entitlement(POISON_WS).problems == ()
    assert feed.entitlement(POISON_WS).next_action == "upgrade"


# -- any exception while applying one event ---------------------------------------------------


def _three_events(feed: Feed) -> None:
    feed.log.append_batch([_good_event(f"ws_{n}") for n in range(3)])


def _fail_on_the_second_event(monkeypatch: pytest.MonkeyPatch, error: BaseException) -> None:
    """Raise `error` while applying the second event, after its subscription row was written."""
    real = applier._record_history
    calls = 0

    def record_history(*args: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise error
        real(*args)

    monkeypatch.setattr(applier, "_record_history", record_history)


EVENT_FAULTS = [
    OverflowError("Python int too large to convert to SQLite INTEGER"),
    sqlite3.InterfaceError(f"Error binding parameter 2: {MARK}"),
    sqlite3.ProgrammingError(f"Error binding parameter 2: type 'dict' is not supported {MARK}"),
    sqlite3.IntegrityError("NOT NULL constraint failed: subscriptions.id"),
    sqlite3.DataError("string or blob too big"),
    TypeError(f"unhashable type: 'dict' {MARK}"),
    ValueError(MARK),
    KeyError(MARK),
    AttributeError(MARK),
    RecursionError(MARK),
]


@pytest.mark.parametrize("error", EVENT_FAULTS, ids=[type(e).__name__ for e in EVENT_FAULTS])
def test_an_exception_applying_one_event_quarantines_it_and_the_batch_goes_on(
    feed: Feed, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    _three_events(feed)
    _fail_on_the_second_event(monkeypatch, error)

    result = catch_up(feed.log, feed.store)

    assert (result.applied, result.quarantined, result.checkpoint) == (2, 1, 3)
    [quarantined] = feed.store.quarantine()
    assert (quarantined.seq, quarantined.error) == (
        2,
        f"could not be applied ({type(error).__name__})",
    )
    assert MARK not in quarantined.error
    # Rolled back to the event's savepoint: the row written before the failure is gone.
    assert feed.store.subscription("stripe", "sub_ws_1") is None
    assert feed.store.history("ws_1") == []
    assert [feed.entitlement(f"ws_{n}").tier for n in range(3)] == ["team", "solo", "team"]


STORAGE_FAULTS = [
    sqlite3.OperationalError("disk I/O error"),
    sqlite3.OperationalError("database or disk is full"),
    sqlite3.OperationalError("database is locked"),
    sqlite3.DatabaseError("database disk image is malformed"),
    sqlite3.InternalError("internal error"),
]


@pytest.mark.parametrize("error", STORAGE_FAULTS, ids=[str(e) for e in STORAGE_FAULTS])
def test_a_storage_fault_keeps_nothing_of_the_batch_and_is_retried(
    feed: Feed, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    _three_events(feed)
    before = feed.store.digest_rows()
    _fail_on_the_second_event(monkeypatch, error)

    with pytest.raises(StoreUnavailable):
        catch_up(feed.log, feed.store)

    assert feed.store.checkpoint() == 0
    assert feed.store.digest_rows() == before
    assert feed.store.quarantine() == []
    # Once the fault is gone, the same events apply: nothing was quarantined for it.
    monkeypatch.undo()
    assert catch_up(feed.log, feed.store).applied == 3
    assert [feed.entitlement(f"ws_{n}").tier for n in range(3)] == ["team"] * 3


def test_running_out_of_memory_is_not_the_events_fault(
    feed: Feed, monkeypatch: pytest.MonkeyPatch
) -> None:
    _three_events(feed)
    _fail_on_the_second_event(monkeypatch, MemoryError())

    with pytest.raises(MemoryError):
        catch_up(feed.log, feed.store)

    assert (feed.store.checkpoint(), feed.store.quarantine()) == (0, [])


# -- replay --------------------------------------------------------------------------------


def _incremental_and_rebuilt(
    feed: Feed, tmp_path: Path
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], int]:
    """Digests of the live projection and of a rebuild of the same log; events counted."""
    catch_up(feed.log, feed.store)
    counted: list[int] = []
    target = tmp_path / "rebuilt.db"
    rebuilt = rebuild(feed.log, target, feed.settings, progress=counted.append)
    assert rebuilt.checkpoint == feed.log.head_seq()
    assert rebuilt.events == sum(counted) == feed.log.head_seq()
    store = ProjectionStore(target, feed.settings)
    try:
        return feed.store.digest_rows(), store.digest_rows(), rebuilt.events
    finally:
        store.close()


def test_a_replay_quarantines_every_poison_as_the_live_projector_does(
    feed: Feed, tmp_path: Path
) -> None:
    records = [_good_event("ws_before"), *(p.record() for p in POISONS), _good_event("ws_after")]
    feed.log.append_batch(records)

    live, rebuilt, _ = _incremental_and_rebuilt(feed, tmp_path)

    assert rebuilt == live
    assert [q.error for q in feed.store.quarantine()] == [p.reason for p in POISONS]
    assert feed.entitlement("ws_after").tier == "team"


def test_a_replay_rebuilds_incrementally_when_an_event_fails_mid_fold(
    feed: Feed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fold cannot undo half an event: the incremental projector builds the shadow."""
    feed.log.append_batch([_good_event(f"ws_{n}") for n in range(7)])
    real = applier._record_history

    def record_history(facts: Any, event: StoredEvent, *args: Any) -> None:
        if event.seq == 4:
            raise OverflowError(MARK)
        real(facts, event, *args)

    monkeypatch.setattr(applier, "_record_history", record_history)

    live, rebuilt, events = _incremental_and_rebuilt(feed, tmp_path)

    assert rebuilt == live
    assert [(q.seq, q.error) for q in feed.store.quarantine()] == [
        (4, "could not be applied (OverflowError)")
    ]
    assert events == 7


def test_a_replay_rebuilds_incrementally_when_a_value_cannot_be_written(
    feed: Feed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A value no decoder check caught fails only at the bulk insert, long after its event."""
    feed.log.append_batch([_good_event(f"ws_{n}") for n in range(5)])

    def decode(event: StoredEvent, key: str) -> list[Fact]:
        facts = real_decode(event, key)
        if event.seq != 2:
            return facts
        return [
            dataclasses.replace(f, id=HUGE) if isinstance(f, SubscriptionFact) else f  # type: ignore[arg-type]
            for f in facts
        ]

    monkeypatch.setattr(applier, "decode", decode)

    live, rebuilt, _ = _incremental_and_rebuilt(feed, tmp_path)

    assert rebuilt == live
    assert [(q.seq, q.error) for q in feed.store.quarantine()] == [
        (2, "could not be applied (OverflowError)")
    ]


# -- through the HTTP API --------------------------------------------------------------------


@pytest.fixture
def client(settings: Settings) -> Iterator[httpx.Client]:
    log = EventLog(settings.events_path)
    with (
        serve_in_thread(create_app(settings, log=log)) as url,
        contract_client(url, timeout=10) as c,
    ):
        yield c
    log.close()


def _deliver(client: httpx.Client, provider: str, body: bytes) -> int:
    if provider == "stripe":
        response = client.post("/webhooks/stripe", content=body, headers=stripe_headers(body))
    else:
        headers = polar_headers(body, POLAR_LEGACY_SECRET, legacy=True)
        response = client.post("/webhooks/polar", content=body, headers=headers)
    assert response.status_code == 200, response.text
    seq: int = response.json()["seq"]
    return seq


def _tier_once_projected(client: httpx.Client, workspace: str, seq: int) -> str:
    deadline = time.monotonic() + 10
    headers = {"Authorization": f"Bearer {READ_TOKEN}"}
    while True:
        answer = client.get(f"/v1/workspaces/{workspace}/entitlements", headers=headers).json()
        if answer["as_of_seq"] >= seq:
            return str(answer["tier"])
        assert time.monotonic() < deadline, "projection did not catch up"
        time.sleep(0.01)


def test_the_admin_api_lists_each_poison_without_its_value(client: httpx.Client) -> None:
    seqs = [_deliver(client, p.provider, p.body()) for p in POISONS]
    good = stripe_subscription(
        id="sub_after", customer="cus_after", metadata={"workspace_id": "ws_after"}
    )
    body = stripe_event_body("customer.subscription.created", obj=good, created=T0)
    after = _deliver(client, "stripe", body)

    assert _tier_once_projected(client, "ws_after", after) == "team"
    response = client.get(
        "/v1/admin/quarantine", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    assert response.status_code == 200
    listed = response.json()
    assert [(q["seq"], q["provider"], q["type"], q["error"]) for q in listed] == [
        (seq, p.provider, p.event_type, p.reason) for seq, p in zip(seqs, POISONS, strict=True)
    ]
    for poison in POISONS:
        assert not poison.leaks(response.text), poison.name
    assert EMAIL not in response.text


def test_the_entitlement_api_names_each_quarantined_event_of_the_workspace(
    client: httpx.Client,
) -> None:
    """Stripe and Polar, through HTTP: `quarantined:<seq>` within the API's contract,
    from the quarantining seq on."""
    stripe_poison = next(p for p in POISONS if p.name == "stripe status e-mail")
    polar_poison = next(p for p in POISONS if p.name == "polar status e-mail")
    first = _deliver(client, "stripe", stripe_poison.body())
    second = _deliver(client, "polar", polar_poison.body())
    _tier_once_projected(client, POISON_WS, second)
    headers = {"Authorization": f"Bearer {READ_TOKEN}"}
    url = f"/v1/workspaces/{POISON_WS}/entitlements"

    now = client.get(url, headers=headers).json()
    before = client.get(url, params={"as_of": first - 1}, headers=headers).json()
    between = client.get(url, params={"as_of": first}, headers=headers).json()

    assert (now["problems"], now["next_action"]) == (
        sorted([f"quarantined:{first}", f"quarantined:{second}"]),
        "contact_support",
    )
    assert (before["problems"], before["next_action"]) == ([], "upgrade")
    assert between["problems"] == [f"quarantined:{first}"]
    assert EMAIL not in repr(now)
