"""With Redis, a refresh runs as the `refresh_workspace` actor in a worker."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.fakes.stripe_api import StripeState, stripe_fake
from tests.stripe_payloads import stripe_checkout_session, stripe_customer, stripe_subscription
from tests.support import serve_in_thread, stripe_event_body
from tests.worker.conftest import Processes, deliver, write_config

FAKE_KEY = "sk_test_fake"


@pytest.fixture
def stripe_url() -> Iterator[str]:
    state = StripeState()
    state.add(stripe_customer(id="cus_1", metadata={}))
    state.add(stripe_subscription(id="sub_1", customer="cus_1", items=(("price_team_monthly", 4),)))
    with serve_in_thread(stripe_fake(state)) as url:
        yield url


def _with_stripe_api(config: Path, url: str, name: str) -> Path:
    """A copy of `config` that also has the Stripe API credentials."""
    text = config.read_text().replace(
        "[stripe]\n", f"[stripe]\napi_key = {json.dumps(FAKE_KEY)}\napi_base = {json.dumps(url)}\n"
    )
    path = config.with_name(name)
    path.write_text(text)
    return path


def test_the_worker_refreshes_and_the_web_process_answers(
    tmp_path: Path, processes: Processes, redis_db: redis.Redis, redis_url: str, stripe_url: str
) -> None:
    config = write_config(tmp_path, redis_url=redis_url)
    # Only the worker can reach Stripe: a refresh that works ran there.
    worker_config = _with_stripe_api(config, stripe_url, "worker.toml")
    server = processes.serve(config)
    processes.worker(worker_config)
    with server.client() as client:
        link = stripe_checkout_session(
            customer="cus_1", subscription="sub_1", client_reference_id="ws_1"
        )
        deliver(client, stripe_event_body("checkout.session.completed", obj=link))
        refreshed = client.post("/v1/workspaces/ws_1/refresh")
        assert refreshed.status_code == 200, refreshed.text
        body = refreshed.json()
        assert (body["tier"], body["source"], body["seats"]) == ("team", "stripe", {"purchased": 4})
        again = client.post("/v1/workspaces/ws_1/refresh").json()
        assert again["as_of_seq"] == body["as_of_seq"]  # nothing differed, nothing appended
        unknown = client.post("/v1/workspaces/ws_unknown/refresh")
        assert unknown.status_code == 409
        assert unknown.json()["error"] == "not_linked"
    assert FAKE_KEY not in server.log.read_text()
