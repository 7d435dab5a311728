"""The replay benchmark's measured rebuild: `projections.rebuild.rebuild` in a process of its own.

    python -m bench.replay_rebuild CONFIG TARGET

Loads the config, opens its event log and rebuilds every projection from
seq 1 into the new store TARGET (replaced if present) with the same
`rebuild` function `billhook replay` runs, then prints one JSON line: the
events replayed, the seconds `rebuild` took and its checkpoint.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

from billhook.config import load_settings
from billhook.log.sqlite import EventLog
from billhook.projections.rebuild import rebuild, remove_store


def main(argv: Sequence[str]) -> int:
    """Rebuild as the command line says; print what `rebuild` reports."""
    if len(argv) != 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    config, target = Path(argv[0]), Path(argv[1])
    settings = load_settings(config, {})
    remove_store(target)
    log = EventLog(settings.events_path)
    try:
        result = rebuild(log, target, settings)
    finally:
        log.close()
    done = {"events": result.events, "seconds": result.seconds, "checkpoint": result.checkpoint}
    print(json.dumps(done))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
