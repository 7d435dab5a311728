"""`POST /v1/workspaces/{id}/checkout` and `/portal`: purchases started from the app.

The app's backend calls these (read-scope token, like refresh) when a
workspace owner picks a plan or wants to manage billing. billhook creates the
provider session itself, so every purchase carries the workspace link from
its first event, and guards what a caller may start:

- only `actor_role` owner or admin (403 `role_not_allowed`); billhook does
  not know the app's users, so the role is the app's claim, checked and logged;
- no second checkout while a subscription grants a tier (409
  `already_subscribed`: change it in the portal); a double-click on Stripe
  gets the same session back through the idempotency key;
- seats within the offer's bounds (422 `invalid_seats`), a price configured
  for the tier and interval (422 `no_price`).

Each session started is appended to the log (`billhook.checkout_started`,
`billhook.portal_opened`): the history of who started what. On return the
app calls `POST /v1/workspaces/{id}/refresh` (`billhook.api.refresh`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from billhook.api import bodies as req
from billhook.api import schemas
from billhook.api.auth import TokenGate
from billhook.api.paths import WORKSPACE_PATH, workspace_id
from billhook.api.refresh import provider_call
from billhook.config import Settings
from billhook.domain.facts import GRANTING_STATUSES
from billhook.domain.records import EventRecord
from billhook.domain.resolver import resolve
from billhook.errors import ApiError
from billhook.log.sqlite import Appended
from billhook.projections.store import ProjectionStore
from billhook.providers import sessions
from billhook.providers.polar.client import PolarSource
from billhook.providers.polar.sessions import polar_candidates, polar_checkout_body, polar_offer
from billhook.providers.sessions import CheckoutRequest, Started
from billhook.providers.stripe.client import StripeSource
from billhook.providers.stripe.sessions import (
    idempotency_key,
    stripe_checkout_params,
    stripe_offer,
)

Source = StripeSource | PolarSource


class CheckoutRoute:
    """The checkout and portal routes. Dependencies come in; nothing here opens a file."""

    def __init__(
        self,
        settings: Settings,
        store: ProjectionStore,
        sources: Mapping[str, Source],
        *,
        append: Callable[[EventRecord], Awaitable[Appended]],
        wait_for: Callable[[int], Awaitable[None]],
        now: Callable[[], datetime],
        head: Callable[[], int],
    ) -> None:
        self._settings = settings
        self._store = store
        self._sources = sources
        self._append = append
        self._wait_for = wait_for
        self._now = now
        self._head = head
        self._gate = TokenGate(settings.auth)

    @property
    def routes(self) -> list[Route]:
        """Relative to `/v1`, like the entitlement API's."""
        return [
            Route(f"{WORKSPACE_PATH}/checkout", self.checkout, methods=["POST"]),
            Route(f"{WORKSPACE_PATH}/portal", self.portal, methods=["POST"]),
        ]

    # -- checkout ---------------------------------------------------------------------------

    async def checkout(self, request: Request) -> Response:
        self._gate.require(request)
        workspace = workspace_id(request)
        body = await req.read(request, schemas.CheckoutRequest)
        role = _role(body.actor_role)
        wanted = CheckoutRequest(
            workspace=workspace,
            provider=body.provider,
            tier=req.one_of("tier", body.tier, tuple(self._settings.tiers)),
            interval=body.interval,
            seats=body.seats,
            success_url=req.http_url("success_url", body.success_url),
            cancel_url=req.http_url("cancel_url", body.cancel_url),
            actor_role=role,
        )
        # A subscription's first events may have been acked a moment ago: see them.
        await self._wait_for(self._head())
        self._refuse_second_subscription(wanted.workspace)
        # No price is a config gap (422), checked before credentials (503).
        offer = None
        if wanted.provider == "stripe":
            offer = stripe_offer(self._settings, wanted.tier, wanted.interval)
            if offer is None:
                raise sessions.no_price(wanted)
        elif not polar_candidates(self._settings, wanted.tier, wanted.interval):
            raise sessions.no_price(wanted)
        source = self._source(wanted.provider)
        if isinstance(source, StripeSource):
            assert offer is not None
            started = await provider_call(self._start_stripe, wanted, source, offer)
        else:
            started = await provider_call(self._start_polar, wanted, source)
        await self._append(sessions.checkout_started(wanted, started, self._now()))
        session = schemas.CheckoutSession(wanted.provider, started.session_id, started.url)
        return schemas.respond(session, status_code=201)

    def _refuse_second_subscription(self, workspace: str) -> None:
        """409 while a subscription of the workspace grants a tier (docs/entitlements.md)."""
        entitlement = resolve(
            self._store.workspace_facts(workspace), self._settings.policy, self._now()
        )
        for view in entitlement.subscriptions:
            fact = view.fact
            if view.tier is not None and fact.status in GRANTING_STATUSES:
                raise ApiError(
                    409,
                    "already_subscribed",
                    f"workspace {workspace} has a {fact.status} {fact.provider} subscription "
                    f"{fact.id}; change it in the customer portal",
                )

    def _start_stripe(
        self, wanted: CheckoutRequest, source: StripeSource, offer: sessions.Offer
    ) -> Started:
        """Create a Stripe Checkout Session (blocking: runs on a thread)."""
        customer = self._customer(wanted.workspace, wanted.provider)
        seats = sessions.seats_to_buy(offer, wanted.seats)
        assert seats is not None  # Stripe prices are always bought by quantity
        key = self._settings.workspace_key
        params = stripe_checkout_params(wanted, offer.price, seats, customer, key)
        session_id, url = source.checkout_session(params, idempotency_key(params))
        return Started(offer, seats, session_id, url)

    def _start_polar(self, wanted: CheckoutRequest, source: PolarSource) -> Started:
        """Create a Polar checkout (blocking: runs on a thread)."""
        customer = self._customer(wanted.workspace, wanted.provider)
        offer = self._polar_offer(wanted, source)
        seats = sessions.seats_to_buy(offer, wanted.seats)
        key = self._settings.workspace_key
        body = polar_checkout_body(wanted, offer.price, seats, customer, key)
        session_id, url = source.checkout(body)
        return Started(offer, seats, session_id, url)

    def _polar_offer(self, wanted: CheckoutRequest, source: PolarSource) -> sessions.Offer:
        """The first mapped product Polar sells for the tier at the interval asked."""
        for product_id in polar_candidates(self._settings, wanted.tier, wanted.interval):
            offer = polar_offer(product_id, source.product(product_id), wanted.interval)
            if offer is not None:
                return offer
        raise sessions.no_price(wanted)

    # -- portal -----------------------------------------------------------------------------

    async def portal(self, request: Request) -> Response:
        self._gate.require(request)
        workspace = workspace_id(request)
        body = await req.read(request, schemas.PortalRequest)
        role = _role(body.actor_role)
        return_url = req.http_url("return_url", body.return_url)
        # A checkout's link may have arrived a moment ago: read a projection that has it.
        await self._wait_for(self._head())
        provider, customer = self._portal_customer(workspace)
        source = self._source(provider)

        def open_session() -> tuple[str, str]:
            if isinstance(source, StripeSource):
                return source.portal_session(customer, return_url)
            return source.customer_session(customer, return_url)

        session_id, url = await provider_call(open_session)
        record = sessions.portal_opened(
            workspace, provider, customer, session_id, role, self._now()
        )
        await self._append(record)
        return schemas.respond(schemas.PortalSession(url), status_code=201)

    def _portal_customer(self, workspace: str) -> tuple[str, str]:
        """The (provider, customer) whose portal to open: 409 `not_linked` when none."""
        linked = self._store.customers_of(workspace)
        if not linked:
            raise ApiError(
                409, "not_linked", f"no provider customer is known for workspace {workspace}"
            )
        return self._best(workspace, linked)

    # -- shared -----------------------------------------------------------------------------

    def _customer(self, workspace: str, provider: str) -> str | None:
        """The workspace's customer at `provider`, so a new purchase reuses it."""
        linked = {(p, c) for p, c in self._store.customers_of(workspace) if p == provider}
        return self._best(workspace, linked)[1] if linked else None

    def _best(self, workspace: str, linked: set[tuple[str, str]]) -> tuple[str, str]:
        """Of several linked customers: the one whose subscription grants a tier, else the
        one with the newest subscription, else the first by name."""
        facts = self._store.workspace_facts(workspace).subscriptions
        owned = [f for f in facts if (f.provider, f.customer) in linked]
        if owned:
            best = max(owned, key=lambda f: (f.status in GRANTING_STATUSES, f.order))
            assert best.customer is not None
            return best.provider, best.customer
        return min(linked)

    def _source(self, provider: str) -> Source:
        source = self._sources.get(provider)
        if source is None:
            raise ApiError(
                503, "provider_not_configured", f"{provider}: no API credentials are configured"
            )
        return source


def _role(role: str) -> str:
    """The caller's role: 403 `role_not_allowed` unless owner or admin."""
    if role not in sessions.ROLES:
        raise ApiError(
            403,
            "role_not_allowed",
            "only a workspace owner or admin may start a checkout or open the billing portal",
        )
    return role
