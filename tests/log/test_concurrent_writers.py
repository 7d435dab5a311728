"""Seq order is commit order: writers in several processes, one reader that never skips.

A reader at "past seq N" must never later find a newly committed event below
N (SPEC §4a). Four processes append concurrently while this one reads from its
last seq over and over: every read continues exactly where the previous one
stopped (seqs are gapless), and at the end it has seen every committed event
once, in order.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from billhook.log.backend import Log
from billhook.log.postgres import PostgresEventLog
from billhook.log.sqlite import EventLog

WRITERS = 4
BATCHES = 60
# Each writer's batches are 1 to 5 events; some ids collide across writers on purpose.
WRITER = textwrap.dedent(
    """
    import sys
    from billhook.domain.records import EventRecord
    from billhook.log.postgres import PostgresEventLog
    from billhook.log.sqlite import EventLog
    from pathlib import Path

    where, writer, batches = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    log = PostgresEventLog(where) if where.startswith("postgresql") else EventLog(Path(where))
    for b in range(batches):
        size = 1 + (b * 7 + writer) % 5
        records = [
            EventRecord("stripe", f"evt_{writer}_{b}_{i}", "t", 0, None, "{}") for i in range(size)
        ]
        records.append(EventRecord("stripe", f"evt_shared_{b}", "t", 0, None, "{}"))
        log.append_batch(records)
    log.close()
    """
)


@pytest.fixture(params=["sqlite", "postgresql"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "events.db")
    return str(request.getfixturevalue("pg_url"))


def _open(where: str) -> Log:
    return PostgresEventLog(where) if where.startswith("postgresql") else EventLog(Path(where))


def test_a_reader_sees_every_seq_once_in_order_while_processes_append(where: str) -> None:
    reader = _open(where)  # creates the schema before the writers race to
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, where, str(w), str(BATCHES)])
        for w in range(WRITERS)
    ]
    seen: list[int] = []
    event_ids: list[str] = []
    try:
        while True:
            running = any(w.poll() is None for w in writers)
            events = reader.read(after=seen[-1] if seen else 0)
            for event in events:
                # Gapless and in order: the next event read is always the next seq.
                assert event.seq == (seen[-1] if seen else 0) + 1
                seen.append(event.seq)
                event_ids.append(event.event_id)
            if not running and not events:
                break
        assert [w.returncode for w in writers] == [0] * WRITERS
        assert seen == list(range(1, reader.head_seq() + 1))
        # Every event once: the shared ids too, whichever writer won them.
        assert len(event_ids) == len(set(event_ids))
        expected = {
            f"evt_{w}_{b}_{i}"
            for w in range(WRITERS)
            for b in range(BATCHES)
            for i in range(1 + (b * 7 + w) % 5)
        } | {f"evt_shared_{b}" for b in range(BATCHES)}
        assert set(event_ids) == expected
    finally:
        for w in writers:
            w.kill()
            w.wait()
        reader.close()
