"""`billhook demo` walks the whole lifecycle through the real HTTP path.

It needs nothing but billhook installed: the Stripe fake its purchase goes
through ships in `billhook.testing`. So the demo runs here as from an
installed package: isolated (`python -I`: no PYTHONPATH, no current directory
on the path) in a directory away from the checkout. tests/e2e/test_wheel.py
runs it from a built wheel.

With `--target` it delivers to a running server instead (`make run`), signing
with the development secrets of examples/dev.toml: that server's log then
holds the lifecycle, and its enforcement mode is left as the demo found it.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click
import httpx
import pytest
from click.testing import CliRunner

from billhook.api.app import create_app
from billhook.cli.demo import DEMO_EVENT_ID, Target, run_demo
from billhook.cli.devconfig import (
    DEV_ADMIN_TOKEN,
    DEV_API_TOKEN,
    DEV_POLAR_WEBHOOK_SECRET,
    DEV_STRIPE_WEBHOOK_SECRET,
)
from billhook.cli.main import main
from billhook.config import Settings, parse_settings
from billhook.log.sqlite import EventLog
from billhook.testing.servers import free_port, serve_in_thread
from billhook.testing.settings import STRIPE_API_KEY
from tests.cli.demo_table import MAX_WIDTH, DemoTable, parse_demo

ROOT = Path(__file__).resolve().parents[2]
DEV_TOML = ROOT / "examples" / "dev.toml"


@pytest.fixture(scope="module")
def output(tmp_path_factory: pytest.TempPathFactory) -> str:
    proc = subprocess.run(
        [sys.executable, "-I", "-m", "billhook", "demo"],
        cwd=tmp_path_factory.mktemp("anywhere"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.fixture(scope="module")
def table(output: str) -> DemoTable:
    return parse_demo(output)


def test_demo_prints_every_step_with_the_expected_entitlement(table: DemoTable) -> None:
    rows, calls = table.rows, table.calls
    # workspace, tier, source, status, attention, next, seats
    assert rows["stripe checkout -> active"] == [
        "ws_stripe", "team", "stripe", "active", "-", "none", "5"
    ]  # fmt: skip
    assert rows["cancel at period end"][1:6] == [
        "team",
        "stripe",
        "canceling",
        "-",
        "resume_subscription",
    ]
    assert rows["payment failed -> past_due"][3:6] == [
        "past_due",
        "past_due",
        "update_payment_method",
    ]
    assert calls["payment failed -> past_due"] == "ai_imports: 200 would_deny (billing_attention)"
    assert rows["subscription canceled"][1:6] == ["solo", "default", "inactive", "-", "resubscribe"]
    assert calls["polar: both seats in use"] == "invite_member: 200 would_deny (seat_limit)"
    assert rows["pilot override"][1:3] == ["team", "manual_pilot"]
    assert calls["enforce: 402"] == "ai_imports: 402 deny (tier_required)"
    assert calls["enforce: seat gate"] == "invite_member: 402 deny (seat_limit)"
    assert calls["enforce: reads stay free"] == "reads: 200 allow"


def test_installed_anywhere_the_purchase_runs_through_the_shipped_fake(table: DemoTable) -> None:
    # The purchase: checkout -> return and refresh -> portal -> cancellation.
    rows, calls = table.rows, table.calls
    assert rows["checkout: session created"][1:] == [
        "solo", "default", "none", "-", "upgrade", "-"
    ]  # fmt: skip
    assert calls["checkout: session created"] == "checkout: 201"
    assert rows["checkout: paid, refresh on return"][1:] == [
        "team", "stripe", "active", "-", "none", "3"
    ]  # fmt: skip
    assert calls["checkout: paid, refresh on return"] == "refresh: 200"
    assert calls["checkout: second one refused"] == "checkout: 409 already_subscribed"
    assert calls["portal: opened"] == "portal: 201"
    assert rows["portal: canceled at period end"][1:] == [
        "team", "stripe", "canceling", "-", "resume_subscription", "3"
    ]  # fmt: skip
    assert not any("skipped" in line for line in table.rest)


def test_the_table_fits_120_columns_under_a_one_line_legend(output: str, table: DemoTable) -> None:
    too_wide = [line for line in output.splitlines() if len(line) > MAX_WIDTH]
    assert too_wide == []
    assert len(table.rows) == 18
    # The legend stands on one line above the header, and explains its terse names.
    lines = output.splitlines()
    at = next(n for n, line in enumerate(lines) if line.startswith("step "))
    legend, header = lines[at - 1], lines[at]
    assert legend.startswith("legend: ")
    for name in ("next", "seats", "->"):
        assert f"{name}:" in legend
    header_names = ["step", "workspace", "tier", "source", "status", "attention", "next", "seats"]
    assert header.split() == header_names


# -- --target: a running server's log ---------------------------------------------------


def dev_settings(data_dir: Path, **stripe: str) -> Settings:
    """examples/dev.toml as `make run` serves it, its data in `data_dir`."""
    raw = tomllib.loads(DEV_TOML.read_text())
    raw["billhook"]["data_dir"] = str(data_dir)
    raw["stripe"].update(stripe)
    return parse_settings(raw, environ={})


@contextmanager
def dev_server(settings: Settings) -> Iterator[httpx.Client]:
    with (
        serve_in_thread(create_app(settings)) as url,
        httpx.Client(base_url=url, timeout=10) as client,
    ):
        yield client


def target(
    url: str, stripe_fake_port: int | None = None, credentials: dict[str, str] | None = None
) -> Target:
    """Where `make run` serves, with the development credentials but for `credentials`."""
    given = {
        "stripe_secret": DEV_STRIPE_WEBHOOK_SECRET,
        "polar_secret": DEV_POLAR_WEBHOOK_SECRET,
        "admin_token": DEV_ADMIN_TOKEN,
    } | (credentials or {})
    return Target(url, given["stripe_secret"], given["polar_secret"], given["admin_token"],
                  stripe_fake_port)  # fmt: skip


def test_target_fills_a_running_servers_log(tmp_path: Path) -> None:
    settings = dev_settings(tmp_path / "data")
    lines: list[str] = []
    with dev_server(settings) as client:
        run_demo(lines.append, target(str(client.base_url)))
        read = {"Authorization": f"Bearer {DEV_API_TOKEN}"}
        polar = client.get("/v1/workspaces/ws_polar/entitlements", headers=read).json()
        check = client.post(
            "/v1/workspaces/ws_polar/check", json={"action": "ai_imports"}, headers=read
        ).json()
        again: list[str] = []
        run_demo(again.append, target(str(client.base_url)))  # a second run works as well
    table = parse_demo("\n".join(lines))
    assert len(table.rows) == 13  # the lifecycle; the purchase is skipped
    assert table.calls["enforce: 402"] == "ai_imports: 402 deny (tier_required)"
    assert [line.split(":")[0] for line in table.rest[1:]] == [
        "purchase skipped",
        "enforcement back to 'observe', as the demo found it; 7 events delivered",
        "read them",
    ]
    assert (polar["tier"], polar["source"], polar["seats"], polar["enforcement"]) == (
        "team",
        "polar",
        {"purchased": 2},
        "observe",
    )
    assert (check["allowed"], check["decision"]) == (True, "allow")
    assert len(parse_demo("\n".join(again)).rows) == 13
    log = EventLog(settings.events_path)
    try:
        found = log.find(DEMO_EVENT_ID, "stripe")
        assert [e.type for e in found] == ["checkout.session.completed"]
        providers = [e.provider for e in log.read(after=0, limit=100)]
    finally:
        log.close()
    # Both runs' lifecycles (the first event of the second is a duplicate), overrides and
    # enforcement changes: everything went through the server's log.
    assert providers.count("stripe") == 11
    assert providers.count("polar") == 2
    assert providers.count("billhook") == 6


def test_target_buys_through_the_fake_it_is_configured_with(tmp_path: Path) -> None:
    port = free_port()
    settings = dev_settings(
        tmp_path / "data", api_base=f"http://127.0.0.1:{port}", api_key=STRIPE_API_KEY
    )
    lines: list[str] = []
    with dev_server(settings) as client:
        run_demo(lines.append, target(str(client.base_url), stripe_fake_port=port))
    table = parse_demo("\n".join(lines))
    shop = [step for step, cells in table.rows.items() if cells[0].startswith("ws_shop_")]
    assert len(shop) == 5
    assert table.calls["checkout: paid, refresh on return"] == "refresh: 200"
    assert table.rows["portal: canceled at period end"][1:4] == ["team", "stripe", "canceling"]


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"admin_token": "wrong"}, "answered 401: it refused the admin token (--admin-token"),
        ({"stripe_secret": "whsec_wrong"}, "answered 400: its stripe webhook secret is not the"),
        ({"polar_secret": "whsec_d3Jvbmc="}, "answered 400: its polar webhook secret is not the"),
    ],
)
def test_target_with_wrong_credentials_says_which(
    tmp_path: Path, options: dict[str, str], expected: str
) -> None:
    with (
        dev_server(dev_settings(tmp_path / "data")) as client,
        pytest.raises(click.ClickException) as failed,
    ):
        run_demo(lambda _: None, target(str(client.base_url), credentials=options))
    assert expected in failed.value.message


def test_target_that_does_not_answer_is_one_line() -> None:
    with pytest.raises(click.ClickException) as failed:
        run_demo(lambda _: None, target(f"http://127.0.0.1:{free_port()}"))
    assert failed.value.message.startswith("cannot reach http://127.0.0.1:")


def test_credentials_without_target_are_refused() -> None:
    result = CliRunner().invoke(main, ["demo", "--admin-token", "x"])
    assert result.exit_code == 2
    assert "--admin-token: only with --target" in result.output
