"""Polar: webhook verification and envelope, decoding into facts, the API client, checkout
and portal sessions."""
