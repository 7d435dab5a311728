"""Pure entitlement logic: facts, reducers and the resolver. No I/O, clock, settings or secrets."""
