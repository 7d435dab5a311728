"""`billhook demo` walks the whole lifecycle through the real HTTP path."""

from __future__ import annotations

import re
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path

import pytest

from billhook.cli import demo_checkout

# The source checkout: the demo buys through the provider fakes under its tests/.
ROOT = Path(__file__).resolve().parents[2]


def test_demo_prints_every_step_with_the_expected_entitlement() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "billhook", "demo"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    table = [re.split(r"\s{2,}", line) for line in proc.stdout.splitlines()[1:]]
    assert table[0][:3] == ["step", "workspace", "tier"]
    rows = {cells[0]: cells[1:] for cells in table[1:]}
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


def test_outside_a_source_checkout_the_purchase_is_skipped_with_a_note(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    installed = tmp_path / "site-packages" / "worker" / "demo_checkout.py"
    monkeypatch.setattr(demo_checkout, "__file__", str(installed))

    with ExitStack() as stack:
        assert demo_checkout.start_fake_stripe(stack) is None
    assert "skipped" in demo_checkout.NO_FAKES
