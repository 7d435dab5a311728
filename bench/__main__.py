"""`python -m bench [NAME [OPTIONS...]]`: run every benchmark, or the one named.

Each benchmark is a module of this package with a `main(argv) -> int`; add a
new one to :data:`BENCHMARKS` and it runs with the others under `make bench`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from bench import ingest, reads, redis_visibility, replay, visibility

# Benchmarks in the order `make bench` runs them: name -> main(argv) -> exit status.
BENCHMARKS: dict[str, Callable[[Sequence[str]], int]] = {
    "ingest": ingest.main,
    "reads": reads.main,
    "visibility": visibility.main,
    "replay": replay.main,
    "redis_visibility": redis_visibility.main,
}


def main(argv: Sequence[str]) -> int:
    """Run the benchmark named first in `argv` with the rest as its options, or all of them."""
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        print("benchmarks:", ", ".join(BENCHMARKS))
        return 0
    if argv and argv[0] in BENCHMARKS:
        return BENCHMARKS[argv[0]](argv[1:])
    if argv:
        names = ", ".join(BENCHMARKS)
        print(f"bench: unknown benchmark {argv[0]!r} (known: {names})", file=sys.stderr)
        return 2
    statuses = [run([]) for run in BENCHMARKS.values()]
    return max(statuses, default=0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
