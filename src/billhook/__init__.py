"""billhook: Stripe and Polar billing webhooks into entitlements, from an append-only event log.

The subpackages follow the data flow (docs/architecture.md): `providers` and
`log` → `projections` → `runners` and `sync` → `api` and `cli`, over a pure
`domain`.
"""
