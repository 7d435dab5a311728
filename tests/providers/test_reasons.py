"""Every quarantine reason is a short readable sentence, and each kind has a hint (issue #19).

The corpus: every poison of tests/projections/test_poison.py, plus every valid
payload billhook reads (each Stripe API version's shape, Polar's objects and
customer states, billhook's own events) with each of its fields, at any depth,
deleted or replaced by a value of another type. No mutation may reach the
decoder's safety net: each is refused by a check that names the field.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from billhook.cli.main import main
from billhook.domain.records import EventRecord, StoredEvent
from billhook.errors import DecodeError
from billhook.log.sqlite import EventLog
from billhook.providers.decode import decode
from billhook.providers.polar.webhook import polar_record
from billhook.providers.reasons import DEFAULT, FAMILIES, family
from billhook.providers.stripe.webhook import stripe_record
from billhook.testing.polar import (
    polar_customer,
    polar_customer_state,
    polar_event,
    polar_state_subscription,
    polar_subscription,
)
from billhook.testing.settings import PRODUCT_TEAM, write_config
from billhook.testing.stripe import stripe_checkout_session
from tests.feed import T0
from tests.projections.test_poison import POISONS
from tests.providers.stripe.shapes import VERSIONS, Sub, customer, event_body, subscription

# A readable reason: lower-case words, field paths, no quotes, no exception names.
READABLE = re.compile(r"^[a-z][a-z0-9 _.,:()\[\]`/-]*[a-z0-9)\]]$", re.IGNORECASE)
NOT_READABLE = re.compile(r"Error\b|Exception|Traceback|File \"|line \d+|['\"{}<>]|\bNone\b")
# Values a mutation puts in place of a field.
REPLACEMENTS: list[object] = [None, "", "x", 0, -1, 2**63, 1.5, True, [], {}, ["x"], {"id": 1}]
DELETE = object()


def _stored(provider: str, body: str, seq: int = 1) -> StoredEvent:
    record = stripe_record(body) if provider == "stripe" else polar_record(body, "msg_1", 0)
    return StoredEvent(
        seq,
        provider,
        record.event_id,
        record.type,
        record.livemode,
        record.occurred_at,
        "2026-11-21T12:00:00.000Z",
        body,
    )


def _billhook(event_type: str, payload: dict[str, Any]) -> StoredEvent:
    return StoredEvent(
        1,
        "billhook",
        "b_1",
        event_type,
        None,
        None,
        "2026-11-21T12:00:00.000Z",
        json.dumps(payload),
    )


def _valid_events() -> list[tuple[str, StoredEvent, dict[str, Any]]]:
    """(name, event, its payload) of a well-formed event of every kind billhook decodes."""
    events: list[tuple[str, StoredEvent, dict[str, Any]]] = []

    def stripe(name: str, body: bytes) -> None:
        events.append((name, _stored("stripe", body.decode()), json.loads(body)))

    for version in VERSIONS:
        sub = subscription(version, Sub(metadata={"workspace_id": "ws_1"}, cancel_at=None))
        stripe(
            f"stripe {version} subscription",
            event_body(
                version,
                "customer.subscription.updated",
                sub,
                created=T0,
                event_id="evt_1",
                account="acct_1",
            ),
        )
    stripe(
        "stripe customer",
        event_body(
            VERSIONS[-1],
            "customer.updated",
            customer(VERSIONS[-1], "cus_1", {"workspace_id": "ws_1"}),
            created=T0,
            event_id="e",
        ),
    )
    stripe(
        "stripe checkout",
        event_body(
            VERSIONS[-1],
            "checkout.session.completed",
            stripe_checkout_session(client_reference_id="ws_1"),
            created=T0,
            event_id="e",
        ),
    )
    for name, event_type, data in [
        (
            "polar subscription",
            "subscription.updated",
            polar_subscription(
                id="s1",
                customer_id="c1",
                product_id=PRODUCT_TEAM,
                external_customer_id="ws_1",
                seats=2,
            ),
        ),
        ("polar customer", "customer.updated", polar_customer(id="c1", external_id="ws_1")),
        (
            "polar customer state",
            "customer.state_changed",
            polar_customer_state(
                id="c1",
                external_id="ws_1",
                active_subscriptions=[
                    polar_state_subscription(id="s1", status="trialing", product_id=PRODUCT_TEAM)
                ],
            ),
        ),
    ]:
        body = polar_event(event_type, data)
        events.append((name, _stored("polar", body.decode()), json.loads(body)))
    reconciled = {
        "provider": "stripe",
        "fetched_at": "2026-11-21T12:00:00Z",
        "livemode": False,
        "account": "acct_1",
        "subscription": subscription(VERSIONS[-1], Sub()),
    }
    override = {
        "kind": "manual_pilot",
        "workspace_id": "ws_1",
        "tier": "team",
        "expires_at": "2027-01-01T00:00:00Z",
        "reason": "r",
        "actor": "a",
    }
    own: list[tuple[str, str, dict[str, Any]]] = [
        ("reconciled", "billhook.reconciled", reconciled),
        ("override", "billhook.override_set", override),
        ("enforcement", "billhook.enforcement_set", {"mode": "enforce", "approved_by": "a"}),
    ]
    for name, event_type, payload in own:
        events.append((name, _billhook(event_type, payload), payload))
    for name, event, _ in events:
        assert decode(event, "workspace_id"), name  # each is valid as built
    return events


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every path into `value`'s objects and arrays (at most 8 deep)."""
    if len(prefix) >= 8:
        return
    children = (
        value.items()
        if isinstance(value, dict)
        else enumerate(value)
        if isinstance(value, list)
        else ()
    )
    for key, child in children:
        yield (*prefix, key)
        yield from _paths(child, (*prefix, key))


def _mutated(payload: dict[str, Any], path: tuple[Any, ...], value: object) -> dict[str, Any]:
    copied = copy.deepcopy(payload)
    target: Any = copied
    for step in path[:-1]:
        target = target[step]
    if value is DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = copy.deepcopy(value)
    return copied


def _corpus() -> dict[str, set[str]]:
    """{reason: names of a few mutations that produce it} over every mutation of every event."""
    reasons: dict[str, set[str]] = {}
    for poison in POISONS:
        reasons.setdefault(poison.reason, set()).add(poison.name)
    for name, event, payload in _valid_events():
        for path in _paths(payload):
            for value in [DELETE, *REPLACEMENTS]:
                mutated = _mutated(payload, path, value)
                text = json.dumps(mutated)
                changed = StoredEvent(
                    event.seq,
                    event.provider,
                    event.event_id,
                    event.type,
                    event.livemode,
                    event.occurred_at,
                    event.received_at,
                    text,
                )
                try:
                    decode(changed, "workspace_id")
                except DecodeError as e:
                    where = f"{name} {'.'.join(map(str, path))} = {value!r:.20}"
                    reasons.setdefault(str(e), set()).add(where)
    for body in ("[]", "not json", '"text"'):
        event = StoredEvent(1, "stripe", "e", "customer.updated", 0, None, "now", body)
        try:
            decode(event, "workspace_id")
        except DecodeError as e:
            reasons.setdefault(str(e), set()).add(f"body {body}")
    return reasons


CORPUS = _corpus()


def test_the_corpus_is_broad() -> None:
    assert len(CORPUS) > 100
    # Old shapes, Connect and Polar states are in it.
    for reason in (
        "subscription plan.id is missing",
        "subscription quantity is not an integer",
        "event account is not a connected account id",
        "customer state active_subscriptions[0] status is unknown",
        "payload is not a JSON object",
        "payload is not valid JSON",
    ):
        assert reason in CORPUS, reason


@pytest.mark.parametrize("reason", sorted(CORPUS))
def test_every_reason_is_a_readable_sentence(reason: str) -> None:
    assert len(reason) <= 120
    assert READABLE.match(reason), (reason, sorted(CORPUS[reason])[:3])
    assert not NOT_READABLE.search(reason), (reason, sorted(CORPUS[reason])[:3])


def test_no_malformed_payload_reaches_the_safety_net() -> None:
    """Each malformed field is caught by a check naming it, never by the decoder's net."""
    caught = {r: sorted(n)[:5] for r, n in CORPUS.items() if family(r).name == "billhook fault"}
    assert caught == {}


@pytest.mark.parametrize("reason", sorted(CORPUS))
def test_every_reason_has_a_hint(reason: str) -> None:
    assert family(reason) is not DEFAULT, reason


def test_every_hint_is_a_fixed_sentence_without_values() -> None:
    for f in FAMILIES:
        assert f.hint == f.hint.strip()
        assert not NOT_READABLE.search(f.hint.replace("`", "")), f.name


# -- `billhook quarantine list` ----------------------------------------------------------------


def test_quarantine_list_explains_each_kind_of_reason_on_stderr(tmp_path: Path) -> None:
    config = write_config(tmp_path, redis_url=None)
    log = EventLog(tmp_path / "data" / "events.db")
    old = subscription(VERSIONS[0], Sub())
    del old["id"]
    bodies = [
        event_body(VERSIONS[0], "customer.subscription.updated", old, created=T0, event_id="e1"),
        next(p for p in POISONS if p.name == "stripe status e-mail").body(),
        next(p for p in POISONS if p.name == "polar status e-mail").body(),
    ]
    records = [
        stripe_record(bodies[0].decode()),
        stripe_record(bodies[1].decode()),
        polar_record(bodies[2].decode(), "msg_9", 0),
    ]
    records.append(EventRecord("stripe", "e4", "customer.updated", 0, None, "[]"))
    log.append_batch(records)
    log.close()

    result = CliRunner().invoke(main, ["quarantine", "list", "--config", str(config)])

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "seq\tprovider\tevent_id\ttype\terror"
    assert [line.split("\t")[4] for line in lines[1:]] == [
        "subscription id is missing",
        "subscription status is unknown",
        "subscription status is unknown",
        "payload is not a JSON object",
    ]
    hints = [line for line in result.stderr.splitlines() if not line.startswith("log: ")]
    assert [h.split(":")[0] for h in hints] == [
        "missing field (1)",
        "unknown value (2)",
        "not JSON (1)",
    ]
    assert "ada.lovelace" not in result.output
    assert "reconcile" in hints[0]
    assert "upgrade billhook" in hints[1]
