"""Outbound entitlement webhooks (SPEC §6b): fan-out, the durable outbox, signed deliveries."""
