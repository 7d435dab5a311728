"""projections: pure reducers, the entitlement resolver, the projection store and API."""
