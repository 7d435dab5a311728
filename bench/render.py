"""docs/performance.md from the benchmarks' JSON results: a summary, then one section each.

    python -m bench render [--results DIR] [--docs PATH]

First a summary, one row per SPEC §11 target (figure, target, measured, met or
missed, the command that reproduces it); then a short section per benchmark
between `<!-- bench:NAME -->` markers (machine, command, method, figures,
rounds, noise, problems). Sections and rows of benchmarks without a result
stay as they were, and so does text outside the markers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

HEADER = """# Performance

Figures measured by `make bench` (SPEC §11 lists the targets), rendered by
`python -m bench render` from the JSON results in bench/results/. Text between
`<!-- bench:NAME -->` markers is rewritten; write notes outside them.
"""
# Every SPEC §11 target in its order: key -> (benchmark, figure, target). No benchmark: None.
_INGEST = (
    "Ingest: unique signed Stripe events/s, 32 connections, durable ack ÷ minimal Starlette POST"
)
_VISIBLE = "Ack → visible, p99 at 500 events/s, "
# The target of a figure SPEC §11 asks to report without one.
NO_TARGET = "none (reported)"
FIGURES: dict[str, tuple[str | None, str, str]] = {
    "ingest_ratio": ("ingest", _INGEST, "≥ 0.6"),
    "ingest_p99": ("ingest_latency", "Ingest: p99 latency (send → durable ack) at 1,000 events/s",
                   "< 20 ms"),
    "visible_embedded": ("visibility", _VISIBLE + "embedded projector", "< 100 ms"),
    "visible_redis": ("redis_visibility", _VISIBLE + "via the Redis worker", "< 250 ms"),
    "replay_rate": ("replay", "Replay of 1,000,000 events (50,000 subscriptions): rate",
                    "≥ 50,000 events/s"),
    "replay_ratio": ("replay", "Replay ÷ raw scan + `json.loads` of the same log", "≥ 0.5"),
    "replay_rss": ("replay", "Replay: peak RSS", "< 1 GiB"),
    "reads_get": ("reads", "Entitlement GET requests/s ÷ minimal Starlette GET", "≥ 0.7"),
    "reads_check": ("reads", "Check requests/s ÷ minimal Starlette GET", "≥ 0.7"),
    "pg_ingest_ratio": ("pg_ingest", "PostgreSQL: ingest events/s ÷ the SQLite figure, one"
                        " receiver", "≥ 0.5"),
    "pg_ingest_two": ("pg_ingest_two", "PostgreSQL: ingest with two receiver processes ÷ one,"
                      " with each process's CPU", NO_TARGET),
    "pg_visible": ("pg_visibility", "PostgreSQL: ack → visible, p99 at 500 events/s, embedded"
                   " projector", "< 250 ms"),
    "pg_replay_rate": ("pg_replay", "PostgreSQL: replay of 1,000,000 events (50,000"
                       " subscriptions)", "≥ 20,000 events/s"),
    "client": ("client_check", "Client: cached `check` ÷ an HTTP `check` per call",
               "≥ 50 times faster"),
    "feed_lag": ("feed_lag", "Feed lag (commit → change on the stream), p99 at 500 events/s",
                 "< 100 ms"),
    "outbound_latency": ("outbound_latency", "Outbound: change → delivered (ack → delivered),"
                         " p99 at 500 changes/s", "< 250 ms"),
    "outbound_throughput": ("outbound_throughput", "Outbound: deliveries/s to one endpoint"
                            " answering in 20 ms", "≥ 1,000/s"),
}  # fmt: skip
# A section's opening marker, alone on its line (the introduction names one in passing).
FIRST_SECTION = re.compile(r"^<!-- bench:", re.MULTILINE)
SUMMARY_HEAD = (
    "| SPEC §11 figure | target | measured | verdict | reproduce with |\n|---|---|---|---|---|"
)
QUICK_NOTE = "`--quick`: short rounds, small data, not comparable with full runs"


def verdict(met: bool | None) -> str:
    """A measured figure's verdict; None: a figure SPEC §11 asks for without a target."""
    return "reported" if met is None else "met" if met else "**missed**"


def cell(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int | float) else str(value).replace("|", "\\|")


def table(rows: Sequence[Mapping[str, Any]]) -> str:
    """A Markdown table of `rows` (column → value), the first row's columns; empty for none."""
    if not rows:
        return ""
    head = list(rows[0])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(
        lines + ["| " + " | ".join(cell(r.get(h, "")) for h in head) + " |" for r in rows]
    )


def section(r: Mapping[str, Any]) -> str:
    """The section of one benchmark result."""
    quick = f" **{QUICK_NOTE}.**" if r["quick"] else ""
    if "error" in r:
        return (
            f"## {r['title']}\n\nFailed {r['measured_at']} ({r['code']}) with `{r['command']}`:"
            f" {r['error']}{quick}"
        )
    targets = "; ".join(
        f"{FIGURES[f['key']][1]}: no target, reported"
        if FIGURES[f["key"]][2] == NO_TARGET
        else f"{FIGURES[f['key']][1]} {FIGURES[f['key']][2]}: {verdict(f['met'])}"
        for f in r["figures"]
    )
    method = [
        f"Machine: {r['machine']}.",
        *r["method"],
        f"Noise: other processes used up to {r['noise']} while it ran.",
    ]
    blocks = [
        f"## {r['title']}",
        f"Measured {r['measured_at']} at {r['code']} with `{r['command']}`.{quick}"
        f" Target (SPEC §11): {targets}.",
        "\n".join(f"- {line}" for line in method),
        table([{"figure": k, "value": v} for k, v in r["values"].items()]),
        table(r["rounds"]),
        "Problems: " + ("; ".join(r["problems"]) if r["problems"] else "none."),
    ]
    return "\n\n".join(block for block in blocks if block)


def summary(results: Mapping[str, Mapping[str, Any]], old: str) -> str:
    """The summary table: rows of this run's results, the old rows for the others."""
    kept = {}
    for line in old.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        key = next((k for k, (_, label, _) in FIGURES.items() if cells[0] == label), None)
        if key and len(cells) >= 5:
            # Rows of the older 7-column layout: figure, target, measured, verdict, command.
            kept[key] = [*cells[:4], cells[5] if len(cells) == 7 else cells[4]]
    rows = []
    for key, (bench, label, target) in FIGURES.items():
        r = results.get(bench or "")
        found = next((f for f in r["figures"] if f["key"] == key), None) if r else None
        if r and "error" in r:
            cells = [label, target, f"failed: {r['error']}", "not measured", f"`{r['command']}`"]
        elif r and found:
            measured = found["measured"] + (f" ({QUICK_NOTE})" if r["quick"] else "")
            cells = [label, target, measured, verdict(found["met"]), f"`{r['command']}`"]
        else:
            none = "no benchmark in bench/ yet" if bench is None else "not measured yet"
            cells = kept.get(key, [label, target, none, "not measured", "n/a"])
        rows.append("| " + " | ".join(cells) + " |")
    machines = sorted({r["machine"] for r in results.values()})
    return "\n".join(
        [
            "## Summary: every SPEC §11 target",
            "",
            "Ratios are medians of per-round ratios of alternating A/B rounds, server and load"
            " generator pinned to different cores with `taskset`; each section below gives the"
            " machine, the command, the rounds and the noise (the most other processes took of"
            " each core while it ran).",
            *([""] + [f"- Machine: {m}." for m in machines] if machines else []),
            "",
            SUMMARY_HEAD,
            *rows,
        ]
    )


def replace(doc: str, name: str, text: str, *, first: bool = False) -> str:
    """`doc` with section `name` (between its markers) replaced by `text`, or added."""
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{start}\n{text.strip()}\n{end}"
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.DOTALL)
    if pattern.search(doc):
        return pattern.sub(lambda _: block, doc, count=1)
    if first and (at := FIRST_SECTION.search(doc)):
        return doc[: at.start()] + block + "\n\n" + doc[at.start() :]
    return doc.rstrip("\n") + "\n\n" + block + "\n"


def render(results_dir: Path, doc_path: Path) -> None:
    """Rewrite `doc_path` from the results in `results_dir` (keeping what they do not cover)."""
    found = (json.loads(p.read_text(encoding="utf-8")) for p in sorted(results_dir.glob("*.json")))
    results = {r["name"]: r for r in found}
    doc = doc_path.read_text(encoding="utf-8") if doc_path.exists() else HEADER
    # The introduction, before the first section, says how the document is made: ours.
    doc = HEADER + "\n" + doc[at.start() :] if (at := FIRST_SECTION.search(doc)) else doc
    old = re.search(r"<!-- bench:summary -->(.*?)<!-- /bench:summary -->", doc, re.DOTALL)
    for name, r in results.items():
        doc = replace(doc, name, section(r))
    doc = replace(doc, "summary", summary(results, old.group(1) if old else ""), first=True)
    doc_path.parent.mkdir(parents=True, exist_ok=True)
    doc_path.write_text(doc, encoding="utf-8")
