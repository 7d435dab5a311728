"""ingest: the webhook receiver, signature verification and the append-only event log."""
