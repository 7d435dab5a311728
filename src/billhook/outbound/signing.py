"""An `entitlement.updated` delivery: its body and its Standard Webhooks headers.

The body follows Standard Webhooks' payload shape: `type`, `timestamp` (when
the change took effect) and `data`, which is the change exactly as
`GET /v1/changes` answers it (ids, statuses and counts, never a provider's
payload). `webhook-id` is stable per change and endpoint, so a receiver
dedupes retries and redeliveries with it; `webhook-timestamp` is the attempt's
time, signed with the body so a replayed request is refused by its tolerance;
`webhook-signature` holds one `v1,` signature per secret during a rotation.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from functools import lru_cache

import orjson
from standardwebhooks.webhooks import Webhook

from billhook.config import Secret
from billhook.projections.changes import ChangeRow, change_body

EVENT_TYPE = "entitlement.updated"
USER_AGENT = "billhook-webhooks/1"


def body(row: ChangeRow) -> bytes:
    """The bytes sent for a change; fixed when the delivery is made, resent as they are."""
    return orjson.dumps({"type": EVENT_TYPE, "timestamp": row.at, "data": change_body(row)})


def webhook_id(endpoint: str, seq: int, k: int) -> str:
    return f"{endpoint}_{seq}_{k}"


def headers(
    message_id: str, at: datetime, content: bytes, secrets: Sequence[Secret]
) -> dict[str, str]:
    """The request headers of one attempt."""
    signatures = " ".join(_signer(s.reveal()).sign(message_id, at, content) for s in secrets)
    return {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": message_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signatures,
    }


@lru_cache(maxsize=256)
def _signer(secret: str) -> Webhook:
    """One decoded key per secret, not one per attempt."""
    return Webhook(secret)
