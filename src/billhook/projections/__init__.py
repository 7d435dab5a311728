"""Applying logged events to the projection store: the store, the projector, rebuild and swap."""
