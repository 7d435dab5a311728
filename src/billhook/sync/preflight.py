"""`billhook check-config`: the preflight before paid billing (docs/operations.md).

Every check is a :class:`Check` — a pass, a warning or a failure with one line
of detail that carries ids, tiers, intervals, paths and key *kinds*, never a
secret. The offline checks read the settings (and look at the data dir): what
`billhook serve` will use — the log's place, the Redis URL as redis-py reads
it, the tokens — so that a config that passes them starts. The online ones look
each mapped Stripe price and Polar product up through a small port (``price``
/ ``product`` returning the provider's JSON, or None when there is no such
object), which :class:`~billhook.providers.stripe.client.StripeSource` and
:class:`~billhook.providers.polar.client.PolarSource` satisfy. Checks are
yielded one by one so the CLI can print them as they come.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from billhook.config import (
    ENFORCEMENT_MODES,
    INTERVALS,
    PriceMapping,
    ProductMapping,
    Settings,
    redis_url_problem,
)
from billhook.errors import LogUnavailable
from billhook.log.backend import describe
from billhook.log.postgres import SCHEMA_VERSION as LOG_SCHEMA_VERSION
from billhook.log.postgres import inspect
from billhook.providers.clients import ProviderError, sources
from billhook.providers.polar.client import PolarSource
from billhook.providers.stripe.client import StripeSource

# Stripe webhook endpoint secrets start with this.
STRIPE_SIGNING_PREFIX = "whsec_"
# Stripe API key prefixes each mode accepts: secret and restricted keys.
STRIPE_KEY_PREFIXES = {
    "test": ("sk_test_", "rk_test_"),
    "live": ("sk_live_", "rk_live_"),
}
# Key prefixes that are recognisably wrong kinds of Stripe key, and what they are.
STRIPE_WRONG_KEYS = {"pk_": "a publishable key", "whsec_": "a webhook secret"}
# The Polar server each mode belongs on.
POLAR_SERVER_FOR_MODE = {"test": "sandbox", "live": "production"}
# How a check line starts when it passes, when it passes with a warning, and when it fails.
PASS, WARN, FAIL = "✓", "!", "✗"


@dataclass(frozen=True)
class Check:
    """One check's outcome: `name` is what was checked, `detail` what was found.

    A `warning` passes (nothing stops `serve`) but is worth an operator's look.
    """

    ok: bool
    name: str
    detail: str
    warning: bool = False

    def line(self) -> str:
        """`✓ name: detail`, `! name: detail` (a warning) or `✗ name: detail`."""
        mark = FAIL if not self.ok else WARN if self.warning else PASS
        return f"{mark} {self.name}: {self.detail}"


class PriceLookup(Protocol):
    def price(self, price_id: str) -> dict[str, Any] | None:
        """The Stripe price as JSON, None when there is none; raises ProviderError."""
        ...


class ProductLookup(Protocol):
    def product(self, product_id: str) -> dict[str, Any] | None:
        """The Polar product as JSON, None when there is none; raises ProviderError."""
        ...


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


# -- offline ----------------------------------------------------------------------------


def stripe_in_use(settings: Settings) -> bool:
    """Stripe counts as configured once any price, webhook secret or API key is set."""
    s = settings.stripe
    return bool(s.prices or s.webhook_secrets or s.api_key)


def polar_in_use(settings: Settings) -> bool:
    """Polar counts as configured once any product, webhook secret or token is set."""
    p = settings.polar
    return bool(p.products or p.webhook_secrets or p.access_token)


def offline_checks(settings: Settings) -> Iterator[Check]:
    """Checks that need only the settings (already loaded, so already well-typed) and a
    look at the data dir."""
    if settings.storage_url:
        where = describe(settings)
        yield Check(True, "storage", f"{where} (the log and the projections)")
    else:
        yield Check(True, "storage", "SQLite files under data_dir (no [storage] url)")
        yield event_log_check(settings.events_path)
    yield redis_check(settings)
    yield auth_check(settings)
    yield _enforcement(settings)
    yield _tiers(settings)
    stripe, polar = stripe_in_use(settings), polar_in_use(settings)
    if not stripe and not polar:
        yield Check(False, "providers", "neither Stripe nor Polar is configured")
    if stripe:
        yield from _stripe_offline(settings)
    if polar:
        yield from _polar_offline(settings)
    for tier in list(settings.tiers)[1:]:
        yield tier_pricing(tier, settings.stripe.prices, settings.polar.products)


def event_log_check(events_path: Path) -> Check:
    """Where `serve` keeps the log, and whether it can: an existing log, or a directory
    it may create one in."""
    path = events_path.absolute()
    if path.is_file():
        return Check(True, "event log", str(path))
    if path.exists():
        return Check(False, "event log", f"{path} is not a file")
    place = path.parent
    while not place.exists() and place != place.parent:
        place = place.parent
    if not place.is_dir():
        return Check(False, "event log", f"{path}: {place} is not a directory")
    if not os.access(place, os.W_OK | os.X_OK):
        return Check(False, "event log", f"{path}: {place} is not writable")
    return Check(True, "event log", f"{path} (none yet: billhook serve creates it)")


def redis_check(settings: Settings) -> Check:
    """Whether `[redis] url` is one redis-py can use (parsed, not connected); the URL is
    never shown, since it may carry a password."""
    if not settings.redis_url:
        return Check(True, "redis url", "not set: billhook serve projects in-process")
    problem = redis_url_problem(settings.redis_url.reveal())
    if problem is not None:
        return Check(False, "redis url", problem)
    return Check(True, "redis url", "a URL redis-py accepts (not connected to)")


def auth_check(settings: Settings) -> Check:
    """How many read and admin tokens there are; a warning when there are none."""
    read, admin = len(settings.auth.api_tokens), len(settings.auth.admin_tokens)
    name = "auth tokens"
    if not read and not admin:
        detail = "none configured (auth.api_tokens, auth.admin_tokens): every /v1 call answers 401"
        return Check(True, name, detail, warning=True)
    counted = f"{_plural(read, 'read token')}, {_plural(admin, 'admin token')}"
    if not admin:
        counted += " (the admin routes refuse every token; the CLI still acts)"
    return Check(True, name, counted)


def _enforcement(settings: Settings) -> Check:
    ok = settings.enforcement in ENFORCEMENT_MODES
    return Check(ok, "enforcement", f"initial mode {settings.enforcement!r}")


def _tiers(settings: Settings) -> Check:
    # The loader already refuses a mapping to an unknown tier; checked again so
    # that this line states it rather than assumes it.
    mapped = [m.tier for m in settings.stripe.prices.values()]
    mapped += [m.tier for m in settings.polar.products.values()]
    unknown = sorted({t for t in mapped if t not in settings.tiers})
    if unknown:
        return Check(False, "tiers", f"mapped to unknown tier(s) {', '.join(unknown)}")
    names = ", ".join(settings.tiers)
    detail = f"{names} ({settings.default_tier} is the default); every mapped tier exists"
    return Check(True, "tiers", detail)


def _stripe_offline(settings: Settings) -> Iterator[Check]:
    s = settings.stripe
    if not s.webhook_secrets:
        yield Check(False, "stripe webhook secrets", "none set: /webhooks/stripe answers 404")
    else:
        bad = [
            str(n)
            for n, secret in enumerate(s.webhook_secrets, 1)
            if not secret.reveal().startswith(STRIPE_SIGNING_PREFIX)
        ]
        count = _plural(len(s.webhook_secrets), "secret")
        if bad:
            which = ", ".join(f"#{n}" for n in bad)
            yield Check(
                False,
                "stripe webhook secrets",
                f"{count}; {which} does not start with {STRIPE_SIGNING_PREFIX}",
            )
        else:
            yield Check(True, "stripe webhook secrets", f"{count}, each {STRIPE_SIGNING_PREFIX}…")
    yield stripe_key(s.api_key.reveal(), settings.mode)
    if not s.prices:
        yield Check(
            False, "stripe prices", "none mapped: every Stripe subscription would grant nothing"
        )


def stripe_key(key: str, mode: str) -> Check:
    """Whether `key` is a secret or restricted key of `mode`; names its kind, never it."""
    name = "stripe api key"
    wanted = STRIPE_KEY_PREFIXES[mode]
    expected = f"expected {' or '.join(p + '…' for p in wanted)} in {mode} mode"
    if not key:
        return Check(False, name, f"not set (refresh, backfill and --online need it); {expected}")
    for prefix in wanted:
        if key.startswith(prefix):
            return Check(True, name, f"{prefix}… agrees with mode {mode!r}")
    for other_mode, prefixes in STRIPE_KEY_PREFIXES.items():
        for prefix in prefixes:
            if key.startswith(prefix):
                return Check(False, name, f"a {other_mode}-mode key ({prefix}…); {expected}")
    for prefix, kind in STRIPE_WRONG_KEYS.items():
        if key.startswith(prefix):
            return Check(False, name, f"{kind} ({prefix}…); {expected}")
    return Check(False, name, f"not a Stripe secret or restricted key; {expected}")


def _polar_offline(settings: Settings) -> Iterator[Check]:
    p = settings.polar
    if not p.webhook_secrets:
        yield Check(False, "polar webhook secrets", "none set: /webhooks/polar answers 404")
    else:
        # The loader refuses empty ones; this line states it.
        empty = sum(not secret.reveal().strip() for secret in p.webhook_secrets)
        count = _plural(len(p.webhook_secrets), "secret")
        detail = f"{count}, {empty} empty" if empty else f"{count}, none empty"
        yield Check(not empty, "polar webhook secrets", detail)
    if p.access_token:
        yield Check(True, "polar access token", "set")
    else:
        yield Check(False, "polar access token", "not set (refresh, backfill and --online need it)")
    wanted = POLAR_SERVER_FOR_MODE[settings.mode]
    via = f" (requests go to server_url {p.server_url})" if p.server_url else ""
    if p.server == wanted:
        yield Check(True, "polar server", f"{p.server!r} agrees with mode {settings.mode!r}{via}")
    else:
        detail = f"{p.server!r} with mode {settings.mode!r}, expected {wanted!r}{via}"
        yield Check(False, "polar server", detail)
    if not p.products:
        yield Check(
            False, "polar products", "none mapped: every Polar subscription would grant nothing"
        )
    not_uuids = sorted(pid for pid in p.products if not _is_uuid(pid))
    if not_uuids:
        yield Check(False, "polar products", f"not UUIDs: {', '.join(not_uuids)}")


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def tier_pricing(
    tier: str,
    prices: Mapping[str, PriceMapping],
    products: Mapping[str, ProductMapping],
) -> Check:
    """Which intervals a paid tier is sold in, per provider; this line always passes.

    Selling a tier monthly only or yearly only is legitimate (an enterprise
    tier with a yearly price alone), so nothing is required of the intervals.
    What can be wrong with a mapping fails elsewhere: a tier that does not
    exist on the `tiers` line (and when the config loads), a price or product
    the provider lacks or bills at another interval on the `--online` lines.
    A Polar product mapped without `interval` is counted apart, since its
    interval is known only online. A tier neither provider sells is granted by
    overrides only (an enterprise tier sold by contract).
    """
    name = f"tier {tier}"
    stripe = [m.interval for m in prices.values() if m.tier == tier]
    polar = [m.interval for m in products.values() if m.tier == tier]
    parts = []
    if stripe:
        parts.append(_sold("Stripe price", len(stripe), set(stripe)))
    if polar:
        typed = {i for i in polar if i is not None}
        untyped = polar.count(None)
        if typed:
            part = _sold("Polar product", len(polar) - untyped, typed)
            if untyped:
                part += f", {untyped} more without a configured interval"
        else:
            part = f"{_plural(untyped, 'Polar product')} without a configured interval"
        parts.append(part)
    if not parts:
        return Check(True, name, "not sold through Stripe or Polar; only overrides grant it")
    return Check(True, name, "; ".join(parts))


def _sold(unit: str, count: int, intervals: set[str]) -> str:
    """`Stripe prices for month and year`, `Stripe price for year only`."""
    sold = [i for i in INTERVALS if i in intervals]
    span = f"{sold[0]} only" if len(sold) == 1 else f"{', '.join(sold[:-1])} and {sold[-1]}"
    return f"{unit if count == 1 else unit + 's'} for {span}"


# -- online -----------------------------------------------------------------------------


def stripe_price_check(
    price_id: str, mapping: PriceMapping, price: Mapping[str, Any] | None, mode: str
) -> Check:
    """Whether a mapped Stripe price exists, is active, recurs as mapped and is of `mode`."""
    name = f"stripe price {price_id}"
    if price is None:
        return Check(
            False, name, "no such price for this API key (other-mode prices are invisible to it)"
        )
    problems: list[str] = []
    if not price.get("active"):
        problems.append("inactive")
    recurring = price.get("recurring")
    if price.get("type") != "recurring" or not isinstance(recurring, Mapping):
        problems.append("one-time, not recurring")
    else:
        problems += _interval_problems(
            recurring.get("interval"), recurring.get("interval_count"), mapping.interval
        )
    live = bool(price.get("livemode"))
    if live != (mode == "live"):
        problems.append(f"a {'live' if live else 'test'}-mode price, mode is {mode!r}")
    if problems:
        return Check(False, name, "; ".join(problems))
    return Check(True, name, f"active, every {mapping.interval}, {mode} mode -> {mapping.tier}")


def polar_product_check(
    product_id: str, mapping: ProductMapping, product: Mapping[str, Any] | None, server: str
) -> Check:
    """Whether a mapped Polar product exists, recurs as mapped (when mapped with an
    interval) and is not archived; its price mode is always reported."""
    name = f"polar product {product_id}"
    if product is None:
        return Check(False, name, f"not found on Polar {server}")
    mode = price_mode(product)
    problems: list[str] = []
    if product.get("is_archived"):
        problems.append("archived")
    if not product.get("is_recurring"):
        problems.append("one-time, not recurring")
    elif mapping.interval is not None:
        problems += _interval_problems(
            product.get("recurring_interval"),
            product.get("recurring_interval_count"),
            mapping.interval,
        )
    if mode == "none":
        problems.append("no active price")
    if problems:
        return Check(False, name, f"{'; '.join(problems)} (price: {mode})")
    every = product.get("recurring_interval")
    return Check(True, name, f"every {every}, price: {mode} -> {mapping.tier}")


def price_mode(product: Mapping[str, Any]) -> str:
    """`seat-based` when an active price is seat-based, else the active prices'
    amount types (`fixed`, `custom`, ...), or `none` when no price is active.

    An archived product archives its prices too; its mode is then read from
    all of them, since it is still worth showing.
    """
    prices = [p for p in product.get("prices") or () if isinstance(p, Mapping)]
    active = [p for p in prices if not p.get("is_archived")]
    shown = active if active or not product.get("is_archived") else prices
    kinds = sorted({str(p.get("amount_type")) for p in shown})
    if "seat_based" in kinds:
        return "seat-based"
    return ", ".join(kinds) or "none"


def _interval_problems(interval: object, count: object, wanted: str) -> list[str]:
    if interval != wanted:
        return [f"billed every {interval}, mapped as {wanted}"]
    if count not in (None, 1):
        return [f"billed every {count} {interval}s, mapped as every {wanted}"]
    return []


def online_checks(
    settings: Settings,
    stripe: PriceLookup | None,
    polar: ProductLookup | None,
) -> Iterator[Check]:
    """Look up every mapped price and product; None for a provider without credentials.

    After a provider's first ProviderError the rest of its lookups are skipped
    (one line says how many): the next ones would most likely fail the same way,
    each after its own retries.
    """
    prices, products = settings.stripe.prices, settings.polar.products
    if prices:
        if stripe is None:
            yield Check(False, "stripe prices", "not looked up: no API key")
        else:
            yield from _looked_up(
                "stripe",
                "price",
                list(prices),
                stripe.price,
                lambda pid, found: stripe_price_check(pid, prices[pid], found, settings.mode),
            )
    if products:
        if polar is None:
            yield Check(False, "polar products", "not looked up: no access token")
        else:
            server = settings.polar.server
            yield from _looked_up(
                "polar",
                "product",
                list(products),
                polar.product,
                lambda pid, found: polar_product_check(pid, products[pid], found, server),
            )


def database_checks(url: str) -> Iterator[Check]:
    """That the PostgreSQL database answers, the log's schema version, and that billhook's
    sessions commit synchronously (an acknowledgement's durability)."""
    try:
        report = inspect(url)
    except LogUnavailable as e:
        yield Check(False, "database", f"does not answer: {e}")
        return
    yield Check(True, "database", f"answers (PostgreSQL {report.server_version})")
    if report.log_version is None:
        yield Check(True, "log schema", "none yet: billhook serve creates it")
    elif report.log_version > LOG_SCHEMA_VERSION:
        detail = f"version {report.log_version}, newer than this billhook's {LOG_SCHEMA_VERSION}"
        yield Check(False, "log schema", detail)
    else:
        yield Check(True, "log schema", f"version {report.log_version}")
    on = report.synchronous_commit == "on"
    detail = f"{report.synchronous_commit} in billhook's sessions"
    yield Check(on, "synchronous_commit", detail if on else f"{detail}: acks would not be durable")


def _looked_up(
    provider: str,
    kind: str,
    ids: list[str],
    fetch: Callable[[str], dict[str, Any] | None],
    judge: Callable[[str, dict[str, Any] | None], Check],
) -> Iterator[Check]:
    for n, ident in enumerate(ids):
        try:
            found = fetch(ident)
        except ProviderError as e:
            yield Check(False, f"{provider} {kind} {ident}", f"lookup failed: {e}")
            rest = len(ids) - n - 1
            if rest:
                yield Check(False, f"{provider} {kind}s", f"{rest} more not looked up")
            return
        yield judge(ident, found)


def all_checks(
    settings: Settings,
    *,
    online: bool,
    connect: Callable[[Settings], Mapping[str, StripeSource | PolarSource]] = sources,
) -> Iterator[Check]:
    """The offline checks, then (with `online`) the look-ups through `connect`'s
    sources, which are closed when the iteration ends or is closed."""
    yield from offline_checks(settings)
    if not online:
        return
    if settings.storage_url:
        yield from database_checks(settings.storage_url.reveal())
    found = connect(settings)
    try:
        stripe, polar = found.get("stripe"), found.get("polar")
        yield from online_checks(
            settings,
            stripe if isinstance(stripe, StripeSource) else None,
            polar if isinstance(polar, PolarSource) else None,
        )
    finally:
        for source in found.values():
            source.close()
