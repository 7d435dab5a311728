"""Facts to JSON text and back, for the projection store's rows."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from projections.facts import EnforcementFact, Item, Order, OverrideFact, SubscriptionFact


def dumps(fact: SubscriptionFact | OverrideFact | EnforcementFact) -> str:
    return json.dumps(asdict(fact), separators=(",", ":"), sort_keys=True)


def subscription(text: str) -> SubscriptionFact:
    data: dict[str, Any] = json.loads(text)
    data["order"] = Order(**data["order"])
    data["items"] = tuple(Item(**item) for item in data["items"])
    data["attention_us"] = tuple(data["attention_us"])
    return SubscriptionFact(**data)


def override(text: str) -> OverrideFact:
    return OverrideFact(**json.loads(text))


def enforcement(text: str) -> EnforcementFact:
    return EnforcementFact(**json.loads(text))
