"""billhook's one typed settings object, loaded and validated once at start.

The file is TOML (every key is commented in examples/billhook.toml). Each of
its tables is a msgspec Struct below, and those Structs are the only
description of the keys: their types, bounds and defaults. msgspec validates
the file against them and its error becomes a :class:`ConfigError` naming the
dotted key (`billhook.max_body_bytes: must be at least 1, got 0`), so a
process never half-starts on a bad config. What no single table can say (a
price map's tier must be a configured tier) is checked after, in
:func:`_cross_check`. Secrets may come from the environment, which wins over
the file.
"""

from __future__ import annotations

import base64
import hashlib
import re
import tomllib
import types
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union, cast, get_args, get_origin
from urllib.parse import parse_qs, unquote, urlsplit

import msgspec
from msgspec import Meta, Struct, field

from billhook.domain.policy import Grant, Policy
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
if TYPE_CHECKING:  # plain strings to the type checker, as the code around them uses them...
    Mode = str
    EnforcementMode = str
    PolarServer = str
    Interval = str
else:  # ...and to msgspec, enums made from the tuples above.
    Mode = Literal[MODES]
    EnforcementMode = Literal[ENFORCEMENT_MODES]
    PolarServer = Literal[POLAR_SERVERS]
    Interval = Literal[INTERVALS]
# A whole number of at least one: a size, a count, seconds.
Positive = Annotated[int, Meta(ge=1)]
# Longest part of a library's message quoted in a config problem.
MAX_PROBLEM_CHARS = 120
# How Python names a keyword argument a function does not take (a Redis URL's query).
_UNKNOWN_ARGUMENT = re.compile(r"unexpected keyword argument '(\w+)'")
# An outbound endpoint's id, as configured or given out by the admin API.
ENDPOINT_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
# A string with something besides whitespace in it.
NonBlank = Annotated[str, Meta(pattern=r"\S")]

# Environment variables that override a key of the file: comma-separated lists...
ENV_LISTS: Mapping[str, str] = {
    "STRIPE_WEBHOOK_SECRETS": "stripe.webhook_secrets",
    "POLAR_WEBHOOK_SECRETS": "polar.webhook_secrets",
    "BILLHOOK_API_TOKENS": "auth.api_tokens",
    "BILLHOOK_ADMIN_TOKENS": "auth.admin_tokens",
}
# ...and single values.
ENV_VALUES: Mapping[str, str] = {
    "STRIPE_API_KEY": "stripe.api_key",
    "STRIPE_API_BASE": "stripe.api_base",
    "POLAR_ACCESS_TOKEN": "polar.access_token",
    "POLAR_SERVER": "polar.server",
    "POLAR_SERVER_URL": "polar.server_url",
    "BILLHOOK_REDIS_URL": "redis.url",
    "BILLHOOK_DATABASE_URL": "storage.url",
}


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


class PriceMapping(Struct, frozen=True, forbid_unknown_fields=True):
    """What a Stripe price grants: a tier, billed every `interval`.

    `min_seats`/`max_seats` bound the quantity a checkout may buy (Stripe
    prices carry no seat limits of their own); None means unbounded.
    """

    tier: str
    interval: Interval
    min_seats: Positive | None = None
    max_seats: Positive | None = None


class ProductMapping(Struct, frozen=True, forbid_unknown_fields=True):
    """What a Polar product grants; `interval` is checked online when given."""

    tier: str
    interval: Interval | None = None


class StripeSettings(Struct, frozen=True, forbid_unknown_fields=True):
    webhook_secrets: tuple[Secret, ...] = ()
    api_key: Secret = NO_SECRET
    api_base: str = ""
    prices: Mapping[str, PriceMapping] = field(default_factory=dict)


class PolarSettings(Struct, frozen=True, forbid_unknown_fields=True):
    webhook_secrets: tuple[Secret, ...] = ()
    access_token: Secret = NO_SECRET
    server: PolarServer = "sandbox"
    server_url: str = ""
    products: Mapping[str, ProductMapping] = field(default_factory=dict)


class AuthSettings(Struct, frozen=True, forbid_unknown_fields=True):
    api_tokens: tuple[Secret, ...] = ()
    admin_tokens: tuple[Secret, ...] = ()


class RedisSettings(Struct, frozen=True, forbid_unknown_fields=True):
    url: Secret = NO_SECRET


class OutboundEndpoint(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One `[[outbound.endpoints]]`: where billhook sends signed `entitlement.updated`.

    `secrets` are Standard Webhooks secrets (`whsec_` + base64), several during a
    rotation; `secrets_env` names the environment variable that holds them
    (comma-separated), which wins over `secrets`. `id` names the endpoint in
    deliveries, logs and metrics (never its URL); without one it is made from the
    URL. `workspaces`: only changes about these (empty: every workspace).
    """

    url: NonBlank
    id: str = ""
    secrets_env: str = ""
    secrets: tuple[Secret, ...] = ()
    workspaces: tuple[NonBlank, ...] = ()

    @property
    def endpoint_id(self) -> str:
        """The id given, or `cfg_` and 12 hex digits of the URL's SHA-256."""
        if self.id:
            return self.id
        return "cfg_" + hashlib.sha256(self.url.encode()).hexdigest()[:12]


class OutboundSettings(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """`[outbound]`: how entitlement webhooks are delivered (SPEC §6b, docs/clients.md)."""

    endpoints: tuple[OutboundEndpoint, ...] = ()
    # One attempt's limit, connect to last byte of the answer.
    timeout_s: Annotated[float, Meta(gt=0)] = 10.0
    # How long a change is retried before it is given up (a day).
    retry_span_s: Positive = 86_400
    # The first retry's delay; each next one doubles (jittered), up to max_retry_s.
    first_retry_s: Annotated[float, Meta(gt=0)] = 5.0
    max_retry_s: Annotated[float, Meta(gt=0)] = 3600.0
    # Attempts in flight at once to one endpoint (never two for one workspace).
    max_in_flight: Positive = 64
    # Delivered and given-up deliveries are kept this long in the delivery log.
    keep_days: Positive = 14


class StorageSettings(Struct, frozen=True, forbid_unknown_fields=True):
    """`[storage]`: empty = SQLite files under data_dir; `postgresql://…` = that database."""

    url: Secret = NO_SECRET


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


class Core(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The `[billhook]` table."""

    mode: Mode = "test"
    data_dir: Path = Path("./data")
    enforcement: EnforcementMode = "observe"
    max_body_bytes: Positive = 1_048_576
    signature_tolerance_s: Positive = 300
    attention_grace_hours: Annotated[float, Meta(ge=0)] = 0.0
    final_event_allowance_s: Annotated[int, Meta(ge=0)] = 3600
    stale_period_hours: Annotated[float, Meta(ge=0)] = 72.0
    workspace_key: NonBlank = "workspace_id"
    request_timeout_s: Positive = 10
    max_connections: Positive = 1000


class Settings(Core, frozen=True, kw_only=True, dict=True):
    """Everything billhook is configured with: the keys of `[billhook]`, then the other
    tables. Build it with :func:`load_settings`."""

    tiers: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: dict(DEFAULT_TIERS))
    stripe: StripeSettings = field(default_factory=StripeSettings)
    polar: PolarSettings = field(default_factory=PolarSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    redis_url: Secret = NO_SECRET
    storage_url: Secret = NO_SECRET
    outbound: OutboundSettings = field(default_factory=OutboundSettings)

    @cached_property
    def policy(self) -> Policy:
        """The secret-free view of tiers, prices and products the resolver decides with."""
        return Policy(
            tiers=self.tiers,
            prices=self.stripe.prices,
            products=self.polar.products,
            live=self.mode == "live",
            attention_grace_hours=self.attention_grace_hours,
            final_event_allowance_s=self.final_event_allowance_s,
            stale_period_hours=self.stale_period_hours,
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
    def backend(self) -> str:
        """Where the log and the projections live: `sqlite` or `postgresql`."""
        return "postgresql" if self.storage_url else "sqlite"

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


class _File(Struct, forbid_unknown_fields=True):
    """The file's layout: `[billhook]`, then the other tables."""

    billhook: Core = field(default_factory=Core)
    tiers: Mapping[str, tuple[NonBlank, ...]] = field(default_factory=lambda: dict(DEFAULT_TIERS))
    stripe: StripeSettings = field(default_factory=StripeSettings)
    polar: PolarSettings = field(default_factory=PolarSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    redis: RedisSettings = field(default_factory=RedisSettings)
    storage: StorageSettings = field(default_factory=StorageSettings)
    outbound: OutboundSettings = field(default_factory=OutboundSettings)


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
    """Read, validate and return the settings; raise ConfigError naming the key.

    A relative `data_dir` is relative to the config file's directory (and made absolute),
    so every command finds the same log whatever directory it runs in; without a file it
    stays relative to the working directory.
    """
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
    settings = parse_settings(raw, environ)
    if path is None or settings.data_dir.is_absolute():
        return settings
    data_dir = (path.parent / settings.data_dir).resolve()
    return msgspec.structs.replace(settings, data_dir=data_dir)


def parse_settings(raw: Mapping[str, Any], environ: Mapping[str, str]) -> Settings:
    """Validate an already-parsed TOML document plus environment overrides."""
    merged = _with_environment(raw, environ)
    try:
        file = msgspec.convert(merged, _File, dec_hook=_from_string)
    except msgspec.ValidationError as e:
        raise ConfigError(_explain(str(e), merged)) from None
    settings = Settings(
        **msgspec.structs.asdict(file.billhook),
        tiers=file.tiers,
        stripe=file.stripe,
        polar=file.polar,
        auth=file.auth,
        redis_url=file.redis.url,
        storage_url=file.storage.url,
        outbound=_outbound_secrets(file.outbound, environ),
    )
    _cross_check(settings)
    return settings


def redis_url_problem(url: str) -> str | None:
    """What makes `url` unusable as `[redis] url`, as redis-py reads it, or None.

    redis-py parses the URL when a client is made (scheme, port, query values)
    and passes the query on to each connection it opens; both are done here
    without connecting. A path that is not a database number, which redis-py
    ignores in favour of db 0, is a problem too. The answer quotes no password.
    """
    import redis  # only for the commands that read a Redis URL

    try:
        pool = redis.ConnectionPool.from_url(url)
        pool.make_connection()  # refuses query parameters no connection takes
        pool.disconnect()
    except (ValueError, TypeError) as e:
        message = " ".join(str(e).split())
        if unknown := _UNKNOWN_ARGUMENT.search(message):
            return f"unknown query parameter {unknown[1]!r}"[:MAX_PROBLEM_CHARS]
        return message[:MAX_PROBLEM_CHARS]
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss") or "db" in parse_qs(parts.query):
        return None
    db = unquote(parts.path).replace("/", "")  # redis-py's reading of the path
    try:
        int(db or "0")
    except ValueError:
        return f"the path /{db[:MAX_PROBLEM_CHARS]} is not a database number (redis-py uses 0)"
    return None


def _with_environment(raw: Mapping[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """`raw` with the keys the environment sets replaced; set but empty is an explicit none."""
    merged = dict(raw)
    for var, key in (*ENV_LISTS.items(), *ENV_VALUES.items()):
        if var not in environ:
            continue
        value: str | list[str] = environ[var].strip()
        if var in ENV_LISTS:
            value = [part.strip() for part in environ[var].split(",") if part.strip()]
        section, name = key.split(".")
        table = merged.get(section, {})
        if isinstance(table, dict):  # else the table itself is the error to report
            merged[section] = {**table, name: value}
    return merged


def _outbound_secrets(outbound: OutboundSettings, environ: Mapping[str, str]) -> OutboundSettings:
    """Each endpoint with the secrets its `secrets_env` names, checked; raise ConfigError."""
    endpoints = []
    seen: set[str] = set()
    for n, endpoint in enumerate(outbound.endpoints):
        key = f"outbound.endpoints[{n}]"
        secrets = endpoint.secrets
        if endpoint.secrets_env:
            if endpoint.secrets_env not in environ:
                raise ConfigError(
                    f"{key}.secrets_env: the environment variable {endpoint.secrets_env} is not set"
                )
            parts = environ[endpoint.secrets_env].split(",")
            secrets = tuple(Secret(part.strip()) for part in parts if part.strip())
        if not secrets:
            raise ConfigError(f"{key}: no secret (set secrets_env to a variable holding whsec_…)")
        for secret in secrets:
            if not is_whsec(secret.reveal()):
                raise ConfigError(f"{key}: a secret is not whsec_ followed by base64")
        if not re.fullmatch(r"https?://[^\s/]+\S*", endpoint.url):
            raise ConfigError(f"{key}.url: must be an http:// or https:// URL")
        if endpoint.id and not ENDPOINT_ID.fullmatch(endpoint.id):
            raise ConfigError(f"{key}.id: letters, digits, _ and - only, at most 64")
        if endpoint.endpoint_id in seen:
            raise ConfigError(f"{key}: endpoint {endpoint.endpoint_id!r} is configured twice")
        seen.add(endpoint.endpoint_id)
        endpoints.append(msgspec.structs.replace(endpoint, secrets=secrets))
    return msgspec.structs.replace(outbound, endpoints=tuple(endpoints))


def is_whsec(secret: str) -> bool:
    """Whether `secret` is a Standard Webhooks secret: `whsec_` and base64 of 24 to 64 bytes."""
    if not secret.startswith("whsec_"):
        return False
    try:
        key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except ValueError:
        return False
    return 24 <= len(key) <= 64


def _from_string(kind: type[Any], value: object) -> object:
    """Values of the types msgspec leaves to billhook: secrets and paths, from strings."""
    if kind not in (Secret, Path):
        raise NotImplementedError
    if not isinstance(value, str):
        got = _MSGSPEC_KINDS.get(type(value), type(value).__name__)
        raise TypeError(f"Expected `str`, got `{got}`")
    return kind(value)


def _cross_check(settings: Settings) -> None:
    """What no one table can say: features are unique and not the seat gate, secrets in a
    list are not blank, price and product maps name configured tiers."""
    if not settings.tiers:
        raise ConfigError("tiers: at least one tier is required")
    seen: dict[str, str] = {}
    for tier, features in settings.tiers.items():
        for feature in features:
            if feature == SEAT_ACTION:
                raise ConfigError(f"tiers.{tier}: {SEAT_ACTION!r} is reserved for the seat gate")
            if feature in seen:
                raise ConfigError(
                    f"tiers.{tier}: feature {feature!r} is already in tier {seen[feature]!r}"
                )
            seen[feature] = tier
    for key in ENV_LISTS.values():
        section, name = key.split(".")
        if not all(s.reveal().strip() for s in getattr(getattr(settings, section), name)):
            raise ConfigError(f"{key}: empty secret")
    maps: Mapping[str, Mapping[str, Grant]] = {
        "stripe.prices": settings.stripe.prices,
        "polar.products": settings.polar.products,
    }
    for table, grants in maps.items():
        for ident, grant in grants.items():
            if grant.tier not in settings.tiers:
                raise ConfigError(f"{table}.{ident}.tier: unknown tier {grant.tier!r}")
    for ident, price in settings.stripe.prices.items():
        low, high = price.min_seats, price.max_seats
        if low is not None and high is not None and high < low:
            raise ConfigError(
                f"stripe.prices.{ident}.max_seats: must be at least min_seats ({low}), got {high}"
            )
    if settings.storage_url and (problem := storage_url_problem(settings.storage_url.reveal())):
        raise ConfigError(f"storage.url: {problem}")


def storage_url_problem(url: str) -> str | None:
    """What makes `url` unusable as `[storage] url`, or None. Quotes no password."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        return "must be empty (SQLite files under data_dir) or a postgresql:// URL"
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        return "the port is not a number"
    return None


# -- msgspec's errors, told in the config's words -----------------------------------------

# msgspec's name for the kind of a Python value, as its own messages say it.
_MSGSPEC_KINDS = {
    str: "str",
    int: "int",
    bool: "bool",
    float: "float",
    list: "array",
    dict: "object",
}
# The kind of a TOML value, as a config error says it.
_TOML_KINDS = {"str": "string", "int": "integer", "bool": "boolean", "object": "table"}
# What an expected kind is called, when not by its name.
_EXPECTED = {"object": "a table", "array": "an array", "float": "a number"}
_MESSAGE = re.compile(r"(?P<problem>.*?)(?: - at `\$(?P<path>[^`]*)`)?")
_STEP = re.compile(r"\.(\w+)|\[(\d+|\.\.\.)\]")
_FIELD = re.compile(r"Object (missing required|contains unknown) field `(\w+)`")
_WRONG_KIND = re.compile(r"Expected `([^`|]+)(?: \| null)?`, got `([^`]+)`")
_TOO_SMALL = re.compile(r"Expected `\w+` >= (\S+)")
_NOT_ABOVE = re.compile(r"Expected `\w+` > (\S+)")


def _explain(message: str, raw: Mapping[str, Any]) -> str:
    """msgspec's "Expected `int` >= 1 - at `$.billhook.max_body_bytes`", about `raw`,
    as "billhook.max_body_bytes: must be at least 1, got 0"."""
    found = _MESSAGE.fullmatch(message)
    assert found is not None  # the pattern matches any text
    problem = found["problem"]
    key, value, kind = _locate(found["path"] or "", raw)
    if m := _FIELD.fullmatch(problem):
        key = f"{key}.{m[2]}" if key else m[2]
        return f"{key}: {'missing' if m[1] == 'missing required' else 'unknown key'}"
    if m := _WRONG_KIND.fullmatch(problem):
        wanted = _EXPECTED.get(m[1], m[1])
        if m[1] == "array" and _bare(get_args(kind)[0]) in (str, Secret):
            wanted = "an array of strings"
        detail = f"expected {wanted}, got {_TOML_KINDS.get(m[2], m[2])}"
    elif m := _TOO_SMALL.fullmatch(problem):
        detail = f"must be at least {float(m[1]):g}, got {value}"
    elif m := _NOT_ABOVE.fullmatch(problem):
        detail = f"must be more than {float(m[1]):g}, got {value}"
    elif problem.startswith("Invalid enum value"):
        detail = f"expected one of {', '.join(map(repr, get_args(kind)))}, got {value!r}"
    elif "matching regex" in problem:
        detail = "must not be empty"
    else:
        detail = problem
    return f"{key}: {detail}"


def _locate(path: str, raw: Mapping[str, Any]) -> tuple[str, Any, Any]:
    """The dotted key, the value and the type at msgspec's `path` into the file.

    msgspec writes an entry of a table with free keys (a price map) as `[...]`:
    it is found again as the first entry that does not convert.
    """
    key, value, kind = "", cast(Any, raw), _bare(_File)
    for name, index in _STEP.findall(path):
        if name:
            kind = {f.name: f.type for f in msgspec.structs.fields(kind)}[name]
            value = value.get(name)
            key = f"{key}.{name}" if key else name
        elif index == "...":
            kind = get_args(kind)[1]
            ident, value = next((k, v) for k, v in value.items() if not _converts(v, kind))
            key = f"{key}.{ident}"
        else:
            kind = get_args(kind)[0]
            value = value[int(index)]
            key = f"{key}[{index}]"
        kind = _bare(kind)
    return key, value, kind


def _bare(kind: Any) -> Any:
    """`X` of `Annotated[X, ...]` and of `X | None`."""
    while get_origin(kind) in (Annotated, Union, types.UnionType):
        kind = next(arg for arg in get_args(kind) if arg is not type(None))
    return kind


def _converts(value: object, kind: Any) -> bool:
    try:
        msgspec.convert(value, kind, dec_hook=_from_string)
    except msgspec.ValidationError:
        return False
    return True
