"""The HTTP app: webhook routes, entitlement API, checkout, refresh, ops, OpenAPI.

Errors become answers in one place: `billhook.api.errors`.
"""
