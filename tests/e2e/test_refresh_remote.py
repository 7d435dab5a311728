"""With Redis, a refresh runs as the `refresh_workspace` actor in a worker."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from billhook.testing.fakes.stripe_api import StripeState, stripe_fake
from billhook.testing.servers import serve_in_thread
from billhook.testing.settings import STRIPE_API_KEY, write_config
from billhook.testing.stripe import (
    stripe_checkout_session,
    stripe_customer,
    stripe_event_body,
    stripe_subscription,
)
from tests.deployment import Processes, deliver


@pytest.fixture
def stripe_url() -> Iterator[str]:
    state = StripeState()
    state.add(stripe_customer(id="cus_1", metadata={}))
    state.add(stripe_subscription(id="sub_1", customer="cus_1", items=(("price_team_monthly", 4),)))
    with serve_in_thread(stripe_fake(state)) as url:
        yield url


def test_the_worker_refreshes_and_the_web_process_answers(
    tmp_path: Path, processes: Processes, redis_db: redis.Redis, redis_url: str, stripe_url: str
) -> None:
    config = write_config(tmp_path, redis_url=redis_url)
    # Only the worker can reach Stripe: a refresh that works ran there.
    stripe_api = {"api_key": STRIPE_API_KEY, "api_base": stripe_url}
    worker_config = write_config(
        tmp_path, name="worker.toml", redis_url=redis_url, stripe=stripe_api
    )
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
    assert STRIPE_API_KEY not in server.log.read_text()
