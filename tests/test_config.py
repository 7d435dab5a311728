"""Config loading: every mistake names its key; secrets never show (SPEC §2)."""

from __future__ import annotations

import base64
import tomllib
from pathlib import Path
from typing import Any

import msgspec
import pytest

from billhook.config import (
    OutboundSettings,
    PriceMapping,
    ProductMapping,
    Secret,
    Settings,
    load_settings,
    parse_settings,
    resolve_config_path,
)
from billhook.errors import ConfigError

WHSEC = "whsec_" + base64.b64encode(b"k" * 32).decode()

EXAMPLE = Path(__file__).parents[1] / "examples" / "billhook.toml"


def test_the_example_config_is_the_defaults_plus_its_maps() -> None:
    settings = load_settings(EXAMPLE, environ={})
    defaults = Settings()
    for key in (
        "mode",
        "enforcement",
        "max_body_bytes",
        "signature_tolerance_s",
        "final_event_allowance_s",
        "stale_period_hours",
        "request_timeout_s",
        "max_connections",
    ):
        assert getattr(settings, key) == getattr(defaults, key)
    # The default `./data`, next to the file.
    assert settings.data_dir == EXAMPLE.parent.resolve() / defaults.data_dir
    assert settings.attention_grace_hours == defaults.attention_grace_hours
    assert settings.workspace_key == defaults.workspace_key
    assert dict(settings.tiers) == dict(defaults.tiers)
    assert list(settings.tiers) == ["solo", "team", "enterprise"]
    assert settings.stripe.prices == {
        "price_team_monthly": PriceMapping("team", "month", min_seats=1, max_seats=200),
        "price_team_yearly": PriceMapping("team", "year"),
    }
    assert list(settings.polar.products.values()) == [ProductMapping("team", "month")]
    assert settings.webhook_secrets("stripe") == ()


def test_example_config_names_every_key_the_parser_knows() -> None:
    """The example is complete: removing any key it sets still parses, adding none is needed."""
    raw = tomllib.loads(EXAMPLE.read_text())
    assert set(raw) == {"billhook", "tiers", "stripe", "polar", "auth", "redis", "outbound"}
    assert set(raw["billhook"]) == {
        "mode",
        "data_dir",
        "enforcement",
        "max_body_bytes",
        "signature_tolerance_s",
        "attention_grace_hours",
        "final_event_allowance_s",
        "stale_period_hours",
        "workspace_key",
        "request_timeout_s",
        "max_connections",
    }
    assert set(raw["stripe"]) == {"webhook_secrets", "api_key", "api_base", "prices"}
    assert set(raw["polar"]) == {
        "webhook_secrets",
        "access_token",
        "server",
        "server_url",
        "products",
    }
    assert set(raw["auth"]) == {"api_tokens", "admin_tokens"}
    assert set(raw["redis"]) == {"url"}
    # Every [outbound] key but the endpoints, which the example shows commented out.
    outbound_keys = {f.name for f in msgspec.structs.fields(OutboundSettings)} - {"endpoints"}
    assert set(raw["outbound"]) == outbound_keys
    assert load_settings(EXAMPLE, environ={}).outbound == OutboundSettings()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            {"billhook": {"mode": "prod"}},
            "billhook.mode: expected one of 'test', 'live', got 'prod'",
        ),
        ({"billhook": {"mode": 1}}, "billhook.mode: expected str, got integer"),
        ({"billhook": {"modee": "test"}}, "billhook.modee: unknown key"),
        ({"unknown": {}}, "unknown: unknown key"),
        ({"billhook": "x"}, "billhook: expected a table"),
        ({"billhook": {"enforcement": "on"}}, "billhook.enforcement: expected one of"),
        ({"billhook": {"max_body_bytes": 0}}, "billhook.max_body_bytes: must be at least 1"),
        (
            {"billhook": {"max_body_bytes": "1MB"}},
            "billhook.max_body_bytes: expected int, got string",
        ),
        (
            {"billhook": {"signature_tolerance_s": True}},
            "billhook.signature_tolerance_s: expected int",
        ),
        (
            {"billhook": {"attention_grace_hours": -1}},
            "billhook.attention_grace_hours: must be at least 0, got -1",
        ),
        (
            {"billhook": {"attention_grace_hours": "2"}},
            "billhook.attention_grace_hours: expected a number",
        ),
        (
            {"billhook": {"final_event_allowance_s": -1}},
            "billhook.final_event_allowance_s: must be at least 0, got -1",
        ),
        (
            {"billhook": {"stale_period_hours": -0.5}},
            "billhook.stale_period_hours: must be at least 0, got -0.5",
        ),
        ({"billhook": {"workspace_key": " "}}, "billhook.workspace_key: must not be empty"),
        (
            {"billhook": {"request_timeout_s": 0}},
            "billhook.request_timeout_s: must be at least 1, got 0",
        ),
        (
            {"billhook": {"request_timeout_s": 2.5}},
            "billhook.request_timeout_s: expected int, got float",
        ),
        (
            {"billhook": {"max_connections": -5}},
            "billhook.max_connections: must be at least 1, got -5",
        ),
        (
            {"billhook": {"max_connections": "1000"}},
            "billhook.max_connections: expected int, got string",
        ),
        ({"billhook": {"data_dir": 3}}, "billhook.data_dir: expected str"),
        ({"tiers": {}}, "tiers: at least one tier is required"),
        ({"tiers": {"solo": "reads"}}, "tiers.solo: expected an array of strings"),
        (
            {"tiers": {"solo": ["a"], "team": ["a"]}},
            "tiers.team: feature 'a' is already in tier 'solo'",
        ),
        ({"tiers": {"solo": ["invite_member"]}}, "tiers.solo: 'invite_member' is reserved"),
        (
            {"stripe": {"prices": {"price_1": {"tier": "gold", "interval": "month"}}}},
            "stripe.prices.price_1.tier: unknown tier 'gold'",
        ),
        (
            {"stripe": {"prices": {"price_1": {"tier": "team", "interval": "fortnight"}}}},
            "stripe.prices.price_1.interval: expected one of",
        ),
        (
            {"stripe": {"prices": {"price_1": {"tier": "team"}}}},
            "stripe.prices.price_1.interval: missing",
        ),
        (
            {
                "stripe": {
                    "prices": {
                        "price_ok": {"tier": "team", "interval": "month"},
                        "price_bad": {"tier": "team", "interval": "month", "min_seats": 2.5},
                    }
                }
            },
            "stripe.prices.price_bad.min_seats: expected int, got float",
        ),
        ({"tiers": {"solo": ["reads", " "]}}, "tiers.solo[1]: must not be empty"),
        (
            {"polar": {"products": {"p1": {"tier": "team", "interval": "fortnight"}}}},
            "polar.products.p1.interval: expected one of 'day', 'week', 'month', 'year', "
            "got 'fortnight'",
        ),
        ({"stripe": {"prices": {"price_1": "team"}}}, "stripe.prices.price_1: expected a table"),
        (
            {"stripe": {"prices": {"price_1": {"tier": "team", "interval": "month", "seats": 3}}}},
            "stripe.prices.price_1.seats: unknown key",
        ),
        (
            {
                "stripe": {
                    "prices": {"price_1": {"tier": "team", "interval": "month", "min_seats": 0}}
                }
            },
            "stripe.prices.price_1.min_seats: must be at least 1, got 0",
        ),
        (
            {
                "stripe": {
                    "prices": {"price_1": {"tier": "team", "interval": "year", "max_seats": "9"}}
                }
            },
            "stripe.prices.price_1.max_seats: expected int, got string",
        ),
        (
            {
                "stripe": {
                    "prices": {
                        "price_1": {
                            "tier": "team",
                            "interval": "year",
                            "min_seats": 5,
                            "max_seats": 2,
                        }
                    }
                }
            },
            "stripe.prices.price_1.max_seats: must be at least min_seats (5), got 2",
        ),
        ({"polar": {"products": {"p1": {}}}}, "polar.products.p1.tier: missing"),
        (
            {"polar": {"products": {"p1": {"tier": "platinum"}}}},
            "polar.products.p1.tier: unknown tier",
        ),
        ({"polar": {"server": "staging"}}, "polar.server: expected one of 'sandbox', 'production'"),
        (
            {"stripe": {"webhook_secrets": "whsec_1"}},
            "stripe.webhook_secrets: expected an array of strings",
        ),
        ({"stripe": {"webhook_secrets": [""]}}, "stripe.webhook_secrets: empty secret"),
        ({"auth": {"api_tokens": [1]}}, "auth.api_tokens[0]: expected str, got integer"),
        ({"auth": {"tokens": []}}, "auth.tokens: unknown key"),
        ({"redis": {"url": 6379}}, "redis.url: expected str"),
        ({"outbound": {"timeout_s": 0}}, "outbound.timeout_s: must be more than 0, got 0"),
        ({"outbound": {"max_in_flight": 0}}, "outbound.max_in_flight: must be at least 1, got 0"),
        ({"outbound": {"endpoints": [{"id": "a"}]}}, "outbound.endpoints[0].url: missing"),
        (
            {"outbound": {"endpoints": [{"url": "https://a.example/h"}]}},
            "outbound.endpoints[0]: no secret",
        ),
        (
            {"outbound": {"endpoints": [{"url": "https://a.example/h", "secrets_env": "NOPE"}]}},
            "outbound.endpoints[0].secrets_env: the environment variable NOPE is not set",
        ),
        (
            {"outbound": {"endpoints": [{"url": "https://a.example/h", "secrets": ["s3cret"]}]}},
            "outbound.endpoints[0]: a secret is not whsec_ followed by base64",
        ),
        (
            {"outbound": {"endpoints": [{"url": "ftp://a.example/h", "secrets": [WHSEC]}]}},
            "outbound.endpoints[0].url: must be an http:// or https:// URL",
        ),
        (
            {"outbound": {"endpoints": [{"url": "https://a/h", "id": "a b", "secrets": [WHSEC]}]}},
            "outbound.endpoints[0].id: letters, digits, _ and - only",
        ),
        (
            {
                "outbound": {
                    "endpoints": [
                        {"url": "https://a/h", "id": "app", "secrets": [WHSEC]},
                        {"url": "https://b/h", "id": "app", "secrets": [WHSEC]},
                    ]
                }
            },
            "outbound.endpoints[1]: endpoint 'app' is configured twice",
        ),
    ],
)
def test_invalid_config_names_the_key(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_settings(raw, environ={})
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_outbound_secrets_come_from_the_variable_an_endpoint_names() -> None:
    other = "whsec_" + base64.b64encode(b"o" * 32).decode()
    raw = {
        "outbound": {
            "endpoints": [
                {"url": "https://app.example/h", "secrets_env": "APP_HOOK", "secrets": ["x"]},
                {"url": "https://b.example/h", "id": "b", "secrets": [WHSEC]},
            ]
        }
    }
    settings = parse_settings(raw, environ={"APP_HOOK": f" {WHSEC} , {other} "})
    first, second = settings.outbound.endpoints
    assert [s.reveal() for s in first.secrets] == [WHSEC, other]  # the variable wins
    assert first.endpoint_id.startswith("cfg_")  # made from the URL, never the URL itself
    assert "app.example" not in first.endpoint_id
    assert second.endpoint_id == "b"
    assert "whsec" not in repr(settings.outbound)


def test_tier_order_is_the_file_order() -> None:
    settings = parse_settings({"tiers": {"free": ["a"], "pro": ["b"], "max": ["c"]}}, environ={})
    assert list(settings.tiers) == ["free", "pro", "max"]


def test_environment_overrides_secrets() -> None:
    raw = {
        "stripe": {"webhook_secrets": ["whsec_file"], "api_key": "sk_test_file"},
        "polar": {"webhook_secrets": ["whsec_file"]},
    }
    environ = {
        "STRIPE_WEBHOOK_SECRETS": " whsec_a , whsec_b ,",
        "STRIPE_API_KEY": "sk_test_env",
        "STRIPE_API_BASE": "http://127.0.0.1:12111",
        "POLAR_WEBHOOK_SECRETS": "",
        "POLAR_ACCESS_TOKEN": "polar_oat_env",
        "POLAR_SERVER": "production",
        "POLAR_SERVER_URL": "http://127.0.0.1:12112",
        "BILLHOOK_API_TOKENS": "read1,read2",
        "BILLHOOK_ADMIN_TOKENS": "admin1",
        "BILLHOOK_REDIS_URL": "redis://127.0.0.1:6379/5",
    }
    settings = parse_settings(raw, environ)
    assert [s.reveal() for s in settings.stripe.webhook_secrets] == ["whsec_a", "whsec_b"]
    assert settings.stripe.api_key.reveal() == "sk_test_env"
    assert settings.stripe.api_base == "http://127.0.0.1:12111"
    # Set but empty: an explicit "none", not a fall-back to the file.
    assert settings.polar.webhook_secrets == ()
    assert settings.polar.access_token.reveal() == "polar_oat_env"
    assert settings.polar.server == "production"
    assert settings.polar.server_url == "http://127.0.0.1:12112"
    assert [t.reveal() for t in settings.auth.api_tokens] == ["read1", "read2"]
    assert [t.reveal() for t in settings.auth.admin_tokens] == ["admin1"]
    assert settings.redis_url.reveal() == "redis://127.0.0.1:6379/5"


def test_a_bad_polar_server_from_the_environment_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"polar\.server"):
        parse_settings({}, {"POLAR_SERVER": "staging"})


def test_secrets_never_show_in_reprs() -> None:
    settings = parse_settings(
        {"stripe": {"webhook_secrets": ["whsec_topsecret"], "api_key": "sk_live_topsecret"}},
        environ={"BILLHOOK_ADMIN_TOKENS": "admintopsecret"},
    )
    text = f"{settings!r} {settings} {settings.stripe.webhook_secrets}"
    assert "topsecret" not in text
    assert "**********" in text
    assert Secret("a") == Secret("a")
    assert not Secret("")


def test_config_lookup_order(tmp_path: Path) -> None:
    explicit = tmp_path / "explicit.toml"
    from_env = tmp_path / "env.toml"
    assert resolve_config_path(explicit, {"BILLHOOK_CONFIG": str(from_env)}, tmp_path) == explicit
    assert resolve_config_path(None, {"BILLHOOK_CONFIG": str(from_env)}, tmp_path) == from_env
    assert resolve_config_path(None, {}, tmp_path) is None
    (tmp_path / "billhook.toml").write_text("")
    assert resolve_config_path(None, {}, tmp_path) == tmp_path / "billhook.toml"


def test_file_errors_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(tmp_path / "missing.toml", {})
    broken = tmp_path / "broken.toml"
    broken.write_text("[billhook\nmode = 'test'")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(broken, {})


def test_a_relative_data_dir_is_relative_to_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 12: not to the directory a command happens to run in."""
    (tmp_path / "etc").mkdir()
    config = tmp_path / "etc" / "billhook.toml"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    for data_dir, expected in [
        ("./data", tmp_path / "etc" / "data"),
        ("../var/billhook", tmp_path / "var" / "billhook"),
        (str(tmp_path / "abs"), tmp_path / "abs"),
    ]:
        config.write_text(f'[billhook]\ndata_dir = "{data_dir}"\n')
        relative = Path("..") / "etc" / "billhook.toml"
        assert load_settings(relative, {}).data_dir == expected
        assert load_settings(relative, {}).events_path == expected / "events.db"
    # Without a file, the working directory's, as before.
    assert load_settings(None, {}).data_dir == Path("data")
