"""JSON texts with named holes, filled by string formatting instead of building dicts.

A generator of a million events cannot afford `copy.deepcopy` and `json.dumps`
of a 4 KB object per event. A :class:`Template` is serialized once from an
object whose variable values are strings `"@@name@@"`; rendering substitutes
each hole (quotes included) with a JSON text the caller gives, so a hole may
take a string, a number, `null`, or a whole object.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from typing import Any

_HOLE = re.compile(r'"@@(\w+)@@"')


def hole(name: str) -> str:
    """The placeholder value of the hole `name`."""
    return f"@@{name}@@"


class Template:
    """A JSON object serialized once, with holes to fill by name."""

    def __init__(self, obj: Any) -> None:
        """Serialize `obj` once and find its holes."""
        parts = _HOLE.split(json.dumps(obj))
        # Literal text and hole names alternate: literal, name, literal, ..., literal.
        self._literals = parts[0::2]
        self._names = parts[1::2]
        self._pieces: list[str] = [""] * len(parts)
        self.holes = frozenset(self._names)

    def render(self, values: Mapping[str, str]) -> str:
        """The JSON text with every hole replaced by its value (a JSON text itself)."""
        # Slice assignment and one join: about 3x faster than str.format_map here.
        pieces = self._pieces.copy()
        pieces[0::2] = self._literals
        pieces[1::2] = [values[name] for name in self._names]
        return "".join(pieces)


def s(value: str) -> str:
    """A JSON string of `value`, which must need no escaping (ids, ASCII words)."""
    return f'"{value}"'


def n(value: int | None) -> str:
    """A JSON integer, or null."""
    return "null" if value is None else str(value)


def b(flag: bool) -> str:
    """A JSON boolean."""
    return "true" if flag else "false"


def opt(value: str | None) -> str:
    """A JSON string, or null."""
    return "null" if value is None else f'"{value}"'


def iso(ts: int | None) -> str:
    """A JSON ISO 8601 UTC time (seconds) of Unix time `ts`, or null."""
    if ts is None:
        return "null"
    return time.strftime('"%Y-%m-%dT%H:%M:%SZ"', time.gmtime(ts))


def obj(value: object) -> str:
    """Any value as a JSON text (for the few holes that take whole objects)."""
    return json.dumps(value)
