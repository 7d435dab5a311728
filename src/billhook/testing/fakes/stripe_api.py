"""A local fake of the Stripe API, for the real `stripe` package (v16) to talk to.

Point the SDK at it (the client form is the one to use in code; the global
form works too but mutates process state):

    client = stripe.StripeClient(DEFAULT_API_KEY, base_addresses={"api": url})
    stripe.api_base = url; stripe.api_key = DEFAULT_API_KEY   # legacy global form

Fill a `StripeState` with `state.add(obj, ...)` (filed by `obj["object"]`),
building objects with `billhook.testing.stripe` (`stripe_customer`,
`stripe_subscription`, `stripe_checkout_session`) and this module's
`stripe_price`, `stripe_product` and `stripe_event`, all from Stripe's own
fixtures.

stripe-python's retries: `StripeClient(..., max_network_retries=N)`; the
client's default is 0 (only the global `stripe.max_network_retries` is 2).
It retries connection errors, 409s, every status >= 500 and anything
answered with `Stripe-Should-Retry: true`, never one answered with
`Stripe-Should-Retry: false`; it ignores `Retry-After`, so a plain 429 is
*not* retried. It sleeps 0.5 s * 2^(n-1) with jitter between tries (at
least `stripe._http_client.HTTPClient.INITIAL_DELAY` = 0.5 s, at most 5 s;
tests set `INITIAL_DELAY` to 0). Every POST carries an `Idempotency-Key`
(a fresh UUID unless `options={"idempotency_key": ...}`) that its retries
reuse.

SDK quirks seen here: v16 objects are not dicts (`sub.items` is the items
field, `obj.get` raises; use `obj.to_dict()`); list params go out indexed
(`types[0]=...`, `expand[0]=...`); `RateLimitError.code` stays None (the
code is on `err.error.code`); 400 and 404 both raise `InvalidRequestError`.

Served (Stripe's JSON shapes; lists are `{"object": "list", "data",
"has_more", "url"}`, newest first, `limit` 1-100 (default 10),
`starting_after` / `ending_before` cursors placed by the cursor object's
position, `expand[]` on string ids this state knows):

- `GET /v1/customers/{id}` (a deleted customer answers `{"id", "object",
  "deleted": true}`), `GET /v1/customers` (`email`, `created`),
  `GET /v1/customers/search` (`query` with `field:'value'` clauses joined by
  `AND`, fields `email`, `name`, `phone`, `metadata['key']`; `page` token);
- `GET /v1/subscriptions/{id}`, `GET /v1/subscriptions` (`customer`, `price`,
  `status`: default excludes `canceled` like Stripe, `ended` = canceled +
  incomplete_expired, `all` = everything; `created`);
- `GET /v1/prices/{id}`, `GET /v1/prices` (`active`, `type`, `product`,
  `currency`, `recurring[interval]`, `lookup_keys[]`);
  `GET /v1/products/{id}`, `GET /v1/products` (`active`, `ids[]`);
- `GET /v1/invoices/{id}` (`state.invoices`, filed by `add` like the rest);
- `GET /v1/events/{id}`, `GET /v1/events` (`type`, with `*` wildcards, or
  `types[]` (≤ 20, not both), `created` as an int or `created[gt|gte|lt|lte]`);
- `POST /v1/checkout/sessions` (form: `mode`, `line_items[i][price|quantity]`,
  `customer`, `customer_email`, `client_reference_id`, `success_url`,
  `cancel_url`, `metadata[...]`, `subscription_data[metadata][...]`; anything
  else is stored as sent), `GET /v1/checkout/sessions/{id}`,
  `POST /v1/billing_portal/sessions` (`customer`, `return_url`, ...).
  `state.complete_checkout(session_id)` pays an open session the way a buyer
  would and returns the objects of the events Stripe sends next.

POSTs honour `Idempotency-Key` like Stripe: the same key (per API key) with
the same form replays the first 2xx answer with `Idempotent-Replayed: true`;
with a different form or path it is a 400 `idempotency_error`. (stripe-python
sends a fresh key on every POST unless given `options={"idempotency_key": ...}`
and reuses it for its own retries.)

Auth: `Authorization: Bearer <key>` (or Basic with the key as user) must
hold one of `state.api_keys`, else 401 `invalid_request_error`
(`stripe.AuthenticationError`). Keys `sk_live_*`/`rk_live_*` are live mode
and only see objects with `livemode: true`; test keys only see
`livemode: false` ones, like two Stripe modes (the error says "a similar
object exists in live mode"). A missing object is a 404 `resource_missing`
when the path names it, a 400 when a parameter does (`customer=`, a line
item's price). Unknown query parameters on GETs are a 400 "Received unknown
parameter" as on Stripe, unknown paths a 404.

Stripe Connect: `state.account("acct_…")` is a connected account, a
`StripeState` of its own; a request with `Stripe-Account: acct_…` sees its
objects and no others (the platform's stay apart), an account never created
answers 403 `account_invalid`. Requests and injected failures are the
platform state's.

Knobs: `fail_next` (statuses or `billhook.testing.fakes.Failure`s: Stripe-shaped error
bodies, e.g. 429 `rate_limit`, 500 `api_error`, 401; add headers such as
`Stripe-Should-Retry` on the `Failure`), `event_retention_days` (hide older
events, as Stripe keeps 30 days), `requests` (the log: `RecordedRequest`s
with the idempotency key in `headers["idempotency-key"]`).
"""

from __future__ import annotations

import base64
import copy
import fnmatch
import functools
import json
import operator
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from billhook.testing.fakes import Failure, FakeLog, decode_nested, serve_recorded
from billhook.testing.settings import STRIPE_API_KEY
from billhook.testing.stripe import stripe_customer, stripe_object, stripe_subscription

__all__ = [
    "DEFAULT_API_KEY",
    "StripeState",
    "stripe_event",
    "stripe_fake",
    "stripe_price",
    "stripe_product",
]

DEFAULT_API_KEY = STRIPE_API_KEY
"""The API key a fresh `StripeState` accepts: the one test deployments are configured with."""

Obj = dict[str, Any]

_COLLECTIONS = {
    "customer": "customers",
    "subscription": "subscriptions",
    "price": "prices",
    "product": "products",
    "event": "events",
    "invoice": "invoices",
    "checkout.session": "checkout_sessions",
    "billing_portal.session": "portal_sessions",
}
_SUB_STATUSES = (
    "active",
    "all",
    "canceled",
    "ended",
    "incomplete",
    "incomplete_expired",
    "past_due",
    "paused",
    "trialing",
    "unpaid",
)

# A monthly period, as the fake bills: thirty days.
MONTH_S = 30 * 86_400


def stripe_price(
    *,
    id: str,
    interval: str | None = "month",
    active: bool = True,
    livemode: bool = False,
    product: str = "prod_team",
    unit_amount: int = 1500,
    currency: str = "usd",
    lookup_key: str | None = None,
    created: int = 1_767_225_600,
) -> Obj:
    """A Stripe price from the fixture; `interval=None` makes it a one-time price."""
    price = stripe_object("price")
    price.update(
        id=id,
        active=active,
        livemode=livemode,
        product=product,
        unit_amount=unit_amount,
        unit_amount_decimal=str(unit_amount),
        currency=currency,
        lookup_key=lookup_key,
        created=created,
        transform_quantity=None,
    )
    if interval is None:
        price.update(type="one_time", recurring=None)
    else:
        price.update(type="recurring", recurring={**price["recurring"], "interval": interval})
    return price


def stripe_product(
    *,
    id: str = "prod_team",
    name: str = "Team",
    active: bool = True,
    livemode: bool = False,
    default_price: str | None = None,
    created: int = 1_767_225_600,
) -> Obj:
    """A Stripe product from the fixture (a service, no shipping data)."""
    product = stripe_object("product")
    product.update(
        id=id,
        name=name,
        active=active,
        livemode=livemode,
        default_price=default_price,
        created=created,
        updated=created,
        description=None,
        package_dimensions=None,
        type="service",
    )
    return product


def stripe_event(
    *,
    id: str,
    type: str = "customer.subscription.updated",
    created: int,
    obj: Mapping[str, Any] | None = None,
    livemode: bool = False,
    previous_attributes: Mapping[str, Any] | None = None,
) -> Obj:
    """A Stripe event from the fixture around `obj` (a fixture subscription by default)."""
    event = stripe_object("event")
    data: Obj = {"object": dict(obj) if obj is not None else stripe_object("subscription")}
    if previous_attributes is not None:
        data["previous_attributes"] = dict(previous_attributes)
    event.update(id=id, type=type, created=created, livemode=livemode, data=data)
    return event


@dataclass
class _Stored:
    """An idempotent POST's first answer."""

    path: str
    form: dict[str, str]
    status: int
    body: Obj


@dataclass
class StripeState(FakeLog):
    """What the Stripe fake serves; tests fill it in and read its log.

    Objects are plain dicts in Stripe's shapes, keyed by id, in insertion
    order (lists come back newest `created` first, ties newest inserted
    first). Use `add` to file objects by their `object` field. `api_keys`:
    the keys that authenticate. `event_retention_days`: events created
    earlier than that many days before `clock()` are invisible (None: all
    visible; Stripe keeps 30). `clock`: the fake's time, for `created`
    stamps and retention. Inherited knobs: `fail_next`, `requests`.
    """

    api_keys: set[str] = field(default_factory=lambda: {DEFAULT_API_KEY})
    customers: dict[str, Obj] = field(default_factory=dict)
    subscriptions: dict[str, Obj] = field(default_factory=dict)
    prices: dict[str, Obj] = field(default_factory=dict)
    products: dict[str, Obj] = field(default_factory=dict)
    events: dict[str, Obj] = field(default_factory=dict)
    invoices: dict[str, Obj] = field(default_factory=dict)
    checkout_sessions: dict[str, Obj] = field(default_factory=dict)
    portal_sessions: dict[str, Obj] = field(default_factory=dict)
    event_retention_days: int | None = None
    clock: Callable[[], float] = time.time
    accounts: dict[str, StripeState] = field(default_factory=dict)
    _idempotent: dict[tuple[str, str], _Stored] = field(default_factory=dict, repr=False)

    def add(self, *objects: Mapping[str, Any]) -> StripeState:
        """File each object under its collection by its `object` field (replacing by id)."""
        for obj in objects:
            collection: dict[str, Obj] = getattr(self, _COLLECTIONS[obj["object"]])
            collection[obj["id"]] = copy.deepcopy(dict(obj))
        return self

    def account(self, account_id: str) -> StripeState:
        """The connected account `account_id` (created empty the first time): the objects
        requests with `Stripe-Account: <account_id>` see, and only they."""
        if account_id not in self.accounts:
            self.accounts[account_id] = StripeState(api_keys=self.api_keys, clock=self.clock)
        return self.accounts[account_id]

    def complete_checkout(self, session_id: str) -> tuple[Obj, Obj]:
        """Pay an open subscription-mode Checkout Session, as a buyer on Stripe's page would.

        Creates the session's customer (unless it named one) and an active
        subscription with the line items' prices and quantities and the
        `subscription_data[metadata]` sent, then marks the session complete.
        Returns (session, subscription): the objects of the
        `checkout.session.completed` and `customer.subscription.created`
        events Stripe would send next.
        """
        session = self.checkout_sessions[session_id]
        live = bool(session["livemode"])
        customer_id = session.get("customer") or "cus_" + uuid.uuid4().hex[:14]
        if customer_id not in self.customers:
            self.add({**stripe_customer(id=customer_id), "livemode": live})
        sent = session.get("subscription_data_sent") or {}
        items = [(str(i["price"]), int(i.get("quantity", 1))) for i in session["line_items_sent"]]
        # Its first period starts now, as Stripe's does at payment.
        subscription = stripe_subscription(
            id="sub_" + uuid.uuid4().hex[:14],
            customer=customer_id,
            items=items,
            metadata=dict(sent.get("metadata") or {}),
            period_end=int(self.clock()) + MONTH_S,
        )
        subscription.update(livemode=live, created=int(self.clock()))
        self.add(subscription)
        session.update(
            status="complete",
            payment_status="paid",
            customer=customer_id,
            subscription=subscription["id"],
        )
        return _public_session(copy.deepcopy(session)), copy.deepcopy(subscription)

    def delete_customer(self, customer_id: str) -> None:
        """Delete a customer the way Stripe keeps it: `{"id", "object", "deleted": true}`."""
        old = self.customers.get(customer_id, {})
        self.customers[customer_id] = {
            "id": customer_id,
            "object": "customer",
            "deleted": True,
            "livemode": old.get("livemode", False),
        }


class _StripeError(Exception):
    """An error answer in Stripe's `{"error": {...}}` shape."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param

    def response(self) -> JSONResponse:
        error: Obj = {"type": self.type, "message": self.message}
        if self.code is not None:
            error["code"] = self.code
            error["doc_url"] = f"https://stripe.com/docs/error-codes/{self.code.replace('_', '-')}"
        if self.param is not None:
            error["param"] = self.param
        return _json({"error": error}, self.status)


def _json(body: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(
        body, status_code=status, headers={"Request-Id": f"req_{uuid.uuid4().hex[:14]}"}
    )


def _default_failure(failure: Failure) -> Response:
    if failure.body is not None:
        return _json(failure.body, failure.status)
    status = failure.status
    if status == 400:
        err = _StripeError(400, "Invalid request (injected by the fake).")
    elif status == 401:
        err = _StripeError(
            401, "Expired API Key provided: sk_test_****fake", code="api_key_expired"
        )
    elif status == 402:
        err = _StripeError(402, "Your card was declined.", type="card_error", code="card_declined")
    elif status == 403:
        err = _StripeError(
            403,
            "The provided key does not have the required permissions for this endpoint.",
            code="secret_key_required",
        )
    elif status == 404:
        err = _StripeError(404, "No such object (injected by the fake).", code="resource_missing")
    elif status == 409:
        err = _StripeError(
            409,
            "There is currently another in-progress request using this Stripe token.",
            type="idempotency_error",
        )
    elif status == 429:
        err = _StripeError(
            429,
            "Request rate limit exceeded. Learn more about rate limits here "
            "https://stripe.com/docs/rate-limits.",
            code="rate_limit",
        )
    else:
        err = _StripeError(
            status, "An unknown error occurred (injected by the fake).", type="api_error"
        )
    return err.response()


def _is_live(key: str) -> bool:
    return key.startswith(("sk_live_", "rk_live_", "pk_live_"))


def _masked(key: str) -> str:
    prefix = key[: key.find("_", 3) + 1] if key.count("_") >= 2 else key[:3]
    return prefix + "*" * max(len(key) - len(prefix) - 4, 0) + key[-4:]


def _api_key(request: Request, state: StripeState) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, credentials = header.partition(" ")
    key = ""
    if scheme.lower() == "bearer":
        key = credentials.strip()
    elif scheme.lower() == "basic":
        try:
            key = base64.b64decode(credentials).decode().partition(":")[0]
        except ValueError:
            key = ""
    if not key:
        raise _StripeError(
            401,
            "You did not provide an API key. You need to provide your API key in the "
            "Authorization header, using Bearer auth (e.g. 'Authorization: Bearer "
            "YOUR_SECRET_KEY'). See https://stripe.com/docs/api#authentication for details, "
            "or we can help at https://support.stripe.com/.",
        )
    if key not in state.api_keys:
        raise _StripeError(401, f"Invalid API Key provided: {_masked(key)}")
    return key


@dataclass
class _Call:
    """One authenticated Stripe call: its decoded params and the key's mode."""

    request: Request
    params: Obj
    form: dict[str, str]
    api_key: str
    live: bool


def _mode_name(live: bool) -> str:
    return "live" if live else "test"


def _visible(obj: Obj, live: bool) -> bool:
    return bool(obj.get("livemode", False)) == live


def _get(
    collection: Mapping[str, Obj],
    kind: str,
    obj_id: str,
    call: _Call,
    param: str,
    *,
    status: int = 404,
) -> Obj:
    """The object `obj_id` of `collection`, or Stripe's `resource_missing` error for it.

    404 for the object a path names; callers pass `status=400` for an object
    a parameter names (a list filter, a line item's price).
    """
    obj = collection.get(obj_id)
    if obj is None:
        raise _StripeError(
            status, f"No such {kind}: '{obj_id}'", code="resource_missing", param=param
        )
    if not _visible(obj, call.live):
        other = _mode_name(not call.live)
        raise _StripeError(
            status,
            f"No such {kind}: '{obj_id}'; a similar object exists in {other} mode, but a "
            f"{_mode_name(call.live)} mode key was used to make this request.",
            code="resource_missing",
            param=param,
        )
    return obj


def _ordered(objects: Iterable[Obj]) -> list[Obj]:
    """Newest `created` first; among equal `created`, the later inserted first."""
    indexed = list(enumerate(objects))
    indexed.sort(key=lambda pair: (-int(pair[1].get("created") or 0), -pair[0]))
    return [o for _, o in indexed]


def _int(value: Any, param: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise _StripeError(400, f"Invalid integer: {value}", param=param) from None


def _bool(value: Any, param: str) -> bool:
    if value in ("true", "false"):
        return bool(value == "true")
    raise _StripeError(400, f"Invalid boolean: {value}", param=param)


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


_COMPARISONS: dict[str, Callable[[int, int], bool]] = {
    "gt": operator.gt,
    "gte": operator.ge,
    "lt": operator.lt,
    "lte": operator.le,
}


def _range_filter(value: Any, param: str) -> Callable[[int], bool]:
    """Stripe's `created=<int>` / `created[gt|gte|lt|lte]=<int>` as a predicate."""
    if value is None:
        return lambda _: True
    if not isinstance(value, dict):
        exact = _int(value, param)
        return lambda t: t == exact
    bounds: list[tuple[Callable[[int, int], bool], int]] = []
    for op, raw in value.items():
        if op not in _COMPARISONS:
            raise _StripeError(400, f"Received unknown parameter: {param}[{op}]", param=param)
        bounds.append((_COMPARISONS[op], _int(raw, f"{param}[{op}]")))
    return lambda t: all(compare(t, bound) for compare, bound in bounds)


_LIST_PARAMS = frozenset({"limit", "starting_after", "ending_before", "expand"})


def _check_params(call: _Call, allowed: Iterable[str]) -> None:
    known = set(allowed) | {"expand"}
    for name in call.params:
        if name not in known:
            raise _StripeError(400, f"Received unknown parameter: {name}", param=name)


def _page(
    call: _Call,
    universe: list[Obj],
    keep: Callable[[Obj], bool],
    url: str,
    lookup: Callable[[str], Obj | None],
) -> JSONResponse:
    """One page of `universe` (already ordered) filtered by `keep`, in Stripe's list shape."""
    limit = _int(call.params.get("limit", 10), "limit")
    if not 1 <= limit <= 100:
        raise _StripeError(
            400,
            "This value must be greater than or equal to 1."
            if limit < 1
            else "This value must be less than or equal to 100.",
            param="limit",
        )
    after = call.params.get("starting_after")
    before = call.params.get("ending_before")
    if after is not None and before is not None:
        raise _StripeError(
            400, "You may only specify one of these parameters: ending_before, starting_after."
        )
    position = {o["id"]: n for n, o in enumerate(universe)}
    ranked = [(n, o) for n, o in enumerate(universe) if keep(o)]
    if after is not None or before is not None:
        cursor = str(after if after is not None else before)
        param = "starting_after" if after is not None else "ending_before"
        if cursor not in position:
            raise _StripeError(
                400, f"No such object: '{cursor}'", code="resource_missing", param=param
            )
        at = position[cursor]
        if after is not None:
            rest = [o for n, o in ranked if n > at]
            data, has_more = rest[:limit], len(rest) > limit
        else:
            rest = [o for n, o in ranked if n < at]
            data, has_more = rest[-limit:], len(rest) > limit
    else:
        rest = [o for _, o in ranked]
        data, has_more = rest[:limit], len(rest) > limit
    expand = [p.removeprefix("data.") for p in _as_list(call.params.get("expand"))]
    for path in _as_list(call.params.get("expand")):
        if not str(path).startswith("data."):
            raise _StripeError(
                400,
                f"This property cannot be expanded ({path}). You may want to try expanding "
                f"'data.{path}' instead.",
                param="expand",
            )
    body = {
        "object": "list",
        "data": [_expanded(o, expand, lookup) for o in data],
        "has_more": has_more,
        "url": url,
    }
    return _json(body)


def _expanded(obj: Obj, paths: Iterable[str], lookup: Callable[[str], Obj | None]) -> Obj:
    """A copy of `obj` with each dotted path's string id replaced by the object it names."""
    out = copy.deepcopy(obj)
    for path in paths:
        _expand_path(out, str(path).split("."), lookup, str(path))
    return out


def _expand_path(
    node: Any, parts: list[str], lookup: Callable[[str], Obj | None], full: str
) -> None:
    if isinstance(node, list):
        for item in node:
            _expand_path(item, parts, lookup, full)
        return
    if not isinstance(node, dict) or parts[0] not in node:
        raise _StripeError(400, f"This property cannot be expanded ({full}).", param="expand")
    head, rest = parts[0], parts[1:]
    value = node[head]
    if rest:
        _expand_path(value, rest, lookup, full)
    elif isinstance(value, str):
        target = lookup(value)
        if target is None:
            raise _StripeError(400, f"This property cannot be expanded ({full}).", param="expand")
        node[head] = copy.deepcopy(target)


_Handler = Callable[[_Call], Awaitable[Response]]


def _handlers(state: StripeState) -> dict[str, _Handler]:
    """The fake's endpoints over one account's objects: the platform's, or a connected one's."""

    def lookup(obj_id: str) -> Obj | None:
        for name in ("customers", "subscriptions", "prices", "products", "events", "invoices"):
            collection: dict[str, Obj] = getattr(state, name)
            if obj_id in collection:
                return collection[obj_id]
        return None

    def visible(collection: Mapping[str, Obj], call: _Call) -> list[Obj]:
        return _ordered(o for o in collection.values() if _visible(o, call.live))

    # -- customers -------------------------------------------------------------
    async def get_customer(call: _Call) -> Response:
        _check_params(call, ())
        obj = _get(state.customers, "customer", call.request.path_params["id"], call, "id")
        return _json(_expanded(obj, _as_list(call.params.get("expand")), lookup))

    async def list_customers(call: _Call) -> Response:
        _check_params(call, _LIST_PARAMS | {"email", "created", "test_clock"})
        email = call.params.get("email")
        created = _range_filter(call.params.get("created"), "created")

        def keep(o: Obj) -> bool:
            return (
                not o.get("deleted")
                and (email is None or o.get("email") == email)
                and created(int(o.get("created") or 0))
            )

        return _page(call, visible(state.customers, call), keep, "/v1/customers", lookup)

    async def search_customers(call: _Call) -> Response:
        _check_params(call, {"query", "limit", "page"})
        query = call.params.get("query")
        if not query:
            raise _StripeError(
                400, "Missing required param: query.", code="parameter_missing", param="query"
            )
        clauses = _search_clauses(str(query))
        limit = _int(call.params.get("limit", 10), "limit")
        if not 1 <= limit <= 100:
            raise _StripeError(400, "This value must be less than or equal to 100.", param="limit")
        offset = 0
        if call.params.get("page"):
            token = str(call.params["page"])
            if not token.startswith("page_") or not token[5:].isdigit():
                raise _StripeError(400, f"Invalid page: {token}", param="page")
            offset = int(token[5:])
        hits = [
            o
            for o in visible(state.customers, call)
            if not o.get("deleted") and all(match(o) for match in clauses)
        ]
        data = hits[offset : offset + limit]
        has_more = len(hits) > offset + limit
        return _json(
            {
                "object": "search_result",
                "data": data,
                "has_more": has_more,
                "next_page": f"page_{offset + limit}" if has_more else None,
                "url": "/v1/customers/search",
            }
        )

    # -- subscriptions ---------------------------------------------------------
    async def get_subscription(call: _Call) -> Response:
        _check_params(call, ())
        sub_id = call.request.path_params["id"]
        obj = _get(state.subscriptions, "subscription", sub_id, call, "id")
        return _json(_expanded(obj, _as_list(call.params.get("expand")), lookup))

    async def list_subscriptions(call: _Call) -> Response:
        _check_params(
            call,
            _LIST_PARAMS
            | {
                "customer",
                "price",
                "status",
                "created",
                "collection_method",
                "current_period_end",
                "current_period_start",
                "test_clock",
                "automatic_tax",
            },
        )
        customer = call.params.get("customer")
        if customer is not None:
            _get(state.customers, "customer", str(customer), call, "customer", status=400)
        status = str(call.params.get("status") or "")
        if status and status not in _SUB_STATUSES:
            raise _StripeError(
                400,
                "Invalid status: must be one of " + ", ".join(_SUB_STATUSES),
                param="status",
            )
        price = call.params.get("price")
        created = _range_filter(call.params.get("created"), "created")

        def status_ok(s: str) -> bool:
            if status == "all":
                return True
            if status == "ended":
                return s in ("canceled", "incomplete_expired")
            if status:
                return s == status
            return s != "canceled"

        def keep(o: Obj) -> bool:
            prices = {
                (i.get("price") or {}).get("id") for i in (o.get("items") or {}).get("data", [])
            }
            return (
                (customer is None or o.get("customer") == customer)
                and status_ok(str(o.get("status")))
                and (price is None or price in prices)
                and created(int(o.get("created") or 0))
            )

        return _page(call, visible(state.subscriptions, call), keep, "/v1/subscriptions", lookup)

    # -- prices and products ---------------------------------------------------
    async def get_price(call: _Call) -> Response:
        _check_params(call, ())
        obj = _get(state.prices, "price", call.request.path_params["id"], call, "price")
        return _json(_expanded(obj, _as_list(call.params.get("expand")), lookup))

    async def list_prices(call: _Call) -> Response:
        _check_params(
            call,
            _LIST_PARAMS
            | {"active", "currency", "product", "type", "recurring", "lookup_keys", "created"},
        )
        p = call.params
        active = _bool(p["active"], "active") if "active" in p else None
        recurring = p.get("recurring") or {}
        interval = recurring.get("interval") if isinstance(recurring, dict) else None
        lookup_keys = _as_list(p.get("lookup_keys"))
        created = _range_filter(p.get("created"), "created")

        def keep(o: Obj) -> bool:
            return (
                (active is None or o.get("active") == active)
                and ("currency" not in p or o.get("currency") == p["currency"])
                and ("product" not in p or o.get("product") == p["product"])
                and ("type" not in p or o.get("type") == p["type"])
                and (interval is None or (o.get("recurring") or {}).get("interval") == interval)
                and (not lookup_keys or o.get("lookup_key") in lookup_keys)
                and created(int(o.get("created") or 0))
            )

        return _page(call, visible(state.prices, call), keep, "/v1/prices", lookup)

    async def get_product(call: _Call) -> Response:
        _check_params(call, ())
        obj = _get(state.products, "product", call.request.path_params["id"], call, "id")
        return _json(_expanded(obj, _as_list(call.params.get("expand")), lookup))

    async def list_products(call: _Call) -> Response:
        _check_params(call, _LIST_PARAMS | {"active", "ids", "created", "shippable", "url"})
        p = call.params
        active = _bool(p["active"], "active") if "active" in p else None
        ids = _as_list(p.get("ids"))
        created = _range_filter(p.get("created"), "created")

        def keep(o: Obj) -> bool:
            return (
                (active is None or o.get("active") == active)
                and (not ids or o["id"] in ids)
                and created(int(o.get("created") or 0))
            )

        return _page(call, visible(state.products, call), keep, "/v1/products", lookup)

    # -- events ----------------------------------------------------------------
    def retained(o: Obj) -> bool:
        if state.event_retention_days is None:
            return True
        horizon = state.clock() - state.event_retention_days * 86_400
        return int(o.get("created") or 0) >= horizon

    async def get_event(call: _Call) -> Response:
        _check_params(call, ())
        event_id = call.request.path_params["id"]
        obj = _get(state.events, "event", event_id, call, "id")
        if not retained(obj):
            raise _StripeError(
                404, f"No such event: '{event_id}'", code="resource_missing", param="id"
            )
        return _json(obj)

    async def list_events(call: _Call) -> Response:
        _check_params(call, _LIST_PARAMS | {"type", "types", "created", "delivery_success"})
        p = call.params
        if "type" in p and "types" in p:
            raise _StripeError(400, "You may only specify one of these parameters: type, types.")
        types = [str(t) for t in _as_list(p.get("types"))]
        if len(types) > 20:
            raise _StripeError(400, "You may pass at most 20 values for `types`.", param="types")
        pattern = str(p["type"]) if "type" in p else None
        created = _range_filter(p.get("created"), "created")

        def keep(o: Obj) -> bool:
            kind = str(o.get("type"))
            return (
                retained(o)
                and (not types or kind in types)
                and (pattern is None or fnmatch.fnmatchcase(kind, pattern))
                and created(int(o.get("created") or 0))
            )

        return _page(call, visible(state.events, call), keep, "/v1/events", lookup)

    # -- checkout and portal sessions ------------------------------------------
    async def create_checkout_session(call: _Call) -> Response:
        p = call.params
        mode = p.get("mode")
        if mode is None:
            raise _StripeError(
                400, "Missing required param: mode.", code="parameter_missing", param="mode"
            )
        if mode not in ("payment", "setup", "subscription"):
            raise _StripeError(
                400,
                f"Invalid mode: must be one of payment, setup, or subscription (got {mode}).",
                param="mode",
            )
        customer = p.get("customer")
        if customer is not None:
            _get(state.customers, "customer", str(customer), call, "customer", status=400)
        if customer is not None and p.get("customer_email") is not None:
            raise _StripeError(
                400,
                "You may only specify one of these parameters: customer, customer_email.",
                param="customer_email",
            )
        items = _as_list(p.get("line_items"))
        if mode != "setup" and not items:
            raise _StripeError(
                400,
                f"`line_items` is required in `{mode}` mode.",
                code="parameter_missing",
                param="line_items",
            )
        amount = 0
        currency = None
        recurring = False
        for n, item in enumerate(items):
            if not isinstance(item, dict) or "price" not in item:
                raise _StripeError(
                    400,
                    f"Missing required param: line_items[{n}][price].",
                    code="parameter_missing",
                    param=f"line_items[{n}][price]",
                )
            price = _get(
                state.prices,
                "price",
                str(item["price"]),
                call,
                f"line_items[{n}][price]",
                status=400,
            )
            if not price.get("active"):
                raise _StripeError(
                    400,
                    "The price specified is inactive. This field only accepts active prices.",
                    param=f"line_items[{n}][price]",
                )
            quantity = _int(item.get("quantity", 1), f"line_items[{n}][quantity]")
            amount += int(price.get("unit_amount") or 0) * quantity
            currency = price.get("currency")
            recurring = recurring or price.get("type") == "recurring"
        if mode == "subscription" and not recurring:
            raise _StripeError(
                400,
                "You must provide at least one recurring price in `subscription` mode when "
                "using prices.",
                param="line_items",
            )
        if mode == "payment" and recurring:
            raise _StripeError(
                400,
                "You specified `payment` mode but passed a recurring price. Either switch to "
                "`subscription` mode or use only one-time prices.",
                param="line_items",
            )
        now = int(state.clock())
        prefix = "cs_live_" if call.live else "cs_test_"
        session_id = prefix + uuid.uuid4().hex
        session = stripe_object("checkout.session")
        session.update(
            id=session_id,
            object="checkout.session",
            livemode=call.live,
            created=now,
            expires_at=now + 86_400,
            status="open",
            payment_status="unpaid",
            mode=mode,
            customer=customer,
            customer_email=p.get("customer_email"),
            customer_details=None,
            collected_information=None,
            client_reference_id=p.get("client_reference_id"),
            metadata=p.get("metadata") or {},
            success_url=p.get("success_url"),
            cancel_url=p.get("cancel_url"),
            currency=currency,
            amount_subtotal=amount,
            amount_total=amount,
            currency_conversion=None,
            shipping_cost=None,
            shipping_address_collection=None,
            total_details={"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
            payment_intent=None,
            subscription=None,
            invoice=None,
            allow_promotion_codes=(
                _bool(p["allow_promotion_codes"], "allow_promotion_codes")
                if "allow_promotion_codes" in p
                else None
            ),
            ui_mode=p.get("ui_mode", "hosted"),
            url=f"https://checkout.stripe.com/c/pay/{session_id}",
        )
        # Kept as sent, for tests to assert on (not part of Stripe's object).
        session["line_items_sent"] = items
        if "subscription_data" in p:
            session["subscription_data_sent"] = p["subscription_data"]
        state.checkout_sessions[session_id] = session
        return _json(_public_session(session))

    async def get_checkout_session(call: _Call) -> Response:
        _check_params(call, ())
        session_id = call.request.path_params["id"]
        obj = _get(state.checkout_sessions, "checkout.session", session_id, call, "session")
        return _json(_expanded(_public_session(obj), _as_list(call.params.get("expand")), lookup))

    async def create_portal_session(call: _Call) -> Response:
        p = call.params
        customer = p.get("customer")
        if customer is None:
            raise _StripeError(
                400,
                "Missing required param: customer.",
                code="parameter_missing",
                param="customer",
            )
        _get(state.customers, "customer", str(customer), call, "customer", status=400)
        session_id = "bps_" + uuid.uuid4().hex[:24]
        session: Obj = {
            "id": session_id,
            "object": "billing_portal.session",
            "configuration": p.get("configuration") or "bpc_" + uuid.uuid4().hex[:24],
            "created": int(state.clock()),
            "customer": customer,
            "customer_account": None,
            "flow": p.get("flow_data"),
            "livemode": call.live,
            "locale": p.get("locale"),
            "on_behalf_of": p.get("on_behalf_of"),
            "return_url": p.get("return_url"),
            "url": f"https://billing.stripe.com/p/session/{'live' if call.live else 'test'}_"
            + uuid.uuid4().hex,
        }
        state.portal_sessions[session_id] = session
        return _json(session)

    # -- invoices ----------------------------------------------------------------
    async def get_invoice(call: _Call) -> Response:
        _check_params(call, ())
        obj = _get(state.invoices, "invoice", call.request.path_params["id"], call, "invoice")
        return _json(_expanded(obj, _as_list(call.params.get("expand")), lookup))

    served = (
        search_customers, get_customer, list_customers, get_subscription, list_subscriptions,
        get_invoice, get_price, list_prices, get_product, list_products, get_event, list_events,
        get_checkout_session, create_checkout_session, create_portal_session,
    )  # fmt: skip
    return {handler.__name__: handler for handler in served}


def stripe_fake(state: StripeState) -> Starlette:
    """The Stripe fake serving `state`; see the module docstring for what it serves.

    A request with a `Stripe-Account` header is served from that connected
    account's objects (`state.account(id)`), as Stripe Connect does; the
    request log and the failure queue stay the platform's.
    """
    served: dict[str | None, dict[str, _Handler]] = {None: _handlers(state)}

    def handlers_of(account: str | None) -> dict[str, _Handler]:
        if account not in served:
            if account not in state.accounts:
                raise _StripeError(
                    403,
                    f"The provided key '{_masked(DEFAULT_API_KEY)}' does not have access to "
                    f"account '{account}' (or that account does not exist). Application "
                    "access may have been revoked.",
                    type="invalid_request_error",
                    code="account_invalid",
                )
            served[account] = _handlers(state.accounts[account])
        return served[account]

    # -- plumbing --------------------------------------------------------------
    def endpoint(name: str) -> Callable[..., Any]:
        async def handle(request: Request) -> Response:
            try:
                key = _api_key(request, state)
                account = request.headers.get("stripe-account")
                handler = unknown if name == "unknown" else handlers_of(account)[name]
                if request.method == "POST":
                    pairs = parse_qsl((await request.body()).decode(), keep_blank_values=True)
                    form = dict(pairs)
                    params = decode_nested(pairs)
                else:
                    form = {}
                    params = decode_nested(request.query_params.multi_items())
                call = _Call(request, params, form, key, _is_live(key))
                if request.method == "POST":
                    owner = state if account is None else state.accounts[account]
                    return await _idempotent(owner, call, handler)
                return await handler(call)
            except _StripeError as e:
                return e.response()

        async def recorded(request: Request) -> Response:
            return await serve_recorded(
                state, request, failure_response=_default_failure, handle=handle
            )

        return recorded

    async def unknown(call: _Call) -> Response:
        request = call.request
        raise _StripeError(
            404,
            f"Unrecognized request URL ({request.method}: {request.url.path}). Please see "
            "https://stripe.com/docs or we can help at https://support.stripe.com/.",
        )

    routes = [
        Route("/v1/customers/search", endpoint("search_customers"), methods=["GET"]),
        Route("/v1/customers/{id}", endpoint("get_customer"), methods=["GET"]),
        Route("/v1/customers", endpoint("list_customers"), methods=["GET"]),
        Route("/v1/subscriptions/{id}", endpoint("get_subscription"), methods=["GET"]),
        Route("/v1/subscriptions", endpoint("list_subscriptions"), methods=["GET"]),
        Route("/v1/invoices/{id}", endpoint("get_invoice"), methods=["GET"]),
        Route("/v1/prices/{id}", endpoint("get_price"), methods=["GET"]),
        Route("/v1/prices", endpoint("list_prices"), methods=["GET"]),
        Route("/v1/products/{id}", endpoint("get_product"), methods=["GET"]),
        Route("/v1/products", endpoint("list_products"), methods=["GET"]),
        Route("/v1/events/{id}", endpoint("get_event"), methods=["GET"]),
        Route("/v1/events", endpoint("list_events"), methods=["GET"]),
        Route("/v1/checkout/sessions/{id}", endpoint("get_checkout_session"), methods=["GET"]),
        Route("/v1/checkout/sessions", endpoint("create_checkout_session"), methods=["POST"]),
        Route("/v1/billing_portal/sessions", endpoint("create_portal_session"), methods=["POST"]),
        Route(
            "/{path:path}",
            endpoint("unknown"),
            methods=["GET", "POST", "DELETE", "PUT", "PATCH"],
        ),
    ]
    return Starlette(routes=routes)


def _public_session(session: Obj) -> Obj:
    return {k: v for k, v in session.items() if not k.endswith("_sent")}


async def _idempotent(
    state: StripeState, call: _Call, handler: Callable[[_Call], Awaitable[Response]]
) -> Response:
    """Run a POST under Stripe's idempotency rules (first 2xx answer replayed per key)."""
    key = call.request.headers.get("idempotency-key")
    path = call.request.url.path
    if key is None:
        return await handler(call)
    stored = state._idempotent.get((call.api_key, key))
    if stored is not None:
        if stored.path != path or stored.form != call.form:
            raise _StripeError(
                400,
                "Keys for idempotent requests can only be used with the same parameters they "
                f"were first used with. Try using a key other than '{key}' if you meant to "
                "execute a different request.",
                type="idempotency_error",
            )
        replay = _json(stored.body, stored.status)
        replay.headers["Idempotent-Replayed"] = "true"
        return replay
    response = await handler(call)
    if 200 <= response.status_code < 300:
        body = json.loads(bytes(response.body))
        state._idempotent[(call.api_key, key)] = _Stored(
            path, call.form, response.status_code, body
        )
    response.headers["Idempotency-Key"] = key
    return response


def _metadata_is(key: str, wanted: str, obj: Obj) -> bool:
    return bool((obj.get("metadata") or {}).get(key) == wanted)


def _field_is(name: str, wanted: str, obj: Obj) -> bool:
    return bool(obj.get(name) == wanted)


def _search_clauses(query: str) -> list[Callable[[Obj], bool]]:
    """Stripe search's `field:'value' AND metadata['k']:'v'` subset, as predicates."""
    clauses: list[Callable[[Obj], bool]] = []
    for raw in query.split(" AND "):
        term = raw.strip()
        name, sep, value = term.partition(":")
        if not sep or len(value) < 2 or value[0] not in "'\"" or value[-1] != value[0]:
            raise _StripeError(400, f"Invalid search query: {query}", param="query")
        wanted = value[1:-1]
        if name.startswith("metadata[") and name.endswith("]"):
            meta_key = name[len("metadata[") : -1].strip("'\"")
            clauses.append(functools.partial(_metadata_is, meta_key, wanted))
        elif name in ("email", "name", "phone"):
            clauses.append(functools.partial(_field_is, name, wanted))
        else:
            raise _StripeError(
                400, f"Field `{name}` is an unsupported search field.", param="query"
            )
    return clauses
