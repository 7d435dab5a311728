"""Provider sync: reconcile and backfill from the provider APIs, and the online config check."""
