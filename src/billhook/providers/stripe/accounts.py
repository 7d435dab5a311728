"""Stripe Connect: object ids scoped by the connected account they live in. Pure.

A platform receives events for its connected accounts with `account: "acct_…"`
at the top level, and two accounts may hold objects with the same id. billhook
keys such objects by (account, id), written as one string: the account, a
colon, the object id (`acct_123:sub_456`). Stripe ids never hold a colon, so
the scoped form cannot be mistaken for a platform id. Objects of the platform
itself (events without `account`) keep their bare id, so a log written before
Connect support replays to the same projections (docs/decisions.md).
"""

from __future__ import annotations

# What every connected account id starts with.
ACCOUNT_PREFIX = "acct_"
# Between the account and the object id in a scoped id.
SEPARATOR = ":"


def scoped(account: str | None, object_id: str) -> str:
    """`object_id` as billhook keys it: `<account>:<object_id>`, or bare without an account."""
    return object_id if account is None else f"{account}{SEPARATOR}{object_id}"


def split(scoped_id: str) -> tuple[str | None, str]:
    """(account, object id) of an id made by :func:`scoped`; (None, id) for a bare id."""
    account, separator, object_id = scoped_id.partition(SEPARATOR)
    if separator and account.startswith(ACCOUNT_PREFIX) and object_id:
        return account, object_id
    return None, scoped_id


def is_account_id(value: str) -> bool:
    """Whether `value` can name a connected account in a scoped id."""
    return (
        value.startswith(ACCOUNT_PREFIX)
        and len(value) > len(ACCOUNT_PREFIX)
        and SEPARATOR not in value
    )
