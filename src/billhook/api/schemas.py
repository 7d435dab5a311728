"""The shapes of billhook's request bodies and answers: one msgspec Struct each.

A request body is decoded and validated by its Struct (`api.bodies`), an answer
is built as its Struct and encoded from it (:func:`respond`), and the component
schemas of `/openapi.json` are generated from the same Structs (:func:`components`).

Answers are closed objects (`additionalProperties: false`): the tests that check
every answer against the document catch one that drifts. Request bodies ignore
fields they do not know. Tiers and features, which the operator configures, are
strings with the configured values as `examples`, never enums: a generated client
keeps working when a tier is added.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType
from starlette.responses import Response

from billhook.config import ENFORCEMENT_MODES, INTERVALS, SEAT_ACTION, Settings
from billhook.domain import resolver
from billhook.domain.facts import OVERRIDE_KINDS
from billhook.domain.times import to_us
from billhook.providers import sessions
from billhook.providers.stripe.accounts import split

Schema = dict[str, Any]

# Where a component schema lives in the document, for `$ref`.
REF = "#/components/schemas/"
# Marks a string whose `examples` are configured values (`tiers`, `features`, `actions`).
CONFIGURED = "x-billhook-configured"
# Every value of `source` (docs/api.md).
SOURCES = ("default", resolver.SITE_OWNER, *resolver.SOURCE_RANK)
# Normalized subscription statuses (docs/entitlements.md).
SUBSCRIPTION_STATUSES = (
    *("trialing", "active", "canceling", "past_due", "unpaid"),
    *("incomplete", "paused", "inactive"),
)
# A workspace's status: its winner's, its latest subscription's, or `none` (never subscribed).
STATUSES = (*SUBSCRIPTION_STATUSES, "none")
NEXT_ACTIONS = (
    *("none", "upgrade", "complete_checkout", "update_payment_method"),
    *("resume_subscription", "resubscribe", "contact_support"),
)


def _enum(*values: str | None) -> Meta:
    """An answer's closed set of values: documented only, answers are never decoded."""
    return Meta(extra_json_schema={"enum": list(values)})


Source = Annotated[str, _enum(*SOURCES)]
SubscriptionStatus = Annotated[str, _enum(*SUBSCRIPTION_STATUSES)]
Status = Annotated[str, _enum(*STATUSES)]
Attention = Annotated[str | None, _enum(None, "past_due", "unpaid", "incomplete")]
NextAction = Annotated[str, _enum(*NEXT_ACTIONS)]
# A fail-closed subscription (`unknown_price:<id>`, `mode_mismatch:<event id>`), a missed
# provider event (`final_event_missing:<id>`, `stale_period:<id>`), or an event about the
# workspace that could not be applied (`quarantined:<seq>`).
Problem = Annotated[
    str,
    Meta(
        pattern="^((unknown_price|mode_mismatch|final_event_missing|stale_period):"
        "|quarantined:[0-9]+$)"
    ),
]
Decision = Annotated[str, _enum("allow", "would_deny", "deny")]
Reason = Annotated[str | None, _enum(None, "tier_required", "billing_attention", "seat_limit")]
LogProvider = Annotated[str, _enum("stripe", "polar", "billhook")]
Interval = Annotated[str, _enum(*INTERVALS)]
if TYPE_CHECKING:  # what a request may say, strings to the type checker...
    BillingProvider = str
    CheckoutInterval = str
    OverrideKind = str
    Enforcement = str
else:  # ...and enums that msgspec enforces, made from the one tuple of each.
    BillingProvider = Literal[sessions.PROVIDERS]
    CheckoutInterval = Literal[sessions.INTERVALS]
    OverrideKind = Literal[OVERRIDE_KINDS]
    Enforcement = Literal[ENFORCEMENT_MODES]

Text = Annotated[str, Meta(min_length=1, pattern=r"\S")]
# A count in a request: zero or more, and a signed 64-bit integer (msgspec's widest bound).
Count = Annotated[int, Meta(ge=0, le=2**63 - 1)]
LogSeq = Annotated[int, Meta(ge=1, description="a position in the event log")]
AsOfSeq = Annotated[int, Meta(ge=0, description="the last log seq this answer reflects")]
Time = Annotated[str, Meta(description="UTC ISO 8601", extra_json_schema={"format": "date-time"})]


def _configured(values: str, description: str | None = None) -> Meta:
    """A string whose `examples` are the configured `values`, never a closed enum."""
    return Meta(description=description, extra_json_schema={CONFIGURED: values})


Tier = Annotated[str, _configured("tiers", "a configured tier, lowest first")]
Feature = Annotated[str, _configured("features", "a configured feature")]


class Answer(Struct, forbid_unknown_fields=True, gc=False):
    """An answer: a closed object."""


class Body(Struct, gc=False):
    """A request body: unknown fields are ignored."""


# -- answers --------------------------------------------------------------------------------


class Error(Answer):
    error: str
    detail: Annotated[Text, Meta(description="what went wrong, for a person")]


class Seq(Answer):
    seq: LogSeq


class WebhookAck(Answer):
    status: Literal["accepted", "duplicate"]
    seq: Annotated[int, Meta(ge=1, description="the event's seq (the original's for a duplicate)")]


class Subscription(Answer):
    provider: BillingProvider
    id: Annotated[str, Meta(description="the provider's subscription id")]
    customer: str | None
    tier: Tier | None
    status: SubscriptionStatus
    price: Annotated[str, Meta(description="Stripe price id, or Polar product id")] | None
    interval: Interval | None
    current_period_end: Time | None
    cancel_at_period_end: bool
    account: Annotated[
        str | None,
        Meta(description="the Stripe Connect account it lives in; null: the platform's own"),
    ]


class Override(Answer):
    kind: OverrideKind
    tier: Tier
    expires_at: Time | None
    expired: bool
    seq: LogSeq


class Features(Answer):
    included: tuple[Feature, ...]
    unavailable: tuple[Feature, ...]


class Seats(Answer):
    purchased: Annotated[int, Meta(ge=0)]


class Entitlement(Answer):
    workspace_id: str
    tier: Tier
    source: Source
    status: Status
    attention: Attention
    next_action: NextAction
    features: Features
    seats: Annotated[Seats | None, Meta(description="null: no seat limit")]
    subscriptions: tuple[Subscription, ...]
    overrides: tuple[Override, ...]
    problems: tuple[Problem, ...]
    enforcement: Enforcement
    as_of_seq: AsOfSeq


class Cause(Answer):
    provider: LogProvider
    type: str
    event_id: str


class HistoryEntry(Answer):
    seq: LogSeq
    at: Time
    cause: Cause
    tier: Tier
    source: Source
    status: Status


# -- the change feed -------------------------------------------------------------------------

Cursor = Annotated[
    str,
    Meta(pattern=r"^[0-9]+-[0-9]+$", description="an opaque position in the change feed"),
]


class EventCause(Answer, tag="event", tag_field="kind"):
    """The logged event that changed the answer."""

    provider: LogProvider
    type: str
    event_id: str


class TimeCause(Answer, tag="time", tag_field="kind"):
    """A time rule fired: an override expired, a grace period or a subscription ended."""


class ChangeFeatures(Answer):
    included: tuple[Feature, ...]


class EntitlementChange(Answer, tag="entitlement", tag_field="kind"):
    """A workspace's entitlement as `GET .../entitlements` answered it from then on."""

    cursor: Cursor
    workspace_id: str
    seq: AsOfSeq
    at: Time
    cause: EventCause | TimeCause
    tier: Tier
    source: Source
    status: Status
    attention: Attention
    next_action: NextAction
    features: ChangeFeatures
    seats: Annotated[Seats | None, Meta(description="null: no seat limit")]


class EnforcementChange(Answer, tag="enforcement", tag_field="kind"):
    """The enforcement mode changed: every workspace's check answers may differ."""

    cursor: Cursor
    workspace_id: None
    seq: LogSeq
    at: Time
    cause: EventCause
    enforcement: Enforcement


class Changes(Answer):
    changes: tuple[EntitlementChange | EnforcementChange, ...]
    next: Annotated[Cursor, Meta(description="pass it as `after` to read on")]


class CheckAnswer(Answer):
    workspace_id: str
    action: str
    allowed: bool
    decision: Decision
    reason: Reason
    required_tier: Tier | None
    tier: Tier
    next_action: NextAction
    enforcement: Enforcement
    as_of_seq: AsOfSeq


class CheckDenial(CheckAnswer):
    error: Literal["billing_required"]
    detail: Text


class Quarantined(Answer):
    seq: LogSeq
    provider: LogProvider
    event_id: str
    type: str
    error: Annotated[str, Meta(description="why the reducer failed (bounded)")]


# -- operator reports (the console's too) ---------------------------------------------------

BlockReason = Annotated[str, _enum("tier_required", "billing_attention", "seat_limit")]
Day = Annotated[str, Meta(pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$", description="a UTC day")]


class ImpactLine(Answer):
    action: str
    reason: BlockReason
    workspaces: Annotated[int, Meta(ge=1, description="workspaces refused at least once")]
    checks: Annotated[int, Meta(ge=1, description="checks answered deny or would_deny")]


class ImpactWorkspace(Answer):
    workspace_id: str
    tier: Tier
    status: Status
    next_action: NextAction
    checks: Annotated[int, Meta(ge=1)]
    actions: tuple[str, ...]


class Impact(Answer):
    days: Annotated[int, Meta(ge=1)]
    since: Day
    enforcement: Enforcement
    lines: tuple[ImpactLine, ...]
    workspaces: tuple[ImpactWorkspace, ...]


class LaunchGate(Answer):
    gate: str
    ok: bool
    detail: Annotated[str, Meta(description="what was found, ids and counts only")]
    evidence: Annotated[tuple[str, ...], Meta(description="ids and seqs, never payloads")]


class LaunchReport(Answer):
    ready: bool
    gates: tuple[LaunchGate, ...]


class CheckoutSession(Answer):
    provider: BillingProvider
    session_id: str
    url: Text


class PortalSession(Answer):
    url: Text


class Health(Answer):
    status: Literal["ok"]


class Rebuilding(Answer):
    from_version: int
    to_version: int


class Readiness(Answer):
    status: Literal["ready", "not_ready"]
    checks: Annotated[
        dict[str, str],
        Meta(description="`ok`, or what is wrong, per check (log, projections, broker)"),
    ]
    failing: (
        Annotated[
            tuple[Literal["log", "projections", "broker"], ...],
            Meta(description="the checks that are not `ok`, sorted (only when not ready)"),
        ]
        | UnsetType
    ) = UNSET
    rebuilding: Rebuilding | UnsetType = UNSET


# -- request bodies -------------------------------------------------------------------------


class CheckRequest(Body):
    # Not `Text`: the check route refuses a blank action itself, cheaper than a regex.
    action: Annotated[
        str,
        Meta(
            min_length=1,
            description=f"a configured feature or {SEAT_ACTION}; anything else: 400 unknown_action",
            extra_json_schema={"pattern": r"\S", CONFIGURED: "actions"},
        ),
    ]
    seats_in_use: (
        Annotated[Count, Meta(description=f"members now; required for {SEAT_ACTION}")] | None
    ) = None


class OverrideRequest(Body, kw_only=True):
    workspace_id: Text
    kind: OverrideKind
    tier: Annotated[Text, _configured("tiers")]
    expires_at: (
        Annotated[
            Text, Meta(description="with a timezone", extra_json_schema={"format": "date-time"})
        ]
        | None
    ) = None
    reason: Text
    actor: Text


class RevokeRequest(Body):
    reason: Text
    actor: Text


class EnforcementRequest(Body):
    mode: Enforcement
    approved_by: Text
    reason: Text


class CheckoutRequest(Body, kw_only=True):
    provider: BillingProvider
    tier: Annotated[Text, _configured("tiers")]
    interval: CheckoutInterval
    seats: Count | None = None
    success_url: Text
    cancel_url: Text
    actor_role: Text


class PortalRequest(Body):
    return_url: Text
    actor_role: Text


def _models(base: type[Struct]) -> list[type[Struct]]:
    return [model for sub in base.__subclasses__() for model in (sub, *_models(sub))]


# Every Struct the document describes, answers first.
MODELS = (*_models(Answer), *_models(Body))


def ref(model: type[Struct]) -> Schema:
    return {"$ref": REF + model.__name__}


def components(settings: Settings) -> dict[str, Schema]:
    """The component schemas of every model, with the configured values as `examples`."""
    _, schemas = msgspec.json.schema_components(MODELS, ref_template=REF + "{name}")
    features = sorted({f for fs in settings.tiers.values() for f in fs})
    examples = {"tiers": list(settings.tiers), "features": features}
    examples["actions"] = [*features, SEAT_ACTION]
    _add_examples(schemas, examples)
    return schemas


def _add_examples(node: object, examples: dict[str, list[str]]) -> None:
    if isinstance(node, dict):
        if CONFIGURED in node:
            node["examples"] = examples[node.pop(CONFIGURED)]
        for value in node.values():
            _add_examples(value, examples)
    elif isinstance(node, list):
        for value in node:
            _add_examples(value, examples)


# -- building answers -----------------------------------------------------------------------

# Answers are encoded with one shared encoder (cheaper than one per call).
encode = msgspec.json.Encoder().encode


def respond(answer: Answer | Sequence[Answer], status_code: int = 200) -> Response:
    """The JSON answer `answer`, encoded from its Struct."""
    return Response(encode(answer), status_code=status_code, media_type="application/json")


def entitlement_answer(entitlement: resolver.Entitlement, now: datetime) -> Entitlement:
    """What `GET .../entitlements` answers for `entitlement`, with overrides' expiry at `now`."""
    e, now_us = entitlement, to_us(now)
    # Positional arguments, in field order: this runs on every read that misses the cache.
    return Entitlement(
        e.workspace_id,
        e.tier,
        e.source,
        e.status,
        e.attention,
        e.next_action,
        Features(e.included, e.unavailable),
        None if e.seats is None else Seats(e.seats),
        tuple(_subscription_answer(v) for v in e.subscriptions),
        # An override in force always names its tier (`providers.billhook` decodes it so).
        tuple(
            Override(o.kind, o.tier or "", o.expires_at, resolver.expired(o, now_us), o.seq)
            for o in e.overrides
        ),
        e.problems,
        e.enforcement,
        e.as_of_seq,
    )


def _subscription_answer(v: resolver.SubscriptionView) -> Subscription:
    """A subscription as answers show it: a connected account's ids bare, its account apart."""
    account, sub_id = split(v.fact.id) if v.fact.provider == "stripe" else (None, v.fact.id)
    customer = v.fact.customer
    if account is not None and customer is not None:
        customer = split(customer)[1]
    return Subscription(
        v.fact.provider,
        sub_id,
        customer,
        v.tier,
        v.fact.status,
        v.price,
        v.interval,
        v.current_period_end,
        v.fact.cancel_at_period_end,
        account,
    )


# -- outbound webhooks (SPEC §6b): endpoints and deliveries ---------------------------------

EndpointSource = Annotated[str, _enum("config", "api")]
EndpointState = Annotated[str, _enum("ok", "failing", "no_secret")]
DeliveryStatus = Annotated[str, _enum("pending", "sending", "delivered", "failed", "canceled")]
EndpointId = Annotated[str, Meta(description="names the endpoint everywhere; never its URL")]
WebhookSecret = Annotated[
    str,
    Meta(
        pattern="^whsec_",
        description="the Standard Webhooks signing secret: shown this once, never again",
    ),
]
DeliveryId = Annotated[int, Meta(ge=1)]
# Most delivery ids one redelivery may name.
MAX_REDELIVER_IDS = 1000


class EndpointCreated(Answer):
    id: EndpointId
    url: str
    workspaces: Annotated[tuple[str, ...], Meta(description="empty: every workspace")]
    source: Literal["api"]
    secret: WebhookSecret
    seq: LogSeq


class EndpointStatus(Answer):
    """An endpoint, configured or added, and how its deliveries fare. Never its secrets."""

    id: EndpointId
    url: str
    workspaces: Annotated[tuple[str, ...], Meta(description="empty: every workspace")]
    source: EndpointSource
    status: Annotated[
        EndpointState,
        Meta(
            description="`failing`: a delivery was given up on since the last success; "
            "`no_secret`: an added endpoint whose secrets were lost, sent nothing until rotated"
        ),
    ]
    failing_since: Time | None
    last_success_at: Time | None
    pending: Annotated[int, Meta(ge=0, description="deliveries not yet delivered or given up")]
    oldest_pending_age_s: Annotated[int, Meta(ge=0)] | None


class EndpointRemoved(Answer):
    id: EndpointId
    seq: LogSeq


class SecretRotated(Answer):
    id: EndpointId
    secret: WebhookSecret


class Delivery(Answer):
    """One change to one endpoint, as the delivery log keeps it: never its body."""

    id: DeliveryId
    endpoint: EndpointId
    webhook_id: Annotated[str, Meta(description="the `webhook-id` header: stable per change")]
    cursor: Cursor
    workspace: str
    status: DeliveryStatus
    attempts: Annotated[int, Meta(ge=0)]
    last_status: Annotated[int | None, Meta(description="the last answer's HTTP status")]
    last_error: Annotated[str | None, Meta(description="why the last attempt failed (bounded)")]
    next_attempt_at: Time | None
    give_up_at: Time
    created_at: Time
    updated_at: Time


class Deliveries(Answer):
    deliveries: tuple[Delivery, ...]
    next_before: Annotated[
        int | None, Meta(description="pass it as `before` for the next page; null: no more")
    ]


class DeliveryAttempt(Answer):
    n: Annotated[int, Meta(ge=1)]
    at: Time
    status: Annotated[int | None, Meta(description="HTTP status; null: no answer")]
    error: str | None
    duration_ms: Annotated[int, Meta(ge=0)]


class DeliveryDetail(Delivery):
    attempt_log: Annotated[tuple[DeliveryAttempt, ...], Meta(description="oldest first")]


class Redelivered(Answer):
    redelivered: Annotated[int, Meta(ge=0, description="deliveries sent again")]


class EndpointRequest(Body, kw_only=True):
    url: Annotated[
        Text,
        Meta(
            description="absolute http or https URL",
            extra_json_schema={"format": "uri", "maxLength": 2048},
        ),
    ]
    workspaces: (
        Annotated[
            tuple[Text, ...],
            Meta(
                description="only changes about these; absent or empty: every workspace",
                extra_json_schema={"maxItems": 1000},
            ),
        ]
        | None
    ) = None
    actor: Text
    reason: Text


class RotateRequest(Body):
    expire_previous_after_s: Annotated[
        int,
        Meta(ge=0, le=604_800, description="the previous secrets keep signing this long"),
    ] = 86_400


class RedeliverRequest(Body, kw_only=True):
    ids: (
        Annotated[
            tuple[Count, ...],
            Meta(description="these deliveries", extra_json_schema={"maxItems": MAX_REDELIVER_IDS}),
        ]
        | None
    ) = None
    since: (
        Annotated[
            Text,
            Meta(
                description="every delivery created at or after this time (UTC if no timezone)",
                extra_json_schema={"format": "date-time"},
            ),
        ]
        | None
    ) = None


# The models above join those the document describes.
MODELS = (*_models(Answer), *_models(Body))
