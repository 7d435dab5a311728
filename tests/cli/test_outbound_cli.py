"""`billhook endpoints list`, `billhook deliveries list|redeliver` (SPEC §6b) on real stores."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from billhook.cli.outbound import deliveries, endpoints
from billhook.cli.support import BillhookGroup
from billhook.config import Settings
from billhook.domain.times import to_us
from billhook.log.backend import open_log
from billhook.outbound.store import (
    DELIVERED,
    FAILED,
    PENDING,
    NewDelivery,
    OutboxStore,
    open_outbox,
)
from billhook.outbound.store import (
    Result as Outcome,
)
from billhook.projections import actions as operator
from billhook.testing.settings import make_settings, write_config

NOW = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)
SECRET = "whsec_" + base64.b64encode(b"configured-endpoint-key-0123456").decode()
OUTBOUND = {"endpoints": [{"id": "app", "url": "https://app.example/hook", "secrets": [SECRET]}]}

# The commands as `billhook` runs them: one-line errors come from its group.
cli = BillhookGroup(name="billhook", commands={"endpoints": endpoints, "deliveries": deliveries})


@dataclass
class Deployment:
    config: Path
    settings: Settings
    outbox: OutboxStore

    def run(self, *args: str) -> Result:
        command, sub, *rest = args
        return CliRunner().invoke(cli, [command, sub, "--config", str(self.config), *rest])


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    config = write_config(tmp_path, sections={"outbound": OUTBOUND})
    settings = make_settings(tmp_path / "data", sections={"outbound": OUTBOUND})
    open_log(settings).close()
    outbox = open_outbox(settings)
    yield Deployment(config, settings, outbox)
    outbox.close()


def _seed(outbox: OutboxStore) -> tuple[int, int, int]:
    """Deliveries to `app`: one delivered, one given up (410), one to retry; their ids."""
    now_us = to_us(NOW)
    rows = [
        NewDelivery("app", 3, 0, "ws_a", b'{"body": "never shown"}'),
        NewDelivery("app", 4, 0, "ws_b", b"{}"),
        NewDelivery("app", 5, 0, "ws_c", b"{}"),
    ]
    assert outbox.enqueue(None, (5, 0), rows, now_us, now_us + 60_000_000)
    first, second, third = outbox.claim(now_us, {"app": 10}, 30_000_000)
    at_us = now_us + 1_000_000
    outbox.record(
        [
            Outcome(first.id, first.token, at_us, 200, None, 12, DELIVERED, None),
            Outcome(second.id, second.token, at_us, 410, "gone\nfor good", 7, FAILED, None),
            Outcome(third.id, third.token, at_us, 503, None, 9, PENDING, at_us + 5_000_000),
        ]
    )
    return first.id, second.id, third.id


def _ids(result: Result) -> list[int]:
    assert result.exit_code == 0, result.output
    header, *lines = result.stdout.splitlines()
    assert header.split()[0] == "id"
    return [int(line.split()[0]) for line in lines]


def _one_line_error(result: Result, text: str) -> None:
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert text in lines[0]
    assert "Traceback" not in result.output


def test_endpoints_list_shows_configured_and_added_ones_aligned(deployment: Deployment) -> None:
    record = operator.endpoint_added(
        endpoint_id="ep_0123456789abcdef",
        url="https://crm.example/hook",
        workspaces=["ws_b", "ws_a"],
        actor="ops",
        reason="crm",
        now=NOW,
    )
    log = open_log(deployment.settings)
    log.append_batch([record])
    log.close()
    added = "whsec_" + base64.b64encode(b"added-endpoint-key-0123456789abc").decode()
    deployment.outbox.add_secret("ep_0123456789abcdef", added, to_us(NOW))
    _seed(deployment.outbox)

    result = deployment.run("endpoints", "list")
    assert result.exit_code == 0, result.output
    assert "whsec_" not in result.output
    assert result.stderr.startswith("log: ")  # which log, as every reading command says
    header, app, crm = result.stdout.splitlines()
    assert app.split()[:4] == ["app", "config", "failing", "1"]
    assert crm.split()[:4] == ["ep_0123456789abcdef", "api", "ok", "0"]
    assert crm.split()[-2:] == ["ws_a,ws_b", "https://crm.example/hook"]
    assert app.split()[-2:] == ["all", "https://app.example/hook"]
    # Aligned: every column starts where its header does.
    for column in ("source", "status", "url"):
        start = header.index(column)
        assert app[start - 2 : start] == "  "
        assert crm[start - 2 : start] == "  "
        assert app[start] != " "
        assert crm[start] != " "


def test_deliveries_list_newest_first(deployment: Deployment) -> None:
    delivered, failed, pending = _seed(deployment.outbox)
    result = deployment.run("deliveries", "list")
    assert _ids(result) == [pending, failed, delivered]
    assert "never shown" not in result.output
    failed_line = result.stdout.splitlines()[2]
    assert failed_line.split()[1:7] == ["app", "ws_b", "4-0", "failed", "1", "410"]
    assert failed_line.endswith("gone for good")  # one line per delivery


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (["--failed"], [1]),
        (["--status", "delivered"], [0]),
        (["--workspace", "ws_c"], [2]),
        (["--endpoint", "other"], []),
        (["--limit", "1"], [2]),
        (["--limit", "5", "--before", "PENDING"], [1, 0]),
    ],
)
def test_deliveries_list_filters(
    deployment: Deployment, options: list[str], expected: list[int]
) -> None:
    ids = _seed(deployment.outbox)
    options = [str(ids[2]) if o == "PENDING" else o for o in options]
    assert _ids(deployment.run("deliveries", "list", *options)) == [ids[n] for n in expected]


def test_redeliver_by_id(deployment: Deployment) -> None:
    delivered, failed, pending = _seed(deployment.outbox)
    result = deployment.run("deliveries", "redeliver", str(failed), str(pending))
    assert result.exit_code == 0, result.output
    assert result.stdout == "redelivered 1\n"
    again = deployment.outbox.delivery(failed)
    assert again is not None
    assert again.status == PENDING
    span_us = deployment.settings.outbound.retry_span_s * 1_000_000
    assert again.next_at_us is not None
    assert again.give_up_us == again.next_at_us + span_us
    still = deployment.outbox.delivery(delivered)
    assert still is not None
    assert still.status == DELIVERED


def test_redeliver_since(deployment: Deployment) -> None:
    _seed(deployment.outbox)
    later = deployment.run("deliveries", "redeliver", "--since", "2027-03-01T12:00:01Z")
    assert later.stdout == "redelivered 0\n"
    since = deployment.run("deliveries", "redeliver", "--since", "2027-03-01T12:00:00")
    assert since.stdout == "redelivered 2\n"
    statuses = {d.status for d in deployment.outbox.deliveries()}
    assert statuses == {PENDING}


def test_redeliver_an_unknown_id_is_a_one_line_error(deployment: Deployment) -> None:
    _, failed, _ = _seed(deployment.outbox)
    result = deployment.run("deliveries", "redeliver", str(failed), "999")
    _one_line_error(result, "no delivery with id 999")
    found = deployment.outbox.delivery(failed)
    assert found is not None
    assert found.status == FAILED


@pytest.mark.parametrize("since", ["yesterday", "2027-13-01", ""])
def test_redeliver_a_bad_time_is_a_one_line_error(deployment: Deployment, since: str) -> None:
    _seed(deployment.outbox)
    result = deployment.run("deliveries", "redeliver", "--since", since)
    _one_line_error(result, "--since must be an ISO 8601 time")


@pytest.mark.parametrize("args", [[], ["1", "--since", "2027-01-01T00:00:00Z"]])
def test_redeliver_needs_ids_or_since(deployment: Deployment, args: list[str]) -> None:
    result = deployment.run("deliveries", "redeliver", *args)
    assert result.exit_code == click.UsageError.exit_code
    assert "IDs or --since" in result.output


def test_a_missing_outbox_is_a_one_line_error(tmp_path: Path) -> None:
    config = write_config(tmp_path, data_dir=tmp_path / "nowhere")
    result = CliRunner().invoke(cli, ["deliveries", "list", "--config", str(config)])
    _one_line_error(result, "no outbox at")
    assert not (tmp_path / "nowhere").exists()
