"""The configuration of a test deployment: one builder, as `Settings` or as a config file.

`config_data` builds the raw config (the TOML's tables as dicts). By default
it describes a deployment that trusts both providers' test secrets, sells
the tiers of `STRIPE_PRICES` and `POLAR_PRODUCTS`, and answers the read and
admin tokens of `TOKENS`; every option trims or extends that:

    settings = make_settings(tmp_path / "data", max_body_bytes=4096)
    stripe, polar = provider_apis(stripe_fake_url, polar_fake_url)
    settings = make_settings(data_dir, stripe=stripe, polar=polar)
    config = write_config(tmp_path, redis_url=url)  # tmp_path/billhook.toml, data in ./data

Credentials are distinctive strings, so a test can search any answer, log
line or file for `SECRETS` and prove none leaked.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from billhook.config import Settings, parse_settings
from billhook.testing.polar import POLAR_LEGACY_SECRET, POLAR_SECRET
from billhook.testing.stripe import STRIPE_SECRET

# Bearer tokens of the `/v1` API: read scope, and admin scope.
READ_TOKEN = "read-token-billhookTest-Rd7Qx2Lm9"
ADMIN_TOKEN = "admin-token-billhookTest-Hs3Wd8Ny5"
# Provider API credentials: the ones the fakes accept by default.
STRIPE_API_KEY = "sk_test_billhookFakeKey83Jd0Secret"
POLAR_ACCESS_TOKEN = "polar_oat_billhookFakeToken5Lk9Secret"
# Every credential a test deployment holds: none may ever show in an answer or a log line.
SECRETS = (
    STRIPE_SECRET,
    POLAR_SECRET,
    POLAR_LEGACY_SECRET,
    STRIPE_API_KEY,
    POLAR_ACCESS_TOKEN,
    READ_TOKEN,
    ADMIN_TOKEN,
)
# The `[auth]` table of the default deployment.
TOKENS: Mapping[str, list[str]] = MappingProxyType(
    {"api_tokens": [READ_TOKEN], "admin_tokens": [ADMIN_TOKEN]}
)
# The Stripe prices the default deployment sells, and what each grants.
STRIPE_PRICES: Mapping[str, Mapping[str, Any]] = MappingProxyType(
    {
        "price_team_monthly": {"tier": "team", "interval": "month"},
        "price_team_yearly": {"tier": "team", "interval": "year"},
        "price_enterprise_yearly": {"tier": "enterprise", "interval": "year"},
    }
)
# Polar products the default deployment sells: team billed monthly, and enterprise.
PRODUCT_TEAM = "8f1e2c1a-7d4b-4c55-9a11-3e6f0b6a2c01"
PRODUCT_ENTERPRISE = "8f1e2c1a-7d4b-4c55-9a11-3e6f0b6a2c02"
POLAR_PRODUCTS: Mapping[str, Mapping[str, Any]] = MappingProxyType(
    {
        PRODUCT_TEAM: {"tier": "team", "interval": "month"},
        PRODUCT_ENTERPRISE: {"tier": "enterprise"},
    }
)
# The name `write_config` gives a config file unless told otherwise.
CONFIG_NAME = "billhook.toml"
# Keys TOML lets stand unquoted.
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
# "Keep the defaults" for a provider's table.
_DEFAULTS: Mapping[str, Any] = MappingProxyType({})


def config_data(
    data_dir: Path,
    *,
    stripe: Mapping[str, Any] | None = _DEFAULTS,
    polar: Mapping[str, Any] | None = _DEFAULTS,
    auth: Mapping[str, Any] | None = TOKENS,
    redis_url: str | None = None,
    sections: Mapping[str, Any] | None = None,
    **core: Any,
) -> dict[str, Any]:
    """The raw config of a test deployment whose data lives in `data_dir`.

    `core` are more `[billhook]` keys. `stripe` and `polar` are keys laid
    over each provider's defaults (its webhook secrets and its price or
    product map); None leaves the provider out. `auth` is the `[auth]`
    table (None: no tokens, every `/v1` call is refused). `redis_url` adds
    `[redis]`; `sections` adds (or replaces) whole top-level tables.
    """
    raw: dict[str, Any] = {"billhook": {"data_dir": str(data_dir), **core}}
    if stripe is not None:
        raw["stripe"] = {"webhook_secrets": [STRIPE_SECRET], "prices": STRIPE_PRICES, **stripe}
    if polar is not None:
        secrets = [POLAR_SECRET, POLAR_LEGACY_SECRET]
        raw["polar"] = {"webhook_secrets": secrets, "products": POLAR_PRODUCTS, **polar}
    if auth is not None:
        raw["auth"] = auth
    if redis_url is not None:
        raw["redis"] = {"url": redis_url}
    raw.update(sections or {})
    return {name: _plain(table) for name, table in raw.items()}


def provider_apis(
    stripe_url: str, polar_url: str, *, stripe_key: bool = True, polar_token: bool = True
) -> tuple[dict[str, str], dict[str, str]]:
    """`stripe` and `polar` options whose APIs are at `stripe_url` and `polar_url` (fakes).

    They carry `STRIPE_API_KEY` and `POLAR_ACCESS_TOKEN`, the credentials the
    fakes accept, unless `stripe_key` or `polar_token` is False.
    """
    stripe = {"api_base": stripe_url} | ({"api_key": STRIPE_API_KEY} if stripe_key else {})
    polar = {"server_url": polar_url} | (
        {"access_token": POLAR_ACCESS_TOKEN} if polar_token else {}
    )
    return stripe, polar


def make_settings(data_dir: Path, **options: Any) -> Settings:
    """`Settings` of the deployment `config_data(data_dir, **options)` describes.

    The environment is ignored: what the test builds is what it gets.
    """
    return parse_settings(config_data(data_dir, **options), environ={})


def config_toml(raw: Mapping[str, Any]) -> str:
    """`raw` (as `config_data` builds it) as the text of a billhook.toml."""
    lines: list[str] = []
    for name, table in raw.items():
        _table_lines(lines, [name], table)
    return "\n".join(lines) + "\n"


def write_config(
    directory: Path, *, name: str = CONFIG_NAME, data_dir: Path | None = None, **options: Any
) -> Path:
    """Write the config file `directory/name`; its path.

    The deployment keeps its data in `data_dir` (default: `directory/data`);
    `options` are those of `config_data`.
    """
    path = directory / name
    raw = config_data(directory / "data" if data_dir is None else data_dir, **options)
    path.write_text(config_toml(raw), "utf-8")
    return path


def _plain(value: Any) -> Any:
    """`value` with every mapping a dict and every tuple a list (fresh copies): what TOML gives."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _table_lines(lines: list[str], path: list[str], table: Any) -> None:
    """A table's header and `key = value` lines, then its sub-tables; a list is `[[...]]`s."""
    for entry in table if isinstance(table, list) else [table]:
        header = _key_path(path)
        lines.append(f"[[{header}]]" if isinstance(table, list) else f"[{header}]")
        nested = {k: v for k, v in entry.items() if _is_table(v)}
        lines += [f"{_key(k)} = {_toml_value(v)}" for k, v in entry.items() if k not in nested]
        for key, value in nested.items():
            _table_lines(lines, [*path, key], value)


def _is_table(value: Any) -> bool:
    """Whether `value` is written as a table of its own: a map of maps, or a list of maps."""
    if isinstance(value, Mapping):
        return bool(value) and all(isinstance(v, Mapping) for v in value.values())
    return isinstance(value, list) and bool(value) and all(isinstance(v, Mapping) for v in value)


def _key_path(path: list[str]) -> str:
    return ".".join(_key(part) for part in path)


def _key(key: str) -> str:
    """A TOML key: bare when it may be, else quoted."""
    return key if _BARE_KEY.fullmatch(key) else json.dumps(key)


def _toml_value(value: Any) -> str:
    # JSON's string escapes are all valid in TOML basic strings.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return json.dumps(value)
    if isinstance(value, Mapping):
        pairs = ", ".join(f"{_key(k)} = {_toml_value(v)}" for k, v in value.items())
        return f"{{ {pairs} }}" if pairs else "{}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {type(value).__name__}")
