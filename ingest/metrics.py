"""Prometheus metrics: ids, statuses and counts only (SPEC §6, §10).

One registry per app, so several apps (tests, a replay beside a server) never
collide in prometheus-client's global registry.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.webhooks = Counter(
            "billhook_webhooks",
            "Webhook deliveries by provider and outcome.",
            ["provider", "outcome"],
            registry=r,
        )
        self._check_children: dict[tuple[str, str], Counter] = {}
        self.checks = Counter(
            "billhook_checks",
            "Entitlement checks by decision and reason.",
            ["decision", "reason"],
            registry=r,
        )
        self.log_head = Gauge("billhook_log_head_seq", "Highest seq in the event log.", registry=r)
        self.projection_seq = Gauge(
            "billhook_projection_seq", "Last seq applied to projections.", registry=r
        )
        self.projection_lag = Gauge(
            "billhook_projection_lag_events", "Events in the log not yet projected.", registry=r
        )
        self.quarantined = Gauge(
            "billhook_quarantined_events", "Events a reducer failed on.", registry=r
        )
        self.wakeups = Counter(
            "billhook_wakeups_sent", "Wake-up messages sent to workers through Redis.", registry=r
        )
        self.skipped = Gauge(
            "billhook_skipped_events", "Events projections do not use.", registry=r
        )

    def count_check(self, decision: str, reason: str | None) -> None:
        """Count one check; the labelled child is looked up once per label pair."""
        key = (decision, reason or "none")
        child = self._check_children.get(key)
        if child is None:
            child = self._check_children[key] = self.checks.labels(*key)
        child.inc()
