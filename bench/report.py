"""What every benchmark reports: the machine, and its own section of docs/performance.md.

Each benchmark owns one section of the document, between the markers
`<!-- bench:NAME -->` and `<!-- /bench:NAME -->`, and rewrites only that
section on each run; everything outside the markers is left as it is. It also
rewrites its own rows of the summary at the top (section `summary`): one row
per SPEC §11 target, in the order of :data:`SUMMARY_ROWS`, so the rows of
benchmarks that did not run this time stay as they were, dated.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

from bench.tools import REPO

DOC_NAME = "docs/performance.md"
DOC = REPO / DOC_NAME
DOC_HEADER = """# Performance

Figures measured by `make bench` (SPEC §11 lists the targets). Each section
below is rewritten by its benchmark on every run, between its
`<!-- bench:NAME -->` markers; write notes outside the markers.
"""
SUMMARY = "summary"
# The summary's rows, in SPEC §11 order: key -> (figure, target). A benchmark names its keys.
SUMMARY_ROWS: Mapping[str, tuple[str, str]] = {
    "ingest_ratio": (
        "Ingest: unique signed Stripe events/s, 32 connections, durable ack ÷ minimal"
        " Starlette POST",
        "≥ 0.6",
    ),
    "ingest_p99": ("Ingest: p99 latency (send → durable ack) at 1,000 events/s", "< 20 ms"),
    "visible_embedded": ("Ack → visible, p99 at 500 events/s, embedded projector", "< 100 ms"),
    "visible_redis": ("Ack → visible, p99 at 500 events/s, via the Redis worker", "< 250 ms"),
    "replay_rate": ("Replay of 1,000,000 events (50,000 subscriptions): rate", "≥ 50,000 events/s"),
    "replay_ratio": ("Replay ÷ raw scan + `json.loads` of the same log", "≥ 0.5"),
    "replay_rss": ("Replay: peak RSS", "< 1 GiB"),
    "reads_get": ("Entitlement GET requests/s ÷ minimal Starlette GET", "≥ 0.7"),
    "reads_check": ("Check requests/s ÷ minimal Starlette GET", "≥ 0.7"),
}
SUMMARY_HEAD = (
    "| SPEC §11 figure | target | measured | verdict | noise: others on cores 0/1"
    " | reproduce with | measured at |"
)


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, or the platform's guess."""
    try:
        lines = Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines()
    except OSError:
        lines = []
    for line in lines:
        key, sep, value = line.partition(":")
        if sep and key.strip() == "model name":
            return value.strip()
    return platform.processor() or "unknown"


def filesystem_of(path: Path) -> str:
    """The type of the filesystem `path` is on (e.g. `ext4`), from /proc/self/mounts."""
    target = str(path.resolve())
    best, kind = "", "unknown"
    try:
        mounts = Path("/proc/self/mounts").read_text(encoding="utf-8").splitlines()
    except OSError:
        return kind
    for line in mounts:
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1]
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, fields[2]
    return kind


def machine() -> str:
    """One line about where the figures were measured: CPUs, model, kernel, Python."""
    return (
        f"{len(os.sched_getaffinity(0))} CPUs (nproc), {cpu_model()}, Linux {platform.release()},"
        f" Python {platform.python_version()}"
    )


def _git(*args: str) -> str:
    """`git ARGS` in the repository; its output, stripped (raises when git fails)."""
    return subprocess.run(
        ["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10, check=True
    ).stdout.strip()


def code_version() -> str:
    """The commit measured, e.g. `f3a38e4`, `+ uncommitted changes` when the tree is dirty."""
    try:
        head = _git("rev-parse", "--short", "HEAD")
        # The document itself changes as `make bench` runs: that is not the code measured.
        dirty = _git("status", "--porcelain", "--untracked-files=no", "--", ".", f":!{DOC_NAME}")
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"
    return f"{head} + uncommitted changes" if dirty else head


def server_stack() -> str:
    """The uvicorn stack the servers run on (`auto` picks uvloop and httptools if present)."""
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    return (
        f"uvicorn {version('uvicorn')} ({loop}, {http}), Starlette {version('starlette')},"
        f" stripe {version('stripe')}"
    )


def now_utc() -> str:
    """The current time, as the documents print it."""
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")


def command_line(name: str, argv: Sequence[str]) -> str:
    """The command that reruns benchmark `name` with options `argv`, as the documents print it."""
    return shlex.join(["python", "-m", "bench", name, *argv])


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"


def read_section(name: str, doc: Path = DOC) -> str:
    """The text of section `name` of `doc`, empty when there is none."""
    start, end = _markers(name)
    current = doc.read_text(encoding="utf-8") if doc.exists() else ""
    _, found, rest = current.partition(start)
    return rest.partition(end)[0] if found and end in rest else ""


def write_section(name: str, text: str, doc: Path = DOC, *, first: bool = False) -> None:
    """Replace the section `name` of `doc` with `text`.

    A section not there yet is appended, or with `first` put before every
    other benchmark section (right after the document's introduction).
    """
    start, end = _markers(name)
    section = f"{start}\n{text.strip()}\n{end}"
    current = doc.read_text(encoding="utf-8") if doc.exists() else DOC_HEADER
    head, found, rest = current.partition(start)
    if found and end in rest:
        updated = head + section + rest.partition(end)[2]
    elif first and "\n<!-- bench:" in current:
        before, marker, after = current.partition("\n<!-- bench:")
        updated = before + "\n" + section + "\n" + marker + after
    else:
        updated = current.rstrip("\n") + "\n\n" + section + "\n"
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(updated, encoding="utf-8")


@dataclass(frozen=True)
class Figure:
    """What a run measured for one summary row (a key of :data:`SUMMARY_ROWS`).

    `measured` is the figure with the absolute figures behind it; `met` is
    None when nothing valid was measured (the run failed), and `problems`
    counts what made the run doubtful (its section lists them).
    """

    key: str
    measured: str
    met: bool | None
    command: str
    noise: str = ""
    problems: int = 0

    @property
    def verdict(self) -> str:
        if self.met is None:
            return "not measured"
        verdict = "met" if self.met else "**missed**"
        return verdict + (f" ({self.problems} problems: see its section)" if self.problems else "")


def medians_of(rounds: int) -> str:
    """How a summary row says what its figures are, e.g. `medians of 5 rounds`."""
    return "1 round" if rounds == 1 else f"medians of {rounds} rounds"


def not_measured(keys: Sequence[str], command: str, why: str) -> list[Figure]:
    """Rows for `keys` saying that the run meant to measure them failed, and why."""
    return [Figure(key, f"failed: {why}", None, command) for key in keys]


def _row_key(line: str) -> str | None:
    """The key of a summary table row (its figure cell), None for any other line."""
    cells = line.split("|")
    if len(cells) < 3:
        return None
    figure = cells[1].strip()
    return next((key for key, (label, _) in SUMMARY_ROWS.items() if label == figure), None)


def write_summary(figures: Sequence[Figure], doc: Path = DOC) -> None:
    """Rewrite the rows of `figures` in the summary at the top of `doc`, keeping the others."""
    rows: dict[str, str] = {}
    for line in read_section(SUMMARY, doc).splitlines():
        key = _row_key(line)
        if key is not None:
            rows[key] = line
    stamp = f"{now_utc()}, {code_version()}"
    for f in figures:
        label, target = SUMMARY_ROWS[f.key]
        rows[f.key] = (
            f"| {label} | {target} | {f.measured} | {f.verdict} | {f.noise or 'n/a'}"
            f" | `{f.command}` | {stamp} |"
        )
    table = [
        rows.get(key, f"| {label} | {target} | not measured yet | not measured | n/a | n/a | n/a |")
        for key, (label, target) in SUMMARY_ROWS.items()
    ]
    text = "\n".join(
        [
            "## Summary: every SPEC §11 target",
            "",
            "Rewritten row by row by each benchmark (`make bench` runs them all in one go);"
            " the sections below hold each benchmark's machine, command, rounds and noise."
            " Ratios are medians of per-round ratios of alternating A/B rounds, server and load"
            " generator pinned to different cores with `taskset`. Noise is the largest share of"
            " each core other processes (outside the benchmark) used during a round.",
            "",
            f"- Machine: {machine()}.",
            "",
            SUMMARY_HEAD,
            "|---|---|---|---|---|---|---|",
            *table,
        ]
    )
    write_section(SUMMARY, text, doc, first=True)


def finish(
    name: str,
    summary: Sequence[str],
    problems: Sequence[str],
    write_docs: bool,
    document: Callable[[], str],
    figures: Sequence[Figure] = (),
) -> int:
    """Print the summary and problems; if asked, rewrite section `name` and its summary rows.

    The exit status: 1 when there are problems, else 0.
    """
    print("\n".join(summary))
    for problem in problems:
        print(f"  problem: {problem}")
    if write_docs:
        write_section(name, document())
        write_summary(figures)
        print(
            f"  wrote the {name} section and its summary rows of {Path('docs') / 'performance.md'}"
        )
    return 1 if problems else 0


def fail(name: str, error: Exception, keys: Sequence[str], command: str, write_docs: bool) -> int:
    """Print why benchmark `name` could not run (one line); mark its summary rows; status 1."""
    print(f"bench {name}: {error}", file=sys.stderr)
    if write_docs and keys:
        write_summary(not_measured(keys, command, str(error)))
    return 1
