"""Where entitlement webhooks go: the configured endpoints and those added through the API.

An endpoint is an id, a URL, the Standard Webhooks secrets that sign what is
sent to it (several during a rotation) and an optional set of workspaces.
Configured endpoints come from `[[outbound.endpoints]]`, their secrets from the
environment. Endpoints added at run time are operator events in the log
(`billhook.endpoint_added`, projected into the `endpoints` table, so a replay
keeps them); their secrets are made by billhook, shown once, and kept in the
outbox store, never in the log. The id, never the URL, names an endpoint in
deliveries, log lines and metrics: a URL may carry a token.
"""

from __future__ import annotations

import base64
import secrets as random
from dataclasses import dataclass
from typing import TYPE_CHECKING

from billhook.config import Secret, Settings

if TYPE_CHECKING:
    from billhook.outbound.store import OutboxStore
    from billhook.projections.store import ProjectionStore

# Where an endpoint was defined.
CONFIG = "config"
API = "api"


@dataclass(frozen=True)
class Endpoint:
    id: str
    url: str
    secrets: tuple[Secret, ...]
    # Only changes about these workspaces; empty: every workspace.
    workspaces: frozenset[str]
    source: str
    # The log position it was added at (API endpoints; 0 for configured ones): it
    # receives the changes after it.
    since_seq: int = 0

    def matches(self, workspace: str) -> bool:
        return not self.workspaces or workspace in self.workspaces


def configured(settings: Settings) -> list[Endpoint]:
    """The endpoints of `[[outbound.endpoints]]`, their secrets resolved at load."""
    return [
        Endpoint(
            id=endpoint.endpoint_id,
            url=endpoint.url,
            secrets=endpoint.secrets,
            workspaces=frozenset(endpoint.workspaces),
            source=CONFIG,
        )
        for endpoint in settings.outbound.endpoints
    ]


def current(
    settings: Settings, store: ProjectionStore, outbox: OutboxStore, now_us: int
) -> list[Endpoint]:
    """Every endpoint deliveries go to now: the configured ones, then those the API added
    (an id configured too is the configured one). An API endpoint whose secrets were lost
    with the outbox store has none, and is sent nothing until one is rotated in."""
    found = configured(settings)
    ids = {endpoint.id for endpoint in found}
    for fact in store.endpoints():
        if fact.endpoint_id in ids:
            continue
        keys = tuple(Secret(s) for s in outbox.secrets(fact.endpoint_id, now_us))
        found.append(
            Endpoint(
                id=fact.endpoint_id,
                url=fact.url,
                secrets=keys,
                workspaces=frozenset(fact.workspaces),
                source=API,
                since_seq=fact.seq,
            )
        )
    return found


def new_endpoint_id() -> str:
    """An id for an endpoint the API adds: `ep_` and 16 hex digits."""
    return "ep_" + random.token_hex(8)


def new_secret() -> str:
    """A Standard Webhooks secret: `whsec_` and the base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(random.token_bytes(32)).decode()
