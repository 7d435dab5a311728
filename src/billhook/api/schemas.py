"""The JSON Schemas (2020-12) of billhook's request and answer bodies, for `/openapi.json`.

Answers are described strictly (`additionalProperties: false`, closed enums), so
a field or value added to an answer without being described here is caught by
the tests that check every answer against the document. Enumerations that the
config decides (tiers, features) are rendered from the settings at start.
"""

from __future__ import annotations

from typing import Any

from billhook.config import ENFORCEMENT_MODES, INTERVALS, SEAT_ACTION, Settings
from billhook.domain.facts import OVERRIDE_KINDS

Schema = dict[str, Any]

# Where a component schema lives in the document, for `$ref`.
REF = "#/components/schemas/"

# Every value of `source` (SPEC §6).
SOURCES = (
    "default",
    "stripe",
    "polar",
    "manual_pilot",
    "enterprise_contract",
    "site_owner_override",
    "explicit_solo",
)
# Normalized subscription statuses (SPEC §5).
SUBSCRIPTION_STATUSES = (
    "trialing",
    "active",
    "canceling",
    "past_due",
    "unpaid",
    "incomplete",
    "paused",
    "inactive",
)
# A workspace's status: its winner's, its latest subscription's, or `none` (never subscribed).
STATUSES = (*SUBSCRIPTION_STATUSES, "none")
ATTENTION = (None, "past_due", "unpaid", "incomplete")
NEXT_ACTIONS = (
    "none",
    "upgrade",
    "complete_checkout",
    "update_payment_method",
    "resume_subscription",
    "resubscribe",
    "contact_support",
)
DECISIONS = ("allow", "would_deny", "deny")
REASONS = (None, "tier_required", "billing_attention", "seat_limit")
LOG_PROVIDERS = ("stripe", "polar", "billhook")
# Providers a workspace can buy through (issue 7's checkout and portal).
BILLING_PROVIDERS = ("stripe", "polar")


def ref(name: str) -> Schema:
    return {"$ref": REF + name}


def obj(properties: dict[str, Schema], *, optional: tuple[str, ...] = ()) -> Schema:
    """A closed object: every property listed, all required but `optional`."""
    return {
        "type": "object",
        "properties": properties,
        "required": [name for name in properties if name not in optional],
        "additionalProperties": False,
    }


def enum(values: tuple[str | None, ...] | list[str], description: str = "") -> Schema:
    schema: Schema = {"enum": list(values)}
    if description:
        schema["description"] = description
    return schema


def text(description: str = "", **more: Any) -> Schema:
    """A non-blank string: the API refuses empty and whitespace-only fields."""
    schema: Schema = {"type": "string", "minLength": 1, "pattern": r"\S", **more}
    if description:
        schema["description"] = description
    return schema


def nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


SEQ: Schema = {"type": "integer", "minimum": 1, "description": "a position in the event log"}
AS_OF_SEQ: Schema = {
    "type": "integer",
    "minimum": 0,
    "description": "the last log seq this answer reflects",
}
TIME: Schema = {"type": "string", "format": "date-time", "description": "UTC ISO 8601"}
PATH_SEGMENT: Schema = {
    "type": "string",
    "minLength": 1,
    # One path segment as the app routes it: no `/`, no line break (a mount's `.*` stops
    # there), and not a dot segment that clients fold away. Anything else is a 404.
    "pattern": r"^(?!\.\.?$)[^/\n]+$",
}


def schemas(settings: Settings) -> dict[str, Schema]:
    """The component schemas, with the configured tiers and features as enums."""
    tiers = list(settings.tiers)
    features = sorted({f for fs in settings.tiers.values() for f in fs})
    tier = enum(tiers, "a configured tier, lowest first")
    feature = enum(features, "a configured feature")
    return {
        "Error": obj(
            {"error": {"type": "string"}, "detail": text("what went wrong, for a person")}
        ),
        "Seq": obj({"seq": SEQ}),
        "WebhookAck": obj(
            {
                "status": enum(("accepted", "duplicate")),
                "seq": {**SEQ, "description": "the event's seq (the original's for a duplicate)"},
            }
        ),
        "Subscription": obj(
            {
                "provider": enum(BILLING_PROVIDERS),
                "id": {"type": "string"},
                "customer": nullable({"type": "string"}),
                "tier": nullable(tier),
                "status": enum(SUBSCRIPTION_STATUSES),
                "price": nullable(
                    {"type": "string", "description": "Stripe price id, or Polar product id"}
                ),
                "interval": nullable(enum(INTERVALS)),
                "current_period_end": nullable(TIME),
                "cancel_at_period_end": {"type": "boolean"},
            }
        ),
        "Override": obj(
            {
                "kind": enum(OVERRIDE_KINDS),
                "tier": {"type": "string"},
                "expires_at": nullable(TIME),
                "expired": {"type": "boolean"},
                "seq": SEQ,
            }
        ),
        "Entitlement": obj(
            {
                "workspace_id": {"type": "string"},
                "tier": tier,
                "source": enum(SOURCES),
                "status": enum(STATUSES),
                "attention": enum(ATTENTION),
                "next_action": enum(NEXT_ACTIONS),
                "features": obj(
                    {
                        "included": {"type": "array", "items": feature},
                        "unavailable": {"type": "array", "items": feature},
                    }
                ),
                "seats": nullable(
                    obj({"purchased": {"type": "integer", "minimum": 0}})
                    | {"description": "null: no seat limit"}
                ),
                "subscriptions": {"type": "array", "items": ref("Subscription")},
                "overrides": {"type": "array", "items": ref("Override")},
                "problems": {
                    "type": "array",
                    "items": {"type": "string", "pattern": "^(unknown_price|mode_mismatch):"},
                },
                "enforcement": enum(ENFORCEMENT_MODES),
                "as_of_seq": AS_OF_SEQ,
            }
        ),
        "HistoryEntry": obj(
            {
                "seq": SEQ,
                "at": TIME,
                "cause": obj(
                    {
                        "provider": enum(LOG_PROVIDERS),
                        "type": {"type": "string"},
                        "event_id": {"type": "string"},
                    }
                ),
                "tier": {"type": "string"},
                "source": enum(SOURCES),
                "status": enum(STATUSES),
            }
        ),
        "CheckRequest": {
            "type": "object",
            "properties": {
                "action": {
                    "anyOf": [
                        enum([*features, SEAT_ACTION], "a configured feature or invite_member"),
                        {"type": "string", "description": "anything else: 400 unknown_action"},
                    ]
                },
                "seats_in_use": nullable(
                    {
                        "type": "integer",
                        "minimum": 0,
                        "description": f"members now; required for {SEAT_ACTION}",
                    }
                ),
            },
            "required": ["action"],
        },
        "CheckAnswer": obj(_check_fields(tier)),
        "CheckDenial": obj(
            {
                **_check_fields(tier),
                "error": enum(("billing_required",)),
                "detail": text(),
            }
        ),
        "OverrideRequest": {
            "type": "object",
            "properties": {
                "workspace_id": text(),
                "kind": enum(OVERRIDE_KINDS),
                "tier": tier,
                "expires_at": nullable(
                    {"type": "string", "format": "date-time", "description": "with a timezone"}
                ),
                "reason": text(),
                "actor": text(),
            },
            "required": ["workspace_id", "kind", "tier", "reason", "actor"],
        },
        "RevokeRequest": {
            "type": "object",
            "properties": {"reason": text(), "actor": text()},
            "required": ["reason", "actor"],
        },
        "EnforcementRequest": {
            "type": "object",
            "properties": {
                "mode": enum(ENFORCEMENT_MODES),
                "approved_by": text(),
                "reason": text(),
            },
            "required": ["mode", "approved_by", "reason"],
        },
        "Quarantined": obj(
            {
                "seq": SEQ,
                "provider": enum(LOG_PROVIDERS),
                "event_id": {"type": "string"},
                "type": {"type": "string"},
                "error": {"type": "string", "description": "why the reducer failed (bounded)"},
            }
        ),
        "CheckoutRequest": {
            "type": "object",
            "properties": {
                "provider": enum(BILLING_PROVIDERS),
                "tier": tier,
                "interval": enum(("month", "year")),
                "seats": {"type": "integer", "minimum": 1},
                "success_url": text(),
                "cancel_url": text(),
                "actor_role": text(),
            },
            "required": ["provider", "tier", "interval", "success_url", "cancel_url", "actor_role"],
        },
        "CheckoutSession": obj(
            {"provider": enum(BILLING_PROVIDERS), "session_id": {"type": "string"}, "url": text()}
        ),
        "PortalRequest": {
            "type": "object",
            "properties": {"return_url": text(), "actor_role": text()},
            "required": ["return_url", "actor_role"],
        },
        "PortalSession": obj({"url": text()}),
        "Health": obj({"status": enum(("ok",))}),
        "Readiness": obj(
            {
                "status": enum(("ready", "not_ready")),
                "checks": {
                    "type": "object",
                    "description": "`ok`, or what is wrong, per check (log, projections, broker)",
                    "additionalProperties": {"type": "string"},
                },
                "failing": {
                    "type": "array",
                    "description": "the checks that are not `ok`, sorted (only when not ready)",
                    "items": enum(("log", "projections", "broker")),
                },
                "rebuilding": obj(
                    {"from_version": {"type": "integer"}, "to_version": {"type": "integer"}}
                ),
            },
            optional=("failing", "rebuilding"),
        ),
    }


def _check_fields(tier: Schema) -> dict[str, Schema]:
    return {
        "workspace_id": {"type": "string"},
        "action": {"type": "string"},
        "allowed": {"type": "boolean"},
        "decision": enum(DECISIONS),
        "reason": enum(REASONS),
        "required_tier": nullable(tier),
        "tier": tier,
        "next_action": enum(NEXT_ACTIONS),
        "enforcement": enum(ENFORCEMENT_MODES),
        "as_of_seq": AS_OF_SEQ,
    }
