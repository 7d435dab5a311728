"""The replay benchmark's baseline: a raw scan of the log and `json.loads` of every payload.

    python -m bench.replay_scan EVENTS_DB

Reads every row of `events` in seq order with one plain sqlite3 cursor (the
columns a replay reads) and parses each payload with the standard library's
`json`, doing nothing else (SPEC §11). Prints one JSON line: the rows read and
the seconds the scan took, measured inside the process.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import time
from collections.abc import Sequence
from pathlib import Path

SCAN = (
    "SELECT seq, provider, event_id, type, livemode, occurred_at, received_at, payload"
    " FROM events ORDER BY seq"
)


def scan(path: Path) -> tuple[int, float]:
    """(rows, seconds) of reading and parsing the whole log at `path`."""
    conn = sqlite3.connect(path)
    try:
        started = time.perf_counter()
        rows = 0
        loads = json.loads
        for row in conn.execute(SCAN):
            loads(row[7])
            rows += 1
        return rows, time.perf_counter() - started
    finally:
        conn.close()


def main(argv: Sequence[str]) -> int:
    """Scan the log named on the command line; print rows and seconds."""
    if len(argv) != 1:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    path = Path(argv[0])
    if not path.is_file():
        print(f"replay_scan: no log at {path}", file=sys.stderr)
        return 1
    rows, seconds = scan(path)
    print(json.dumps({"rows": rows, "seconds": seconds}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
