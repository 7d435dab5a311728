"""`billhook check-config [--online]`: the preflight before paid billing (SPEC §8).

Online checks run the real `stripe` and `polar-sdk` packages against the local
fakes, pointed at them by `[stripe] api_base` and `[polar] server_url`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from click.testing import CliRunner

from billhook.cli.main import main
from billhook.config import PriceMapping, ProductMapping
from billhook.sync.preflight import (
    polar_product_check,
    stripe_key,
    stripe_price_check,
    tier_pricing,
)
from billhook.testing.fakes.polar_api import (
    DEFAULT_ACCESS_TOKEN,
    PolarState,
    polar_fake,
    polar_product,
)
from billhook.testing.fakes.stripe_api import (
    DEFAULT_API_KEY,
    StripeState,
    stripe_fake,
    stripe_price,
)
from billhook.testing.polar import POLAR_SECRET
from billhook.testing.servers import serve_in_thread
from billhook.testing.settings import TOKENS, write_config
from billhook.testing.stripe import STRIPE_SECRET

LIVE_KEY = "sk_live_fake_0123456789"
TEAM_MONTHLY = "6b0f6a34-3f2e-4a51-9c1d-1a2b3c4d5e01"
TEAM_YEARLY = "6b0f6a34-3f2e-4a51-9c1d-1a2b3c4d5e02"
ARCHIVED = "6b0f6a34-3f2e-4a51-9c1d-1a2b3c4d5e03"
ONE_TIME = "6b0f6a34-3f2e-4a51-9c1d-1a2b3c4d5e04"
# A price map that sells team monthly and yearly on Stripe.
GOOD_PRICES = {
    "price_team_monthly": ("team", "month"),
    "price_team_yearly": ("team", "year"),
}
GOOD_PRODUCTS: dict[str, tuple[str, str | None]] = {
    TEAM_MONTHLY: ("team", "month"),
    TEAM_YEARLY: ("team", "year"),
}


@pytest.fixture(autouse=True)
def _no_config_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Secrets in the environment would override the files these tests write."""
    for name in list(os.environ):
        if name.startswith(("BILLHOOK_", "STRIPE_", "POLAR_")):
            monkeypatch.delenv(name)


# The fakes serve the whole module (starting and stopping uvicorn costs ~0.4 s);
# no test changes their objects, and each starts with an empty request log.
@pytest.fixture(scope="module")
def stripe_state() -> StripeState:
    state = StripeState(api_keys={DEFAULT_API_KEY, LIVE_KEY})
    state.add(
        stripe_price(id="price_team_monthly", interval="month"),
        stripe_price(id="price_team_yearly", interval="year", unit_amount=15000),
        stripe_price(id="price_old", active=False),
        stripe_price(id="price_once", interval=None),
        stripe_price(id="price_live", livemode=True),
    )
    return state


@pytest.fixture(scope="module")
def polar_state() -> PolarState:
    state = PolarState()
    state.add_product(
        polar_product(id=TEAM_MONTHLY, seat_based=True),
        polar_product(id=TEAM_YEARLY, recurring_interval="year"),
        polar_product(id=ARCHIVED, is_archived=True),
        polar_product(id=ONE_TIME, recurring_interval=None),
    )
    return state


@pytest.fixture(scope="module")
def urls(stripe_state: StripeState, polar_state: PolarState) -> Iterator[tuple[str, str]]:
    with (
        serve_in_thread(stripe_fake(stripe_state)) as stripe_url,
        serve_in_thread(polar_fake(polar_state)) as polar_url,
    ):
        yield stripe_url, polar_url


@dataclass
class Deployment:
    """A config file's contents; `write` writes it as billhook.toml."""

    stripe_url: str
    polar_url: str
    mode: str = "test"
    api_key: str = DEFAULT_API_KEY
    stripe_secrets: list[str] = field(default_factory=lambda: [STRIPE_SECRET])
    prices: dict[str, tuple[str, str]] = field(default_factory=lambda: dict(GOOD_PRICES))
    server: str = "sandbox"
    polar_secrets: list[str] = field(default_factory=lambda: [POLAR_SECRET])
    products: dict[str, tuple[str, str | None]] = field(default_factory=lambda: dict(GOOD_PRODUCTS))
    tokens: bool = False

    def write(self, directory: Path) -> Path:
        def mapping(tier: str, interval: str | None) -> dict[str, str]:
            return {"tier": tier} | ({"interval": interval} if interval else {})

        stripe = {
            "webhook_secrets": self.stripe_secrets,
            "api_key": self.api_key,
            "api_base": self.stripe_url,
            "prices": {price: mapping(*m) for price, m in self.prices.items()},
        }
        polar = {
            "webhook_secrets": self.polar_secrets,
            "access_token": DEFAULT_ACCESS_TOKEN,
            "server": self.server,
            "server_url": self.polar_url,
            "products": {product: mapping(*m) for product, m in self.products.items()},
        }
        auth = TOKENS if self.tokens else None
        return write_config(directory, stripe=stripe, polar=polar, auth=auth, mode=self.mode)


@pytest.fixture
def deployment(
    urls: tuple[str, str], stripe_state: StripeState, polar_state: PolarState
) -> Deployment:
    stripe_state.clear_requests()
    polar_state.clear_requests()
    return Deployment(*urls)


def check(config: Path, *, online: bool = True) -> tuple[int, list[str]]:
    args = ["check-config", "--config", str(config)] + (["--online"] if online else [])
    result = CliRunner().invoke(main, args)
    return result.exit_code, result.output.splitlines()


def failures(lines: list[str]) -> list[str]:
    return [line for line in lines if line.startswith("✗")]


def test_a_correct_config_passes_every_check(deployment: Deployment, tmp_path: Path) -> None:
    code, lines = check(deployment.write(tmp_path))

    assert failures(lines) == []
    assert code == 0, lines
    assert (
        "✓ tier team: Stripe prices for month and year; Polar products for month and year" in lines
    )
    assert "✓ tier enterprise: not sold through Stripe or Polar; only overrides grant it" in lines
    assert "✓ stripe price price_team_yearly: active, every year, test mode -> team" in lines
    assert f"✓ polar product {TEAM_MONTHLY}: every month, price: seat-based -> team" in lines
    assert f"✓ polar product {TEAM_YEARLY}: every year, price: fixed -> team" in lines
    assert "✓ stripe api key: sk_test_… agrees with mode 'test'" in lines
    output = "\n".join(lines)
    for secret in (DEFAULT_API_KEY, STRIPE_SECRET, POLAR_SECRET, DEFAULT_ACCESS_TOKEN):
        assert secret not in output


def test_offline_checks_make_no_requests(
    deployment: Deployment,
    tmp_path: Path,
    stripe_state: StripeState,
    polar_state: PolarState,
) -> None:
    code, lines = check(deployment.write(tmp_path), online=False)
    assert code == 0, lines
    assert not any(line.startswith(("✓ stripe price", "✓ polar product")) for line in lines)
    assert stripe_state.requests == []
    assert polar_state.requests == []


def _wrong_interval(d: Deployment) -> None:
    d.prices["price_team_yearly"] = ("team", "month")


def _live_price(d: Deployment) -> None:
    d.prices["price_live"] = ("team", "month")


def _live_key_in_test_mode(d: Deployment) -> None:
    d.api_key = LIVE_KEY
    d.prices["price_live"] = ("team", "month")


def _test_key_in_live_mode(d: Deployment) -> None:
    d.mode, d.server = "live", "production"


def _archived_product(d: Deployment) -> None:
    d.products[ARCHIVED] = ("team", None)


def _polar_wrong_interval(d: Deployment) -> None:
    d.products[TEAM_YEARLY] = ("team", "month")


def _polar_one_time(d: Deployment) -> None:
    d.products[ONE_TIME] = ("team", None)


def _unknown_price(d: Deployment) -> None:
    d.prices["price_nope"] = ("team", "month")


def _inactive_and_one_time(d: Deployment) -> None:
    d.prices["price_old"] = ("team", "month")
    d.prices["price_once"] = ("team", "month")


def _bad_webhook_secret(d: Deployment) -> None:
    d.stripe_secrets = [STRIPE_SECRET, "not_a_whsec_0123"]


def _polar_in_live_mode_on_sandbox(d: Deployment) -> None:
    d.mode, d.api_key = "live", LIVE_KEY


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            _wrong_interval,
            ["✗ stripe price price_team_yearly: billed every year, mapped as month"],
        ),
        (
            _live_price,
            [
                "✗ stripe price price_live: no such price for this API key"
                " (other-mode prices are invisible to it)"
            ],
        ),
        (
            _live_key_in_test_mode,
            [
                "✗ stripe api key: a live-mode key (sk_live_…);"
                " expected sk_test_… or rk_test_… in test mode",
                "✗ stripe price price_live: a live-mode price, mode is 'test'",
            ],
        ),
        (
            _test_key_in_live_mode,
            [
                "✗ stripe api key: a test-mode key (sk_test_…);"
                " expected sk_live_… or rk_live_… in live mode",
                "✗ stripe price price_team_monthly: a test-mode price, mode is 'live'",
                "✗ stripe price price_team_yearly: a test-mode price, mode is 'live'",
            ],
        ),
        (_archived_product, [f"✗ polar product {ARCHIVED}: archived (price: fixed)"]),
        (
            _polar_wrong_interval,
            [f"✗ polar product {TEAM_YEARLY}: billed every year, mapped as month (price: fixed)"],
        ),
        (_polar_one_time, [f"✗ polar product {ONE_TIME}: one-time, not recurring (price: fixed)"]),
        (
            _unknown_price,
            [
                "✗ stripe price price_nope: no such price for this API key"
                " (other-mode prices are invisible to it)"
            ],
        ),
        (
            _inactive_and_one_time,
            [
                "✗ stripe price price_old: inactive",
                "✗ stripe price price_once: one-time, not recurring",
            ],
        ),
        (
            _bad_webhook_secret,
            ["✗ stripe webhook secrets: 2 secrets; #2 does not start with whsec_"],
        ),
        (
            _polar_in_live_mode_on_sandbox,
            ["✗ polar server: 'sandbox' with mode 'live', expected 'production'"],
        ),
    ],
)
def test_check_config_catches(
    deployment: Deployment,
    tmp_path: Path,
    change: Callable[[Deployment], None],
    expected: list[str],
) -> None:
    change(deployment)
    code, lines = check(deployment.write(tmp_path))

    assert code == 1
    found = failures(lines)
    for line in expected:
        assert any(f.startswith(line) for f in found), (line, found)
    assert not any(f.startswith("✗ tier ") for f in found), found
    assert "not_a_whsec_0123" not in "\n".join(lines)


def _team_monthly_enterprise_yearly(d: Deployment) -> None:
    del d.prices["price_team_yearly"]
    del d.products[TEAM_YEARLY]
    d.prices["price_team_yearly"] = ("enterprise", "year")


def test_a_tier_sold_in_one_interval_only_passes(deployment: Deployment, tmp_path: Path) -> None:
    """Issue 15: selling a tier monthly only or yearly only is legitimate; the line says which."""
    _team_monthly_enterprise_yearly(deployment)
    code, lines = check(deployment.write(tmp_path))
    assert failures(lines) == []
    assert code == 0, lines
    assert "✓ tier team: Stripe price for month only; Polar product for month only" in lines
    assert "✓ tier enterprise: Stripe price for year only" in lines
    assert "✓ stripe price price_team_yearly: active, every year, test mode -> enterprise" in lines


def test_the_default_test_deployment_passes_offline(tmp_path: Path) -> None:
    """billhook.testing's deployment sells enterprise yearly on Stripe and through a Polar
    product mapped without an interval: nothing wrong with either."""
    config = write_config(
        tmp_path, stripe={"api_key": DEFAULT_API_KEY}, polar={"access_token": DEFAULT_ACCESS_TOKEN}
    )
    code, lines = check(config, online=False)
    assert failures(lines) == []
    assert code == 0, lines
    assert (
        "✓ tier enterprise: Stripe price for year only;"
        " 1 Polar product without a configured interval"
    ) in lines


def test_every_failure_is_counted_in_one_error_line(deployment: Deployment, tmp_path: Path) -> None:
    """The summary counts the lines printed above it, the config line included."""
    _unknown_price(deployment)
    _archived_product(deployment)
    code, lines = check(deployment.write(tmp_path))
    assert code == 1
    assert len(failures(lines)) == 2
    checks = lines[:-1]
    assert all(line[:2] in ("✓ ", "! ", "✗ ") for line in checks), checks
    warned = sum(line.startswith("! ") for line in checks)
    assert warned == 1  # no token: `Deployment` configures none
    assert lines[-1] == f"Error: {len(checks)} checks, 2 failed, 1 warning"


def test_a_passing_run_ends_with_its_count(deployment: Deployment, tmp_path: Path) -> None:
    deployment.tokens = True
    code, lines = check(deployment.write(tmp_path), online=False)
    assert code == 0, lines
    assert lines[-1] == f"{len(lines) - 1} checks, 0 failed"
    assert "✓ auth tokens: 1 read token, 1 admin token" in lines


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("redis://localhost:notaport", "Port could not be cast to integer value as 'notaport'"),
        ("redis://localhost:65536", "Port out of range 0-65535"),
        (
            "http://localhost:6379",
            "Redis URL must specify one of the following schemes (redis://, rediss://, unix://)",
        ),
        ("redis://localhost?socket_timeout=soon", "Invalid value for 'socket_timeout'"),
        ("redis://localhost/0?colour=blue", "unknown query parameter 'colour'"),
        ("redis://localhost/zero", "the path /zero is not a database number (redis-py uses 0)"),
    ],
)
def test_check_config_catches_a_redis_url_serve_could_not_use(
    tmp_path: Path, url: str, problem: str
) -> None:
    """Issue 12: `serve` exited with "unexpected ValueError" on these; the check fails first
    (and `serve` now stops with the same words: tests/cli/test_main.py)."""
    config = write_config(tmp_path, redis_url=url.replace("redis://", "redis://:hunter2@", 1))
    code, lines = check(config, online=False)
    assert code == 1
    [redis] = [line for line in lines if "redis url" in line]
    assert redis.startswith(f"✗ redis url: {problem}"), redis
    assert "hunter2" not in "\n".join(lines)


def test_a_good_redis_url_passes_without_being_shown(tmp_path: Path) -> None:
    config = write_config(tmp_path, redis_url="redis://:hunter2@localhost:6379/15")
    _, lines = check(config, online=False)
    assert "✓ redis url: a URL redis-py accepts (not connected to)" in lines
    assert "hunter2" not in "\n".join(lines)


def test_no_token_is_a_warning_not_a_failure(tmp_path: Path) -> None:
    config = write_config(tmp_path, auth=None)
    _, lines = check(config, online=False)
    assert (
        "! auth tokens: none configured (auth.api_tokens, auth.admin_tokens):"
        " every /v1 call answers 401"
    ) in lines
    assert not any(line.startswith("✗ auth") for line in lines)


def test_the_event_log_line_names_the_log_serve_will_use(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    _, lines = check(config, online=False)
    events = tmp_path / "data" / "events.db"
    assert f"✓ event log: {events} (none yet: billhook serve creates it)" in lines
    assert not (tmp_path / "data").exists()
    (tmp_path / "blocker").write_text("a file where the data dir should be")
    blocked = write_config(tmp_path, name="blocked.toml", data_dir=tmp_path / "blocker" / "data")
    code, lines = check(blocked, online=False)
    assert code == 1
    blocker = tmp_path / "blocker"
    assert f"✗ event log: {blocker / 'data' / 'events.db'}: {blocker} is not a directory" in lines


def test_a_config_that_does_not_load_is_one_failed_check(tmp_path: Path) -> None:
    config = tmp_path / "billhook.toml"
    config.write_text('[stripe.prices]\nprice_x = { tier = "gold", interval = "month" }\n')
    code, lines = check(config, online=False)
    assert code == 1
    assert lines == [
        "✗ config: stripe.prices.price_x.tier: unknown tier 'gold'",
        "Error: the config does not load; nothing else was checked",
    ]


def test_nothing_configured_fails(tmp_path: Path) -> None:
    config = tmp_path / "billhook.toml"
    config.write_text(f'[billhook]\ndata_dir = "{tmp_path}"\n')
    code, lines = check(config, online=True)
    assert code == 1
    assert failures(lines) == ["✗ providers: neither Stripe nor Polar is configured"]


def test_a_failing_provider_stops_its_lookups_and_shows_no_key(
    deployment: Deployment, tmp_path: Path, stripe_state: StripeState
) -> None:
    deployment.api_key = "sk_test_not_accepted_0123"
    code, lines = check(deployment.write(tmp_path))
    assert code == 1
    assert failures(lines) == [
        "✗ stripe price price_team_monthly: lookup failed: stripe: AuthenticationError (HTTP 401)",
        "✗ stripe prices: 1 more not looked up",
    ]
    assert len(stripe_state.requests_to("/v1/prices/price_team_monthly")) == 1
    assert "not_accepted" not in "\n".join(lines)


# -- the pure checks ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "mode", "ok", "detail"),
    [
        ("sk_test_abc", "test", True, "sk_test_… agrees with mode 'test'"),
        ("rk_test_abc", "test", True, "rk_test_… agrees with mode 'test'"),
        ("rk_live_abc", "live", True, "rk_live_… agrees with mode 'live'"),
        ("rk_live_abc", "test", False, "a live-mode key (rk_live_…)"),
        ("pk_test_abc", "test", False, "a publishable key (pk_…)"),
        ("whsec_abc", "live", False, "a webhook secret (whsec_…)"),
        ("abc", "test", False, "not a Stripe secret or restricted key"),
        ("", "test", False, "not set"),
    ],
)
def test_stripe_key_kinds(key: str, mode: str, ok: bool, detail: str) -> None:
    result = stripe_key(key, mode)
    assert (result.ok, result.detail.startswith(detail)) == (ok, True), result.detail
    if key:
        assert key not in result.line()


@pytest.mark.parametrize(
    ("prices", "products", "detail"),
    [
        ({"p1": ("month",), "p2": ("year",)}, {}, "Stripe prices for month and year"),
        ({"p1": ("year",)}, {}, "Stripe price for year only"),
        ({"p1": ("month",), "p2": ("month",)}, {}, "Stripe prices for month only"),
        (
            {"p1": ("day",), "p2": ("month",), "p3": ("year",)},
            {},
            "Stripe prices for day, month and year",
        ),
        (
            {"p1": ("month",)},
            {"x": ("year",)},
            "Stripe price for month only; Polar product for year only",
        ),
        ({}, {"x": ("month",), "y": ("year",)}, "Polar products for month and year"),
        (
            {},
            {"x": ("month",), "y": (None,)},
            "Polar product for month only, 1 more without a configured interval",
        ),
        ({}, {"x": (None,), "y": (None,)}, "2 Polar products without a configured interval"),
        ({}, {}, "not sold through Stripe or Polar; only overrides grant it"),
    ],
)
def test_tier_pricing_reports_the_intervals_sold_and_never_fails(
    prices: dict[str, tuple[str]],
    products: dict[str, tuple[str | None]],
    detail: str,
) -> None:
    """Other tiers' mappings are not counted."""
    result = tier_pricing(
        "team",
        {"p_other": PriceMapping("enterprise", "week")}
        | {pid: PriceMapping("team", i) for pid, (i,) in prices.items()},
        {"x_other": ProductMapping("enterprise")}
        | {pid: ProductMapping("team", i) for pid, (i,) in products.items()},
    )
    assert (result.ok, result.warning, result.detail) == (True, False, detail)


def test_a_price_billed_every_three_months_is_not_monthly() -> None:
    price = stripe_price(id="price_q")
    price["recurring"]["interval_count"] = 3
    result = stripe_price_check("price_q", PriceMapping("team", "month"), price, "test")
    assert (result.ok, result.detail) == (False, "billed every 3 months, mapped as every month")


def test_a_polar_product_without_active_prices_fails() -> None:
    product = polar_product(id=TEAM_MONTHLY)
    for price in product["prices"]:
        price["is_archived"] = True
    result = polar_product_check(TEAM_MONTHLY, ProductMapping("team"), product, "sandbox")
    assert (result.ok, result.detail) == (False, "no active price (price: none)")
