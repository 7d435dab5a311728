"""Counts of the guard's decisions, which the app reads (e.g. into its own metrics)."""

from __future__ import annotations

import threading
from collections import Counter


class GuardCounts:
    """How many guarded calls got each decision, by action; thread-safe.

    A key is (action, decision, fallback): `decision` is `allow`, `would_deny`
    (let through under `observe`) or `deny`; `fallback` is True for answers
    the outage policy made.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[tuple[str, str, bool]] = Counter()

    def add(self, action: str, decision: str, fallback: bool) -> None:
        with self._lock:
            self._counts[(action, decision, fallback)] += 1

    def get(
        self, decision: str | None = None, action: str | None = None, fallback: bool | None = None
    ) -> int:
        """The count of guarded calls matching every criterion given."""
        with self._lock:
            return sum(
                n
                for (a, d, f), n in self._counts.items()
                if (decision is None or d == decision)
                and (action is None or a == action)
                and (fallback is None or f == fallback)
            )

    def snapshot(self) -> dict[tuple[str, str, bool], int]:
        with self._lock:
            return dict(self._counts)
