"""Crash points for crash tests: `BILLHOOK_CRASH_AT=POINT:MARKER`.

When set, the process SIGKILLs itself the first time it reaches POINT, and
creates MARKER first so that the restarted process runs through. Unset (the
only state in production), every call is a no-op.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

# Where a worker can be told to die (see tests/e2e/test_redis_worker.py).
POINTS = ("before_apply", "before_commit", "before_ack")
# Where `billhook replay` can: inside its swap transaction (tests/e2e/test_replay_traffic.py).
REPLAY_POINTS = ("swap",)


def crash_point(name: str) -> None:
    spec = os.environ.get("BILLHOOK_CRASH_AT", "")
    point, _, marker = spec.partition(":")
    if point != name or not marker:
        return
    path = Path(marker)
    if path.exists():
        return
    path.write_text(name)
    os.kill(os.getpid(), signal.SIGKILL)
