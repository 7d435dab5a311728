"""`billhook pilots classify FILE.csv`: report every pilot's classification, import
classifications as overrides in one idempotent batch, refuse a bad file."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from billhook.cli.main import main
from billhook.cli.pilots import PilotRow, PilotsFileError, import_rows, parse_pilots, plan_import
from billhook.config import Settings, load_settings
from billhook.domain.records import EventRecord
from billhook.log.sqlite import EventLog
from billhook.projections import actions as operator
from billhook.projections.projector import catch_up
from billhook.projections.store import ProjectionStore
from billhook.providers.polar.webhook import polar_record
from billhook.providers.stripe.webhook import stripe_record
from billhook.testing.polar import polar_event, polar_subscription
from billhook.testing.settings import PRODUCT_TEAM, write_config
from billhook.testing.stripe import stripe_event_body, stripe_subscription

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
# Expiry times still ahead whenever the suite runs (the CLI reads the real clock).
YEAR = datetime.now(UTC).year + 2
LATER = f"{YEAR}-06-01T00:00:00Z"


@pytest.fixture(autouse=True)
def _no_config_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Secrets in the environment would override the files these tests write."""
    for name in list(os.environ):
        if name.startswith(("BILLHOOK_", "STRIPE_", "POLAR_")):
            monkeypatch.delenv(name)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return write_config(tmp_path)


@pytest.fixture
def settings(config: Path) -> Settings:
    return load_settings(config, {})


def _override(
    settings: Settings,
    workspace: str,
    kind: str,
    tier: str,
    expires: str | None,
    now: datetime = NOW,
) -> EventRecord:
    return operator.override_set(
        settings,
        workspace_id=workspace,
        kind=kind,
        tier=tier,
        expires_at=expires,
        reason="set by hand",
        actor="ops",
        now=now,
    )


@pytest.fixture
def log(settings: Settings) -> Iterator[EventLog]:
    """A log with a workspace of every kind: Stripe, Polar, each override, none."""
    stripe_body = stripe_event_body(
        "customer.subscription.created",
        obj=stripe_subscription(
            id="sub_1", customer="cus_1", metadata={"workspace_id": "ws_stripe"}
        ),
        created=int(NOW.timestamp()) - 3600,
    )
    polar_body = polar_event(
        "subscription.active",
        polar_subscription(
            id=str(uuid.uuid4()), product_id=PRODUCT_TEAM, external_customer_id="ws_polar"
        ),
    )
    log = EventLog(settings.events_path)
    log.append_batch(
        [
            stripe_record(stripe_body.decode()),
            polar_record(polar_body.decode(), "msg_1", 0),
            _override(settings, "ws_pilot", "manual_pilot", "team", LATER),
            _override(settings, "ws_contract", "enterprise_contract", "enterprise", None),
            _override(settings, "ws_solo", "explicit_solo", "solo", None),
            _override(settings, "ws_owner", "site_owner_override", "enterprise", None),
            # Set in 2025, lapsed before NOW.
            _override(
                settings,
                "ws_lapsed",
                "manual_pilot",
                "team",
                "2026-01-01T00:00:00Z",
                now=datetime(2025, 12, 1, tzinfo=UTC),
            ),
        ]
    )
    yield log
    log.close()


def run(config: Path, csv: Path, *args: str) -> tuple[int, list[str]]:
    """The exit status and the lines printed, stdout and stderr, but for the `log:` line
    on stderr of a command that reads the log."""
    command = ["pilots", "classify", str(csv), "--config", str(config), *args]
    result = CliRunner().invoke(main, command)
    return result.exit_code, [
        line for line in result.output.splitlines() if not line.startswith("log: ")
    ]


def write_csv(tmp_path: Path, text: str, name: str = "pilots.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# One workspace of every classification, in the order the report lists them.
ALL = [
    "ws_stripe",
    "ws_polar",
    "ws_pilot",
    "ws_contract",
    "ws_solo",
    "ws_owner",
    "ws_lapsed",
    "ws_new",
]


def test_report_names_every_classification(config: Path, log: EventLog, tmp_path: Path) -> None:
    csv = write_csv(tmp_path, "workspace_id\n" + "\n".join(ALL) + "\n")
    code, lines = run(config, csv)

    assert code == 1
    assert lines == [
        "workspace_id\tclassification\ttier\tstatus",
        "ws_stripe\tstripe_team\tteam\tactive",
        "ws_polar\tpolar_team\tteam\tactive",
        "ws_pilot\tmanual_pilot\tteam\tactive",
        "ws_contract\tenterprise_contract\tenterprise\tactive",
        "ws_solo\texplicit_solo\tsolo\tactive",
        "ws_owner\tsite_owner_override\tenterprise\tactive",
        "ws_lapsed\tunclassified\tsolo\tnone",
        "ws_new\tunclassified\tsolo\tnone",
        "8 workspace(s): 1 enterprise_contract, 1 explicit_solo, 1 manual_pilot,"
        " 1 polar_team, 1 site_owner_override, 1 stripe_team, 2 unclassified",
        "Error: 2 workspace(s) unclassified: classify them before enforcement",
    ]


def test_report_passes_once_every_workspace_is_classified(
    config: Path, log: EventLog, tmp_path: Path
) -> None:
    # With the byte order mark spreadsheet programs put first.
    report = write_csv(tmp_path, "\ufeffworkspace_id\nws_stripe\nws_lapsed\nws_new\n")
    assert run(config, report)[0] == 1
    imports = write_csv(
        tmp_path,
        "workspace_id,classification,tier,expires_at\n"
        f"ws_lapsed,manual_pilot,team,{LATER}\n"
        "ws_new,explicit_solo,,\n",
        "classify.csv",
    )
    code, lines = run(config, imports, "--actor", "ops")
    assert code == 0, lines
    code, lines = run(config, report)
    assert code == 0, lines
    assert lines[-1] == "3 workspace(s): 1 explicit_solo, 1 manual_pilot, 1 stripe_team"


IMPORT = (
    "workspace_id,classification,tier,expires_at,reason\n"
    f"ws_a,manual_pilot,team,{YEAR}-03-10T01:00:00+01:00,design partner\n"
    "ws_b,enterprise_contract,enterprise,,MSA 2026-117\n"
    "ws_c,explicit_solo,,,\n"
    f"ws_pilot,manual_pilot,team,{LATER},already set\n"
)


def test_import_is_idempotent(config: Path, log: EventLog, tmp_path: Path) -> None:
    csv = write_csv(tmp_path, IMPORT)
    head = log.head_seq()

    code, lines = run(config, csv, "--actor", "ops")
    assert code == 0, lines
    assert lines == [
        f"ws_a\tmanual_pilot\tteam\t{YEAR}-03-10T00:00:00Z\tappended seq {head + 1}",
        f"ws_b\tenterprise_contract\tenterprise\t-\tappended seq {head + 2}",
        f"ws_c\texplicit_solo\tsolo\t-\tappended seq {head + 3}",
        f"ws_pilot\tmanual_pilot\tteam\t{LATER}\tunchanged: in force already",
        "appended 3 override(s); 1 unchanged",
    ]
    first = log.head_seq()
    assert first == head + 3

    code, lines = run(config, csv, "--actor", "someone else")
    assert code == 0, lines
    assert lines[-1] == "appended 0 override(s); 4 unchanged"
    assert all(line.endswith("unchanged: in force already") for line in lines[:-1])
    assert log.head_seq() == first

    report = write_csv(tmp_path, "workspace_id\nws_a\nws_b\nws_c\n", "report.csv")
    code, lines = run(config, report)
    assert code == 0, lines
    assert lines[1:4] == [
        "ws_a\tmanual_pilot\tteam\tactive",
        "ws_b\tenterprise_contract\tenterprise\tactive",
        "ws_c\texplicit_solo\tsolo\tactive",
    ]
    appended = log.read(after=head)
    assert [json.loads(e.payload)["reason"] for e in appended] == [
        "design partner",
        "MSA 2026-117",
        "pilots classify pilots.csv",
    ]
    assert {json.loads(e.payload)["actor"] for e in appended} == {"ops"}


def test_a_changed_row_appends_only_itself(config: Path, log: EventLog, tmp_path: Path) -> None:
    assert run(config, write_csv(tmp_path, IMPORT), "--actor", "ops")[0] == 0
    head = log.head_seq()
    contract = "ws_b,enterprise_contract,enterprise,"
    changed = IMPORT.replace(f"{contract},", f"{contract}{LATER},")
    code, lines = run(config, write_csv(tmp_path, changed), "--actor", "ops")
    assert code == 0, lines
    assert lines[-1] == "appended 1 override(s); 3 unchanged"
    assert lines[1] == f"ws_b\tenterprise_contract\tenterprise\t{LATER}\tappended seq {head + 1}"


def test_a_revoked_override_is_imported_again(config: Path, log: EventLog, tmp_path: Path) -> None:
    csv = write_csv(tmp_path, "workspace_id,classification,tier\nws_a,manual_pilot,team\n")
    assert run(config, csv, "--actor", "ops")[1][-1] == "appended 1 override(s); 0 unchanged"
    revoke = ["override", "revoke", "ws_a", "--kind", "manual_pilot", "--reason", "r"]
    assert (
        CliRunner().invoke(main, [*revoke, "--actor", "ops", "--config", str(config)]).exit_code
        == 0
    )

    code, lines = run(config, csv, "--actor", "ops")
    assert code == 0, lines
    assert lines[-1] == "appended 1 override(s); 0 unchanged"
    assert run(config, csv, "--actor", "ops")[1][-1] == "appended 0 override(s); 1 unchanged"


def test_racing_imports_append_once(settings: Settings, log: EventLog) -> None:
    """Two imports that both read the projection before either appends."""
    rows = [PilotRow(2, "ws_a", "manual_pilot", "team", LATER)]
    store = ProjectionStore(settings.projections_path, settings)
    try:
        catch_up(log, store)
        plans = [
            plan_import(rows, store.override, settings, actor=actor, reason="r", now=NOW)
            for actor in ("ops", "other ops")
        ]
        records = [[p.record for p in plan if p.record is not None] for plan in plans]
        assert records[0][0].event_id == records[1][0].event_id
        assert not log.append_batch(records[0])[0].duplicate
        assert log.append_batch(records[1])[0].duplicate
        results = import_rows(log, store, rows, settings, actor="ops", reason="r", now=NOW)
        assert [(r.seq, r.duplicate) for r in results] == [(None, False)]
    finally:
        store.close()


HEADER = "workspace_id,classification,tier,expires_at\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty file: expected a header row with a workspace_id column"),
        (
            "workspace,classification\nws_a,manual_pilot\n",
            "row 1, column workspace: unknown column",
        ),
        ("classification\nmanual_pilot\n", "row 1: no workspace_id column"),
        (
            "workspace_id,tier\nws_a,team\n",
            "row 1, column tier: only applies with a classification column",
        ),
        ("workspace_id,workspace_id\nws_a,ws_a\n", "row 1, column workspace_id: appears twice"),
        (
            HEADER + "ws_a,manual_pilot,team,\n,explicit_solo,,\n",
            "row 3, column workspace_id: empty",
        ),
        (
            HEADER + "ws_a,pilot,team,\n",
            "row 2, column classification: unknown classification 'pilot'"
            " (expected manual_pilot, enterprise_contract, explicit_solo)",
        ),
        (HEADER + "ws_a,,team,\n", "row 2, column classification: empty"),
        (
            HEADER + "ws_a,manual_pilot,team,\nws_b,manual_pilot,gold,\n",
            "row 3, column tier: unknown tier 'gold' (expected one of solo, team, enterprise)",
        ),
        (
            HEADER + "ws_a,enterprise_contract,,\n",
            "row 2, column tier: required for enterprise_contract",
        ),
        (
            HEADER + "ws_a,manual_pilot,team,next week\n",
            "row 2, column expires_at: 'next week' is not an ISO 8601 time with a timezone",
        ),
        (
            HEADER + "ws_a,manual_pilot,team,2027-01-01T00:00:00\n",
            "row 2, column expires_at: '2027-01-01T00:00:00' is not an ISO 8601 time",
        ),
        (
            HEADER + "ws_a,manual_pilot,team,2020-01-01T00:00:00Z\n",
            "row 2, column expires_at: 2020-01-01T00:00:00Z is not in the future",
        ),
        (
            HEADER + "ws_a,manual_pilot,team,\n\nws_a,explicit_solo,,\n",
            "row 4, column workspace_id: 'ws_a' is listed twice (first on row 2)",
        ),
        (
            HEADER + "ws_a,manual_pilot,team,,extra\n",
            "row 2: 5 cells, but the header has 4 columns",
        ),
    ],
)
def test_a_bad_file_is_one_line_and_appends_nothing(
    config: Path, log: EventLog, tmp_path: Path, text: str, message: str
) -> None:
    head = log.head_seq()
    code, lines = run(config, write_csv(tmp_path, text), "--actor", "ops")
    assert code == 2
    [line] = lines
    assert line.startswith(f"Error: pilots.csv: {message}"), line
    assert log.head_seq() == head


def test_importing_needs_an_actor(config: Path, log: EventLog, tmp_path: Path) -> None:
    csv = write_csv(tmp_path, HEADER + "ws_a,explicit_solo,,\n")
    code, lines = run(config, csv)
    assert code == 2
    assert lines[-1] == "Error: --actor is required to import a classification column"


def test_parsing_is_forgiving_about_layout(settings: Settings) -> None:
    text = " workspace_id , classification ,tier\n ws_a , manual_pilot , team \n,,\n"
    text += "ws_b,explicit_solo\n"
    parsed = parse_pilots(text, settings, NOW)
    assert parsed.classifies
    assert parsed.rows == (
        PilotRow(2, "ws_a", "manual_pilot", "team"),
        PilotRow(4, "ws_b", "explicit_solo", "solo"),
    )
    with pytest.raises(PilotsFileError, match="row 3: not valid CSV: unexpected end of data"):
        parse_pilots('workspace_id\nws_a\n"ws_b\nws_c\n', settings, NOW)
