"""Subscription lifecycles for the generated log: who subscribes, and what happens to them.

:func:`plan` decides, from one seeded `random.Random`, every subscription's
provider, how its workspace is linked, its price, and the episodes of its
life (the start, renewals, seat changes, payment failures recovered or not,
cancellations), so that the whole log has exactly the number of events asked.
:func:`bench.episodes.timeline` then walks one subscription's episodes and
yields a :class:`Snap` per event: its type, time and the subscription's state
at that moment. Snaps are small; bench/payloads.py renders them into bodies.

Episodes and the events each sends, per provider (the sizes :func:`plan` counts):

- Stripe start by Checkout: customer.created, customer.subscription.created
  (incomplete), invoice.created/.finalized, payment_intent.created/.succeeded,
  charge.succeeded, invoice.paid/.payment_succeeded,
  customer.subscription.updated (active), checkout.session.completed,
  customer.updated (12); with a trial no payment is taken, but
  customer.subscription.trial_will_end comes 3 days before its end (9).
  Start by the API: the same without the Checkout events (9, trial 7).
- Stripe renewal: invoice.upcoming, customer.subscription.updated,
  invoice.created, then an hour later invoice.finalized, the payment intent,
  charge and invoice payment events (9). Seat or plan change: the update plus
  a proration invoice paid at once (8). Failed renewal recovered 3 days later
  (13), or lost: retries fail, then unpaid and deleted, or deleted and the
  invoice marked uncollectible (13). Cancel at period end, deleted at its end
  (2); cancel then uncancel (2); deleted at once (1); customer.updated (1).
- Polar start: customer.created, order.created, subscription.created,
  subscription.active (.updated when trialing), order.paid,
  customer.state_changed (6). Renewal (4), seat or product change (4),
  past due recovered (7) or revoked (7), cancel at period end then revoked
  (6), cancel then uncancel (4), revoked at once (3), customer.updated (1).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from typing import NamedTuple

STRIPE = "stripe"
POLAR = "polar"

# Episode kinds.
START = "start"
RENEWAL = "renewal"
CHANGE = "change"
RECOVERED = "recovered"
UNCANCEL = "uncancel"
CUSTOMER = "customer"
CANCEL_AT_END = "cancel_at_end"
LOST = "lost"
DELETE = "delete"

# How a subscription's workspace is found: Stripe Checkout's client_reference_id,
# the Stripe customer's metadata, the subscription's metadata, Polar's external_id.
LINK_CHECKOUT = "checkout"
LINK_CUSTOMER = "customer_metadata"
LINK_SUBSCRIPTION = "subscription_metadata"
LINK_EXTERNAL_ID = "external_id"

# Events each episode sends, by provider (starts are counted by start_size).
EPISODE_SIZES: dict[str, dict[str, int]] = {
    STRIPE: {
        RENEWAL: 9,
        CHANGE: 8,
        RECOVERED: 13,
        UNCANCEL: 2,
        CUSTOMER: 1,
        CANCEL_AT_END: 2,
        LOST: 13,
        DELETE: 1,
    },
    POLAR: {
        RENEWAL: 4,
        CHANGE: 4,
        RECOVERED: 7,
        UNCANCEL: 4,
        CUSTOMER: 1,
        CANCEL_AT_END: 6,
        LOST: 7,
        DELETE: 3,
    },
}
# What happens between start and end, and how often (weights).
MIDDLE_WEIGHTS: dict[str, float] = {
    RENEWAL: 0.68,
    CHANGE: 0.10,
    RECOVERED: 0.08,
    UNCANCEL: 0.04,
    CUSTOMER: 0.10,
}
# How subscriptions end, when they do (weights), and the share that ends.
TERMINAL_WEIGHTS: dict[str, float] = {CANCEL_AT_END: 0.5, LOST: 0.25, DELETE: 0.25}
TERMINAL_SHARE = 0.35
POLAR_SHARE = 0.2
TRIAL_SHARE = 0.15
# Stripe link modes (weights); Polar: external_id for 70 %, subscription metadata else.
STRIPE_LINKS: dict[str, float] = {LINK_CHECKOUT: 0.55, LINK_CUSTOMER: 0.35, LINK_SUBSCRIPTION: 0.1}
POLAR_EXTERNAL_ID_SHARE = 0.7
# Checkout subscriptions that also carry the workspace in their own metadata.
CHECKOUT_WITH_METADATA_SHARE = 0.5

# Stripe prices: (product, unit amount in cents, interval); the bench config maps them.
STRIPE_PRICES: dict[str, tuple[str, int, str]] = {
    "price_team_monthly": ("prod_TeamSeats0001", 2000, "month"),
    "price_team_yearly": ("prod_TeamSeats0001", 20000, "year"),
    "price_enterprise_yearly": ("prod_Enterprise001", 90000, "year"),
}
STRIPE_PRICE_WEIGHTS: dict[str, float] = {
    "price_team_monthly": 0.7,
    "price_team_yearly": 0.2,
    "price_enterprise_yearly": 0.1,
}
# Polar products: (tier, interval, seat based); the bench config maps them.
POLAR_TEAM = "4b0c6a1e-2f3d-4e5a-8b7c-9d0e1f2a3b01"
POLAR_ENTERPRISE = "4b0c6a1e-2f3d-4e5a-8b7c-9d0e1f2a3b02"
POLAR_PRODUCTS: dict[str, tuple[str, str, bool]] = {
    POLAR_TEAM: ("team", "month", True),
    POLAR_ENTERPRISE: ("enterprise", "year", False),
}
POLAR_TEAM_SHARE = 0.8

DAY = 86_400
PERIOD_S = {"month": 30 * DAY, "year": 365 * DAY}
TRIAL_S = 14 * DAY
# Subscriptions start over a year from this moment (2025-06-01T00:00:00Z).
EPOCH = 1_748_736_000
START_SPAN_S = 365 * DAY
# The largest episode: while more budget than this is left, any episode fits.
MAX_EPISODE = max(max(sizes.values()) for sizes in EPISODE_SIZES.values())


@dataclass
class Subscription:
    """One subscription's plan: who, how linked, what price, and what happens to it."""

    index: int
    provider: str
    link: str
    trial: bool
    price: str
    quantity: int
    start: int
    metadata_on_subscription: bool
    middle: list[tuple[str, float]] = field(default_factory=list)
    terminal: tuple[str, float] | None = None

    @property
    def workspace(self) -> str:
        """The workspace the subscription pays for."""
        return f"ws_{self.index:07d}"

    @property
    def episodes(self) -> list[tuple[str, float]]:
        """Middle episodes in the order they happen, then the terminal one if any."""
        return self.middle + ([self.terminal] if self.terminal else [])


class Snap(NamedTuple):
    """One event to render: when, what, and the subscription's state at that moment.

    `number` is the subscription's index, `n` the event's within it. Snaps
    compare as tuples, and (created, number, n) is unique: they merge in time
    order without ever comparing the subscriptions.
    """

    created: int
    number: int
    n: int
    type: str
    sub: Subscription
    status: str
    quantity: int
    price: str
    cancel_at_period_end: bool
    canceled_at: int | None
    ended_at: int | None
    period_start: int
    period_end: int
    cycle: int
    attempt: int
    reason: str
    previous: str


def start_size(sub: Subscription) -> int:
    """Events the start episode of `sub` sends."""
    if sub.provider == POLAR:
        return 6
    if sub.link == LINK_CHECKOUT:
        return 9 if sub.trial else 12
    return 7 if sub.trial else 9


def episode_size(sub: Subscription, kind: str) -> int:
    """Events the episode `kind` of `sub` sends."""
    return EPISODE_SIZES[sub.provider][kind]


def _weighted(rng: random.Random, weights: dict[str, float]) -> str:
    """One key of `weights`, drawn with their weights."""
    return rng.choices(list(weights), list(weights.values()))[0]


def _new_subscription(index: int, rng: random.Random) -> Subscription:
    """A subscription's provider, link, price and start, drawn from `rng`."""
    polar = rng.random() < POLAR_SHARE
    if polar:
        link = LINK_EXTERNAL_ID if rng.random() < POLAR_EXTERNAL_ID_SHARE else LINK_SUBSCRIPTION
        price = POLAR_TEAM if rng.random() < POLAR_TEAM_SHARE else POLAR_ENTERPRISE
    else:
        link = _weighted(rng, STRIPE_LINKS)
        price = _weighted(rng, STRIPE_PRICE_WEIGHTS)
    metadata = link == LINK_SUBSCRIPTION or (
        link == LINK_CHECKOUT and rng.random() < CHECKOUT_WITH_METADATA_SHARE
    )
    return Subscription(
        index=index,
        provider=POLAR if polar else STRIPE,
        link=link,
        trial=rng.random() < TRIAL_SHARE,
        price=price,
        quantity=rng.choice((1, 1, 2, 3, 5, 8, 12, 20)),
        start=EPOCH + int(rng.random() * START_SPAN_S),
        metadata_on_subscription=metadata,
    )


def plan(events: int, subscriptions: int, seed: int) -> list[Subscription]:
    """Every subscription's plan, with exactly `events` events in all (deterministic)."""
    if subscriptions < 1:
        raise ValueError("at least one subscription is needed")
    rng = random.Random(seed)
    subs = [_new_subscription(i, rng) for i in range(subscriptions)]
    budget = events - sum(start_size(sub) for sub in subs)
    if budget < 0:
        raise ValueError(
            f"{subscriptions:,} subscriptions need at least {events - budget:,} events to start"
        )
    for sub in subs:
        if rng.random() < TERMINAL_SHARE:
            kind = _weighted(rng, TERMINAL_WEIGHTS)
            if episode_size(sub, kind) <= budget:
                sub.terminal = (kind, rng.random())
                budget -= episode_size(sub, kind)
    while budget > 0:
        sub = subs[rng.randrange(subscriptions)]
        kind = _weighted(rng, MIDDLE_WEIGHTS) if budget >= MAX_EPISODE else CUSTOMER
        sub.middle.append((kind, rng.random()))
        budget -= episode_size(sub, kind)
    return subs


class State:
    """A subscription's state while its timeline is walked; :meth:`snap` records an event."""

    def __init__(self, sub: Subscription) -> None:
        """The state at the subscription's start."""
        self.sub = sub
        self.t = sub.start
        self.n = 0
        self.status = "trialing" if sub.trial else "active"
        self.quantity = sub.quantity
        self.price = sub.price
        self.cancel_at_period_end = False
        self.canceled_at: int | None = None
        self.ended_at: int | None = None
        self.period_start = sub.start
        self.period_end = sub.start + (TRIAL_S if sub.trial else self.period_s)
        self.cycle = 0
        self.attempt = 0
        # Why the current invoice or order was made (Stripe's and Polar's billing_reason).
        self.reason = "subscription_create"

    @property
    def interval(self) -> str:
        """The billing interval of the current price: `month` or `year`."""
        if self.sub.provider == POLAR:
            return POLAR_PRODUCTS[self.price][1]
        return STRIPE_PRICES[self.price][2]

    @property
    def period_s(self) -> int:
        """Seconds in one billing period of the current price."""
        return PERIOD_S[self.interval]

    def snap(self, event_type: str, at: int | None = None, previous: str = "") -> Snap:
        """The event `event_type` now (or at `at`, never before the previous event)."""
        if at is not None:
            self.t = max(self.t, at)
        self.n += 1
        return Snap(
            self.t,
            self.sub.index,
            self.n,
            event_type,
            self.sub,
            self.status,
            self.quantity,
            self.price,
            self.cancel_at_period_end,
            self.canceled_at,
            self.ended_at,
            self.period_start,
            self.period_end,
            self.cycle,
            self.attempt,
            self.reason,
            previous,
        )

    def midway(self, u: float) -> int:
        """A moment between now and the period's end, `u` of the way (0 <= u < 1)."""
        return self.t + int(u * 0.9 * max(self.period_end - self.t, 0))

    def renew(self) -> str:
        """Start the next period; the previous attributes of the update that says so."""
        before = {"status": self.status} if self.status == "trialing" else {}
        self.t = max(self.t, self.period_end)
        self.period_start = self.period_end
        self.period_end = self.period_start + self.period_s
        if self.status == "trialing":
            self.status = "active"
        self.new_invoice("subscription_cycle")
        if self.sub.provider == POLAR:
            return json.dumps({**before, "current_period_start": self.period_start - self.period_s})
        return json.dumps({**before, "latest_invoice": invoice_id(self.sub.index, self.cycle - 1)})

    def new_invoice(self, reason: str) -> None:
        """The next invoice (Stripe) or order (Polar) of the subscription, made for `reason`."""
        self.cycle += 1
        self.attempt = 0
        self.reason = reason

    def change_price(self, price: str) -> None:
        """Switch to `price`; a new interval starts a new billing period now (Stripe, Polar)."""
        interval = self.interval
        self.price = price
        if self.interval != interval:
            self.period_start = self.t
            self.period_end = self.t + self.period_s


def invoice_id(index: int, cycle: int) -> str:
    """Stripe id of invoice `cycle` of subscription `index`."""
    return f"in_1Q{index:07d}{cycle:04d}ZbW9xKq4N"
