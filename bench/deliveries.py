"""Signed Stripe deliveries, written as a request pool for bench/replay.lua.

The events are built the way tests/support.py's `stripe_event_body` builds
them, from Stripe's own example objects (tests/fixtures/stripe_objects.json),
and signed by the real `stripe` package with the current time. Each one has
its own `evt_` id, so every request of a pool is a new event for billhook,
and is about its own object (`sub_…`, `in_…`, `cus_…`: the fixture object
with a fresh id), as when many customers' events arrive at once; the fixture's
one subscription updated over and over would instead measure how the
embedded projector copes with a single subscription's ever longer history.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import stripe

from bench.tools import REPO

FIXTURES = REPO / "tests" / "fixtures" / "stripe_objects.json"

# What a billing endpoint receives, in turn: (event type, fixture object it carries).
# Their bodies run from ~1 KB to ~4.7 KB, about 3 KB on average.
EVENT_MIX: tuple[tuple[str, str], ...] = (
    ("customer.subscription.updated", "subscription"),
    ("invoice.paid", "invoice"),
    ("checkout.session.completed", "checkout.session"),
    ("customer.updated", "customer"),
    ("price.updated", "price"),
)
# Digits of the per-pool counter in an event id (`evt_` + prefix + counter).
COUNTER_DIGITS = 12


@dataclass(frozen=True)
class Pool:
    """A written request pool: how many requests, their mean body size, when signed."""

    path: Path
    count: int
    mean_body_bytes: float
    signed_at: int


def event_templates() -> list[Mapping[str, Any]]:
    """One event per entry of :data:`EVENT_MIX`, shaped like the fixture's `event`."""
    objects = json.loads(FIXTURES.read_text(encoding="utf-8"))
    templates: list[Mapping[str, Any]] = []
    for event_type, name in EVENT_MIX:
        event = dict(objects["event"])
        event.update(type=event_type, livemode=False, data={"object": objects[name]})
        templates.append(event)
    return templates


def _object_id(fixture_id: str, unique: str) -> str:
    """A fresh id of the same kind as a fixture object's: `sub_1Pgc…` -> `sub_<unique>`."""
    return f"{fixture_id.partition('_')[0]}_{unique}"


def delivery(template: Mapping[str, Any], unique: str, created: int) -> dict[str, Any]:
    """The event of `template` with id `evt_<unique>`, about an object of its own."""
    obj = template["data"]["object"]
    return {
        **template,
        "id": f"evt_{unique}",
        "created": created,
        "data": {"object": {**obj, "id": _object_id(obj["id"], unique)}},
    }


def write_pool(path: Path, *, count: int, secret: str, id_prefix: str) -> Pool:
    """Write `count` signed deliveries to `path`, one `signature<TAB>body` line each.

    Ids are `evt_<id_prefix><counter>` (objects' ids end the same way): unique
    within the pool by construction.
    All are signed with one timestamp, taken now, so the pool stays within
    billhook's signature tolerance for the next few minutes.
    """
    templates = event_templates()
    signed_at = int(time.time())
    total = 0
    with path.open("w", encoding="utf-8") as out:
        for i in range(count):
            unique = f"{id_prefix}{i:0{COUNTER_DIGITS}d}"
            # json.dumps escapes newlines and tabs inside strings: one line per request.
            body = json.dumps(delivery(templates[i % len(templates)], unique, signed_at))
            header = stripe.WebhookSignature.generate_signature_header(
                body, secret, timestamp=signed_at
            )
            out.write(f"{header}\t{body}\n")
            total += len(body.encode())
    return Pool(path=path, count=count, mean_body_bytes=total / max(count, 1), signed_at=signed_at)
