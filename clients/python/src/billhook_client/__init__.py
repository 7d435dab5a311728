"""billhook's Python client: cached entitlement checks kept fresh by the change feed,
an explicit outage policy, and a 402 guard for web apps (`billhook_client.guard`).

    from billhook_client import Billhook
    bh = Billhook("http://billhook:8000", token, fail="last_known")
    bh.check("ws_1", "ai_imports").allowed
"""

from __future__ import annotations

from billhook_client.aio import AsyncBillhook
from billhook_client.client import Billhook
from billhook_client.counts import GuardCounts
from billhook_client.errors import (
    BillhookClientError,
    BillhookUnavailable,
    BillingRequired,
    BillingUnavailable,
    Forbidden,
    InvalidRequest,
    Unauthorized,
    UnexpectedAnswer,
    UnknownAction,
)
from billhook_client.models import (
    Cause,
    Change,
    ChangePage,
    Check,
    EnforcementChange,
    Entitlement,
    EntitlementChange,
    Features,
    Override,
    Subscription,
    UnknownChange,
)
from billhook_client.policy import POLICIES

__all__ = [
    "POLICIES",
    "AsyncBillhook",
    "Billhook",
    "BillhookClientError",
    "BillhookUnavailable",
    "BillingRequired",
    "BillingUnavailable",
    "Cause",
    "Change",
    "ChangePage",
    "Check",
    "EnforcementChange",
    "Entitlement",
    "EntitlementChange",
    "Features",
    "Forbidden",
    "GuardCounts",
    "InvalidRequest",
    "Override",
    "Subscription",
    "Unauthorized",
    "UnexpectedAnswer",
    "UnknownAction",
    "UnknownChange",
]
