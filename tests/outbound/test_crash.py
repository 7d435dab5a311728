"""Deliveries in flight survive a SIGKILL (SPEC §6b): real `billhook serve` and `billhook worker`
processes, killed mid-delivery and started again; nothing acknowledged by the feed is lost, and
a change sent twice carries the same `webhook-id`."""

from __future__ import annotations

import threading
from pathlib import Path

from billhook.testing.receiver import Answer, Received, WebhookSink
from billhook.testing.servers import serve_in_thread, wait_until
from billhook.testing.settings import write_config
from tests.deployment import Processes, deliver, plan
from tests.outbound.test_delivery import (
    SECRET,
    WAIT_S,
    assert_in_order,
    feed,
    outbound,
    wait_for_all,
)


def test_sigkill_with_deliveries_in_flight_and_pending_loses_none(
    tmp_path: Path, processes: Processes
) -> None:
    holding = threading.Event()
    holding.set()

    def answer(received: Received) -> Answer:
        # Slow while held (attempts in flight when the kill lands), and 503 for one workspace
        # (retries pending in the outbox).
        if holding.is_set():
            return Answer(503 if received.workspace.endswith("_0") else 200, delay_s=0.2)
        return Answer(200)

    sink = WebhookSink([SECRET], answer)
    with serve_in_thread(sink.app) as sink_url:
        sections = outbound(f"{sink_url}/hooks", [SECRET], timeout_s=5.0, max_in_flight=4)
        config = write_config(tmp_path, sections=sections)
        server = processes.serve(config, name="first")
        with server.client() as client:
            head = max(deliver(client, body) for body in plan("ok", 12).bodies)
        wait_until(lambda: len(sink.attempts()) >= 4, WAIT_S, "deliveries under way")
        server.process.kill()
        server.process.wait(timeout=10)
        delivered_before = {r.webhook_id for r in sink.delivered()}
        holding.clear()
        again = processes.serve(config, name="again")
        with again.client() as client:
            wait_until(
                lambda: client.get("/v1/workspaces/ok_0/entitlements").json()["as_of_seq"] >= head,
                WAIT_S,
                "the restarted projector to catch up",
            )
            changes = feed(client)
        assert len(changes) >= 12
        wait_for_all(sink, changes)
        assert_in_order(sink, changes)
        # A change sent twice (the kill came between its attempt and its record) came with
        # its own id both times, so the receiver could drop the second: every id names a change.
        ids = {r.webhook_id for r in sink.delivered()}
        assert ids == {f"app_{c['cursor'].replace('-', '_')}" for c in changes}
        assert delivered_before < ids


def test_a_worker_delivers_with_redis(tmp_path: Path, processes: Processes, redis_url: str) -> None:
    sink = WebhookSink([SECRET])
    with serve_in_thread(sink.app) as sink_url:
        sections = outbound(f"{sink_url}/hooks", [SECRET])
        config = write_config(tmp_path, sections=sections, redis_url=redis_url)
        server = processes.serve(config)
        processes.worker(config)
        processes.worker(config, name="worker2")
        with server.client() as client:
            head = max(deliver(client, body) for body in plan("ow", 6).bodies)
            wait_until(
                lambda: client.get("/v1/workspaces/ow_0/entitlements").json()["as_of_seq"] >= head,
                WAIT_S,
                "the workers to project every lifecycle",
            )
            changes = feed(client)
        wait_for_all(sink, changes)
        assert_in_order(sink, changes)
        # Two workers dispatch from one outbox: each change was sent once.
        assert len(sink.delivered()) == len(changes)
