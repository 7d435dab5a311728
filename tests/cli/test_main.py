"""The CLI: events list/show, --config everywhere, one-line errors (SPEC §9)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from billhook.cli.main import main
from billhook.domain.records import EventRecord
from billhook.log.sqlite import EventLog


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "billhook.toml"
    path.write_text(f'[billhook]\ndata_dir = "{tmp_path / "data"}"\n')
    log = EventLog(tmp_path / "data" / "events.db")
    log.append_batch(
        [
            EventRecord(
                "stripe", "evt_1", "customer.subscription.created", 0, None, '{"id": "evt_1"}'
            ),
            EventRecord(
                "polar", "msg_1", "subscription.active", None, "2026-11-21T00:00:00.000Z", "{}"
            ),
            EventRecord("stripe", "evt_2", "customer.subscription.updated", 1, None, "{}"),
        ]
    )
    log.close()
    return path


def _run(*args: str) -> tuple[int, str]:
    """(exit status, stdout) of a command that succeeds, (exit status, stderr) of one that
    fails; the `log:` line each command that uses the log prints on stderr aside."""
    result = CliRunner().invoke(main, list(args))
    if result.exit_code == 0:
        return 0, result.stdout
    stderr = [line for line in result.stderr.splitlines() if not line.startswith("log: ")]
    return result.exit_code, "\n".join(stderr)


def test_events_list_filters(config: Path) -> None:
    code, out = _run("events", "list", "--config", str(config))
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split("\t") == [
        "seq",
        "provider",
        "event_id",
        "type",
        "livemode",
        "occurred_at",
        "received_at",
    ]
    assert [line.split("\t")[0] for line in lines[1:]] == ["1", "2", "3"]
    _, out = _run("events", "list", "--config", str(config), "--provider", "stripe", "--after", "1")
    assert [line.split("\t")[2] for line in out.splitlines()[1:]] == ["evt_2"]
    _, out = _run("events", "list", "--config", str(config), "--type", "subscription.active")
    assert [line.split("\t")[2] for line in out.splitlines()[1:]] == ["msg_1"]
    _, out = _run("events", "list", "--config", str(config), "--limit", "1")
    assert len(out.splitlines()) == 2


def test_events_show_by_seq_and_by_id(config: Path) -> None:
    code, out = _run("events", "show", "1", "--config", str(config))
    assert code == 0
    assert "event_id: evt_1" in out
    assert '"id": "evt_1"' in out
    code, out = _run("events", "show", "msg_1", "--config", str(config))
    assert code == 0
    assert "seq: 2" in out
    assert "provider: polar" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["events", "show", "99"], "Error: no event with seq 99"),
        (["events", "show", "evt_nope"], "Error: no event with id 'evt_nope'"),
        (["events", "list", "--limit", "0"], "Invalid value for '--limit'"),
    ],
)
def test_events_errors_are_one_line(config: Path, args: list[str], message: str) -> None:
    code, out = _run(*args, "--config", str(config))
    assert code != 0
    assert message in out


def test_missing_log_is_an_error_not_a_new_file(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[billhook]\ndata_dir = "{tmp_path / "none"}"\n')
    code, out = _run("events", "list", "--config", str(cfg))
    assert code == 1
    assert out.strip() == (
        f"Error: no event log at {tmp_path / 'none' / 'events.db'}:"
        " check --config and data_dir (billhook serve creates it)"
    )
    assert not (tmp_path / "none").exists()


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        (
            '[billhook]\nmode = "prod"\n',
            "billhook.mode: expected one of 'test', 'live', got 'prod'",
        ),
        ("[billhook\n", "not valid TOML"),
        ("[stripe.prices]\np = { tier = 'gold', interval = 'month' }\n", "stripe.prices.p.tier"),
    ],
)
def test_serve_with_an_invalid_config_exits_with_one_line(
    tmp_path: Path, toml: str, message: str
) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text(toml)
    proc = subprocess.run(
        [sys.executable, "-m", "billhook", "serve", "--config", str(cfg), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("Error: invalid config: ")
    assert message in lines[0]


def test_serve_with_an_unusable_data_dir_exits_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "blocker").write_text("a file where the data dir should be")
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[billhook]\ndata_dir = "{tmp_path / "blocker" / "data"}"\n')
    proc = subprocess.run(
        [sys.executable, "-m", "billhook", "serve", "--config", str(cfg), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert [line for line in lines if line.startswith("Error:")] == [lines[-1]], proc.stderr
    assert lines[-1].startswith("Error: cannot open the event log")


def test_config_from_the_environment_and_the_working_directory(
    config: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("BILLHOOK_CONFIG", str(config))
    code, out = _run("events", "show", "3")
    assert code == 0
    assert "event_id: evt_2" in out
    monkeypatch.delenv("BILLHOOK_CONFIG")
    monkeypatch.chdir(tmp_path)  # ./billhook.toml is the fixture's file
    code, out = _run("events", "show", "3")
    assert code == 0
    assert "event_id: evt_2" in out


def _json(args: list[str]) -> dict[str, object]:
    code, out = _run(*args)
    assert code == 0, out
    data: dict[str, object] = json.loads(out)
    return data


def test_entitlements_and_overrides_from_the_cli(config: Path) -> None:
    cfg = ["--config", str(config)]
    first = _json(["entitlements", "ws_1", *cfg])
    assert (first["tier"], first["source"], first["as_of_seq"]) == ("solo", "default", 3)
    code, out = _run(
        "override", "set", "ws_1", "--kind", "enterprise_contract", "--tier", "enterprise",
        "--reason", "signed MSA", "--actor", "ops", *cfg,
    )  # fmt: skip
    assert (code, out.strip()) == (0, "seq 4")
    now = _json(["entitlements", "ws_1", *cfg])
    assert (now["tier"], now["source"], now["as_of_seq"]) == (
        "enterprise",
        "enterprise_contract",
        4,
    )
    before = _json(["entitlements", "ws_1", "--as-of", "3", *cfg])
    assert (before["tier"], before["as_of_seq"]) == ("solo", 3)
    revoke = [
        "override",
        "revoke",
        "ws_1",
        "--kind",
        "enterprise_contract",
        "--reason",
        "x",
        "--actor",
        "ops",
    ]
    code, out = _run(*revoke, *cfg)
    assert (code, out.strip()) == (0, "seq 5")
    assert _json(["entitlements", "ws_1", *cfg])["source"] == "default"
    code, out = _run(*revoke, *cfg)
    assert code == 1
    assert out.strip() == "Error: no active enterprise_contract override for workspace ws_1"


PILOT = ["override", "set", "ws_1", "--kind", "manual_pilot", "--reason", "r", "--actor", "a"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([*PILOT, "--tier", "gold"], "Error: field tier must be one of solo, team, enterprise"),
        (
            [*PILOT, "--tier", "team", "--expires-at", "soon"],
            "Error: field expires_at must be an ISO 8601 time",
        ),
        (
            [*PILOT, "--tier", "team", "--expires-at", "2026-01-01T00:00:00Z"],
            "Error: field expires_at must be in the future",
        ),
        (
            ["entitlements", "ws_1", "--as-of", "last week"],
            "Error: as_of must be a seq or an ISO 8601 time",
        ),
        (["entitlements", "ws_1", "--as-of", "42"], "Error: as_of: no event with seq 42"),
    ],
)
def test_operator_errors_are_one_line(config: Path, args: list[str], message: str) -> None:
    code, out = _run(*args, "--config", str(config))
    assert code == 1
    assert out.strip() == message


def test_a_reader_that_goes_away_ends_the_command_quietly(tmp_path: Path) -> None:
    """`billhook events list | head -2`: status 0 or 141, nothing on stderr."""
    config = tmp_path / "billhook.toml"
    config.write_text(f'[billhook]\ndata_dir = "{tmp_path / "data"}"\n')
    log = EventLog(tmp_path / "data" / "events.db")
    log.append_batch(
        [EventRecord("stripe", f"evt_{n}", "invoice.paid", 0, None, "{}") for n in range(20_000)]
    )
    log.close()
    shell = subprocess.run(
        f"{sys.executable} -m billhook events list --config {config} | head -2; "
        'exit "${PIPESTATUS[0]}"',
        shell=True,
        executable="/bin/bash",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert shell.returncode in (0, 141), shell.stderr
    assert shell.stderr == f"log: {tmp_path / 'data' / 'events.db'}\n"
    assert shell.stdout.splitlines()[0].startswith("seq\tprovider")
    assert len(shell.stdout.splitlines()) == 2


# -- the log every command uses (issue 12) ---------------------------------------------------


def test_a_relative_data_dir_is_the_config_files_whatever_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    deployment = tmp_path / "deployment"
    (deployment / "data").mkdir(parents=True)
    config = deployment / "billhook.toml"
    config.write_text('[billhook]\ndata_dir = "./data"\n')
    log = EventLog(deployment / "data" / "events.db")
    log.append_batch([EventRecord("stripe", "evt_1", "invoice.paid", 0, None, "{}")])
    log.close()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    result = CliRunner().invoke(main, ["events", "list", "--config", "../deployment/billhook.toml"])

    assert result.exit_code == 0, result.output
    assert result.stderr == f"log: {deployment / 'data' / 'events.db'}\n"
    assert [line.split("\t")[2] for line in result.stdout.splitlines()[1:]] == ["evt_1"]
    assert not (elsewhere / "data").exists()
    override = ["override", "set", "ws_1", "--kind", "manual_pilot", "--tier", "team"]
    code, out = _run(*override, "--reason", "r", "--actor", "a", "--config", str(config))
    assert (code, out) == (0, "seq 2\n")
    assert not (elsewhere / "data").exists()


def _pilots_csv(tmp_path: Path) -> str:
    path = tmp_path / "pilots.csv"
    path.write_text("workspace_id,classification,tier\nws_1,manual_pilot,team\n")
    return str(path)


# Each command that writes to the log, as it would be run against a deployment.
WRITE_COMMANDS = {
    "override set": lambda _: [
        *("override", "set", "ws_1", "--kind", "manual_pilot", "--tier", "team"),
        *("--reason", "r", "--actor", "a"),
    ],
    "override revoke": lambda _: [
        *("override", "revoke", "ws_1", "--kind", "manual_pilot", "--reason", "r", "--actor", "a"),
    ],
    "pilots classify": lambda tmp: ["pilots", "classify", _pilots_csv(tmp), "--actor", "a"],
    "replay": lambda _: ["replay"],
    "reconcile": lambda _: ["reconcile", "--all"],
    "backfill stripe": lambda _: ["backfill", "stripe"],
    "backfill polar": lambda _: ["backfill", "polar"],
}


@pytest.mark.parametrize("command", list(WRITE_COMMANDS))
def test_a_write_command_refuses_to_create_a_log(tmp_path: Path, command: str) -> None:
    """A mistyped --config or data_dir must not start a new, empty log (nor its directory):
    one line naming the path, and nothing created."""
    config = tmp_path / "billhook.toml"
    # Credentials, so that the backfills get as far as the log; nothing answers at 127.0.0.1:9.
    config.write_text(
        '[billhook]\ndata_dir = "missing/data"\n'
        '[stripe]\napi_key = "sk_test_x"\napi_base = "http://127.0.0.1:9"\n'
        '[polar]\naccess_token = "polar_x"\nserver_url = "http://127.0.0.1:9"\n'
    )
    args = [*WRITE_COMMANDS[command](tmp_path), "--config", str(config)]
    before = sorted(tmp_path.rglob("*"))

    result = CliRunner().invoke(main, args)

    assert result.exit_code == 1, result.output
    events = tmp_path / "missing" / "data" / "events.db"
    assert result.stderr == (
        f"Error: no event log at {events}: check --config and data_dir"
        " (billhook serve creates it)\n"
    )
    assert result.stdout == ""
    assert sorted(tmp_path.rglob("*")) == before


def test_serve_with_a_redis_url_it_cannot_use_exits_with_one_clear_line(tmp_path: Path) -> None:
    """Issue 12: a port that is not a number was `Error: unexpected ValueError`."""
    config = tmp_path / "c.toml"
    config.write_text(
        '[billhook]\ndata_dir = "data"\n[redis]\nurl = "redis://localhost:notaport"\n'
    )
    proc = subprocess.run(
        [sys.executable, "-m", "billhook", "serve", "--config", str(config), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    assert errors == ["Error: redis.url: Port could not be cast to integer value as 'notaport'"], (
        proc.stderr
    )
    assert "unexpected" not in proc.stderr
    assert not (tmp_path / "data").exists()
    # Its stderr is JSON lines: the log it would use is one of them.
    announced = [json.loads(line) for line in proc.stderr.splitlines() if '"event log"' in line]
    assert [line["path"] for line in announced] == [str(tmp_path / "data" / "events.db")]
