"""`billhook init`: the reference config with fresh tokens, for a deployment of one's own.

What it writes loads, and `check-config` passes it once the secrets it says to
fill in are given; it never overwrites a file; what it starts from is the
reference config shipped in the package, a copy of examples/billhook.toml.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from click.testing import CliRunner, Result

from billhook.cli.devconfig import DEV_VALUES
from billhook.cli.init_config import TOKEN_LINES, template
from billhook.cli.main import main
from billhook.config import load_settings

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "examples" / "billhook.toml"
# Environment variables that would override the config under test.
_CONFIG_ENV_PREFIXES = ("BILLHOOK_", "STRIPE_", "POLAR_")
# What `billhook init` says to fill in, as the check-config lines that fail without it.
FILL_IN = {
    "STRIPE_WEBHOOK_SECRETS": ("stripe webhook secrets", "whsec_c29tZSBzdHJpcGUgc2VjcmV0"),
    "STRIPE_API_KEY": ("stripe api key", "sk_test_someStripeKey"),
    "POLAR_WEBHOOK_SECRETS": ("polar webhook secrets", "whsec_c29tZSBwb2xhciBzZWNyZXQ="),
    "POLAR_ACCESS_TOKEN": ("polar access token", "polar_oat_someToken"),
}


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    clean: dict[str, str | None] = {
        k: None for k in os.environ if k.startswith(_CONFIG_ENV_PREFIXES)
    }
    return CliRunner().invoke(main, list(args), env={**clean, **(env or {})})


def test_init_writes_the_reference_with_fresh_tokens(tmp_path: Path) -> None:
    path = tmp_path / "billhook.toml"
    result = invoke("init", str(path))
    assert result.exit_code == 0, result.output
    written = path.read_text()
    # The reference, every comment included, with the token lines filled in.
    token_lines = [line for line in written.splitlines() if line.startswith(tuple(TOKEN_LINES))]
    assert len(token_lines) == 2
    assert written.splitlines()[-len(REFERENCE.read_text().splitlines()) :] == [
        token_lines[0] if line == TOKEN_LINES["api_tokens"] else
        token_lines[1] if line == TOKEN_LINES["admin_tokens"] else line
        for line in REFERENCE.read_text().splitlines()
    ]  # fmt: skip
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # it holds the tokens
    settings = load_settings(path, {})
    read, admin = settings.auth.api_tokens, settings.auth.admin_tokens
    assert len(read) == len(admin) == 1
    assert len(read[0].reveal()) >= 40
    assert read[0] != admin[0]
    assert not {read[0].reveal(), admin[0].reveal()} & set(DEV_VALUES.values())
    assert settings.mode == "test"
    assert settings.stripe.webhook_secrets == settings.polar.webhook_secrets == ()
    # Fresh each time.
    other = tmp_path / "other.toml"
    assert invoke("init", str(other)).exit_code == 0
    assert load_settings(other, {}).auth.api_tokens != read


def test_init_says_what_to_fill_in(tmp_path: Path) -> None:
    path = tmp_path / "prod.toml"
    result = invoke("init", str(path))
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith(f'wrote {path}: mode "test", fresh API and admin tokens')
    for variable in FILL_IN:
        assert variable in result.output
    assert "[stripe.prices], [polar.products]" in result.output
    assert lines[-1] == (
        f"then: billhook check-config --online --config {path}, and billhook serve --config {path}"
    )


def test_check_config_passes_it_once_the_secrets_are_filled_in(tmp_path: Path) -> None:
    path = tmp_path / "billhook.toml"
    assert invoke("init", str(path)).exit_code == 0
    unfilled = invoke("check-config", "--config", str(path))
    lines = unfilled.output.splitlines()
    assert lines[0] == f"✓ config: loaded from {path}"
    failed = {line[2:].split(":")[0] for line in lines if line.startswith("✗")}
    assert failed == {name for name, _ in FILL_IN.values()}
    filled = invoke(
        "check-config",
        "--config",
        str(path),
        env={variable: value for variable, (_, value) in FILL_IN.items()},
    )
    assert filled.exit_code == 0, filled.output
    assert "✗" not in filled.output


def test_init_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "billhook.toml"
    path.write_text("# mine\n")
    result = invoke("init", str(path))
    assert result.exit_code == 1
    assert result.output == (
        f"Error: {path} exists; billhook init never overwrites a config"
        " (move it, or give a new PATH)\n"
    )
    assert path.read_text() == "# mine\n"


def test_init_into_a_missing_directory_is_one_line(tmp_path: Path) -> None:
    result = invoke("init", str(tmp_path / "nowhere" / "billhook.toml"))
    assert result.exit_code == 1
    assert result.output.startswith("Error: cannot write ")
    assert len(result.output.splitlines()) == 1


def test_the_shipped_reference_is_examples_billhook_toml() -> None:
    # The wheel ships src/billhook/cli/examples/; the checkout documents examples/.
    assert template() == REFERENCE.read_text(), (
        "src/billhook/cli/examples/billhook.toml must be a copy of examples/billhook.toml:"
        " cp examples/billhook.toml src/billhook/cli/examples/billhook.toml"
    )
