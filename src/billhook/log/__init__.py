"""The append-only event log and the group commit in front of it."""
