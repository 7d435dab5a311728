"""`python -m bench [NAME] [--quick] [--no-docs | --docs PATH] [OPTIONS]`: measure SPEC §11.

Without NAME every benchmark runs in turn (`make bench`); with one, only it,
with its own options (`python -m bench NAME --help`). Each writes its result
to bench/results/NAME.json, then docs/performance.md is rendered from the
results there (`python -m bench render` re-renders without measuring).
`--quick` (short rounds, small data) only checks that a benchmark works: its
results go to bench/results/quick/, into no document unless `--docs PATH`.
A benchmark that cannot run says why in one line and records the failure;
the others still run, and the exit status is non-zero, as after problems.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from bench import (
    client_check,
    feed_lag,
    ingest,
    ingest_latency,
    outbound,
    pg_ingest_two,
    pg_replay,
    pg_visibility,
    postgres,
    reads,
    render,
    replay,
    visibility,
)
from bench.harness import REPO, RESULTS, BenchError, ensure_cores, result

# The scenario modules in the order `make bench` runs them, each with the benchmarks it names.
MODULES: tuple[ModuleType, ...] = (
    ingest,
    ingest_latency,
    reads,
    visibility,
    replay,
    postgres,
    pg_ingest_two,
    pg_visibility,
    pg_replay,
    client_check,
    feed_lag,
    outbound,
)
BENCHMARKS = {name: module for module in MODULES for name in module.NAMES}
DOC = REPO / "docs" / "performance.md"


def parser_of(name: str | None) -> argparse.ArgumentParser:
    """The command line of benchmark `name` (of all of them when None)."""
    parser = argparse.ArgumentParser(
        prog=f"python -m bench {name or '[NAME]'}",
        description=(BENCHMARKS[name].__doc__ or "") if name else __doc__,
        epilog=None if name else f"NAME is one of: {', '.join(BENCHMARKS)}, or render.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="short rounds, small data")
    docs = parser.add_mutually_exclusive_group()
    docs.add_argument("--no-docs", action="store_true", help="do not render docs/performance.md")
    docs.add_argument("--docs", type=Path, metavar="PATH", help="render into PATH instead")
    parser.add_argument("--results", type=Path, metavar="DIR", help="where results go")
    if name is not None:
        BENCHMARKS[name].add_arguments(parser)
    return parser


def measure(name: str, argv: Sequence[str], results: Path) -> int:
    """Run benchmark `name` with options `argv`; record its result (or failure); 0 when clean."""
    module = BENCHMARKS[name]
    args = parser_of(name).parse_args(argv)
    for option, value in (module.FULL | (module.QUICK if args.quick else {})).items():
        if getattr(args, option, None) is None:
            setattr(args, option, value)
    print(f"== {name}{' (quick)' if args.quick else ''}", flush=True)
    try:
        ensure_cores()
        record = module.run(name, args, argv)
    except Exception as e:  # one line for the user, recorded; the other benchmarks still run
        why = str(e) if isinstance(e, BenchError) else f"{type(e).__name__}: {e}"
        print(f"bench {name}: {why}", file=sys.stderr)
        record = result(name, argv, args.quick, title=name, error=why)
    results.mkdir(parents=True, exist_ok=True)
    (results / f"{name}.json").write_text(json.dumps(record, indent=1), encoding="utf-8")
    for f in record["figures"]:
        print(f"  {f['key']}: {f['measured']} -> {render.verdict(f['met'])}")
    for problem in record["problems"]:
        print(f"  problem: {problem}")
    return 1 if "error" in record or record["problems"] else 0


def main(argv: Sequence[str]) -> int:
    name = argv[0] if argv and not argv[0].startswith("-") else None
    if name == "render":
        parser = argparse.ArgumentParser(prog="python -m bench render")
        parser.add_argument("--results", type=Path, default=RESULTS)
        parser.add_argument("--docs", type=Path, default=DOC)
        args = parser.parse_args(argv[1:])
        render.render(args.results, args.docs)
        return 0
    if name is not None and name not in BENCHMARKS:
        print(f"bench: no benchmark {name!r} (known: {', '.join(BENCHMARKS)})", file=sys.stderr)
        return 2
    rest = argv[1:] if name else argv
    parser_of(name).parse_args(rest)  # --help, or a wrong option, before anything runs
    # Where results and docs go is not part of the command that reproduces a figure.
    common, own = parser_of(None).parse_known_args(rest)
    own += ["--quick"] if common.quick else []
    results = common.results or (RESULTS / "quick" if common.quick else RESULTS)
    statuses = [measure(n, own, results) for n in ([name] if name else BENCHMARKS)]
    docs = None if common.no_docs or (common.quick and not common.docs) else common.docs or DOC
    if docs is not None:
        render.render(results, docs)
        print(f"rendered {docs} from {results}")
    return max(statuses)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
