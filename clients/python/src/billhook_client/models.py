"""The answers and changes billhook sends, as frozen dataclasses (docs/api.md, SPEC §6a).

Every answer keeps the exact bytes billhook sent (`body`), so what a guard
forwards is billhook's own answer, byte for byte. An answer the outage policy
produced instead has `fallback=True`, a `fallback_reason`, and no body unless
it is billhook's own last known answer.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from billhook_client.errors import UnexpectedAnswer

# The action billhook gates by seats rather than by feature (docs/api.md).
SEAT_ACTION = "invite_member"
# The decisions of a check.
ALLOW, WOULD_DENY, DENY = "allow", "would_deny", "deny"


@dataclass(frozen=True, slots=True)
class Check:
    """A check answer: may `workspace_id` do `action` now?

    `decision` is `allow`, `would_deny` (enforcement `observe`: allowed, but
    enforce would deny) or `deny`. `status` is billhook's HTTP status (200, or
    402 for a denial) and `body` its bytes; both are None/empty for an answer
    the outage policy made up. `as_of_seq` is None only when nothing was known.
    """

    workspace_id: str
    action: str
    allowed: bool
    decision: str
    reason: str | None
    required_tier: str | None
    tier: str | None
    next_action: str | None
    enforcement: str | None
    as_of_seq: int | None
    fallback: bool = False
    fallback_reason: str | None = None
    status: int | None = field(default=None, compare=False)
    body: bytes = field(default=b"", repr=False, compare=False)

    @property
    def billing_required(self) -> bool:
        """Whether this is billhook's own 402 `billing_required` answer."""
        return self.status == 402 and bool(self.body)

    def as_fallback(self, reason: str) -> Check:
        """This answer, given again by the outage policy (`last_known`)."""
        return dataclasses.replace(self, fallback=True, fallback_reason=reason)


@dataclass(frozen=True, slots=True)
class Features:
    included: tuple[str, ...]
    unavailable: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Subscription:
    provider: str
    id: str
    customer: str | None
    tier: str | None
    status: str
    price: str | None
    interval: str | None
    current_period_end: str | None
    cancel_at_period_end: bool
    account: str | None


@dataclass(frozen=True, slots=True)
class Override:
    kind: str
    tier: str
    expires_at: str | None
    expired: bool
    seq: int


@dataclass(frozen=True, slots=True)
class Entitlement:
    """What `GET /v1/workspaces/{id}/entitlements` answers. `seats` None: unlimited."""

    workspace_id: str
    tier: str
    source: str
    status: str
    attention: str | None
    next_action: str
    features: Features
    seats: int | None
    subscriptions: tuple[Subscription, ...]
    overrides: tuple[Override, ...]
    problems: tuple[str, ...]
    enforcement: str
    as_of_seq: int
    fallback: bool = False
    fallback_reason: str | None = None
    body: bytes = field(default=b"", repr=False, compare=False)

    def as_fallback(self, reason: str) -> Entitlement:
        return dataclasses.replace(self, fallback=True, fallback_reason=reason)


@dataclass(frozen=True, slots=True)
class Cause:
    """Why a change happened: an event (`kind="event"`), or time (`kind="time"`)."""

    kind: str
    provider: str | None = None
    type: str | None = None
    event_id: str | None = None


@dataclass(frozen=True, slots=True)
class EntitlementChange:
    """A workspace's resolved entitlement changed: its answers may differ now."""

    cursor: str
    workspace_id: str
    seq: int
    at: str
    cause: Cause
    tier: str
    source: str
    status: str
    attention: str | None
    next_action: str
    included: tuple[str, ...]
    seats: int | None


@dataclass(frozen=True, slots=True)
class EnforcementChange:
    """The enforcement mode changed: every workspace's check answers may differ now."""

    cursor: str
    seq: int
    at: str
    cause: Cause
    enforcement: str


@dataclass(frozen=True, slots=True)
class UnknownChange:
    """A change of a kind this client does not know: it distrusts every cached answer."""

    cursor: str
    kind: str


Change = EntitlementChange | EnforcementChange | UnknownChange


@dataclass(frozen=True, slots=True)
class ChangePage:
    """One answer of `GET /v1/changes`: changes oldest first, and the cursor to ask after."""

    changes: tuple[Change, ...]
    next: str


# -- decoding -------------------------------------------------------------------------------


def _object(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body)
    except ValueError:
        raise UnexpectedAnswer("billhook's answer is not JSON") from None
    if not isinstance(value, dict):
        raise UnexpectedAnswer("billhook's answer is not a JSON object")
    return value


def _shape_error(what: str, e: Exception) -> UnexpectedAnswer:
    # Names the missing or mistyped key, never a value.
    return UnexpectedAnswer(f"billhook's {what} answer lacks {e.__class__.__name__}: {e}")


def check_from(body: bytes, status: int) -> Check:
    """The check answer in `body` (a 200 or a 402); UnexpectedAnswer when malformed."""
    a = _object(body)
    try:
        return Check(
            workspace_id=a["workspace_id"],
            action=a["action"],
            allowed=bool(a["allowed"]),
            decision=a["decision"],
            reason=a["reason"],
            required_tier=a["required_tier"],
            tier=a["tier"],
            next_action=a["next_action"],
            enforcement=a["enforcement"],
            as_of_seq=int(a["as_of_seq"]),
            status=status,
            body=body,
        )
    except (KeyError, TypeError, ValueError) as e:
        raise _shape_error("check", e) from None


def _seats(value: Mapping[str, Any] | None) -> int | None:
    return None if value is None else int(value["purchased"])


def entitlement_from(body: bytes) -> Entitlement:
    """The entitlement answer in `body`; UnexpectedAnswer when malformed."""
    a = _object(body)
    try:
        return Entitlement(
            workspace_id=a["workspace_id"],
            tier=a["tier"],
            source=a["source"],
            status=a["status"],
            attention=a["attention"],
            next_action=a["next_action"],
            features=Features(
                tuple(a["features"]["included"]), tuple(a["features"]["unavailable"])
            ),
            seats=_seats(a["seats"]),
            subscriptions=tuple(
                Subscription(
                    provider=s["provider"],
                    id=s["id"],
                    customer=s["customer"],
                    tier=s["tier"],
                    status=s["status"],
                    price=s["price"],
                    interval=s["interval"],
                    current_period_end=s["current_period_end"],
                    cancel_at_period_end=bool(s["cancel_at_period_end"]),
                    account=s.get("account"),
                )
                for s in a["subscriptions"]
            ),
            overrides=tuple(
                Override(o["kind"], o["tier"], o["expires_at"], bool(o["expired"]), int(o["seq"]))
                for o in a["overrides"]
            ),
            problems=tuple(a["problems"]),
            enforcement=a["enforcement"],
            as_of_seq=int(a["as_of_seq"]),
            body=body,
        )
    except (KeyError, TypeError, ValueError) as e:
        raise _shape_error("entitlement", e) from None


def _cause(c: Mapping[str, Any]) -> Cause:
    return Cause(c["kind"], c.get("provider"), c.get("type"), c.get("event_id"))


def change_from(c: Mapping[str, Any]) -> Change:
    kind = c["kind"]
    if kind == "entitlement":
        return EntitlementChange(
            cursor=c["cursor"],
            workspace_id=c["workspace_id"],
            seq=int(c["seq"]),
            at=c["at"],
            cause=_cause(c["cause"]),
            tier=c["tier"],
            source=c["source"],
            status=c["status"],
            attention=c["attention"],
            next_action=c["next_action"],
            included=tuple(c["features"]["included"]),
            seats=_seats(c["seats"]),
        )
    if kind == "enforcement":
        return EnforcementChange(
            cursor=c["cursor"],
            seq=int(c["seq"]),
            at=c["at"],
            cause=_cause(c["cause"]),
            enforcement=c["enforcement"],
        )
    return UnknownChange(cursor=c["cursor"], kind=str(kind))


def page_from(body: bytes) -> ChangePage:
    """The `GET /v1/changes` answer in `body`; UnexpectedAnswer when malformed."""
    a = _object(body)
    try:
        return ChangePage(tuple(change_from(c) for c in a["changes"]), str(a["next"]))
    except (KeyError, TypeError, ValueError) as e:
        raise _shape_error("changes", e) from None
