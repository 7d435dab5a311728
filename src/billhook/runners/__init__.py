"""What applies projections: the embedded projector, dramatiq actors on Redis, replay."""
