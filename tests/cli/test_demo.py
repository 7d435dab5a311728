"""`billhook demo` walks the whole lifecycle through the real HTTP path.

It needs nothing but billhook installed: the Stripe fake its purchase goes
through ships in `billhook.testing`. So the demo runs here as from an
installed package: isolated (`python -I`: no PYTHONPATH, no current directory
on the path) in a directory away from the checkout. tests/e2e/test_wheel.py
runs it from a built wheel.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

Rows = dict[str, list[str]]


@pytest.fixture(scope="module")
def rows(tmp_path_factory: pytest.TempPathFactory) -> Rows:
    """The demo's rows by step: workspace, tier, source, status, attention, next, seats[, check]."""
    proc = subprocess.run(
        [sys.executable, "-I", "-m", "billhook", "demo"],
        cwd=tmp_path_factory.mktemp("anywhere"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "skipped" not in proc.stdout
    table = [re.split(r"\s{2,}", line) for line in proc.stdout.splitlines()[1:]]
    assert table[0][:3] == ["step", "workspace", "tier"]
    return {cells[0]: cells[1:] for cells in table[1:]}


def test_demo_prints_every_step_with_the_expected_entitlement(rows: Rows) -> None:
    # workspace, tier, source, status, attention, next, seats[, check]
    assert rows["stripe checkout -> active"][:7] == [
        "ws_stripe",
        "team",
        "stripe",
        "active",
        "-",
        "none",
        "5",
    ]
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
    assert rows["payment failed -> past_due"][7] == "ai_imports: 200 would_deny (billing_attention)"
    assert rows["subscription canceled"][1:6] == ["solo", "default", "inactive", "-", "resubscribe"]
    assert rows["polar: both seats in use"][7] == "invite_member: 200 would_deny (seat_limit)"
    assert rows["pilot override"][1:3] == ["team", "manual_pilot"]
    assert rows["enforce: 402"][7] == "ai_imports: 402 deny (tier_required)"
    assert rows["enforce: seat gate"][7] == "invite_member: 402 deny (seat_limit)"
    assert rows["enforce: reads stay free"][7] == "reads: 200 allow"


def test_installed_anywhere_the_purchase_runs_through_the_shipped_fake(rows: Rows) -> None:
    # The purchase: checkout -> return and refresh -> portal -> cancellation (tier, status, seats).
    assert rows["checkout: session created"][1:] == [
        "solo", "default", "none", "-", "upgrade", "-", "checkout: 201"
    ]  # fmt: skip
    assert rows["checkout: paid, refresh on return"][1:] == [
        "team", "stripe", "active", "-", "none", "3", "refresh: 200"
    ]  # fmt: skip
    assert rows["checkout: second one refused"][7] == "checkout: 409 already_subscribed"
    assert rows["portal: opened"][7] == "portal: 201"
    assert rows["portal: canceled at period end"][1:7] == [
        "team", "stripe", "canceling", "-", "resume_subscription", "3"
    ]  # fmt: skip
