"""What `billhook serve` says before it serves: a refusal, warnings, the development banner.

A config that loads may still leave a deployment deaf or open: no token (every
`/v1` call is 401), no webhook secret (every webhook is 404), keys of the other
provider mode. Each is one warning line at start, naming the key; none stops
the process, since each is legitimate while setting up. Published development
values in live mode do stop it (`devconfig.refusal`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import click

from billhook.cli import devconfig
from billhook.config import Settings
from billhook.sync.preflight import POLAR_SERVER_FOR_MODE, STRIPE_KEY_PREFIXES

logger = logging.getLogger("billhook.startup")


@dataclass(frozen=True)
class StartupWarning:
    """One warning: the settings key it is about, and a constant message naming it."""

    key: str
    message: str


NO_TOKEN = StartupWarning(
    "auth.api_tokens",
    "no API token configured (auth.api_tokens, auth.admin_tokens; env BILLHOOK_API_TOKENS):"
    " every /v1 call answers 401",
)
NO_WEBHOOK_SECRET = StartupWarning(
    "stripe.webhook_secrets",
    "no webhook secret configured for any provider (stripe.webhook_secrets,"
    " polar.webhook_secrets; env STRIPE_WEBHOOK_SECRETS, POLAR_WEBHOOK_SECRETS):"
    " /webhooks/stripe and /webhooks/polar answer 404",
)
# A Stripe API key of the other mode, by the mode billhook runs in.
STRIPE_KEY_OF_OTHER_MODE = {
    "live": StartupWarning(
        "stripe.api_key",
        'stripe.api_key is a test-mode key (sk_test_ or rk_test_) but mode = "live"',
    ),
    "test": StartupWarning(
        "stripe.api_key",
        'stripe.api_key is a live-mode key (sk_live_ or rk_live_) but mode = "test"',
    ),
}
# A Polar server of the other mode, by the mode billhook runs in.
POLAR_SERVER_OF_OTHER_MODE = {
    "live": StartupWarning("polar.server", 'polar.server is "sandbox" but mode = "live"'),
    "test": StartupWarning("polar.server", 'polar.server is "production" but mode = "test"'),
}


def startup_warnings(settings: Settings) -> list[StartupWarning]:
    """Everything about `settings` an operator should hear at start, in a fixed order."""
    found = []
    if not settings.auth.api_tokens and not settings.auth.admin_tokens:
        found.append(NO_TOKEN)
    if not settings.stripe.webhook_secrets and not settings.polar.webhook_secrets:
        found.append(NO_WEBHOOK_SECRET)
    other_mode = "test" if settings.mode == "live" else "live"
    if settings.stripe.api_key.reveal().startswith(STRIPE_KEY_PREFIXES[other_mode]):
        found.append(STRIPE_KEY_OF_OTHER_MODE[settings.mode])
    polar = settings.polar
    # `server` matters only when Polar is used and no server_url overrides it.
    polar_used = bool(polar.access_token or polar.webhook_secrets)
    if polar_used and not polar.server_url and polar.server != POLAR_SERVER_FOR_MODE[settings.mode]:
        found.append(POLAR_SERVER_OF_OTHER_MODE[settings.mode])
    return found


def before_serving(
    settings: Settings, host: str, port: int, program: str, echo: Callable[[str], None]
) -> None:
    """Refuse published development values in live mode (ClickException), log each
    warning, and `echo` the development banner when published values are in use."""
    keys = devconfig.dev_keys(settings)
    why = devconfig.refusal(settings, keys)
    if why:
        raise click.ClickException(why)
    for warning in startup_warnings(settings):
        logger.warning(warning.message, extra={"fields": {"key": warning.key}})
    if keys:
        for line in devconfig.banner(keys, devconfig.base_url(host, port), program):
            echo(line)
