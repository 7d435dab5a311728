"""Ack → visible p99 at 500 events/s on PostgreSQL (SPEC §11, §4a): bench/visibility.py's method.

`billhook serve` with its embedded projector and `[storage] url` on a
throwaway database of the machine's PostgreSQL (created for the run, dropped
after), the backends serving it pinned to the server's core (bench/postgres.py);
the same workspaces, open-loop load and polling as `python -m bench visibility`.
The target (p99 < 250 ms) is in bench/visibility.py's KINDS.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from bench import postgres, visibility

NAMES = ("pg_visibility",)
FULL = visibility.FULL
QUICK = visibility.QUICK


def add_arguments(parser: argparse.ArgumentParser) -> None:
    visibility.add_arguments(parser)
    postgres.add_postgres_argument(parser)


def run(name: str, args: argparse.Namespace, argv: Sequence[str]) -> dict[str, Any]:
    with postgres.pg_deployment(args) as (url, backends):
        record = visibility.run(
            name,
            args,
            argv,
            storage=visibility.Storage(url, backends.cpu_s, backends.placement()),
        )
    if backends.pin_problem:
        record["problems"].append(backends.pin_problem)
    return record
