"""What every `billhook` command shares: config, one-line errors, the log and store."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from billhook.config import Settings, load_settings, resolve_config_path
from billhook.domain.records import EventRecord
from billhook.errors import BillhookError, ConfigError
from billhook.log.backend import Log, describe, open_log
from billhook.log.postgres import log_exists as postgres_log_exists
from billhook.projections.backend import open_live
from billhook.projections.projector import catch_up
from billhook.projections.store import ProjectionStore

F = TypeVar("F", bound=Callable[..., Any])

logger = logging.getLogger(__name__)

# Longest message of an unexpected error we print; it must stay one short line.
MAX_ERROR_CHARS = 200
# Exit status when stdout's reader went away: 128 + SIGPIPE, what a shell reports.
EXIT_BROKEN_PIPE = 141


class BillhookGroup(click.Group):
    """A click group that turns every failure into one line and exit status 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except BrokenPipeError:
            # The reader went away (`billhook events list | head -2`): stop quietly, as a
            # shell pipeline expects. Later writes (at exit) go nowhere instead of failing.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            raise click.exceptions.Exit(EXIT_BROKEN_PIPE) from None
        except BillhookError as e:
            raise click.ClickException(str(e)) from None
        except Exception as e:
            message = " ".join(str(e).split())[:MAX_ERROR_CHARS]
            raise click.ClickException(f"unexpected {e.__class__.__name__}: {message}") from None


def config_option(command: F) -> F:
    """`--config PATH` on every command; else $BILLHOOK_CONFIG, else ./billhook.toml."""
    return click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="Config file [default: $BILLHOOK_CONFIG, else ./billhook.toml, else built-ins].",
    )(command)


def load(config_path: Path | None) -> Settings:
    path = resolve_config_path(config_path, os.environ, Path.cwd())
    try:
        return load_settings(path, os.environ)
    except ConfigError as e:
        raise click.ClickException(f"invalid config: {e}") from None


def announce_log(settings: Settings) -> str:
    """Say on stderr which log this command uses (`log: /abs/path/events.db`, or
    `log: PostgreSQL database host/name`); that description."""
    where = describe(settings)
    click.echo(f"log: {where}", err=True)
    return where


def log_event_log(settings: Settings) -> None:
    """:func:`announce_log` for `serve` and `worker`, whose stderr is a stream of JSON
    lines once logging is configured: one line of it, `"msg": "event log", "path": …`."""
    logger.info("event log", extra={"fields": {"path": describe(settings)}})


def open_existing_log(settings: Settings) -> Log:
    """The event log, for reading or writing; announced (:func:`announce_log`).

    A missing one is a one-line error naming where it was looked for, never a new
    empty log (nor its directory, nor its schema) in a mistyped place: only `serve`
    and `worker` create one (and announce it themselves).
    """
    if settings.storage_url:
        found = postgres_log_exists(settings.storage_url.reveal())
        hint = "check [storage] url"
    else:
        found = settings.events_path.absolute().is_file()
        hint = "check --config and data_dir"
    if not found:
        raise click.ClickException(
            f"no event log at {describe(settings)}: {hint} (billhook serve creates it)"
        )
    announce_log(settings)
    return open_log(settings)


def open_projection(settings: Settings) -> tuple[Log, ProjectionStore]:
    """The log and an up-to-date projection store (catching up is idempotent)."""
    log = open_existing_log(settings)
    store = open_live(settings)
    catch_up(log, store)
    return log, store


def append_all(log: Log, records: list[EventRecord]) -> int:
    """Append in batches; how many were new to the log."""
    new = 0
    for start in range(0, len(records), 500):
        new += sum(not a.duplicate for a in log.append_batch(records[start : start + 500]))
    return new
