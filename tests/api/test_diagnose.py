"""`billhook diagnose WORKSPACE` and the console's Diagnose page (issue 15): a bounded
support report with ids, statuses, tiers, seqs, event types and times — and none of the
personal data, secrets, tokens or local paths of the deployment it describes."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from click.testing import CliRunner

from billhook.api.app import create_app
from billhook.api.diagnose import MAX_EVENTS, diagnose, diagnosis_lines
from billhook.cli.main import main
from billhook.config import Settings
from billhook.projections import actions as operator
from billhook.projections.impact import SqliteImpactStore
from billhook.testing.polar import POLAR_PII
from billhook.testing.servers import serve_in_thread
from billhook.testing.settings import ADMIN_TOKEN, READ_TOKEN, SECRETS, write_config
from billhook.testing.stripe import STRIPE_PII, stripe_customer, stripe_subscription
from tests.api.test_console import Operator
from tests.feed import NOW, Feed

TODAY = NOW.date().isoformat()
# Operator-entered free text with a name in it: kept in the log, never in a report.
REASON = f"pilot agreed with {STRIPE_PII[1]}"
_PRE = re.compile(r'<pre id="diagnosis">(.*?)</pre>', re.S)


class Lifecycle:
    """ws_d: a customer, a subscription that goes past due, an event quarantined for a
    malformed status (an e-mail address), an override, and refused checks."""

    def __init__(self, feed: Feed) -> None:
        meta = {"workspace_id": "ws_d"}
        feed.stripe("customer.created", stripe_customer(id="cus_d", metadata=meta))
        sub = stripe_subscription(id="sub_d", customer="cus_d", metadata=meta)
        self.created = feed.stripe("customer.subscription.created", sub, event_id="evt_d_new")
        late = stripe_subscription(id="sub_d", customer="cus_d", metadata=meta, status="past_due")
        self.past_due = feed.stripe("customer.subscription.updated", late)
        poison = stripe_subscription(id="sub_d", customer="cus_d", metadata=meta)
        poison["status"] = STRIPE_PII[0]
        self.poison = feed.stripe("customer.subscription.updated", poison, event_id="evt_d_bad")
        self.override = feed.append(
            operator.override_set(
                feed.settings,
                workspace_id="ws_d",
                kind="manual_pilot",
                tier="enterprise",
                expires_at=None,
                reason=REASON,
                actor="ops",
                now=NOW,
            )
        )
        self.head = self.override


@pytest.fixture
def lifecycle(feed: Feed) -> Iterator[tuple[Feed, Lifecycle, SqliteImpactStore]]:
    impact = SqliteImpactStore(feed.settings.data_dir / "impact.db")
    impact.add(
        [
            (TODAY, "ws_d", "sso", "tier_required", "would_deny", 3),
            (TODAY, "ws_d", "invite_member", "seat_limit", "would_deny", 1),
            (TODAY, "ws_other", "sso", "tier_required", "would_deny", 7),
        ],
        [(TODAY, "ws_d", 9), (TODAY, "ws_other", 7)],
    )
    yield feed, Lifecycle(feed), impact
    impact.close()


def _planted(settings: Settings) -> tuple[str, ...]:
    return (
        *STRIPE_PII,
        *POLAR_PII,
        *SECRETS,
        ADMIN_TOKEN,
        READ_TOKEN,
        REASON,
        str(settings.data_dir),
        str(settings.data_dir.parent),
    )


def test_the_report_of_a_lifecycle(
    lifecycle: tuple[Feed, Lifecycle, SqliteImpactStore],
) -> None:
    feed, life, impact = lifecycle
    report = diagnose("ws_d", feed.settings, feed.log, feed.store, impact, now=NOW)
    lines = diagnosis_lines(report)
    e = feed.entitlement("ws_d")

    assert lines[0] == "workspace ws_d, diagnosed at 2026-11-21T12:00:00.000Z"
    assert (
        lines[1]
        == f"mode test; log head seq {life.head}; projection at seq {life.head} (caught up)"
    )
    assert lines[2].startswith(
        f"entitlement: tier enterprise, source manual_pilot, status {e.status},"
    )
    assert lines[2].endswith(f", as of seq {life.head}")
    assert "enforcement: observe" in lines
    text = "\n".join(lines)
    # Only this workspace's refused checks.
    assert f"checks refused or that would be, since {report.impact_since}:" in lines
    assert "  invite_member seat_limit: 1 check(s)" in lines
    assert "  sso tier_required: 3 check(s)" in lines
    assert "7 check(s)" not in text
    assert "  stripe cus_d" in lines
    assert any(
        line.startswith("  stripe sub_d customer cus_d: tier team, status past_due")
        for line in lines
    )
    assert any(
        line.startswith(f"  manual_pilot tier enterprise, expires never, seq {life.override}")
        for line in lines
    )
    assert f"  quarantined:{life.poison}: see the quarantined events below" in text
    poison = feed.log.get(life.poison)
    assert poison is not None
    assert (
        f"  seq {life.poison} stripe customer.subscription.updated evt_d_bad"
        f" (received {poison.received_at}, occurred {poison.occurred_at}):"
        " subscription status is unknown"
    ) in lines
    created = feed.log.get(life.created)
    assert created is not None
    assert (
        f"  seq {life.created} stripe customer.subscription.created evt_d_new"
        f" (received {created.received_at}, occurred {created.occurred_at}) -> team, stripe, active"
    ) in lines
    # Latest first, each with the state it left.
    events = [line for line in lines if line.startswith("  seq ") and " -> " in line]
    seqs = [int(line.split()[1]) for line in events]
    assert seqs == sorted(seqs, reverse=True)
    assert {life.created, life.past_due, life.override} <= set(seqs)
    for value in _planted(feed.settings):
        assert value not in text
        assert value not in json.dumps(msgspec.to_builtins(report))


def test_the_report_lists_only_the_latest_events(feed: Feed) -> None:
    meta = {"workspace_id": "ws_busy"}
    total = MAX_EVENTS + 5
    for n in range(total):
        status = "active" if n % 2 == 0 else "past_due"
        sub = stripe_subscription(id="sub_busy", customer="cus_busy", metadata=meta, status=status)
        feed.stripe("customer.subscription.updated", sub, created=1_700_000_000 + n)
    report = diagnose("ws_busy", feed.settings, feed.log, feed.store, None, now=NOW)
    lines = diagnosis_lines(report)
    assert report.events_total == total
    assert f"events that changed it, latest first ({MAX_EVENTS} of {total}):" in lines
    assert len(report.events) == MAX_EVENTS
    assert report.events[0].seq == feed.log.head_seq()
    assert any(
        line.startswith("checks refused or that would be") and "none" in line for line in lines
    )


def test_an_unknown_workspace_is_reported_as_unknown(feed: Feed) -> None:
    lines = diagnosis_lines(
        diagnose("ws_nobody", feed.settings, feed.log, feed.store, None, now=NOW)
    )
    assert lines[2].startswith("entitlement: tier solo, source default, status none")
    for section in ("customers", "subscriptions", "overrides", "problems", "quarantined events"):
        assert f"{section}: none" in lines


def test_the_cli_and_the_console_print_the_same_report(
    lifecycle: tuple[Feed, Lifecycle, SqliteImpactStore], tmp_path: Path
) -> None:
    feed, _, _ = lifecycle
    config = write_config(tmp_path)  # the same data_dir as `feed`
    done = CliRunner().invoke(main, ["diagnose", "ws_d", "--config", str(config)])
    assert done.exit_code == 0, done.output
    cli = done.output.splitlines()
    assert cli[0].startswith("workspace ws_d, diagnosed at ")
    as_json = CliRunner().invoke(main, ["diagnose", "ws_d", "--config", str(config), "--json"])
    assert as_json.exit_code == 0, as_json.output
    body = json.loads(as_json.output)
    assert body["workspace_id"] == "ws_d"
    assert body["entitlement"]["tier"] == "enterprise"
    with serve_in_thread(create_app(feed.settings, log=feed.log)) as base:
        op = Operator(base)
        assert op.sign_in().status_code == 303
        workspace = op.http.get("/console/workspaces/ws_d").text
        assert 'href="/console/workspaces/ws_d/diagnose"' in workspace
        page = op.http.get("/console/workspaces/ws_d/diagnose")
        op.http.close()
    assert page.status_code == 200
    found = _PRE.search(page.text)
    assert found is not None, page.text
    console = html.unescape(found.group(1)).splitlines()
    assert console[1:] == cli[1:]
    # Nothing about the deployment's place: the CLI does not even announce its log.
    for text in (done.output, as_json.output, page.text):
        for value in (*_planted(feed.settings), str(tmp_path)):
            assert value not in text


def test_diagnose_without_a_log_is_one_line_without_a_path(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    done = CliRunner().invoke(main, ["diagnose", "ws_d", "--config", str(config)])
    assert done.exit_code == 1
    assert done.output.startswith("Error: no event log")
    assert str(tmp_path) not in done.output
    assert "Traceback" not in done.output


def test_the_console_page_needs_a_session(tmp_path: Path, settings: Settings) -> None:
    with serve_in_thread(create_app(settings)) as base:
        op = Operator(base)
        answer = op.http.get("/console/workspaces/ws_d/diagnose")
        op.http.close()
    assert answer.status_code == 303
    assert answer.headers["location"] == "/console/sign-in"
