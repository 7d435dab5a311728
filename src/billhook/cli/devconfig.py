"""The published development credentials of `examples/dev.toml`, and what `serve` does with them.

`make run` serves with `examples/dev.toml`, whose webhook secrets and tokens are
printed in the README: anyone can sign a delivery or read an entitlement with
them. So they are listed here, once, and `billhook serve` recognises them
wherever they come from (the file or the environment): with `mode = "live"` it
refuses to start (:func:`refusal`); otherwise it prints them once, with
ready-to-paste commands (:func:`banner`). `billhook demo --target` signs and
authenticates with them by default.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from billhook.config import Secret, Settings

# The development-only values of examples/dev.toml. Never accepted in live mode.
DEV_STRIPE_WEBHOOK_SECRET = "whsec_billhook_dev_only_stripe_secret"
# Standard Webhooks form: whsec_ + base64 of "billhook-dev-only-polar-key-0000".
DEV_POLAR_WEBHOOK_SECRET = "whsec_YmlsbGhvb2stZGV2LW9ubHktcG9sYXIta2V5LTAwMDA="
DEV_API_TOKEN = "billhook-dev-read-token"
DEV_ADMIN_TOKEN = "billhook-dev-admin-token"
# Each settings key that may hold a published value, and that value.
DEV_VALUES: dict[str, str] = {
    "stripe.webhook_secrets": DEV_STRIPE_WEBHOOK_SECRET,
    "polar.webhook_secrets": DEV_POLAR_WEBHOOK_SECRET,
    "auth.api_tokens": DEV_API_TOKEN,
    "auth.admin_tokens": DEV_ADMIN_TOKEN,
}
# The config file that holds them, as the README and the messages name it.
DEV_CONFIG = "examples/dev.toml"
# The workspace the printed commands ask about: the demo leaves it on the team tier.
DEMO_WORKSPACE = "ws_polar"


def _configured(settings: Settings, key: str) -> tuple[Secret, ...]:
    section, name = key.split(".")
    values: tuple[Secret, ...] = getattr(getattr(settings, section), name)
    return values


def dev_keys(settings: Settings) -> list[str]:
    """The settings keys that hold a published development value (from the file or the
    environment), in DEV_VALUES order; empty for a config of one's own."""
    return [
        key
        for key, value in DEV_VALUES.items()
        if any(secret.reveal() == value for secret in _configured(settings, key))
    ]


def refusal(settings: Settings, keys: Sequence[str]) -> str | None:
    """Why `serve` must not start with these settings (one line), or None.

    Live mode with any published value is refused: whoever read the README
    could forge a paid subscription or read every workspace.
    """
    if settings.mode != "live" or not keys:
        return None
    return (
        f'refusing to serve: mode = "live" with the published development values of'
        f" {', '.join(keys)} ({DEV_CONFIG}); give this deployment secrets and tokens of its own"
        " (`billhook init` writes a config with fresh tokens)"
    )


def base_url(host: str, port: int) -> str:
    """The URL a local client reaches `serve --host HOST --port PORT` at."""
    if host in ("", "0.0.0.0"):  # noqa: S104 - naming the wildcard, not binding it
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def banner(keys: Sequence[str], url: str, program: str = "billhook") -> list[str]:
    """What `serve` prints once at start when it runs with published values: which ones,
    the tokens to export (only published ones), and commands to paste in another shell."""
    lines = [
        f"billhook: DEVELOPMENT config ({DEV_CONFIG}), for trying billhook on this machine only:",
        f'  published values in {", ".join(keys)}; refused when mode = "live".',
        "  In another shell:",
    ]
    exports = []
    if "auth.api_tokens" in keys:
        exports.append(("TOKEN", DEV_API_TOKEN))
    if "auth.admin_tokens" in keys:
        exports.append(("ADMIN_TOKEN", DEV_ADMIN_TOKEN))
    if exports:
        lines.append("  export " + " ".join(f"{name}={value}" for name, value in exports))
    if {"stripe.webhook_secrets", "polar.webhook_secrets", "auth.admin_tokens"} <= set(keys):
        # The demo signs and authenticates with the published values: only then does it work.
        lines.append(f"  {program} demo --target {url}    # fills the log: a realistic lifecycle")
    if exports:
        # Reads need the read token; an admin token reads too.
        bearer = f'-H "Authorization: Bearer ${exports[0][0]}"'
        workspace = f"{url}/v1/workspaces/{DEMO_WORKSPACE}"
        lines.append(f"  curl -fsS {bearer} {workspace}/entitlements")
        lines.append(f'  curl -fsS {bearer} -d \'{{"action": "ai_imports"}}\' {workspace}/check')
    return lines


def program_name(argv0: str) -> str:
    """How the running `billhook` was invoked, for commands to paste (`.venv/bin/billhook`)."""
    if argv0.rpartition("/")[2] == "billhook":
        return shlex.quote(argv0)
    return "billhook"
