"""The shipped settings builder: one raw config, as `Settings` or as the TOML a deployment reads."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from billhook.config import load_settings
from billhook.testing.settings import (
    ADMIN_TOKEN,
    POLAR_ACCESS_TOKEN,
    PRODUCT_TEAM,
    READ_TOKEN,
    SECRETS,
    STRIPE_API_KEY,
    config_data,
    config_toml,
    make_settings,
    provider_apis,
    write_config,
)

# Options of `config_data` that between them use every shape TOML is written in.
OPTIONS = [
    {},
    {"stripe": None, "polar": None, "auth": None},
    {"redis_url": "redis://127.0.0.1:6379/15", "max_body_bytes": 4096, "enforcement": "enforce"},
    {"stripe": {"prices": {}}, "polar": {"products": {PRODUCT_TEAM: {"tier": "team"}}}},
    {"attention_grace_hours": 1.5, "sections": {"tiers": {"free": ["reads"], "pro": ["sso"]}}},
    {"sections": {"outbound": {"endpoints": [{"url": "https://a.example", "workspaces": []}]}}},
]


@pytest.mark.parametrize("options", OPTIONS)
def test_the_file_says_what_the_builder_built(tmp_path: Path, options: dict[str, object]) -> None:
    raw = config_data(tmp_path / "data", **options)  # type: ignore[arg-type]
    assert tomllib.loads(config_toml(raw)) == raw


def test_a_written_config_loads_as_the_settings_built(tmp_path: Path) -> None:
    stripe, polar = provider_apis("http://127.0.0.1:1", "http://127.0.0.1:2")
    config = write_config(tmp_path, stripe=stripe, polar=polar, redis_url="redis://h:1/15")
    assert config == tmp_path / "billhook.toml"
    loaded = load_settings(config, {})
    built = make_settings(tmp_path / "data", stripe=stripe, polar=polar, redis_url="redis://h:1/15")
    assert loaded == built
    assert loaded.stripe.api_key.reveal() == STRIPE_API_KEY
    assert loaded.polar.access_token.reveal() == POLAR_ACCESS_TOKEN
    tokens = {t.reveal() for t in (*loaded.auth.api_tokens, *loaded.auth.admin_tokens)}
    assert tokens == {READ_TOKEN, ADMIN_TOKEN}


def test_credentials_can_be_left_out(tmp_path: Path) -> None:
    stripe, polar = provider_apis("http://s", "http://p", stripe_key=False, polar_token=False)
    settings = make_settings(tmp_path / "data", stripe=stripe, polar=polar, auth=None)
    assert not settings.stripe.api_key
    assert not settings.polar.access_token
    assert settings.auth.api_tokens == settings.auth.admin_tokens == ()


def test_every_credential_is_distinct_and_long_enough_to_search_for() -> None:
    assert len(set(SECRETS)) == len(SECRETS)
    assert all(len(secret) >= 24 for secret in SECRETS)
