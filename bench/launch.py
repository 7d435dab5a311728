"""Run a command and report its own wall time, CPU time and peak RSS, as one JSON line.

    python -m bench.launch OUT_JSON TIMEOUT_S -- COMMAND...

Why a launcher: Linux counts in a child's `ru_maxrss` the memory of the
process it was forked from (the forked copy's high-water mark survives exec),
so a benchmark that has built gigabytes of log would inflate every figure.
This process is small; its child's `ru_maxrss` is the child's own. The
command's stdout and stderr are this process's; the result goes to OUT_JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

POLL_S = 0.005


def run(command: Sequence[str], timeout_s: float) -> dict[str, float | int]:
    """Run `command`; its exit status, wall seconds, CPU seconds and peak RSS in bytes."""
    started = time.perf_counter()
    process = subprocess.Popen(command)
    deadline = started + timeout_s
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid == process.pid:
            break
        if time.perf_counter() > deadline:
            process.kill()
            pid, status, usage = os.wait4(process.pid, 0)
            status = -1
            break
        time.sleep(POLL_S)
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status) if status != -1 else -9
    return {
        "status": process.returncode,
        "timed_out": int(status == -1),
        "wall_s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "maxrss_bytes": usage.ru_maxrss * 1024,
    }


def main(argv: Sequence[str]) -> int:
    """Run the command line's command; write its figures to OUT_JSON."""
    if len(argv) < 4 or argv[2] != "--":
        print(__doc__.strip(), file=sys.stderr)
        return 2
    out, timeout_s, command = Path(argv[0]), float(argv[1]), argv[3:]
    result = run(command, timeout_s)
    out.write_text(json.dumps(result), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
