"""Acked means durable, even when the server is SIGKILLed mid-load (SPEC §1, §4).

A real `python -m billhook serve` process takes concurrent signed Stripe
deliveries; it is killed with SIGKILL at a random moment several times and
restarted on the same data directory. Every event that was answered 2xx must
be in `events.db` afterwards, at the seq its answer named, with the exact bytes
sent, and seqs must never be reused across restarts.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx

from billhook.log.sqlite import EventLog
from billhook.testing.servers import free_port
from billhook.testing.settings import write_config
from billhook.testing.stripe import STRIPE_SECRET, stripe_event_body, stripe_headers

# The project root: the subprocess imports `worker` from here.
ROOT = Path(__file__).resolve().parents[2]
# Concurrent senders, as a provider retrying a backlog would open.
SENDERS = 16
# How many times the server is SIGKILLed under load.
KILLS = 3
# Acks each server life must give before it is killed, so no round is vacuous.
MIN_ACKS_PER_LIFE = 20
# Upper bounds on every wait, so a broken server fails the test instead of hanging it.
START_TIMEOUT_S = 20.0
ACKS_TIMEOUT_S = 15.0
JOIN_TIMEOUT_S = 15.0
# PRAGMA synchronous value of FULL.
SYNCHRONOUS_FULL = 2
# Environment variables that would override the config written by the test.
_CONFIG_ENV = (
    "BILLHOOK_CONFIG",
    "BILLHOOK_REDIS_URL",
    "STRIPE_WEBHOOK_SECRETS",
    "POLAR_WEBHOOK_SECRETS",
)


@dataclass
class Ack:
    seq: int
    body: str
    # The server life current when the request was sent and when its answer came back;
    # when both agree, that life's server is the one that gave the ack.
    sent_in: int
    answered_in: int


@dataclass
class Ledger:
    """What the senders saw, shared between their threads."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    acked: dict[str, Ack] = field(default_factory=dict)
    connection_errors: int = 0
    other_answers: list[tuple[int, str]] = field(default_factory=list)
    # Which server life is current: set by the test thread after each kill, before
    # the next start, so no answer can come from a life other than the one it names.
    life: int = 0

    def ack_count(self) -> int:
        with self.lock:
            return len(self.acked)


def _start_server(config: Path, port: int, stderr: IO[bytes]) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k not in _CONFIG_ENV}
    command = [sys.executable, "-m", "billhook", "serve", "--config", str(config)]
    command += ["--port", str(port), "--log-level", "warning"]
    return subprocess.Popen(
        command, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr
    )


def _wait_healthy(process: subprocess.Popen[bytes], base_url: str, log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(
                f"server exited with {process.returncode}:\n{log_path.read_text()[-2000:]}"
            )
        try:
            if httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"server did not answer /healthz within {START_TIMEOUT_S} s")


def _wait_for_acks(ledger: Ledger, at_least: int) -> None:
    deadline = time.monotonic() + ACKS_TIMEOUT_S
    while ledger.ack_count() < at_least:
        if time.monotonic() > deadline:
            raise AssertionError(f"only {ledger.ack_count()} of {at_least} acks arrived in time")
        time.sleep(0.01)


def _kill(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)


def _sender(base_url: str, ledger: Ledger, stop: threading.Event, deadline: float) -> None:
    """Send unique signed events until told to stop; record only the 2xx ones."""
    with httpx.Client(base_url=base_url, timeout=5) as client:
        while not stop.is_set() and time.monotonic() < deadline:
            body = stripe_event_body()
            event_id = json.loads(body)["id"]
            with ledger.lock:
                sent_in = ledger.life
            try:
                response = client.post(
                    "/webhooks/stripe", content=body, headers=stripe_headers(body)
                )
            except httpx.TransportError:
                # The server is down or died mid-request: not acked, so not owed.
                with ledger.lock:
                    ledger.connection_errors += 1
                time.sleep(0.005)
                continue
            if response.is_success and response.json().get("status") == "accepted":
                with ledger.lock:
                    ack = Ack(response.json()["seq"], body.decode(), sent_in, ledger.life)
                    ledger.acked[event_id] = ack
            else:
                with ledger.lock:
                    ledger.other_answers.append((response.status_code, response.text))


def _seqs_by_life(ledger: Ledger) -> dict[int, list[int]]:
    """Acked seqs per server life, leaving out acks whose request straddled a kill."""
    by_life: dict[int, list[int]] = {}
    for ack in ledger.acked.values():
        if ack.sent_in == ack.answered_in:
            by_life.setdefault(ack.sent_in, []).append(ack.seq)
    return by_life


def _logged(events_db: Path) -> dict[str, tuple[int, str]]:
    conn = sqlite3.connect(events_db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        rows = conn.execute(
            "SELECT event_id, seq, payload FROM events WHERE provider = 'stripe' ORDER BY seq"
        ).fetchall()
    finally:
        conn.close()
    return {event_id: (seq, payload) for event_id, seq, payload in rows}


def test_acked_events_survive_sigkill_under_load(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    server_log = tmp_path / "server.log"
    rng = random.Random(os.getpid())
    ledger = Ledger()
    stop = threading.Event()
    hard_deadline = time.monotonic() + 120
    senders = [
        threading.Thread(target=_sender, args=(base_url, ledger, stop, hard_deadline), daemon=True)
        for _ in range(SENDERS)
    ]
    process: subprocess.Popen[bytes] | None = None
    with server_log.open("ab") as log_file:
        try:
            for life in range(KILLS + 1):
                with ledger.lock:
                    ledger.life = life
                process = _start_server(config, port, log_file)
                _wait_healthy(process, base_url, server_log)
                if life == 0:
                    for sender in senders:
                        sender.start()
                _wait_for_acks(ledger, ledger.ack_count() + MIN_ACKS_PER_LIFE)
                if life < KILLS:
                    # Kill at a random moment in the middle of the load.
                    time.sleep(rng.uniform(0.05, 0.4))
                    _kill(process)
        finally:
            stop.set()
            for sender in senders:
                if sender.is_alive():
                    sender.join(timeout=JOIN_TIMEOUT_S)
            if process is not None:
                # The last life ends with a SIGKILL too: every ack it gave must be on disk.
                _kill(process)

    assert not any(sender.is_alive() for sender in senders)
    # The senders were busy while the server was down: the kills did land mid-load.
    assert ledger.connection_errors > 0
    assert ledger.other_answers == []
    logged = _logged(tmp_path / "data" / "events.db")
    lost = sorted(set(ledger.acked) - set(logged))
    assert lost == [], f"{len(lost)} acked events are missing from the log"
    for event_id, ack in ledger.acked.items():
        assert logged[event_id] == (ack.seq, ack.body)
    # Seqs are never reused: a later server life only hands out higher seqs.
    acked_seqs = [ack.seq for ack in ledger.acked.values()]
    assert len(set(acked_seqs)) == len(acked_seqs)
    by_life = _seqs_by_life(ledger)
    assert sorted(by_life) == list(range(KILLS + 1))
    for earlier, later in zip(range(KILLS), range(1, KILLS + 1), strict=True):
        assert max(by_life[earlier]) < min(by_life[later])
    logged_seqs = [seq for seq, _ in logged.values()]
    assert logged_seqs == sorted(set(logged_seqs))
    assert STRIPE_SECRET not in server_log.read_text()


def test_the_log_syncs_every_commit_to_disk(tmp_path: Path) -> None:
    """What a SIGKILL cannot show: an ack also survives power loss.

    A killed process leaves its writes in the OS page cache, so the test above
    passes even without fsync; surviving a power cut needs WAL with
    `synchronous=FULL` on the connection that commits.
    """
    log = EventLog(tmp_path / "events.db")
    try:
        assert log.conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert log.conn.execute("PRAGMA synchronous").fetchone() == (SYNCHRONOUS_FULL,)
    finally:
        log.close()
