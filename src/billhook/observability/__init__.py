"""Metrics, JSON log lines and request telemetry: ids, statuses and counts only."""
