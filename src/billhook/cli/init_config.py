"""`billhook init`: a config of one's own, to start a real deployment from.

It is the reference config shipped in the package (a copy of
examples/billhook.toml: every key, commented), with freshly generated API and
admin tokens, mode "test" and every secret left empty for the environment.
It never overwrites a file, and it is written readable by its owner only,
since it holds the tokens.
"""

from __future__ import annotations

import os
import shlex
from datetime import UTC, datetime
from importlib.resources import files
from pathlib import Path
from secrets import token_urlsafe

from billhook.config import DEFAULT_CONFIG_NAME

# The shipped reference config, and the lines of it that init fills with fresh tokens.
TEMPLATE = ("examples", "billhook.toml")
TOKEN_LINES = {"api_tokens": "api_tokens = []", "admin_tokens": "admin_tokens = []"}
# Bytes of randomness in each generated token (token_urlsafe: about 1.3 characters each).
TOKEN_BYTES = 32
# Who may read and write the written file: its owner only.
FILE_MODE = 0o600
HEADER = """\
# Written by `billhook init` on {date}: the config of a deployment of your own.
# The API and admin tokens in [auth] were generated for it: keep this file private.
# To fill in (environment variables override this file; secrets are best kept there):
#   - webhook signing secrets: STRIPE_WEBHOOK_SECRETS, POLAR_WEBHOOK_SECRETS
#   - the prices and products you sell: [stripe.prices], [polar.products]
#     (delete the tables of a provider you do not use)
#   - API credentials for refresh and backfill: STRIPE_API_KEY, POLAR_ACCESS_TOKEN
# then check it with: billhook check-config --online
#
"""


def template() -> str:
    """The reference config as shipped in the package."""
    return files("billhook.cli").joinpath(*TEMPLATE).read_text("utf-8")


def render(reference: str, tokens: dict[str, str], date: str) -> str:
    """`reference` with `tokens` (by `[auth]` key) in place of its empty token lists, under
    a header saying what to fill in. Raises ValueError when a token line is not there once."""
    text = reference
    for key, line in TOKEN_LINES.items():
        if text.count(f"\n{line}\n") != 1:
            raise ValueError(f"the shipped config has no single {line!r} line")
        text = text.replace(f"\n{line}\n", f'\n{key} = ["{tokens[key]}"]\n')
    return HEADER.format(date=date) + text


def write_new_config(path: Path, now: datetime | None = None) -> None:
    """Write a new config at `path` with fresh tokens.

    Raises FileExistsError when `path` exists (nothing is written then), and
    OSError when it cannot be created.
    """
    tokens = {key: token_urlsafe(TOKEN_BYTES) for key in TOKEN_LINES}
    date = (now or datetime.now(UTC)).date().isoformat()
    text = render(template(), tokens, date)
    # O_EXCL: created here or not at all, even when another process races to the same path.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)


def next_steps(path: Path, cwd: Path) -> list[str]:
    """What `billhook init` prints after writing `path`: what to fill in, then the commands
    (with `--config PATH` unless `path` is where billhook looks by default, in `cwd`)."""
    default = path.resolve() == (cwd / DEFAULT_CONFIG_NAME).resolve()
    option = "" if default else f" --config {shlex.quote(str(path))}"
    return [
        f'wrote {path}: mode "test", fresh API and admin tokens in [auth] (readable by you only)',
        "fill in before serving real events (environment variables override the file):",
        "  1. webhook signing secrets: STRIPE_WEBHOOK_SECRETS=whsec_... POLAR_WEBHOOK_SECRETS=...",
        "  2. the prices and products you sell: [stripe.prices], [polar.products]"
        " (delete a provider's tables if you do not use it)",
        "  3. API credentials for refresh and backfill: STRIPE_API_KEY, POLAR_ACCESS_TOKEN",
        f"then: billhook check-config --online{option}, and billhook serve{option}",
    ]
