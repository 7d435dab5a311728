"""Reading what `billhook demo` prints: its table's rows and the calls below them."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from billhook.cli.demo import CALL, COLUMNS, LEGEND, WIDTHS

# The widest line the demo may print: a 120-column terminal.
MAX_WIDTH = 120


@dataclass
class DemoTable:
    """`rows`: step -> workspace, tier, source, status, attention, next, seats;
    `calls`: step -> the answer printed below its row; `rest`: every other line."""

    rows: dict[str, list[str]] = field(default_factory=dict)
    calls: dict[str, str] = field(default_factory=dict)
    rest: list[str] = field(default_factory=list)


def parse_demo(out: str) -> DemoTable:
    """The table in the demo's output; asserts its legend and header are there, in order."""
    lines = out.splitlines()
    header = lines.index(
        "  ".join(c.ljust(w) for c, w in zip(COLUMNS, WIDTHS, strict=True)).rstrip()
    )
    assert lines[header - 1] == LEGEND, out
    table = DemoTable(rest=lines[: header - 1])
    step = None
    for line in lines[header + 1 :]:
        cells = re.split(r"\s{2,}", line)
        if line.startswith(CALL) and step is not None:
            table.calls[step] = line.removeprefix(CALL)
        elif len(cells) == len(COLUMNS):
            step = cells[0]
            table.rows[step] = cells[1:]
        else:
            table.rest.append(line)
    return table
