"""What every benchmark reports: the machine, and its own section of docs/performance.md.

Each benchmark owns one section of the document, between the markers
`<!-- bench:NAME -->` and `<!-- /bench:NAME -->`, and rewrites only that
section on each run; everything outside the markers is left as it is.
"""

from __future__ import annotations

import os
import platform
import subprocess
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from bench.tools import REPO

DOC = REPO / "docs" / "performance.md"
DOC_HEADER = """# Performance

Figures measured by `make bench` (SPEC §11 lists the targets). Each section
below is rewritten by its benchmark on every run, between its
`<!-- bench:NAME -->` markers; write notes outside the markers.
"""


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


def code_version() -> str:
    """The commit measured, e.g. `f3a38e4`, `+ uncommitted changes` when the tree is dirty."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"
    return f"{head} + uncommitted changes" if dirty else head


def now_utc() -> str:
    """The current time, as the documents print it."""
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")


def write_section(name: str, text: str, doc: Path = DOC) -> None:
    """Replace the section `name` of `doc` with `text` (appended when it is not there yet)."""
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    section = f"{start}\n{text.strip()}\n{end}"
    current = doc.read_text(encoding="utf-8") if doc.exists() else DOC_HEADER
    head, found, rest = current.partition(start)
    if found and end in rest:
        updated = head + section + rest.partition(end)[2]
    else:
        updated = current.rstrip("\n") + "\n\n" + section + "\n"
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(updated, encoding="utf-8")


def finish(
    name: str,
    summary: Sequence[str],
    problems: Sequence[str],
    write_docs: bool,
    document: Callable[[], str],
) -> int:
    """Print the summary and problems, rewrite section `name` if asked; the exit status."""
    print("\n".join(summary))
    for problem in problems:
        print(f"  problem: {problem}")
    if write_docs:
        write_section(name, document())
        print(f"  wrote the {name} section of {Path('docs') / 'performance.md'}")
    return 1 if problems else 0
