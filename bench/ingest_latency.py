"""Ingest p99 latency at 1,000 events/s (SPEC §11): send → durable ack, open loop.

The set-up and load of bench/visibility.py (embedded projector, the default a
new user gets) at 1,000 events/s, with nobody polling: the server gets
webhooks only, and each event's latency runs from its send to its 2xx, which
billhook gives once the event is committed with `synchronous=FULL`. The target
(p99 < 20 ms) is in bench/visibility.py's KINDS.
"""

from __future__ import annotations

from bench import visibility

NAMES = ("ingest_latency",)
FULL = visibility.FULL | {"rate": 1000}
QUICK = visibility.QUICK
add_arguments = visibility.add_arguments
run = visibility.run
