"""`billhook demo` walks the whole lifecycle through the real HTTP path."""

from __future__ import annotations

import re
import subprocess
import sys


def test_demo_prints_every_step_with_the_expected_entitlement() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "worker", "demo"],
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
