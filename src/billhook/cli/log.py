"""`billhook log`: operations on the event log file itself (backup)."""

from __future__ import annotations

from pathlib import Path

import click

from billhook.cli.support import config_option, load, open_existing_log


@click.group()
def log() -> None:
    """The event log itself: back it up while webhooks keep arriving."""


@log.command("backup")
@config_option
@click.argument("target", type=click.Path(dir_okay=False, path_type=Path))
def log_backup(config_path: Path | None, target: Path) -> None:
    """Copy the event log to TARGET (a new file) while the server keeps appending."""
    settings = load(config_path)
    source = open_existing_log(settings)
    try:
        head = source.backup(target)
    finally:
        source.close()
    click.echo(f"backed up {settings.events_path} up to seq {head} to {target}")
