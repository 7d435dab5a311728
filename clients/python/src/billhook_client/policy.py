"""The outage policy: what a check answers when billhook cannot (docs/clients.md).

Pure functions of what the client knows; `state.ClientState` gathers it. Every
answer made here has `fallback=True` and the reason billhook did not answer
(`unreachable`, `timeout`, `server_error:<status>`).

- `closed`: only the default tier's features (learned from any answer about a
  workspace on the default tier, plus the caller's `free_actions`) are
  allowed; every other action, `invite_member` included, is denied.
- `open`: every action is allowed.
- `last_known`: billhook's last known answer while it is at most
  `last_known_max_age_s` old — the cached check answer itself, else one derived
  from the workspace's last known features and seats — then `closed`.

A denial respects the last known enforcement mode: under `observe` it is
`allowed=True, decision="would_deny"` (billhook itself would not block), under
`disabled` an `allow`. With no mode known, `enforce` is assumed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from billhook_client.errors import BillhookUnavailable
from billhook_client.models import ALLOW, DENY, SEAT_ACTION, WOULD_DENY, Check, Entitlement

# The policies a caller may pick.
POLICIES = ("closed", "open", "last_known")


@dataclass(frozen=True, slots=True)
class Known:
    """What the client last knew of one workspace: from its entitlement answer or a change.

    `included` is None when only a check answer was ever seen; `seats` None is unlimited.
    `entitlement` is billhook's last full answer, None once a change superseded it.
    """

    tier: str | None
    included: frozenset[str] | None
    seats: int | None
    next_action: str | None
    as_of_seq: int | None
    entitlement: Entitlement | None


@dataclass(frozen=True, slots=True)
class Basis:
    """What a policy may go on, with the age (seconds since billhook last confirmed it)."""

    cached: Check | None
    cached_age: float
    known: Known | None
    known_age: float
    enforcement: str | None
    free: frozenset[str]


def _answer(
    workspace: str, action: str, permitted: bool, mode: str, basis: Basis, reason: str
) -> Check:
    if permitted or mode == "disabled":
        allowed, decision = True, ALLOW
    elif mode == "observe":
        allowed, decision = True, WOULD_DENY
    else:
        allowed, decision = False, DENY
    known = basis.known
    return Check(
        workspace_id=workspace,
        action=action,
        allowed=allowed,
        decision=decision,
        reason=None,
        required_tier=None,
        tier=None if known is None else known.tier,
        next_action=None if known is None else known.next_action,
        enforcement=mode,
        as_of_seq=None if known is None else known.as_of_seq,
        fallback=True,
        fallback_reason=reason,
    )


def fallback_check(
    policy: str,
    max_age_s: float,
    workspace: str,
    action: str,
    seats_in_use: int | None,
    reason: str,
    basis: Basis,
) -> Check:
    """The policy's answer to a check billhook could not answer (`reason` says why)."""
    mode = basis.enforcement or "enforce"
    if policy == "open":
        return _answer(workspace, action, True, mode, basis, reason)
    if policy == "last_known":
        if basis.cached is not None and basis.cached_age <= max_age_s:
            return basis.cached.as_fallback(reason)
        known = basis.known
        if known is not None and known.included is not None and basis.known_age <= max_age_s:
            if action == SEAT_ACTION:
                permitted = known.seats is None or (
                    seats_in_use is not None and seats_in_use + 1 <= known.seats
                )
            else:
                permitted = action in known.included or action in basis.free
            return _answer(workspace, action, permitted, mode, basis, reason)
    permitted = action != SEAT_ACTION and action in basis.free
    return _answer(workspace, action, permitted, mode, basis, reason)


def fallback_entitlement(
    policy: str, max_age_s: float, reason: str, known: Known | None, age: float
) -> Entitlement:
    """The policy's answer to an entitlement read billhook could not answer.

    Under `open` and `last_known`: billhook's last full answer while at most
    `max_age_s` old. Otherwise there is nothing honest to answer: raises
    BillhookUnavailable (`closed` never hands out a paid workspace's old features).
    """
    entitlement = None if known is None else known.entitlement
    if policy != "closed" and entitlement is not None and age <= max_age_s:
        return entitlement.as_fallback(reason)
    raise BillhookUnavailable(reason)


def known_from_entitlement(e: Entitlement) -> Known:
    return Known(
        tier=e.tier,
        included=frozenset(e.features.included),
        seats=e.seats,
        next_action=e.next_action,
        as_of_seq=e.as_of_seq,
        entitlement=dataclasses.replace(e, fallback=False, fallback_reason=None),
    )
