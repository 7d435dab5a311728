"""JSON lines written off the event loop: none lost, none reordered, none changed.

Records logged inside an event loop are queued and written by one thread in
batches; these tests show every one of them reaches stderr when the process
exits normally, when it dies of SIGTERM (a real `billhook serve` included),
and when logging is configured again; that a command's own stderr output
stays in order with its lines; and that the faster timestamp is the same text.
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import textwrap
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from billhook.observability import logs
from billhook.testing.servers import stop_process
from billhook.testing.settings import write_config
from tests.deployment import Processes

# Lines a script logs inside its event loop: more than one batch's worth.
LINES = 2_500
# Requests sent to a served process before it is stopped.
REQUESTS = 40
# One formatter for every example: its once-a-second cache is crossed back and forth.
FORMATTER = logs.JsonFormatter()


def _json_lines(text: str) -> list[dict[str, Any]]:
    """Every line of `text` as JSON (a line that is not fails the test)."""
    return [json.loads(line) for line in text.splitlines()]


# A process that logs one line on its main thread, prints a line of its own to stderr,
# logs LINES lines inside an event loop, then exits as argv[1] says.
SCRIPT = textwrap.dedent(
    f"""
    import asyncio, logging, os, signal, sys, time

    from billhook.observability import logs

    logs.configure("info")
    log = logging.getLogger("billhook.script")
    log.info("starting", extra={{"fields": {{"n": -1}}}})
    print("a line of the command's own", file=sys.stderr, flush=True)

    async def main() -> None:
        for n in range({LINES}):
            log.info("line", extra={{"fields": {{"n": n}}}})

    asyncio.run(main())
    if sys.argv[1] == "sigterm":
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)
    """
)


@pytest.mark.parametrize(("ending", "returncode"), [("exit", 0), ("sigterm", -signal.SIGTERM)])
def test_every_line_is_written_when_the_process_ends(ending: str, returncode: int) -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, ending],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == returncode, done.stderr[-500:]
    first, own, *rest = done.stderr.splitlines()
    # The main thread's line, outside a loop, is written before the command's own output.
    assert json.loads(first)["msg"] == "starting"
    assert own == "a line of the command's own"
    lines = _json_lines("\n".join(rest))
    assert [line["n"] for line in lines] == list(range(LINES))
    assert {(line["level"], line["logger"], line["msg"]) for line in lines} == {
        ("info", "billhook.script", "line")
    }


def test_a_sigterm_d_server_writes_every_request_line_and_its_last_words(
    tmp_path: Path, processes: Processes
) -> None:
    server = processes.serve(write_config(tmp_path), log_level="info")
    with httpx.Client(base_url=server.base_url, timeout=10) as client:
        for n in range(REQUESTS):
            assert client.get(f"/no/such/path/{n}").status_code == 404
    # uvicorn shuts down gracefully, then re-raises the SIGTERM it caught.
    assert stop_process(server.process) in (0, -signal.SIGTERM)
    lines = _json_lines(server.log.read_text())
    unmatched = [line for line in lines if line.get("route") == "unmatched"]
    assert len(unmatched) == REQUESTS
    assert {(line["msg"], line["method"], line["status"]) for line in unmatched} == {
        ("request", "GET", 404)
    }
    # Logged on the loop after the app shut down, just before the process dies.
    assert lines[-1]["msg"].startswith("Finished server process")


def test_configuring_again_writes_what_the_previous_configuration_queued(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, restore_logging: None
) -> None:
    # A batching window longer than the test: what the first writer writes, `configure` made it.
    monkeypatch.setattr(logs, "WRITE_INTERVAL_S", 60.0)
    first, second = tmp_path / "first.log", tmp_path / "second.log"
    log = logging.getLogger("billhook.test")

    def queue_lines() -> None:
        for n in range(LINES):
            log.info("queued", extra={"fields": {"n": n}})

    with first.open("w") as out:
        monkeypatch.setattr(sys, "stderr", out)
        logs.configure("info")
        # Off the main thread: queued for the writer thread, not written at once.
        thread = threading.Thread(target=queue_lines)
        thread.start()
        thread.join()
        with second.open("w") as later:
            monkeypatch.setattr(sys, "stderr", later)
            logs.configure("info")
            lines = _json_lines(first.read_text())
            assert [line["n"] for line in lines] == list(range(LINES))
            log.info("after", extra={"fields": {"n": LINES}})
            logs.close()
        assert [line["msg"] for line in _json_lines(second.read_text())] == ["after"]


def test_an_exception_line_names_its_type_and_other_handlers_keep_the_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, restore_logging: None
) -> None:
    kept: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            kept.append(record)

    path = tmp_path / "stderr.log"
    log = logging.getLogger("billhook.test")

    def fail() -> None:
        try:
            raise ValueError("a message that quotes a payload: ada@example.com")
        except ValueError:
            log.exception("failed", extra={"fields": {"seq": 3}})

    with path.open("w") as out:
        monkeypatch.setattr(sys, "stderr", out)
        logs.configure("info")
        logging.getLogger("billhook").addHandler(Keep())
        thread = threading.Thread(target=fail)
        thread.start()
        thread.join()
        logs.close()
    text = path.read_text()
    assert "ada@example.com" not in text
    [line] = _json_lines(text)
    assert {k: line[k] for k in ("level", "msg", "seq", "exc_type")} == {
        "level": "error",
        "msg": "failed",
        "seq": 3,
        "exc_type": "ValueError",
    }
    [record] = kept
    assert record.exc_info is not None
    assert record.exc_info[2] is not None


@given(st.floats(min_value=0, max_value=2**33, allow_nan=False, allow_infinity=False))
def test_the_timestamp_is_fromtimestamps_text(created: float) -> None:
    expected = datetime.fromtimestamp(created, tz=UTC).isoformat(timespec="milliseconds")
    assert FORMATTER.timestamp(created) == expected
