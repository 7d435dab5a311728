"""The synchronous client: `Billhook`, with its follower on a thread.

bh = Billhook("http://billhook:8000", token, fail="last_known")
if bh.check("ws_1", "ai_imports").allowed: ...
bh.require("ws_1", "ai_imports")          # raises BillingRequired on a 402
bh.close()
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable

import httpx

from billhook_client import answers
from billhook_client.answers import Outage
from billhook_client.counts import GuardCounts
from billhook_client.errors import (
    BillhookUnavailable,
    BillingRequired,
    BillingUnavailable,
    InvalidRequest,
)
from billhook_client.models import ChangePage, Check, Entitlement
from billhook_client.options import (
    FOLLOW_BACKOFF_MAX_S,
    FOLLOW_BACKOFF_S,
    FOLLOW_IDLE_S,
    FOLLOW_LIMIT,
    OnChange,
    Options,
    failure_reason,
    log,
    make_options,
    notify,
)
from billhook_client.state import ClientState

# How long close() waits for the follower to notice (it may be inside a long poll).
CLOSE_JOIN_S = 0.5


class Billhook:
    """A billhook client with a cache kept fresh by the change feed (docs/clients.md).

    `fail` is the outage policy (`closed`, `open`, `last_known`);
    `last_known_max_age_s` bounds how old a last known answer `last_known` may
    give; the cache is trusted while the follower has heard from billhook
    within `max_staleness_s` (without a follower, for that long after each
    answer). `free_actions`: actions `closed` always allows (the default tier's
    features are learned from answers too). `transport` is httpx's (tests pass
    a `MockTransport`); `on_change` sees every change the follower applies.
    Thread-safe. Close it (or use it as a context manager) to stop the follower.
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        fail: str = "closed",
        last_known_max_age_s: float = 900.0,
        max_staleness_s: float = 60.0,
        follow: bool = True,
        timeout_s: float = 3.0,
        free_actions: Iterable[str] = (),
        transport: httpx.BaseTransport | None = None,
        on_change: OnChange | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.options = make_options(
            fail, last_known_max_age_s, max_staleness_s, follow, timeout_s, free_actions
        )
        self._state = self.options.state(clock)
        self.guard_counts = GuardCounts()
        self._http = httpx.Client(
            base_url=base_url,
            headers=answers.headers(token),
            timeout=timeout_s,
            transport=transport,
        )
        self._follower: _Follower | None = None
        if follow:
            self._follower = _Follower(
                httpx.Client(
                    base_url=base_url,
                    headers=answers.headers(token),
                    timeout=httpx.Timeout(timeout_s, read=self.options.poll_wait_s + timeout_s),
                    transport=transport,
                ),
                self._state,
                self.options,
                on_change,
                owns_transport=transport is None,
            )
            self._follower.start()

    # -- answers ----------------------------------------------------------------------------

    def check(self, workspace: str, action: str, seats_in_use: int | None = None) -> Check:
        """May `workspace` do `action` now? billhook's answer, cached, or the policy's.

        A denial is an answer (`allowed=False`), not an error. Raises
        UnknownAction, InvalidRequest, Unauthorized, Forbidden for what billhook refused.
        """
        cached = self._state.cached_check(workspace, action, seats_in_use)
        if cached is not None:
            return cached
        token = self._state.token(workspace)
        try:
            try:
                response = self._http.post(
                    answers.check_path(workspace), json=answers.check_body(action, seats_in_use)
                )
            except httpx.TransportError as e:
                raise answers.outage_of(e) from None
            check = answers.check_of(response)
        except Outage as o:
            return self._state.fallback_check(workspace, action, seats_in_use, o.reason)
        self._state.store_check(token, action, seats_in_use, check)
        return check

    def cached_check(
        self, workspace: str, action: str, seats_in_use: int | None = None
    ) -> Check | None:
        """billhook's cached answer when the cache can be trusted now, else None (no request)."""
        return self._state.cached_check(workspace, action, seats_in_use)

    def require(self, workspace: str, action: str, seats_in_use: int | None = None) -> Check:
        """The check's answer when the action is allowed; else raises BillingRequired
        (billhook's 402) or BillingUnavailable (the outage policy denied it)."""
        check = self.check(workspace, action, seats_in_use)
        if check.allowed:
            return check
        if check.billing_required:
            raise BillingRequired(check)
        raise BillingUnavailable(check)

    def entitlements(self, workspace: str) -> Entitlement:
        """What the workspace is entitled to now (`GET .../entitlements`), cached.

        When billhook cannot answer: the last known answer (marked `fallback`)
        under `open` and `last_known` while it is young enough; else raises
        BillhookUnavailable.
        """
        cached = self._state.cached_entitlement(workspace)
        if cached is not None:
            return cached
        token = self._state.token(workspace)
        try:
            try:
                response = self._http.get(answers.entitlements_path(workspace))
            except httpx.TransportError as e:
                raise answers.outage_of(e) from None
            entitlement = answers.entitlement_of(response)
        except Outage as o:
            return self._state.fallback_entitlement(workspace, o.reason)
        self._state.store_entitlement(token, entitlement)
        return entitlement

    def changes(self, after: str | None = None, limit: int = 100, wait: int = 0) -> ChangePage:
        """One page of the change feed (`after` None: from the beginning; "now": the head).

        Raises BillhookUnavailable when billhook does not answer."""
        return _changes(self._http, after, limit, wait)

    # -- the follower -----------------------------------------------------------------------

    @property
    def cursor(self) -> str | None:
        """The follower's cursor: where it resumes (None before its first answer)."""
        return None if self._follower is None else self._follower.cursor

    @property
    def heard_at(self) -> float | None:
        """When (by `clock`) the follower last caught up with billhook."""
        return self._state.heard_at

    def close(self) -> None:
        if self._follower is not None:
            self._follower.stop()
        self._http.close()

    def __enter__(self) -> Billhook:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _changes(http: httpx.Client, after: str | None, limit: int, wait: int) -> ChangePage:
    params = answers.changes_params(after, limit, wait)
    try:
        try:
            response = http.get("/v1/changes", params=params)
        except httpx.TransportError as e:
            raise answers.outage_of(e) from None
        return answers.page_of(response)
    except Outage as o:
        raise BillhookUnavailable(o.reason) from None


class _Follower:
    """Follows `/v1/changes` from the head, on a daemon thread, until stopped."""

    def __init__(
        self,
        http: httpx.Client,
        state: ClientState,
        options: Options,
        on_change: OnChange | None,
        *,
        owns_transport: bool,
    ) -> None:
        self._http = http
        self._state = state
        self._wait_s = options.poll_wait_s
        self._on_change = on_change
        self._owns_transport = owns_transport
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="billhook-follower", daemon=True)
        self.cursor: str | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        # A long poll in flight ends by itself within its wait; nobody needs to wait for it.
        self._thread.join(CLOSE_JOIN_S)

    def _run(self) -> None:
        backoff = FOLLOW_BACKOFF_S
        failing: str | None = None
        try:
            while not self._stop.is_set():
                try:
                    page = _changes(self._http, self.cursor or "now", FOLLOW_LIMIT, self._wait_s)
                except InvalidRequest:
                    # The cursor is refused (billhook's data was reset): start again at the head.
                    log.warning("the change feed refused the cursor; following from the head")
                    self._state.reset()
                    self.cursor = None
                    continue
                except Exception as e:  # billhook down or refusing: the cache goes stale
                    reason = failure_reason(e)
                    if reason != failing:
                        log.warning("the change feed did not answer: %s", reason)
                        failing = reason
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, FOLLOW_BACKOFF_MAX_S)
                    continue
                if failing is not None:
                    log.info("the change feed answers again")
                    failing = None
                backoff = FOLLOW_BACKOFF_S
                caught_up = len(page.changes) < FOLLOW_LIMIT
                self._state.apply(page, caught_up)
                self.cursor = page.next
                notify(self._on_change, page.changes)
                if caught_up and self._wait_s == 0:
                    self._stop.wait(FOLLOW_IDLE_S)
        finally:
            if self._owns_transport:
                self._http.close()
