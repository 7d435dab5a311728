"""billhook's one typed settings object, loaded and validated once at start.

The file is TOML (SPEC §2). Secrets may come from the environment, which wins
over the file. Every problem raises :class:`ConfigError` with a message that
names the key, so a process never half-starts on a bad config.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar

from billhook.domain.policy import Policy
from billhook.errors import ConfigError

# Where the config is looked for when neither --config nor $BILLHOOK_CONFIG is given.
DEFAULT_CONFIG_NAME = "billhook.toml"
# The action name reserved for the seat gate; no feature may take it.
SEAT_ACTION = "invite_member"
# Accepted values of the enumerated settings.
MODES = ("test", "live")
ENFORCEMENT_MODES = ("disabled", "observe", "enforce")
POLAR_SERVERS = ("sandbox", "production")
INTERVALS = ("day", "week", "month", "year")

T = TypeVar("T")


class Secret:
    """A string that never shows itself in a repr, a log line or a traceback."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret itself, for the one call that needs it."""
        return self._value

    def __repr__(self) -> str:
        return "'**********'"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)


# The value of an unset secret: empty, and falsy.
NO_SECRET = Secret("")


@dataclass(frozen=True)
class PriceMapping:
    """What a Stripe price grants: a tier, billed every `interval`.

    `min_seats`/`max_seats` bound the quantity a checkout may buy (Stripe
    prices carry no seat limits of their own); None means unbounded.
    """

    tier: str
    interval: str
    min_seats: int | None = None
    max_seats: int | None = None


@dataclass(frozen=True)
class ProductMapping:
    """What a Polar product grants; `interval` is checked online when given."""

    tier: str
    interval: str | None = None


@dataclass(frozen=True)
class StripeSettings:
    webhook_secrets: tuple[Secret, ...] = ()
    api_key: Secret = NO_SECRET
    api_base: str = ""
    prices: Mapping[str, PriceMapping] = field(default_factory=dict)


@dataclass(frozen=True)
class PolarSettings:
    webhook_secrets: tuple[Secret, ...] = ()
    access_token: Secret = NO_SECRET
    server: str = "sandbox"
    server_url: str = ""
    products: Mapping[str, ProductMapping] = field(default_factory=dict)


@dataclass(frozen=True)
class AuthSettings:
    api_tokens: tuple[Secret, ...] = ()
    admin_tokens: tuple[Secret, ...] = ()


DEFAULT_TIERS: Mapping[str, tuple[str, ...]] = {
    "solo": ("reads", "local_create", "package_install", "public_templates"),
    "team": (
        "external_imports",
        "ai_imports",
        "team_sharing",
        "private_registry",
        "approval_governance",
        "external_update_checks",
    ),
    "enterprise": ("sso", "scim", "siem_export"),
}


@dataclass(frozen=True)
class Settings:
    """Everything billhook is configured with. Build it with :func:`load_settings`."""

    mode: str = "test"
    data_dir: Path = Path("./data")
    enforcement: str = "observe"
    max_body_bytes: int = 1_048_576
    signature_tolerance_s: int = 300
    attention_grace_hours: float = 0
    workspace_key: str = "workspace_id"
    request_timeout_s: int = 10
    max_connections: int = 1000
    tiers: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: dict(DEFAULT_TIERS))
    stripe: StripeSettings = field(default_factory=StripeSettings)
    polar: PolarSettings = field(default_factory=PolarSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    redis_url: Secret = NO_SECRET

    @cached_property
    def policy(self) -> Policy:
        """The secret-free view of tiers, prices and products the resolver decides with."""
        return Policy(
            tiers=self.tiers,
            prices=self.stripe.prices,
            products=self.polar.products,
            live=self.mode == "live",
            attention_grace_hours=self.attention_grace_hours,
        )

    @property
    def tier_rank(self) -> Mapping[str, int]:
        """Each tier's position, low to high."""
        return self.policy.tier_rank

    @property
    def default_tier(self) -> str:
        """The first tier: the free default."""
        return self.policy.default_tier

    @property
    def features_of(self) -> Mapping[str, tuple[tuple[str, ...], tuple[str, ...]]]:
        """For each tier, (the features it includes, every other feature), each sorted."""
        return self.policy.features_of

    @property
    def events_path(self) -> Path:
        return self.data_dir / "events.db"

    @property
    def projections_path(self) -> Path:
        return self.data_dir / "projections.db"

    def webhook_secrets(self, provider: str) -> tuple[Secret, ...]:
        """The signing secrets configured for `provider` (`stripe` or `polar`)."""
        if provider == "stripe":
            return self.stripe.webhook_secrets
        if provider == "polar":
            return self.polar.webhook_secrets
        return ()


def resolve_config_path(
    explicit: str | Path | None, environ: Mapping[str, str], cwd: Path
) -> Path | None:
    """Where to read the config: --config, else $BILLHOOK_CONFIG, else ./billhook.toml.

    Returns None when none is given and ./billhook.toml does not exist: the
    built-in defaults apply.
    """
    if explicit:
        return Path(explicit)
    if environ.get("BILLHOOK_CONFIG"):
        return Path(environ["BILLHOOK_CONFIG"])
    candidate = cwd / DEFAULT_CONFIG_NAME
    return candidate if candidate.is_file() else None


def load_settings(path: Path | None, environ: Mapping[str, str]) -> Settings:
    """Read, validate and return the settings; raise ConfigError naming the key."""
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"config file unreadable: {path}: {e.__class__.__name__}") from None
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: not valid TOML: {e}") from None
    return parse_settings(raw, environ)


def parse_settings(raw: Mapping[str, Any], environ: Mapping[str, str]) -> Settings:
    """Validate an already-parsed TOML document plus environment overrides."""
    _only(raw, "", {"billhook", "tiers", "stripe", "polar", "auth", "redis"})
    core = _table(raw, "billhook")
    _only(
        core,
        "billhook",
        {
            "mode",
            "data_dir",
            "enforcement",
            "max_body_bytes",
            "signature_tolerance_s",
            "attention_grace_hours",
            "workspace_key",
            "request_timeout_s",
            "max_connections",
        },
    )
    defaults = Settings()
    tiers = _tiers(raw)

    stripe_raw = _table(raw, "stripe")
    _only(stripe_raw, "stripe", {"webhook_secrets", "api_key", "api_base", "prices"})
    polar_raw = _table(raw, "polar")
    _only(
        polar_raw,
        "polar",
        {"webhook_secrets", "access_token", "server", "server_url", "products"},
    )
    auth_raw = _table(raw, "auth")
    _only(auth_raw, "auth", {"api_tokens", "admin_tokens"})
    redis_raw = _table(raw, "redis")
    _only(redis_raw, "redis", {"url"})

    stripe = StripeSettings(
        webhook_secrets=_secrets(
            stripe_raw, "stripe.webhook_secrets", environ, "STRIPE_WEBHOOK_SECRETS"
        ),
        api_key=_secret(stripe_raw, "stripe.api_key", environ, "STRIPE_API_KEY"),
        api_base=_env_str(stripe_raw, "stripe.api_base", environ, "STRIPE_API_BASE"),
        prices=_mappings(stripe_raw, "stripe.prices", tiers, _price),
    )
    polar = PolarSettings(
        webhook_secrets=_secrets(
            polar_raw, "polar.webhook_secrets", environ, "POLAR_WEBHOOK_SECRETS"
        ),
        access_token=_secret(polar_raw, "polar.access_token", environ, "POLAR_ACCESS_TOKEN"),
        server=_choice(
            {"server": environ.get("POLAR_SERVER", polar_raw.get("server", "sandbox"))},
            "server",
            "polar.server",
            POLAR_SERVERS,
            "sandbox",
        ),
        server_url=_env_str(polar_raw, "polar.server_url", environ, "POLAR_SERVER_URL"),
        products=_mappings(polar_raw, "polar.products", tiers, _product),
    )
    auth = AuthSettings(
        api_tokens=_secrets(auth_raw, "auth.api_tokens", environ, "BILLHOOK_API_TOKENS"),
        admin_tokens=_secrets(auth_raw, "auth.admin_tokens", environ, "BILLHOOK_ADMIN_TOKENS"),
    )
    return Settings(
        mode=_choice(core, "mode", "billhook.mode", MODES, defaults.mode),
        data_dir=Path(_typed(core, "data_dir", "billhook.data_dir", str, str(defaults.data_dir))),
        enforcement=_choice(
            core, "enforcement", "billhook.enforcement", ENFORCEMENT_MODES, defaults.enforcement
        ),
        max_body_bytes=_positive_int(
            core, "max_body_bytes", "billhook.max_body_bytes", defaults.max_body_bytes
        ),
        signature_tolerance_s=_positive_int(
            core,
            "signature_tolerance_s",
            "billhook.signature_tolerance_s",
            defaults.signature_tolerance_s,
        ),
        attention_grace_hours=_grace_hours(core),
        workspace_key=_nonempty(
            core, "workspace_key", "billhook.workspace_key", defaults.workspace_key
        ),
        request_timeout_s=_positive_int(
            core, "request_timeout_s", "billhook.request_timeout_s", defaults.request_timeout_s
        ),
        max_connections=_positive_int(
            core, "max_connections", "billhook.max_connections", defaults.max_connections
        ),
        tiers=tiers,
        stripe=stripe,
        polar=polar,
        auth=auth,
        redis_url=_secret(redis_raw, "redis.url", environ, "BILLHOOK_REDIS_URL"),
    )


# -- validation helpers: each names the full key in its error ---------------------------


def _only(table: Mapping[str, Any], where: str, allowed: set[str]) -> None:
    for key in table:
        if key not in allowed:
            name = f"{where}.{key}" if where else key
            raise ConfigError(f"{name}: unknown key")


def _table(raw: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{key}: expected a table")
    return value


def _typed(table: Mapping[str, Any], key: str, name: str, kind: type[T], default: T) -> T:
    value = table.get(key, default)
    # bool is an int in Python; a TOML `true` is never a valid number here.
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise ConfigError(f"{name}: expected {kind.__name__}, got {_kind(value)}")
    return value


def _kind(value: object) -> str:
    return {
        bool: "boolean",
        int: "integer",
        float: "float",
        str: "string",
        list: "array",
        dict: "table",
    }.get(type(value), type(value).__name__)


def _choice(
    table: Mapping[str, Any], key: str, name: str, choices: tuple[str, ...], default: str
) -> str:
    value = _typed(table, key, name, str, default)
    if value not in choices:
        allowed = ", ".join(repr(c) for c in choices)
        raise ConfigError(f"{name}: expected one of {allowed}, got {value!r}")
    return value


def _positive_int(table: Mapping[str, Any], key: str, name: str, default: int) -> int:
    value = _typed(table, key, name, int, default)
    if value < 1:
        raise ConfigError(f"{name}: must be at least 1, got {value}")
    return value


def _grace_hours(core: Mapping[str, Any]) -> float:
    name = "billhook.attention_grace_hours"
    value = core.get("attention_grace_hours", 0)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{name}: expected a number, got {_kind(value)}")
    if value < 0 or value != value:  # NaN compares unequal to itself
        raise ConfigError(f"{name}: must be zero or more, got {value}")
    return float(value)


def _nonempty(table: Mapping[str, Any], key: str, name: str, default: str) -> str:
    value = _typed(table, key, name, str, default)
    if not value.strip():
        raise ConfigError(f"{name}: must not be empty")
    return value


def _str_list(value: object, name: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{name}: expected an array of strings")
    return tuple(value)


def _env_list(environ: Mapping[str, str], var: str) -> tuple[str, ...] | None:
    if var not in environ:
        return None
    return tuple(part.strip() for part in environ[var].split(",") if part.strip())


def _secrets(
    table: Mapping[str, Any], name: str, environ: Mapping[str, str], var: str
) -> tuple[Secret, ...]:
    key = name.rsplit(".", 1)[1]
    from_env = _env_list(environ, var)
    values = from_env if from_env is not None else _str_list(table.get(key, []), name)
    if any(not v.strip() for v in values):
        raise ConfigError(f"{name}: empty secret")
    return tuple(Secret(v) for v in values)


def _secret(table: Mapping[str, Any], name: str, environ: Mapping[str, str], var: str) -> Secret:
    key = name.rsplit(".", 1)[1]
    if var in environ:
        return Secret(environ[var].strip())
    return Secret(_typed(table, key, name, str, ""))


def _env_str(table: Mapping[str, Any], name: str, environ: Mapping[str, str], var: str) -> str:
    key = name.rsplit(".", 1)[1]
    if var in environ:
        return environ[var].strip()
    return _typed(table, key, name, str, "")


def _tiers(raw: Mapping[str, Any]) -> Mapping[str, tuple[str, ...]]:
    if "tiers" not in raw:
        return dict(DEFAULT_TIERS)
    table = _table(raw, "tiers")
    if not table:
        raise ConfigError("tiers: at least one tier is required")
    seen: dict[str, str] = {}
    tiers: dict[str, tuple[str, ...]] = {}
    for tier, features in table.items():
        names = _str_list(features, f"tiers.{tier}")
        for feature in names:
            if not feature.strip():
                raise ConfigError(f"tiers.{tier}: empty feature name")
            if feature == SEAT_ACTION:
                raise ConfigError(f"tiers.{tier}: {SEAT_ACTION!r} is reserved for the seat gate")
            if feature in seen:
                raise ConfigError(
                    f"tiers.{tier}: feature {feature!r} is already in tier {seen[feature]!r}"
                )
            seen[feature] = tier
        tiers[tier] = names
    return tiers


def _mappings(
    table: Mapping[str, Any],
    name: str,
    tiers: Mapping[str, tuple[str, ...]],
    build: Callable[[Mapping[str, Any], str, Mapping[str, tuple[str, ...]]], T],
) -> Mapping[str, T]:
    entries = _table(table, name.rsplit(".", 1)[1])
    result: dict[str, T] = {}
    for ident, entry in entries.items():
        where = f"{name}.{ident}"
        if not isinstance(entry, dict):
            raise ConfigError(f'{where}: expected a table like {{ tier = "team" }}')
        result[ident] = build(entry, where, tiers)
    return result


def _tier_of(entry: Mapping[str, Any], where: str, tiers: Mapping[str, tuple[str, ...]]) -> str:
    if "tier" not in entry:
        raise ConfigError(f"{where}.tier: missing")
    tier = _typed(entry, "tier", f"{where}.tier", str, "")
    if tier not in tiers:
        raise ConfigError(f"{where}.tier: unknown tier {tier!r}")
    return tier


def _price(
    entry: Mapping[str, Any], where: str, tiers: Mapping[str, tuple[str, ...]]
) -> PriceMapping:
    _only(entry, where, {"tier", "interval", "min_seats", "max_seats"})
    if "interval" not in entry:
        raise ConfigError(f"{where}.interval: missing")
    low, high = (
        _positive_int(entry, key, f"{where}.{key}", 1) if key in entry else None
        for key in ("min_seats", "max_seats")
    )
    if low is not None and high is not None and high < low:
        raise ConfigError(f"{where}.max_seats: must be at least min_seats ({low}), got {high}")
    return PriceMapping(
        tier=_tier_of(entry, where, tiers),
        interval=_choice(entry, "interval", f"{where}.interval", INTERVALS, "month"),
        min_seats=low,
        max_seats=high,
    )


def _product(
    entry: Mapping[str, Any], where: str, tiers: Mapping[str, tuple[str, ...]]
) -> ProductMapping:
    _only(entry, where, {"tier", "interval"})
    interval = None
    if "interval" in entry:
        interval = _choice(entry, "interval", f"{where}.interval", INTERVALS, "month")
    return ProductMapping(tier=_tier_of(entry, where, tiers), interval=interval)
