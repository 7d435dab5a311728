"""One measured process of the replay benchmark: the raw scan, or the rebuild.

    python -m bench.replay_run scan EVENTS_DB
    python -m bench.replay_run rebuild CONFIG TARGET

TARGET is where the rebuild builds: a file when CONFIG keeps the log in
SQLite, a schema name when it keeps it in PostgreSQL (`[storage] url`).
Prints one JSON line: the events read, the seconds taken (its own clock) and
its peak RSS. Only what each needs is imported: the scan loads nothing but
sqlite3 and json, so its start-up is a bare interpreter's.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

SCAN = (
    "SELECT seq, provider, event_id, type, livemode, occurred_at, received_at, payload"
    " FROM events ORDER BY seq"
)


def peak_rss() -> int:
    """This process's own peak resident memory in bytes (`VmHWM`: `ru_maxrss` would count the
    high-water mark of the big benchmark process it was forked from)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def main(argv: Sequence[str]) -> int:
    """One measured process: print its events, its own seconds and its peak RSS as JSON."""
    if argv[0] == "scan":
        import sqlite3

        conn = sqlite3.connect(argv[1])
        started = time.perf_counter()
        events, loads = 0, json.loads
        for events, row in enumerate(conn.execute(SCAN), start=1):  # noqa: B007
            loads(row[7])
        seconds = time.perf_counter() - started
        conn.close()
    else:
        from billhook.config import load_settings
        from billhook.log.backend import open_log
        from billhook.projections.backend import Location, remove
        from billhook.projections.postgres import PgSchema
        from billhook.projections.rebuild import rebuild

        settings = load_settings(Path(argv[1]), {})
        # TARGET is a file beside an SQLite log, a schema beside a PostgreSQL one.
        url = settings.storage_url.reveal() if settings.storage_url else None
        target: Location = PgSchema(url, argv[2]) if url else Path(argv[2])
        remove(target)
        log = open_log(settings)
        try:
            rebuilt = rebuild(log, target, settings)
        finally:
            log.close()
        remove(target)
        events, seconds = rebuilt.events, rebuilt.seconds
    print(json.dumps({"events": events, "seconds": seconds, "peak_rss": peak_rss()}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
