"""Stripe and Polar: webhook verification and envelopes, decoding into facts, API clients,
checkout and portal sessions."""
