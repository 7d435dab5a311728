"""Prometheus metrics: ids, statuses and counts only (docs/api.md; docs/entitlements.md, privacy).

One registry per app, so several apps (tests, a replay beside a server) never
collide in prometheus-client's global registry.

Signature failures and duplicates are outcomes of `billhook_webhooks_total`
(`outcome="invalid_signature"`, `outcome="duplicate"`), by provider: one
counter answers "how many deliveries, and how did they end", and a secret
rotation is watched on its `invalid_signature` series.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Request latency buckets (seconds): reads answer in well under a millisecond,
# a durable webhook ack in a few, a refresh through a provider API in hundreds.
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.webhooks = Counter(
            "billhook_webhooks",
            "Webhook deliveries by provider and outcome (accepted, duplicate, invalid_signature,"
            " invalid_payload, payload_too_large, provider_not_configured, log_unavailable).",
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
        self.projection_lag_seconds = Gauge(
            "billhook_projection_lag_seconds",
            "Age of the oldest event not yet projected (its received_at); 0 when caught up.",
            registry=r,
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
        self.outbound_deliveries = Counter(
            "billhook_outbound_deliveries",
            "Outbound entitlement webhooks ended, by endpoint id and outcome (delivered, failed).",
            ["endpoint", "outcome"],
            registry=r,
        )
        self.outbound_attempts = Counter(
            "billhook_outbound_attempts",
            "Outbound delivery attempts by endpoint id and result (2xx, 3xx, 4xx, 5xx, timeout,"
            " error).",
            ["endpoint", "result"],
            registry=r,
        )
        self.outbound_pending = Gauge(
            "billhook_outbound_pending",
            "Outbound deliveries not yet delivered or given up.",
            registry=r,
        )
        self.outbound_oldest_pending = Gauge(
            "billhook_outbound_oldest_pending_seconds",
            "Age of the oldest outbound delivery not yet delivered or given up; 0 when none.",
            registry=r,
        )
        self._request_children: dict[tuple[str, str, str], Histogram] = {}
        self.requests = Histogram(
            "billhook_http_request_duration_seconds",
            "HTTP request latency by route template, method and status class.",
            ["route", "method", "status"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )

    def count_check(self, decision: str, reason: str | None) -> None:
        """Count one check; the labelled child is looked up once per label pair."""
        key = (decision, reason or "none")
        child = self._check_children.get(key)
        if child is None:
            child = self._check_children[key] = self.checks.labels(*key)
        child.inc()

    def observe_request(self, route: str, method: str, status: str, seconds: float) -> None:
        """Record one request's latency; `route` must be a template, never a raw path."""
        key = (route, method, status)
        child = self._request_children.get(key)
        if child is None:
            child = self._request_children[key] = self.requests.labels(*key)
        child.observe(seconds)
