"""The client's errors: one root, a few meaningful subclasses.

httpx's errors never leave the client: a billhook that cannot answer
(connection refused, timeout, 5xx) is the outage policy's business, and an
answer billhook gave is one of these.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from billhook_client.models import Check


class BillhookClientError(Exception):
    """Root of every error the client raises.

    `status` is the HTTP status billhook answered (None when it did not
    answer), `error` its error code and `detail` its message for a person.
    """

    def __init__(self, detail: str, *, status: int | None = None, error: str | None = None):
        super().__init__(detail)
        self.detail = detail
        self.status = status
        self.error = error


class Unauthorized(BillhookClientError):
    """401: the token is missing or unknown to billhook."""


class Forbidden(BillhookClientError):
    """403: the token's scope does not allow the route."""


class InvalidRequest(BillhookClientError):
    """400: billhook refused the request (a field is missing or malformed)."""


class UnknownAction(InvalidRequest):
    """400 `unknown_action`: the action is neither a configured feature nor `invite_member`."""


class UnexpectedAnswer(BillhookClientError):
    """billhook answered something this client does not understand (a status or a shape)."""


class BillhookUnavailable(BillhookClientError):
    """billhook could not answer and the outage policy has no answer to give instead.

    `reason` is `unreachable`, `timeout` or `server_error:<status>`.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(f"billhook did not answer ({reason})", error="unavailable")
        self.reason = reason


class BillingRequired(BillhookClientError):
    """billhook denied the action: its 402 `billing_required` answer.

    `body` is the answer's exact bytes (what a guard sends on to the UI) and
    `answer` the same, decoded; `check` is the typed answer.
    """

    def __init__(self, check: Check) -> None:
        answer: dict[str, Any] = json.loads(check.body)
        super().__init__(str(answer.get("detail", "")), status=402, error="billing_required")
        self.check = check
        self.body = check.body
        self.answer = answer


class BillingUnavailable(BillhookClientError):
    """The outage policy denied the action: billhook could not answer.

    Not a 402: nothing says the workspace must pay, only that billhook could
    not be asked (`check.fallback_reason` says why).
    """

    def __init__(self, check: Check) -> None:
        reason = check.fallback_reason or "unavailable"
        super().__init__(
            f"billhook did not answer ({reason}); the outage policy denies {check.action}",
            status=None,
            error="billing_unavailable",
        )
        self.check = check
