"""Endpoints added, rotated and removed at run time, end to end; and what a delivery may carry
(ids, statuses and counts: never a provider's payload, an e-mail, a name or a secret)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from billhook.api.app import create_app
from billhook.config import Settings
from billhook.testing.receiver import WebhookSink
from billhook.testing.servers import serve_in_thread, wait_until
from billhook.testing.settings import ADMIN_TOKEN, make_settings, write_config
from billhook.testing.stripe import stripe_event_body, stripe_subscription
from tests.deployment import Processes, deliver
from tests.outbound.test_delivery import READ, SECRET, WAIT_S, feed, outbound

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
WHO = {"actor": "ops@example", "reason": "app sync"}


def subscribe(client: httpx.Client, workspace: str, seats: int = 5, **extra: Any) -> int:
    sub = stripe_subscription(
        id=f"sub_{workspace}",
        customer=f"cus_{workspace}",
        items=(("price_team_monthly", seats),),
        metadata={"workspace_id": workspace},
    )
    sub.update(extra)
    body = stripe_event_body("customer.subscription.updated", obj=sub, created=int(time.time()))
    return deliver(client, body)


def witnessed(tmp_path: Path, witness_url: str) -> Settings:
    sections = outbound(f"{witness_url}/hooks", [SECRET])
    sections["outbound"]["endpoints"][0]["id"] = "witness"
    return make_settings(tmp_path / "data", sections=sections)


def test_an_endpoint_added_rotated_and_removed_through_the_api(tmp_path: Path) -> None:
    sink = WebhookSink([SECRET])
    witness = WebhookSink([SECRET])  # a configured endpoint that gets every change
    with (
        serve_in_thread(sink.app) as sink_url,
        serve_in_thread(witness.app) as witness_url,
        serve_in_thread(create_app(witnessed(tmp_path, witness_url))) as url,
        httpx.Client(base_url=url, headers=READ, timeout=10) as client,
    ):
        subscribe(client, "wa_before")  # before the endpoint: never sent to it
        added = client.post(
            "/v1/admin/endpoints", headers=ADMIN, json={"url": f"{sink_url}/hooks", **WHO}
        )
        assert added.status_code == 201, added.text
        endpoint, first = added.json()["id"], added.json()["secret"]
        sink.trust([first])
        subscribe(client, "wa_1")
        sink.wait_for(lambda got: len(got) == 1, WAIT_S)
        assert [r.workspace for r in sink.delivered()] == ["wa_1"]

        rotated = client.post(
            f"/v1/admin/endpoints/{endpoint}/secrets",
            headers=ADMIN,
            json={"expire_previous_after_s": 3600},
        )
        assert rotated.status_code == 201, rotated.text
        second = rotated.json()["secret"]
        sink.trust([first, second])  # during the rotation, each secret verifies alone
        subscribe(client, "wa_1", seats=7)
        sink.wait_for(lambda got: len(got) == 2, WAIT_S)
        assert sink.rejected == 0
        assert sink.delivered()[-1].body["data"]["seats"] == {"purchased": 7}

        removed = client.request(
            "DELETE", f"/v1/admin/endpoints/{endpoint}", headers=ADMIN, json=WHO
        )
        assert removed.status_code == 200, removed.text
        subscribe(client, "wa_2")
        # Once the witness has wa_2's change, the removed endpoint would have had it too.
        witness.wait_for(lambda got: "wa_2" in {r.workspace for r in got}, WAIT_S)
        assert [r.workspace for r in sink.attempts()] == ["wa_1", "wa_1"]
        listed = client.get("/v1/admin/endpoints", headers=ADMIN).json()
        assert endpoint not in [e["id"] for e in listed]


def test_deliveries_and_log_lines_carry_no_payload_email_name_or_secret(
    tmp_path: Path, processes: Processes
) -> None:
    sink = WebhookSink([SECRET])
    private = ["alice@example.com", "Alice Liddell", "Rabbit Hole", "tok_urlsecret"]
    with serve_in_thread(sink.app) as sink_url:
        # A URL may carry a token of the receiver's: it is never logged either.
        sections = outbound(f"{sink_url}/hooks?token=tok_urlsecret", [SECRET])
        config = write_config(tmp_path, sections=sections)
        server = processes.serve(config, log_level="info")
        with server.client() as client:
            subscribe(
                client,
                "wp_1",
                customer_email="alice@example.com",
                shipping={"name": "Alice Liddell", "address": {"line1": "4242 Rabbit Hole"}},
            )
            changes = feed(client)
        sink.wait_for(lambda got: len(got) >= len(changes), WAIT_S)
        wait_until(lambda: "delivered" in server.log.read_text(), WAIT_S, "the delivery's log line")
    texts = {
        "deliveries": b"".join(sink.raw).decode(),
        "server log": server.log.read_text(),
        "outbox": (tmp_path / "data" / "outbound.db").read_bytes().decode("latin-1"),
    }
    for where, text in texts.items():
        for value in [*private, SECRET, SECRET.removeprefix("whsec_")]:
            assert value not in text, f"{value!r} is in the {where}"
    delivered = sink.delivered()[0].body
    assert set(delivered) == {"type", "timestamp", "data"}
    assert set(delivered["data"]) == {
        "cursor",
        "kind",
        "workspace_id",
        "seq",
        "at",
        "cause",
        "tier",
        "source",
        "status",
        "attention",
        "next_action",
        "features",
        "seats",
    }
