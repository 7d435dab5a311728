"""Requests billhook understands and what its answers mean, for both clients.

An answer is one of three things: billhook's answer (decoded here), an error
billhook gave (raised as the client's own exception), or no answer at all —
`Outage`, which the outage policy turns into a fallback answer.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import httpx

from billhook_client.errors import (
    BillhookClientError,
    Forbidden,
    InvalidRequest,
    Unauthorized,
    UnexpectedAnswer,
    UnknownAction,
)
from billhook_client.models import ChangePage, Check, Entitlement, check_from, entitlement_from
from billhook_client.models import page_from as _page_from

# The feed's largest page, which the follower asks for (SPEC §6a: limit 1..1000).
MAX_LIMIT = 1000
# The feed's longest long poll, in seconds.
MAX_WAIT_S = 30


class Outage(Exception):
    """billhook did not answer: `reason` is `unreachable`, `timeout` or `server_error:<n>`."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def outage_of(e: httpx.TransportError) -> Outage:
    return Outage("timeout" if isinstance(e, httpx.TimeoutException) else "unreachable")


def entitlements_path(workspace: str) -> str:
    return f"/v1/workspaces/{quote(workspace, safe='')}/entitlements"


def check_path(workspace: str) -> str:
    return f"/v1/workspaces/{quote(workspace, safe='')}/check"


def check_body(action: str, seats_in_use: int | None) -> dict[str, Any]:
    if seats_in_use is None:
        return {"action": action}
    return {"action": action, "seats_in_use": seats_in_use}


def changes_params(after: str | None, limit: int, wait: int) -> dict[str, str]:
    """The query of `GET /v1/changes`; `after` None: from the beginning, "now": the head."""
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be within 1..{MAX_LIMIT}")
    if not 0 <= wait <= MAX_WAIT_S:
        raise ValueError(f"wait must be within 0..{MAX_WAIT_S} seconds")
    params = {"limit": str(limit), "wait": str(wait)}
    if after is not None:
        params["after"] = after
    return params


def headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Accept": "application/json"}


def _error(response: httpx.Response) -> BillhookClientError:
    status = response.status_code
    try:
        body = json.loads(response.content)
        error, detail = str(body["error"]), str(body["detail"])
    except (ValueError, KeyError, TypeError):
        error, detail = "unexpected", f"billhook answered {status}"
    kind: type[BillhookClientError] = UnexpectedAnswer
    if status == 401:
        kind = Unauthorized
    elif status == 403:
        kind = Forbidden
    elif status == 400:
        kind = UnknownAction if error == "unknown_action" else InvalidRequest
    return kind(detail, status=status, error=error)


def _answered(response: httpx.Response, ok: tuple[int, ...]) -> bytes:
    if response.status_code >= 500:
        raise Outage(f"server_error:{response.status_code}")
    if response.status_code not in ok:
        raise _error(response)
    return response.content


def check_of(response: httpx.Response) -> Check:
    """The check answer (200, or a 402 denial); raises Outage or the client's error."""
    body = _answered(response, (200, 402))
    return check_from(body, response.status_code)


def entitlement_of(response: httpx.Response) -> Entitlement:
    return entitlement_from(_answered(response, (200,)))


def page_of(response: httpx.Response) -> ChangePage:
    return _page_from(_answered(response, (200,)))
