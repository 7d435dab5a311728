"""The events each episode of a subscription's life sends, as Stripe and Polar send them.

A walker takes the subscription's :class:`~bench.lifecycles.State` and the
episode's random draw `u` (0 <= u < 1, for its timing and variant), changes
the state as the episode does and yields a snap per event, never earlier
than the one before. The number of snaps of each walker is the size
bench/lifecycles.py plans with (see its docstring for the lists).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

from bench.lifecycles import (
    CANCEL_AT_END,
    CHANGE,
    CUSTOMER,
    DAY,
    DELETE,
    LINK_CHECKOUT,
    LOST,
    POLAR_ENTERPRISE,
    POLAR_PRODUCTS,
    POLAR_TEAM,
    RECOVERED,
    RENEWAL,
    START,
    STRIPE,
    STRIPE_PRICES,
    UNCANCEL,
    Snap,
    State,
    Subscription,
)

Walker = Callable[[State, float], Iterator[Snap]]

HOUR = 3600
# Stripe retries a failed renewal payment this long after the first attempt, then again.
RETRY_S = 3 * DAY
# A lost subscription turns unpaid, then is deleted, this long after its first failure.
UNPAID_AFTER_S = 10 * DAY
DELETED_AFTER_S = 24 * DAY


def _variant(u: float) -> float:
    """A second draw in [0, 1) from `u`, independent enough of its first use (timing)."""
    return (u * 1013) % 1.0


# -- Stripe ---------------------------------------------------------------------------------


def _payment(st: State, ok: bool, *, first: bool = True) -> Iterator[Snap]:
    """The payment of the current invoice: an attempt's payment intent and charge events."""
    st.attempt += 1
    if first:
        yield st.snap("payment_intent.created", st.t + 1)
    if ok:
        yield st.snap("payment_intent.succeeded", st.t + 2)
        yield st.snap("charge.succeeded", st.t)
    else:
        yield st.snap("payment_intent.payment_failed", st.t + 2)
        yield st.snap("charge.failed", st.t)


def _invoice_paid(st: State) -> Iterator[Snap]:
    """The current invoice paid: invoice.paid, invoice.payment_succeeded."""
    yield st.snap("invoice.paid", st.t + 1)
    yield st.snap("invoice.payment_succeeded", st.t)


def stripe_start(st: State, u: float) -> Iterator[Snap]:
    """Customer, subscription, first invoice paid (unless trialing), Checkout's events."""
    checkout = st.sub.link == LINK_CHECKOUT
    yield st.snap("customer.created")
    if not st.sub.trial and checkout:
        st.status = "incomplete"
    yield st.snap("customer.subscription.created", st.t + 1)
    yield st.snap("invoice.created", st.t)
    yield st.snap("invoice.finalized", st.t)
    if not st.sub.trial:
        yield from _payment(st, ok=True)
    yield from _invoice_paid(st)
    if st.status == "incomplete":
        st.status = "active"
        previous = json.dumps({"status": "incomplete"})
        yield st.snap("customer.subscription.updated", st.t + 1, previous)
    if checkout:
        yield st.snap("checkout.session.completed", st.t + 1)
        yield st.snap("customer.updated", st.t + 1)
    if st.sub.trial:
        yield st.snap("customer.subscription.trial_will_end", st.period_end - 3 * DAY)


def _stripe_new_period(st: State, *, upcoming: bool) -> Iterator[Snap]:
    """The subscription moves to its next period and its invoice is made, finalized an hour on."""
    if upcoming:
        yield st.snap("invoice.upcoming", st.period_end - 3 * DAY)
    previous = st.renew()
    yield st.snap("customer.subscription.updated", st.t, previous)
    yield st.snap("invoice.created", st.t)
    yield st.snap("invoice.finalized", st.t + HOUR)


def stripe_renewal(st: State, u: float) -> Iterator[Snap]:
    """A new period, its invoice paid at the first attempt (9 events)."""
    yield from _stripe_new_period(st, upcoming=True)
    yield from _payment(st, ok=True)
    yield from _invoice_paid(st)


def _stripe_fails(st: State) -> Iterator[Snap]:
    """The renewal's first payment fails: the subscription goes past due (8 events)."""
    yield from _stripe_new_period(st, upcoming=False)
    yield from _payment(st, ok=False)
    yield st.snap("invoice.payment_failed", st.t)
    st.status = "past_due"
    yield st.snap("customer.subscription.updated", st.t + 1, json.dumps({"status": "active"}))


def stripe_recovered(st: State, u: float) -> Iterator[Snap]:
    """A new period whose payment fails, then succeeds on retry (13 events)."""
    yield from _stripe_fails(st)
    st.t += RETRY_S
    yield from _payment(st, ok=True, first=False)
    yield from _invoice_paid(st)
    st.status = "active"
    yield st.snap("customer.subscription.updated", st.t + 1, json.dumps({"status": "past_due"}))


def stripe_lost(st: State, u: float) -> Iterator[Snap]:
    """Every retry fails; unpaid then deleted, or deleted and the invoice written off."""
    yield from _stripe_fails(st)
    failed_at = st.t
    st.t += RETRY_S
    yield from _payment(st, ok=False, first=False)
    yield st.snap("invoice.payment_failed", st.t)
    if _variant(u) < 0.5:
        st.status = "unpaid"
        previous = json.dumps({"status": "past_due"})
        yield st.snap("customer.subscription.updated", failed_at + UNPAID_AFTER_S, previous)
        _end(st, failed_at + DELETED_AFTER_S)
        yield st.snap("customer.subscription.deleted", st.t)
    else:
        _end(st, failed_at + UNPAID_AFTER_S)
        yield st.snap("customer.subscription.deleted", st.t)
        yield st.snap("invoice.marked_uncollectible", st.t + 1)


def _end(st: State, at: int) -> None:
    """The subscription ends at `at` (canceled)."""
    st.t = max(st.t, at)
    st.status = "canceled"
    st.canceled_at = st.canceled_at or st.t
    st.ended_at = st.t


def stripe_change(st: State, u: float) -> Iterator[Snap]:
    """Seats or plan change mid-period, billed at once with a proration invoice."""
    st.t = st.midway(u)
    item = {"id": f"si_{st.sub.index:07d}", "quantity": st.quantity, "price": st.price}
    if _variant(u) < 0.2:
        others = [price for price in STRIPE_PRICES if price != st.price]
        st.change_price(others[int(_variant(u) * 10) % len(others)])
    else:
        st.quantity = max(1, st.quantity + (-1 if _variant(u) > 0.85 else 1 + int(u * 3)))
    previous = json.dumps({"items": {"object": "list", "data": [item]}})
    yield st.snap("customer.subscription.updated", st.t, previous)
    st.new_invoice("subscription_update")
    yield st.snap("invoice.created", st.t + 1)
    yield st.snap("invoice.finalized", st.t)
    yield from _payment(st, ok=True)
    yield from _invoice_paid(st)


def _cancel(st: State, at: int) -> str:
    """Cancel at period end from `at`; the previous attributes."""
    st.t = max(st.t, at)
    st.cancel_at_period_end = True
    st.canceled_at = st.t
    return json.dumps({"cancel_at": None, "cancel_at_period_end": False, "canceled_at": None})


def _uncancel(st: State, at: int) -> str:
    """Take the cancellation back; the previous attributes."""
    st.t = max(st.t, at)
    previous = {
        "cancel_at": st.period_end,
        "cancel_at_period_end": True,
        "canceled_at": st.canceled_at,
    }
    st.cancel_at_period_end = False
    st.canceled_at = None
    return json.dumps(previous)


def stripe_cancel_at_end(st: State, u: float) -> Iterator[Snap]:
    """Cancel at period end; deleted when the period ends (2 events)."""
    yield st.snap("customer.subscription.updated", None, _cancel(st, st.midway(u)))
    _end(st, st.period_end)
    yield st.snap("customer.subscription.deleted", st.t)


def stripe_uncancel(st: State, u: float) -> Iterator[Snap]:
    """Cancel at period end, then take it back (2 events)."""
    yield st.snap("customer.subscription.updated", None, _cancel(st, st.midway(u)))
    yield st.snap("customer.subscription.updated", None, _uncancel(st, st.midway(0.5)))


def stripe_delete(st: State, u: float) -> Iterator[Snap]:
    """Deleted at once (1 event)."""
    _end(st, st.midway(u))
    yield st.snap("customer.subscription.deleted", st.t)


def stripe_customer(st: State, u: float) -> Iterator[Snap]:
    """The customer updated, nothing else (1 event)."""
    yield st.snap("customer.updated", st.midway(u), json.dumps({"phone": None}))


STRIPE_WALKERS: dict[str, Walker] = {
    START: stripe_start,
    RENEWAL: stripe_renewal,
    CHANGE: stripe_change,
    RECOVERED: stripe_recovered,
    UNCANCEL: stripe_uncancel,
    CUSTOMER: stripe_customer,
    CANCEL_AT_END: stripe_cancel_at_end,
    LOST: stripe_lost,
    DELETE: stripe_delete,
}


# -- Polar ----------------------------------------------------------------------------------


def _state_changed(st: State) -> Snap:
    """customer.state_changed, now."""
    return st.snap("customer.state_changed", st.t)


def polar_start(st: State, u: float) -> Iterator[Snap]:
    """Customer, first order, subscription, payment, state (6 events)."""
    yield st.snap("customer.created")
    yield st.snap("order.created", st.t + 2)
    yield st.snap("subscription.created", st.t)
    yield st.snap("subscription.updated" if st.sub.trial else "subscription.active", st.t + 1)
    st.attempt = 1
    yield st.snap("order.paid", st.t + 1)
    yield _state_changed(st)


def polar_renewal(st: State, u: float) -> Iterator[Snap]:
    """A new period and its order paid (4 events)."""
    previous = st.renew()
    yield st.snap("order.created", st.t)
    yield st.snap("subscription.updated", st.t, previous)
    st.attempt = 1
    yield st.snap("order.paid", st.t + 60)
    yield _state_changed(st)


def polar_change(st: State, u: float) -> Iterator[Snap]:
    """More or fewer seats, or a switch between the team and enterprise products."""
    st.t = st.midway(u)
    seat_based = POLAR_PRODUCTS[st.price][2]
    if seat_based and _variant(u) >= 0.2:
        st.quantity = max(1, st.quantity + (-1 if _variant(u) > 0.85 else 1 + int(u * 3)))
    else:
        st.change_price(POLAR_ENTERPRISE if seat_based else POLAR_TEAM)
    yield st.snap("subscription.updated", st.t)
    st.new_invoice("subscription_update")
    yield st.snap("order.created", st.t + 1)
    st.attempt = 1
    yield st.snap("order.paid", st.t + 1)
    yield _state_changed(st)


def _polar_past_due(st: State) -> Iterator[Snap]:
    """A new period whose order is not paid: past due (4 events)."""
    st.renew()
    yield st.snap("order.created", st.t)
    st.status = "past_due"
    yield st.snap("subscription.updated", st.t + 5)
    yield st.snap("subscription.past_due", st.t)
    yield _state_changed(st)


def polar_recovered(st: State, u: float) -> Iterator[Snap]:
    """Past due, then paid 3 days later (7 events)."""
    yield from _polar_past_due(st)
    st.attempt = 1
    yield st.snap("order.paid", st.t + RETRY_S)
    st.status = "active"
    yield st.snap("subscription.active", st.t)
    yield _state_changed(st)


def _polar_end(st: State, at: int, event_type: str) -> Iterator[Snap]:
    """The subscription ends at `at`: `event_type`, then revoked, then the new state."""
    _end(st, at)
    yield st.snap(event_type, st.t)
    yield st.snap("subscription.revoked", st.t)
    yield _state_changed(st)


def polar_lost(st: State, u: float) -> Iterator[Snap]:
    """Past due, then canceled and revoked (7 events)."""
    yield from _polar_past_due(st)
    yield from _polar_end(st, st.t + DELETED_AFTER_S, "subscription.canceled")


def polar_cancel_at_end(st: State, u: float) -> Iterator[Snap]:
    """Cancel at period end; revoked when the period ends (6 events)."""
    _cancel(st, st.midway(u))
    yield st.snap("subscription.updated", st.t)
    yield st.snap("subscription.canceled", st.t)
    yield _state_changed(st)
    yield from _polar_end(st, st.period_end, "subscription.updated")


def polar_uncancel(st: State, u: float) -> Iterator[Snap]:
    """Cancel at period end, then uncancel (4 events)."""
    _cancel(st, st.midway(u))
    yield st.snap("subscription.updated", st.t)
    yield st.snap("subscription.canceled", st.t)
    _uncancel(st, st.midway(0.5))
    yield st.snap("subscription.updated", st.t)
    yield st.snap("subscription.uncanceled", st.t)


def polar_delete(st: State, u: float) -> Iterator[Snap]:
    """Canceled and revoked at once (3 events)."""
    yield from _polar_end(st, st.midway(u), "subscription.updated")


def polar_customer(st: State, u: float) -> Iterator[Snap]:
    """The customer updated, nothing else (1 event)."""
    yield st.snap("customer.updated", st.midway(u))


POLAR_WALKERS: dict[str, Walker] = {
    START: polar_start,
    RENEWAL: polar_renewal,
    CHANGE: polar_change,
    RECOVERED: polar_recovered,
    UNCANCEL: polar_uncancel,
    CUSTOMER: polar_customer,
    CANCEL_AT_END: polar_cancel_at_end,
    LOST: polar_lost,
    DELETE: polar_delete,
}


def timeline(sub: Subscription) -> Iterator[Snap]:
    """Every event of `sub`, in time order."""
    state = State(sub)
    walkers = STRIPE_WALKERS if sub.provider == STRIPE else POLAR_WALKERS
    yield from walkers[START](state, 0.0)
    for kind, u in sub.episodes:
        yield from walkers[kind](state, u)
