"""A local fake of the Polar API (`2026-04`), for the real `polar-sdk` (1.0.2) to talk to.

Point the SDK at it with `base_url` (polar-sdk 1.0.2 has no `server_url`;
without `base_url` its `environment` picks Polar's hosts and defaults to
"production", not sandbox) and close it when done:

    from polar.v2026_04 import Polar
    with Polar(DEFAULT_ACCESS_TOKEN, base_url=url) as polar:
        polar.subscriptions.iter_list(external_customer_id="ws_1")

Fill a `PolarState` with `add_subscription` (which also files the embedded
customer and product), `add_customer` and `add_product`, building objects
with `billhook.testing.polar` (`polar_subscription`, `polar_customer`) and
this module's `polar_product`.

The SDK never retries: a 429 raises `polar.base.PolarRateLimitError`
(`retry_after` = the `Retry-After` header as an int, or None), any 5xx
`polar.PolarServerError`, a timeout (default 5 s) or refused connection
`polar.PolarNetworkError`, a 404 on a `get` `polar.v2026_04.errors.ResourceNotFound`
(`.error.detail`), a 422 `HTTPValidationError` (`.error.detail[i].loc/msg`),
and statuses a method does not declare (401, 403, a 404 on a list) a plain
`polar.PolarClientError` with `.status_code` and the raw body as `.error`.
Undecodable bodies raise `polar.PolarDeserializationError`. Other quirks:
path parameters are pasted into the URL unescaped (`url.format(...)`), so
an external id holding `/`, `?` or `#` reaches a different URL; a
`Retry-After` that is an HTTP date makes the SDK raise `ValueError`;
`iter_list` stops when `page >= max_page`.

Served, with Polar's shapes (lists are `{"items": [...], "pagination":
{"total_count", "max_page"}}` with `page` ≥ 1 and `limit` 1-100, default 10;
ids are UUIDs, anything else is a 422 as on Polar; every path also answers
without its trailing slash):

- `GET /v1/subscriptions/` (`organization_id`, `product_id`, `customer_id`,
  `external_customer_id`, `discount_id` (each repeatable), `active`
  (active/trialing vs the rest), `status` (repeatable), `cancel_at_period_end`,
  `started_after`/`started_before`, `canceled_at_after`/`canceled_at_before`,
  `metadata[key]=value`, `sorting` (default `-started_at`), canceled ones
  included by default as on Polar), `GET /v1/subscriptions/{id}`;
- `GET /v1/products/` (`id`, `organization_id`, `query`, `is_archived`,
  `is_recurring`, `visibility`, `metadata[...]`, `sorting`),
  `GET /v1/products/{id}`;
- `GET /v1/customers/` (`organization_id`, `email`, `query`, `metadata[...]`),
  `GET /v1/customers/{id}`, `GET /v1/customers/external/{external_id}`, and
  their `/state` (active/trialing subscriptions as `active_subscriptions`;
  note polar-sdk 1.0.2 cannot load a state whose `active_subscriptions` is
  non-empty: it types their `status` as "granted" | "disabled");
- `POST /v1/checkouts/` (JSON: `products` (UUIDs, required), `customer_id`,
  `external_customer_id`, `seats`, `success_url`, `return_url`, `metadata`,
  `customer_metadata`, ...), `GET /v1/checkouts/{id}`;
- `POST /v1/customer-sessions/` (`customer_id` or `external_customer_id`,
  `return_url`).
  `state.complete_checkout(checkout_id)` pays an open checkout the way a
  buyer would and returns the subscription Polar's next webhooks carry.

Errors: 401 `{"error": "Unauthorized", "detail": ...}` without a token,
401 `{"error": "invalid_token", "error_description": ...}` (with
`WWW-Authenticate`) for a token not in `state.access_tokens`, 404
`{"error": "ResourceNotFound", "detail": "Not found"}`, 422
`{"error": "RequestValidationError", "detail": [{"loc", "msg", "type",
"input"}]}`, unknown paths 404 `{"detail": "Not Found"}`.

Knobs: `fail_next` (statuses or `billhook.testing.fakes.Failure`s; a 429 carries
`Retry-After: 1` unless the `Failure` sets its own headers), `requests`
(the log; `headers["polar-version"]` is the API version the SDK sent).
"""

from __future__ import annotations

import copy
import json
import math
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from billhook.testing.fakes import Failure, FakeLog, serve_recorded
from billhook.testing.polar import ORGANIZATION_ID, polar_subscription
from billhook.testing.settings import POLAR_ACCESS_TOKEN

__all__ = [
    "DEFAULT_ACCESS_TOKEN",
    "PolarState",
    "polar_fake",
    "polar_product",
]

DEFAULT_ACCESS_TOKEN = POLAR_ACCESS_TOKEN
"""The access token a fresh `PolarState` accepts: the one test deployments are configured with."""

Obj = dict[str, Any]

_SUB_STATUSES = (
    "incomplete",
    "incomplete_expired",
    "trialing",
    "active",
    "past_due",
    "canceled",
    "unpaid",
    "paused",
)
_ACTIVE = ("active", "trialing")
_SUB_SORTS = (
    "customer",
    "status",
    "started_at",
    "current_period_end",
    "ended_at",
    "ends_at",
    "amount",
    "product",
    "discount",
)
_PRODUCT_SORTS = ("created_at", "name", "price_amount_type", "price_amount")
_CUSTOMER_SORTS = ("created_at", "email", "name")
_INVALID_TOKEN = (
    "The access token provided is expired, revoked, malformed, or invalid for other reasons."
)


def polar_product(
    *,
    id: str,
    name: str = "Team",
    recurring_interval: str | None = "month",
    seat_based: bool = False,
    is_archived: bool = False,
    visibility: str = "public",
    metadata: dict[str, str] | None = None,
    created_at: str = "2026-01-15T09:30:00Z",
) -> Obj:
    """A complete Polar `Product`, the one `polar_subscription` embeds for `id`.

    `recurring_interval=None` makes a one-time product; `seat_based` gives it
    a seat-based price; `is_archived` archives the product and its prices.
    """
    product: Obj = polar_subscription(
        id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"product-seed:{id}")),
        product_id=id,
        seats=1 if seat_based else None,
        recurring_interval=recurring_interval or "month",
    )["product"]
    product.update(
        name=name,
        visibility=visibility,
        is_archived=is_archived,
        metadata=dict(metadata or {}),
        created_at=created_at,
    )
    if recurring_interval is None:
        product.update(is_recurring=False, recurring_interval=None, recurring_interval_count=None)
    for price in product["prices"]:
        price["is_archived"] = is_archived
        price["created_at"] = created_at
    return product


@dataclass
class PolarState(FakeLog):
    """What the Polar fake serves; tests fill it in and read its log.

    Objects are plain dicts in Polar's `v2026_04` output shapes (build them
    with `billhook.testing.polar` and `polar_product`), keyed by id.
    `add_subscription` also files the subscription's embedded customer and
    product when they are not already known. `access_tokens`: tokens that
    authenticate. `checkout_base_url`: where checkout and portal URLs point.
    `clock`: the fake's time, for created/expiry stamps. Inherited knobs:
    `fail_next`, `requests`.
    """

    access_tokens: set[str] = field(default_factory=lambda: {DEFAULT_ACCESS_TOKEN})
    organization_id: str = ORGANIZATION_ID
    subscriptions: dict[str, Obj] = field(default_factory=dict)
    customers: dict[str, Obj] = field(default_factory=dict)
    products: dict[str, Obj] = field(default_factory=dict)
    checkouts: dict[str, Obj] = field(default_factory=dict)
    customer_sessions: dict[str, Obj] = field(default_factory=dict)
    checkout_base_url: str = "https://sandbox.polar.sh"
    clock: Callable[[], float] = time.time

    def add_subscription(self, *subscriptions: Mapping[str, Any]) -> PolarState:
        """File subscriptions (replacing by id), plus their customer and product if new."""
        for sub in subscriptions:
            obj = copy.deepcopy(dict(sub))
            self.subscriptions[obj["id"]] = obj
            self.customers.setdefault(obj["customer"]["id"], copy.deepcopy(obj["customer"]))
            self.products.setdefault(obj["product"]["id"], copy.deepcopy(obj["product"]))
        return self

    def complete_checkout(self, checkout_id: str) -> Obj:
        """Pay an open checkout, as a buyer on Polar's page would.

        The buyer is the checkout's customer, else the customer whose
        `external_id` is its `external_customer_id`, else a new customer with
        that external id. Files an active subscription of the checkout's
        product with its seats and metadata (Polar copies checkout metadata to
        the subscription) and marks the checkout succeeded. Returns the
        subscription: the `data` of the `subscription.created` and
        `subscription.active` webhooks Polar sends next.
        """
        checkout = self.checkouts[checkout_id]
        external = checkout.get("external_customer_id")
        customer = self.customers.get(checkout.get("customer_id") or "") or next(
            (c for c in self.customers.values() if external and c.get("external_id") == external),
            None,
        )
        customer_id = customer["id"] if customer else str(uuid.uuid4())
        product = checkout["product"]
        now = _iso(self.clock())
        subscription = polar_subscription(
            id=str(uuid.uuid4()),
            customer_id=customer_id,
            product_id=product["id"],
            external_customer_id=(customer or {}).get("external_id") or external,
            metadata={k: str(v) for k, v in checkout["metadata"].items()},
            seats=checkout.get("seats"),
            recurring_interval=product.get("recurring_interval") or "month",
            created_at=now,
        )
        subscription["checkout_id"] = checkout_id
        self.add_subscription(subscription)
        checkout.update(status="succeeded", customer_id=customer_id, modified_at=now)
        return copy.deepcopy(subscription)

    def add_customer(self, *customers: Mapping[str, Any]) -> PolarState:
        """File customers (replacing by id)."""
        for customer in customers:
            self.customers[customer["id"]] = copy.deepcopy(dict(customer))
        return self

    def add_product(self, *products: Mapping[str, Any]) -> PolarState:
        """File products (replacing by id)."""
        for product in products:
            self.products[product["id"]] = copy.deepcopy(dict(product))
        return self


class _PolarError(Exception):
    """An error answer in Polar's shapes."""

    def __init__(self, status: int, body: Any, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(str(body))
        self.status = status
        self.body = body
        self.headers = dict(headers or {})

    def response(self) -> JSONResponse:
        return JSONResponse(self.body, status_code=self.status, headers=self.headers)


def _not_found() -> _PolarError:
    return _PolarError(404, {"error": "ResourceNotFound", "detail": "Not found"})


def _invalid(loc: Iterable[str | int], msg: str, type: str, input: Any) -> _PolarError:
    """A 422 the way FastAPI/pydantic word it (one error)."""
    detail: Obj = {"type": type, "loc": list(loc), "msg": msg, "input": input}
    return _PolarError(422, {"error": "RequestValidationError", "detail": [detail]})


def _default_failure(failure: Failure) -> Response:
    if failure.body is not None:
        return JSONResponse(failure.body, status_code=failure.status)
    status = failure.status
    body: Obj
    headers: dict[str, str] = {}
    if status == 401:
        body = {"error": "Unauthorized", "detail": "Unauthorized"}
    elif status == 403:
        body = {"error": "NotPermitted", "detail": "You don't have the permission to do this."}
    elif status == 404:
        body = {"error": "ResourceNotFound", "detail": "Not found"}
    elif status == 422:
        body = {
            "error": "RequestValidationError",
            "detail": [
                {
                    "type": "value_error",
                    "loc": ["body"],
                    "msg": "Injected by the fake.",
                    "input": None,
                }
            ],
        }
    elif status == 429:
        body = {"error": "TooManyRequests", "detail": "Rate limit exceeded."}
        if not any(k.lower() == "retry-after" for k in failure.headers):
            headers["Retry-After"] = "1"
    elif status >= 500:
        body = {"error": "InternalServerError", "detail": "Internal Server Error"}
    else:
        body = {"error": "BadRequest", "detail": "Injected by the fake."}
    return JSONResponse(body, status_code=status, headers=headers)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).isoformat().replace("+00:00", "Z")


def _parse_time(value: str | None) -> datetime | None:
    if value is None:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@dataclass
class _Query:
    """A request's query string with pydantic-style validation helpers."""

    multi: dict[str, list[str]]

    def strings(self, name: str) -> list[str]:
        return self.multi.get(name, [])

    def one(self, name: str) -> str | None:
        values = self.multi.get(name)
        return values[-1] if values else None

    def uuids(self, name: str) -> list[str]:
        out = []
        for n, value in enumerate(self.strings(name)):
            out.append(
                _uuid(value, ["query", name, n] if len(self.strings(name)) > 1 else ["query", name])
            )
        return out

    def boolean(self, name: str) -> bool | None:
        value = self.one(name)
        if value is None:
            return None
        lowered = value.lower()
        if lowered in ("true", "1", "yes", "on", "t", "y"):
            return True
        if lowered in ("false", "0", "no", "off", "f", "n"):
            return False
        raise _invalid(
            ["query", name],
            "Input should be a valid boolean, unable to interpret input",
            "bool_parsing",
            value,
        )

    def integer(self, name: str, default: int, *, ge: int, le: int | None = None) -> int:
        value = self.one(name)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            raise _invalid(
                ["query", name],
                "Input should be a valid integer, unable to parse string as an integer",
                "int_parsing",
                value,
            ) from None
        if number < ge:
            raise _invalid(
                ["query", name],
                f"Input should be greater than or equal to {ge}",
                "greater_than_equal",
                value,
            )
        if le is not None and number > le:
            raise _invalid(
                ["query", name],
                f"Input should be less than or equal to {le}",
                "less_than_equal",
                value,
            )
        return number

    def time(self, name: str) -> datetime | None:
        value = self.one(name)
        if value is None:
            return None
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise _invalid(
                ["query", name],
                "Input should be a valid datetime",
                "datetime_from_date_parsing",
                value,
            ) from None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)

    def enum(self, name: str, allowed: Iterable[str]) -> list[str]:
        allowed = list(allowed)
        values = self.strings(name)
        for value in values:
            if value not in allowed:
                expected = ", ".join(f"'{a}'" for a in allowed)
                raise _invalid(["query", name], f"Input should be {expected}", "enum", value)
        return values

    def metadata(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for key, values in self.multi.items():
            if key.startswith("metadata[") and key.endswith("]"):
                out[key[len("metadata[") : -1]] = values
        return out


def _uuid(value: str, loc: list[str | int]) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise _invalid(
            loc,
            "Input should be a valid UUID, invalid character: expected an optional prefix of "
            "`urn:uuid:` followed by [0-9a-fA-F-], found `"
            + next((c for c in value if c not in "0123456789abcdefABCDEF-"), value[:1])
            + "`",
            "uuid_parsing",
            value,
        ) from None


def _metadata_matches(obj: Obj, wanted: Mapping[str, list[str]]) -> bool:
    meta = obj.get("metadata") or {}
    return all(str(meta.get(k)) in values for k, values in wanted.items())


def _sorted(items: list[Obj], sorting: list[str], key_of: Callable[[Obj, str], Any]) -> list[Obj]:
    """Apply Polar's `sorting` criteria (first one most significant); NULLs last ascending."""
    out = list(items)
    for criterion in reversed(sorting):
        descending = criterion.startswith("-")
        name = criterion.removeprefix("-")
        present = [o for o in out if key_of(o, name) is not None]
        missing = [o for o in out if key_of(o, name) is None]
        present.sort(key=lambda o, n=name: key_of(o, n), reverse=descending)  # type: ignore[misc]
        out = missing + present if descending else present + missing
    return out


def _paginated(items: list[Obj], query: _Query) -> JSONResponse:
    page = query.integer("page", 1, ge=1)
    limit = query.integer("limit", 10, ge=1, le=100)
    start = (page - 1) * limit
    return JSONResponse(
        {
            "items": items[start : start + limit],
            "pagination": {"total_count": len(items), "max_page": math.ceil(len(items) / limit)},
        }
    )


def _sub_key(obj: Obj, name: str) -> Any:
    if name == "customer":
        return (obj.get("customer") or {}).get("email")
    if name == "product":
        return (obj.get("product") or {}).get("name")
    if name == "discount":
        return (obj.get("discount") or {}).get("name") if obj.get("discount") else None
    value = obj.get(name)
    if name.endswith("_at") or name == "current_period_end":
        return _parse_time(value)
    return value


def _product_key(obj: Obj, name: str) -> Any:
    prices = obj.get("prices") or [{}]
    if name == "price_amount_type":
        return prices[0].get("amount_type")
    if name == "price_amount":
        return prices[0].get("price_amount")
    if name == "created_at":
        return _parse_time(obj.get("created_at"))
    return obj.get(name)


def _customer_key(obj: Obj, name: str) -> Any:
    if name == "created_at":
        return _parse_time(obj.get("created_at"))
    return obj.get(name)


def polar_fake(state: PolarState) -> Starlette:
    """The Polar fake serving `state`; see the module docstring for what it serves."""

    def query_of(request: Request) -> _Query:
        multi: dict[str, list[str]] = {}
        for k, v in request.query_params.multi_items():
            multi.setdefault(k, []).append(v)
        return _Query(multi)

    def path_uuid(request: Request, name: str = "id") -> str:
        return _uuid(request.path_params[name], ["path", name])

    # -- subscriptions ---------------------------------------------------------
    async def list_subscriptions(request: Request) -> Response:
        q = query_of(request)
        organization_ids = q.uuids("organization_id")
        product_ids = q.uuids("product_id")
        customer_ids = q.uuids("customer_id")
        external_ids = q.strings("external_customer_id")
        discount_ids = q.uuids("discount_id")
        active = q.boolean("active")
        statuses = q.enum("status", _SUB_STATUSES)
        cancel_at_period_end = q.boolean("cancel_at_period_end")
        started_after, started_before = q.time("started_after"), q.time("started_before")
        canceled_after, canceled_before = q.time("canceled_at_after"), q.time("canceled_at_before")
        sorting = q.enum("sorting", [p for s in _SUB_SORTS for p in (s, f"-{s}")]) or [
            "-started_at"
        ]
        metadata = q.metadata()

        def keep(o: Obj) -> bool:
            started = _parse_time(o.get("started_at"))
            canceled = _parse_time(o.get("canceled_at"))
            org = (o.get("product") or {}).get("organization_id", state.organization_id)
            return (
                (not organization_ids or org in organization_ids)
                and (not product_ids or o.get("product_id") in product_ids)
                and (not customer_ids or o.get("customer_id") in customer_ids)
                and (
                    not external_ids or (o.get("customer") or {}).get("external_id") in external_ids
                )
                and (not discount_ids or o.get("discount_id") in discount_ids)
                and (active is None or (o.get("status") in _ACTIVE) == active)
                and (not statuses or o.get("status") in statuses)
                and (
                    cancel_at_period_end is None
                    or o.get("cancel_at_period_end") == cancel_at_period_end
                )
                and (started_after is None or (started is not None and started >= started_after))
                and (started_before is None or (started is not None and started <= started_before))
                and (
                    canceled_after is None or (canceled is not None and canceled >= canceled_after)
                )
                and (
                    canceled_before is None
                    or (canceled is not None and canceled <= canceled_before)
                )
                and _metadata_matches(o, metadata)
            )

        items = [o for o in state.subscriptions.values() if keep(o)]
        return _paginated(_sorted(items, sorting, _sub_key), q)

    async def get_subscription(request: Request) -> Response:
        obj = state.subscriptions.get(path_uuid(request))
        if obj is None:
            raise _not_found()
        return JSONResponse(obj)

    # -- products --------------------------------------------------------------
    async def list_products(request: Request) -> Response:
        q = query_of(request)
        ids = q.uuids("id")
        organization_ids = q.uuids("organization_id")
        text = (q.one("query") or "").lower()
        is_archived = q.boolean("is_archived")
        is_recurring = q.boolean("is_recurring")
        visibility = q.enum("visibility", ("draft", "private", "public"))
        sorting = q.enum("sorting", [p for s in _PRODUCT_SORTS for p in (s, f"-{s}")]) or [
            "-created_at"
        ]
        metadata = q.metadata()

        def keep(o: Obj) -> bool:
            return (
                (not ids or o["id"] in ids)
                and (not organization_ids or o.get("organization_id") in organization_ids)
                and (not text or text in str(o.get("name", "")).lower())
                and (is_archived is None or o.get("is_archived") == is_archived)
                and (is_recurring is None or o.get("is_recurring") == is_recurring)
                and (not visibility or o.get("visibility") in visibility)
                and _metadata_matches(o, metadata)
            )

        items = [o for o in state.products.values() if keep(o)]
        return _paginated(_sorted(items, sorting, _product_key), q)

    async def get_product(request: Request) -> Response:
        obj = state.products.get(path_uuid(request))
        if obj is None:
            raise _not_found()
        return JSONResponse(obj)

    # -- customers -------------------------------------------------------------
    async def list_customers(request: Request) -> Response:
        q = query_of(request)
        organization_ids = q.uuids("organization_id")
        email = q.one("email")
        text = (q.one("query") or "").lower()
        sorting = q.enum("sorting", [p for s in _CUSTOMER_SORTS for p in (s, f"-{s}")]) or [
            "-created_at"
        ]
        metadata = q.metadata()

        def keep(o: Obj) -> bool:
            haystack = " ".join(
                str(o.get(f) or "") for f in ("email", "name", "external_id")
            ).lower()
            return (
                o.get("deleted_at") is None
                and (not organization_ids or o.get("organization_id") in organization_ids)
                and (email is None or str(o.get("email", "")).lower() == email.lower())
                and (not text or text in haystack)
                and _metadata_matches(o, metadata)
            )

        items = [o for o in state.customers.values() if keep(o)]
        return _paginated(_sorted(items, sorting, _customer_key), q)

    def customer_by_id(request: Request) -> Obj:
        obj = state.customers.get(path_uuid(request))
        if obj is None or obj.get("deleted_at") is not None:
            raise _not_found()
        return obj

    def customer_by_external(request: Request) -> Obj:
        external_id = request.path_params["external_id"]
        for obj in state.customers.values():
            if obj.get("external_id") == external_id and obj.get("deleted_at") is None:
                return obj
        raise _not_found()

    def customer_state(customer: Obj) -> Obj:
        active = [
            _state_subscription(s)
            for s in state.subscriptions.values()
            if s.get("customer_id") == customer["id"] and s.get("status") in _ACTIVE
        ]
        return {
            **customer,
            "active_subscriptions": active,
            "granted_benefits": [],
            "active_meters": [],
        }

    async def get_customer(request: Request) -> Response:
        return JSONResponse(customer_by_id(request))

    async def get_customer_external(request: Request) -> Response:
        return JSONResponse(customer_by_external(request))

    async def get_customer_state(request: Request) -> Response:
        return JSONResponse(customer_state(customer_by_id(request)))

    async def get_customer_state_external(request: Request) -> Response:
        return JSONResponse(customer_state(customer_by_external(request)))

    # -- checkouts and customer sessions ---------------------------------------
    async def create_checkout(request: Request) -> Response:
        body = await _json_body(request)
        products = body.get("products")
        if not isinstance(products, list) or not products:
            if products is None:
                raise _invalid(["body", "products"], "Field required", "missing", body)
            raise _invalid(
                ["body", "products"],
                "List should have at least 1 item after validation, not 0",
                "too_short",
                products,
            )
        chosen: list[Obj] = []
        for n, raw in enumerate(products):
            product_id = _uuid(str(raw), ["body", "products", n])
            product = state.products.get(product_id)
            if product is None or product.get("is_archived"):
                raise _invalid(
                    ["body", "products", n],
                    "Product does not exist or is archived.",
                    "value_error",
                    raw,
                )
            chosen.append(product)
        customer_id = body.get("customer_id")
        customer: Obj | None = None
        if customer_id is not None:
            customer = state.customers.get(_uuid(str(customer_id), ["body", "customer_id"]))
            if customer is None:
                raise _invalid(
                    ["body", "customer_id"],
                    "Customer does not exist.",
                    "value_error",
                    customer_id,
                )
        seats = body.get("seats")
        product = chosen[0]
        price = product["prices"][0]
        if price.get("amount_type") == "seat_based":
            per_seat = price["seat_tiers"]["tiers"][0]["price_per_seat"]
            amount = per_seat * int(seats or price["seat_tiers"].get("minimum_seats") or 1)
        else:
            amount = int(price.get("price_amount") or 0)
        now = state.clock()
        checkout_id = str(uuid.uuid4())
        client_secret = "polar_c_" + uuid.uuid4().hex
        checkout: Obj = {
            "id": checkout_id,
            "created_at": _iso(now),
            "modified_at": None,
            "custom_field_data": {},
            "payment_processor": "stripe",
            "status": "open",
            "client_secret": client_secret,
            "url": f"{state.checkout_base_url}/checkout/{client_secret}",
            "expires_at": _iso(now + 3600),
            "success_url": body.get("success_url")
            or f"{state.checkout_base_url}/checkout/{client_secret}/confirmation",
            "return_url": body.get("return_url"),
            "embed_origin": body.get("embed_origin"),
            "amount": amount,
            "seats": seats,
            "min_seats": body.get("min_seats"),
            "max_seats": body.get("max_seats"),
            "units": None,
            "min_units": None,
            "max_units": None,
            "discount_amount": 0,
            "net_amount": amount,
            "tax_amount": None,
            "tax_behavior": None,
            "total_amount": amount,
            "currency": price.get("price_currency", "usd"),
            "allow_trial": body.get("allow_trial", True),
            "active_trial_interval": None,
            "active_trial_interval_count": None,
            "trial_end": None,
            "organization_id": state.organization_id,
            "product_id": product["id"],
            "product_price_id": price["id"],
            "discount_id": body.get("discount_id"),
            "allow_discount_codes": body.get("allow_discount_codes", True),
            "require_billing_address": body.get("require_billing_address", False),
            "is_discount_applicable": True,
            "is_free_product_price": amount == 0,
            "is_payment_required": amount > 0,
            "is_payment_setup_required": bool(product.get("is_recurring")),
            "is_payment_form_required": amount > 0 or bool(product.get("is_recurring")),
            "customer_id": customer["id"] if customer else None,
            "is_business_customer": body.get("is_business_customer", False),
            "customer_name": body.get("customer_name") or (customer or {}).get("name"),
            "customer_email": body.get("customer_email") or (customer or {}).get("email"),
            "customer_ip_address": body.get("customer_ip_address"),
            "customer_billing_name": body.get("customer_billing_name"),
            "customer_billing_address": None,
            "customer_tax_id": body.get("customer_tax_id"),
            "locale": body.get("locale"),
            "payment_method_type": None,
            "payment_processor_metadata": {},
            "billing_address_fields": {
                "country": "required",
                "state": "disabled",
                "city": "disabled",
                "postal_code": "disabled",
                "line1": "disabled",
                "line2": "disabled",
            },
            "trial_interval": body.get("trial_interval"),
            "trial_interval_count": body.get("trial_interval_count"),
            "metadata": dict(body.get("metadata") or {}),
            "external_customer_id": body.get("external_customer_id")
            or (customer or {}).get("external_id"),
            "products": chosen,
            "product": product,
            "product_price": price,
            "prices": {p["id"]: p["prices"] for p in chosen},
            "discount": None,
            "subscription_id": body.get("subscription_id"),
            "attached_custom_fields": [],
            "customer_metadata": dict(body.get("customer_metadata") or {}),
        }
        state.checkouts[checkout_id] = checkout
        return JSONResponse(checkout, status_code=201)

    async def get_checkout(request: Request) -> Response:
        obj = state.checkouts.get(path_uuid(request))
        if obj is None:
            raise _not_found()
        return JSONResponse(obj)

    async def create_customer_session(request: Request) -> Response:
        body = await _json_body(request)
        customer: Obj | None = None
        if body.get("customer_id") is not None:
            customer = state.customers.get(_uuid(str(body["customer_id"]), ["body", "customer_id"]))
            loc = ["body", "customer_id"]
        elif body.get("external_customer_id") is not None:
            loc = ["body", "external_customer_id"]
            customer = next(
                (
                    c
                    for c in state.customers.values()
                    if c.get("external_id") == body["external_customer_id"]
                ),
                None,
            )
        else:
            raise _invalid(["body", "customer_id"], "Field required", "missing", body)
        if customer is None or customer.get("deleted_at") is not None:
            raise _invalid(loc, "Customer does not exist.", "value_error", body[loc[1]])
        now = state.clock()
        token = "polar_cst_" + uuid.uuid4().hex
        session: Obj = {
            "created_at": _iso(now),
            "modified_at": None,
            "id": str(uuid.uuid4()),
            "token": token,
            "expires_at": _iso(now + timedelta(hours=1).total_seconds()),
            "return_url": body.get("return_url"),
            "customer_portal_url": (
                f"{state.checkout_base_url}/portal?customer_session_token={token}"
            ),
            "customer_id": customer["id"],
            "customer": customer,
        }
        state.customer_sessions[session["id"]] = session
        return JSONResponse(session, status_code=201)

    # -- plumbing --------------------------------------------------------------
    def endpoint(handler: Callable[[Request], Awaitable[Response]]) -> Callable[..., Any]:
        async def handle(request: Request) -> Response:
            try:
                _authenticate(request, state)
                return await handler(request)
            except _PolarError as e:
                return e.response()

        async def recorded(request: Request) -> Response:
            return await serve_recorded(
                state, request, failure_response=_default_failure, handle=handle
            )

        return recorded

    async def unknown(request: Request) -> Response:
        return JSONResponse({"detail": "Not Found"}, status_code=404)

    def both(
        path: str, handler: Callable[[Request], Awaitable[Response]], method: str
    ) -> list[Route]:
        """Polar (FastAPI) answers a collection path with and without its trailing slash."""
        return [
            Route(path, endpoint(handler), methods=[method]),
            Route(path.rstrip("/"), endpoint(handler), methods=[method]),
        ]

    routes = [
        *both("/v1/subscriptions/", list_subscriptions, "GET"),
        Route("/v1/subscriptions/{id}", endpoint(get_subscription), methods=["GET"]),
        *both("/v1/products/", list_products, "GET"),
        Route("/v1/products/{id}", endpoint(get_product), methods=["GET"]),
        *both("/v1/customers/", list_customers, "GET"),
        Route(
            "/v1/customers/external/{external_id}/state",
            endpoint(get_customer_state_external),
            methods=["GET"],
        ),
        Route(
            "/v1/customers/external/{external_id}",
            endpoint(get_customer_external),
            methods=["GET"],
        ),
        Route("/v1/customers/{id}/state", endpoint(get_customer_state), methods=["GET"]),
        Route("/v1/customers/{id}", endpoint(get_customer), methods=["GET"]),
        *both("/v1/checkouts/", create_checkout, "POST"),
        Route("/v1/checkouts/{id}", endpoint(get_checkout), methods=["GET"]),
        *both("/v1/customer-sessions/", create_customer_session, "POST"),
        Route(
            "/{path:path}",
            endpoint(unknown),
            methods=["GET", "POST", "DELETE", "PUT", "PATCH"],
        ),
    ]
    return Starlette(routes=routes)


def _authenticate(request: Request, state: PolarState) -> None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _PolarError(
            401,
            {"error": "Unauthorized", "detail": "Unauthorized"},
            {"WWW-Authenticate": 'Bearer realm="polar"'},
        )
    if token.strip() not in state.access_tokens:
        raise _PolarError(
            401,
            {"error": "invalid_token", "error_description": _INVALID_TOKEN},
            {
                "WWW-Authenticate": (
                    f'Bearer error="invalid_token", error_description="{_INVALID_TOKEN}"'
                )
            },
        )


async def _json_body(request: Request) -> Obj:
    raw = await request.body()
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        raise _invalid(
            ["body"], "JSON decode error", "json_invalid", raw.decode(errors="replace")
        ) from None
    if not isinstance(body, dict):
        raise _invalid(["body"], "Input should be a valid dictionary", "dict_type", body)
    return body


def _state_subscription(sub: Obj) -> Obj:
    """A `Subscription` as an entry of `CustomerState.active_subscriptions`."""
    keys = (
        "id",
        "created_at",
        "modified_at",
        "custom_field_data",
        "metadata",
        "status",
        "amount",
        "currency",
        "recurring_interval",
        "current_period_start",
        "current_period_end",
        "trial_start",
        "trial_end",
        "cancel_at_period_end",
        "canceled_at",
        "started_at",
        "ends_at",
        "product_id",
        "discount_id",
        "seats",
        "units",
    )
    return {**{k: sub.get(k) for k in keys}, "meters": []}
