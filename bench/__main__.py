"""`python -m bench [NAME [OPTIONS...]]`: run every benchmark, or the one named.

Each benchmark is a module of this package with a `main(argv) -> int` and the
keys of the summary rows it writes (`FIGURES`); add a new one to
:data:`BENCHMARKS` and it runs with the others under `make bench`. A benchmark
that cannot run says why in one line, marks its summary rows "not measured",
and the others still run; the exit status is then non-zero.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Protocol

from bench import ingest, ingest_latency, reads, redis_visibility, replay, visibility
from bench.report import command_line, fail
from bench.tools import BenchError, ensure_cores


class Benchmark(Protocol):
    """What `python -m bench` needs of a benchmark module."""

    @property
    def FIGURES(self) -> tuple[str, ...]: ...

    def main(self, argv: Sequence[str], /) -> int: ...


# Benchmarks in the order `make bench` runs them.
BENCHMARKS: dict[str, Benchmark] = {
    "ingest": ingest,
    "ingest_latency": ingest_latency,
    "reads": reads,
    "visibility": visibility,
    "replay": replay,
    "redis_visibility": redis_visibility,
}


def run(name: str, argv: Sequence[str]) -> int:
    """Run benchmark `name`; an error it did not foresee is one line, not a traceback."""
    try:
        return BENCHMARKS[name].main(argv)
    except Exception as e:
        why = f"unexpected {type(e).__name__}: {e}"
        writes_docs = "--no-docs" not in argv
        return fail(
            name, Exception(why), BENCHMARKS[name].FIGURES, command_line(name, argv), writes_docs
        )


def main(argv: Sequence[str]) -> int:
    """Run the benchmark named first in `argv` with the rest as its options, or all of them."""
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        print("benchmarks:", ", ".join(BENCHMARKS))
        return 0
    if argv and argv[0] in BENCHMARKS:
        return run(argv[0], argv[1:])
    if argv:
        names = ", ".join(BENCHMARKS)
        print(f"bench: unknown benchmark {argv[0]!r} (known: {names})", file=sys.stderr)
        return 2
    try:
        # Every benchmark pins to two cores: without them none can run, so say it once.
        ensure_cores()
    except BenchError as e:
        print(f"bench: {e}", file=sys.stderr)
        return 1
    statuses = {name: run(name, []) for name in BENCHMARKS}
    failed = [name for name, status in statuses.items() if status]
    if failed:
        print(f"bench: {', '.join(failed)} failed or found problems (see above)", file=sys.stderr)
    return max(statuses.values(), default=0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
