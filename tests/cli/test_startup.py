"""What `billhook serve` says at start: refusals, warnings, the development banner.

The published values of examples/dev.toml are refused in live mode, wherever
they come from; with them in test mode, serve prints them once with commands
to paste. A config that leaves the deployment deaf or mixes provider modes is
one warning line per problem, naming the key. The serve tests run the real
process: it must say all this before it answers anything.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from billhook.cli.devconfig import (
    DEV_ADMIN_TOKEN,
    DEV_API_TOKEN,
    DEV_VALUES,
    banner,
    base_url,
    dev_keys,
    refusal,
)
from billhook.cli.startup import (
    NO_TOKEN,
    NO_WEBHOOK_SECRET,
    POLAR_SERVER_OF_OTHER_MODE,
    STRIPE_KEY_OF_OTHER_MODE,
    StartupWarning,
    startup_warnings,
)
from billhook.config import load_settings, parse_settings
from billhook.testing.servers import START_TIMEOUT_S, free_port, stop_process, wait_until
from billhook.testing.settings import config_toml, make_settings

ROOT = Path(__file__).resolve().parents[2]
DEV_TOML = ROOT / "examples" / "dev.toml"
_CONFIG_ENV_PREFIXES = ("BILLHOOK_", "STRIPE_", "POLAR_")
SERVE = (sys.executable, "-m", "billhook", "serve", "--config")
# What uvicorn logs once the app serves.
STARTED = "Application startup complete."


def dev_raw(data_dir: Path, **core: Any) -> dict[str, Any]:
    """examples/dev.toml, its data in `data_dir`, with `core` laid over `[billhook]`."""
    raw = tomllib.loads(DEV_TOML.read_text())
    raw["billhook"].update(data_dir=str(data_dir), **core)
    return raw


def test_examples_dev_toml_holds_every_published_value() -> None:
    settings = load_settings(DEV_TOML, {})
    assert settings.mode == "test"
    assert dev_keys(settings) == list(DEV_VALUES)
    assert refusal(settings, dev_keys(settings)) is None


def test_published_values_count_from_the_environment_too(tmp_path: Path) -> None:
    settings = parse_settings(
        {"billhook": {"mode": "live"}}, {"BILLHOOK_ADMIN_TOKENS": f"mine,{DEV_ADMIN_TOKEN}"}
    )
    assert dev_keys(settings) == ["auth.admin_tokens"]
    why = refusal(settings, ["auth.admin_tokens"])
    assert why is not None
    assert why.startswith('refusing to serve: mode = "live" with the published development')
    assert "auth.admin_tokens (examples/dev.toml)" in why
    assert dev_keys(make_settings(tmp_path)) == []


def test_the_banner_shows_only_published_values() -> None:
    url = "http://127.0.0.1:8000"
    everything = banner(list(DEV_VALUES), url, ".venv/bin/billhook")
    assert f"  export TOKEN={DEV_API_TOKEN} ADMIN_TOKEN={DEV_ADMIN_TOKEN}" in everything
    assert f"  .venv/bin/billhook demo --target {url}" in "\n".join(everything)
    # Own tokens but published webhook secrets: no token to show, no demo that would work.
    secrets_only = banner(["stripe.webhook_secrets"], url)
    assert not any("TOKEN" in line or " demo " in line for line in secrets_only)
    assert base_url("0.0.0.0", 8000) == url
    assert base_url("::", 9) == "http://[::1]:9"


WARNINGS: list[tuple[dict[str, Any], list[StartupWarning]]] = [
    ({}, []),
    ({"auth": None}, [NO_TOKEN]),
    ({"auth": {"admin_tokens": ["a"]}}, []),
    ({"stripe": None, "polar": None}, [NO_WEBHOOK_SECRET]),
    ({"polar": None}, []),
    ({"stripe": {"api_key": "sk_test_x"}}, []),
    ({"stripe": {"api_key": "rk_live_x"}}, [STRIPE_KEY_OF_OTHER_MODE["test"]]),
    (
        {"mode": "live", "stripe": {"api_key": "sk_test_x"}, "polar": None},
        [STRIPE_KEY_OF_OTHER_MODE["live"]],
    ),
    ({"mode": "live", "stripe": {"api_key": "sk_live_x"}, "polar": None}, []),
    ({"mode": "live"}, [POLAR_SERVER_OF_OTHER_MODE["live"]]),
    ({"mode": "live", "polar": {"server": "production"}}, []),
    ({"mode": "live", "polar": {"server_url": "https://polar.internal"}}, []),
    ({"polar": {"server": "production"}}, [POLAR_SERVER_OF_OTHER_MODE["test"]]),
    (
        {"mode": "live", "auth": None, "stripe": {"webhook_secrets": [], "api_key": "rk_test_1"}},
        [NO_TOKEN, STRIPE_KEY_OF_OTHER_MODE["live"], POLAR_SERVER_OF_OTHER_MODE["live"]],
    ),
]


@pytest.mark.parametrize(("options", "expected"), WARNINGS)
def test_startup_warnings(
    tmp_path: Path, options: dict[str, Any], expected: list[StartupWarning]
) -> None:
    assert startup_warnings(make_settings(tmp_path, **options)) == expected


def test_each_warning_names_its_key() -> None:
    every = [NO_TOKEN, NO_WEBHOOK_SECRET]
    every += [*STRIPE_KEY_OF_OTHER_MODE.values(), *POLAR_SERVER_OF_OTHER_MODE.values()]
    for warning in every:
        assert warning.key in warning.message


# -- the real process ---------------------------------------------------------------------


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(_CONFIG_ENV_PREFIXES)}


def serve_until_started(config: Path, port: int, tmp_path: Path) -> list[str]:
    """Run `billhook serve` until it serves; its stderr lines up to then."""
    err = tmp_path / "serve.err"
    with err.open("wb") as out:
        process = subprocess.Popen(
            [*SERVE, str(config), "--port", str(port)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=out,
            env=_env(),
        )
    try:
        wait_until(
            lambda: STARTED in err.read_text() or process.poll() is not None,
            START_TIMEOUT_S,
            "billhook serve to start",
        )
        assert process.poll() is None, err.read_text()
    finally:
        stop_process(process)
    lines = err.read_text().splitlines()
    return lines[: next(n for n, line in enumerate(lines) if STARTED in line)]


def test_serve_refuses_the_dev_config_in_live_mode(tmp_path: Path) -> None:
    config = tmp_path / "live.toml"
    config.write_text(config_toml(dev_raw(tmp_path / "data", mode="live")))
    done = subprocess.run(
        [*SERVE, str(config), "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT_S,
        env=_env(),
        check=False,
    )
    assert done.returncode == 1
    assert done.stdout == ""
    keys = ", ".join(DEV_VALUES)
    # One line says why (after the line naming the log it would have used).
    assert done.stderr.splitlines()[-1] == (
        f'Error: refusing to serve: mode = "live" with the published development values of {keys}'
        " (examples/dev.toml); give this deployment secrets and tokens of its own"
        " (`billhook init` writes a config with fresh tokens)"
    )
    assert done.stderr.count("Error") == 1
    assert not (tmp_path / "data").exists()


def test_serve_prints_the_dev_banner_once(tmp_path: Path) -> None:
    config = tmp_path / "dev.toml"
    config.write_text(config_toml(dev_raw(tmp_path / "data")))
    port = free_port()
    lines = serve_until_started(config, port, tmp_path)
    text = "\n".join(lines)
    assert text.count("DEVELOPMENT config") == 1
    assert f"  export TOKEN={DEV_API_TOKEN} ADMIN_TOKEN={DEV_ADMIN_TOKEN}" in lines
    url = f"http://127.0.0.1:{port}"
    assert f"demo --target {url}" in text
    workspace = f"{url}/v1/workspaces/ws_polar"
    assert f'  curl -fsS -H "Authorization: Bearer $TOKEN" {workspace}/entitlements' in lines
    assert '"level":"warning"' not in text


def test_serve_warns_once_per_problem_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "billhook.toml"
    raw = {
        "billhook": {"mode": "live", "data_dir": str(tmp_path / "data")},
        "stripe": {"api_key": "sk_test_abc"},
        "polar": {"access_token": "polar_oat_abc"},
    }
    config.write_text(config_toml(raw))
    lines = serve_until_started(config, free_port(), tmp_path)
    warnings = [json.loads(line) for line in lines if '"level":"warning"' in line]
    assert [(w["logger"], w["key"], w["msg"]) for w in warnings] == [
        ("billhook.startup", w.key, w.message)
        for w in (
            NO_TOKEN,
            NO_WEBHOOK_SECRET,
            STRIPE_KEY_OF_OTHER_MODE["live"],
            POLAR_SERVER_OF_OTHER_MODE["live"],
        )
    ]
    assert "DEVELOPMENT" not in "\n".join(lines)
