"""One event delivered many times at once is stored once (SPEC §3, §4).

Providers deliver at least once and retry in parallel; a storm of the same
event against the real server must leave exactly one row, and every delivery
must be told the seq of that row.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import pytest

from billhook.log.sqlite import EventLog
from billhook.testing.polar import POLAR_SECRET, polar_event_body, polar_headers
from billhook.testing.stripe import STRIPE_SECRET, stripe_event_body, stripe_headers

# Deliveries of the one event, all in flight together.
STORM = 50


@dataclass(frozen=True)
class Delivery:
    """One provider's event and how to sign a delivery of it."""

    provider: str
    event_id: str
    body: bytes
    sign: Callable[[int], dict[str, str]]


def _stripe_delivery() -> Delivery:
    body = stripe_event_body("customer.subscription.updated")
    return Delivery(
        "stripe", json.loads(body)["id"], body, lambda ts: stripe_headers(body, timestamp=ts)
    )


def _polar_delivery() -> Delivery:
    body = polar_event_body("subscription.updated")
    msg_id = f"msg_{uuid.uuid4().hex}"
    return Delivery(
        "polar", msg_id, body, lambda ts: polar_headers(body, msg_id=msg_id, timestamp=ts)
    )


def _storm(base_url: str, delivery: Delivery, *, resigned: bool) -> list[httpx.Response]:
    """POST `delivery` STORM times from as many threads released together.

    `resigned` signs each delivery at its own timestamp, the way providers sign
    every retry afresh; otherwise all STORM requests are byte-identical.
    """
    now = int(time.time())
    headers = [delivery.sign(now - i if resigned else now) for i in range(STORM)]
    start = threading.Barrier(STORM, timeout=10)
    answers: list[httpx.Response | BaseException | None] = [None] * STORM

    def send(client: httpx.Client, i: int) -> None:
        try:
            start.wait()
            answers[i] = client.post(
                f"/webhooks/{delivery.provider}", content=delivery.body, headers=headers[i]
            )
        except BaseException as e:
            answers[i] = e

    # One pool with a connection per thread, so the requests really are concurrent.
    limits = httpx.Limits(max_connections=STORM, max_keepalive_connections=STORM)
    with httpx.Client(base_url=base_url, timeout=10, limits=limits) as client:
        threads = [
            threading.Thread(target=send, args=(client, i), daemon=True) for i in range(STORM)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads)
    responses = [a for a in answers if isinstance(a, httpx.Response)]
    assert len(responses) == STORM, [a for a in answers if not isinstance(a, httpx.Response)]
    return responses


@pytest.mark.parametrize("resigned", [False, True], ids=["identical", "resigned"])
@pytest.mark.parametrize("make", [_stripe_delivery, _polar_delivery], ids=["stripe", "polar"])
def test_a_storm_of_one_event_stores_one_row(
    server: str, event_log: EventLog, make: Callable[[], Delivery], resigned: bool
) -> None:
    delivery = make()

    responses = _storm(server, delivery, resigned=resigned)

    assert {r.status_code for r in responses} == {200}
    answers = [r.json() for r in responses]
    statuses = sorted(a["status"] for a in answers)
    assert statuses == ["accepted"] + ["duplicate"] * (STORM - 1)
    rows = event_log.find(delivery.event_id, delivery.provider)
    assert len(rows) == 1
    assert {a["seq"] for a in answers} == {rows[0].seq}
    assert rows[0].payload == delivery.body.decode()
    # Nothing else was written: no second row, and no seq burnt by the duplicates.
    assert event_log.head_seq() == rows[0].seq == 1
    for r in responses:
        assert STRIPE_SECRET not in r.text
        assert POLAR_SECRET not in r.text


def test_storms_of_several_events_interleaved_store_each_once(
    server: str, event_log: EventLog
) -> None:
    """Duplicates sharing a group-commit batch with new events still dedupe per event."""
    deliveries = [_stripe_delivery(), _polar_delivery(), _stripe_delivery()]
    start = threading.Barrier(len(deliveries), timeout=10)
    results: dict[str, list[httpx.Response] | BaseException] = {}

    def run(delivery: Delivery) -> None:
        try:
            start.wait()
            results[delivery.event_id] = _storm(server, delivery, resigned=True)
        except BaseException as e:
            results[delivery.event_id] = e

    threads = [threading.Thread(target=run, args=(d,), daemon=True) for d in deliveries]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)

    seqs = set()
    for delivery in deliveries:
        responses = results[delivery.event_id]
        assert isinstance(responses, list), responses
        answers = [r.json() for r in responses]
        assert sum(a["status"] == "accepted" for a in answers) == 1
        (row,) = event_log.find(delivery.event_id, delivery.provider)
        assert {a["seq"] for a in answers} == {row.seq}
        seqs.add(row.seq)
    assert seqs == {1, 2, 3}
    assert len(event_log.read()) == len(deliveries)
