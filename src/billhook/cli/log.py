"""`billhook log`: operations on the event log itself (backup, copy to PostgreSQL)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from billhook.cli.support import config_option, load, open_existing_log
from billhook.config import storage_url_problem
from billhook.log.backend import database_name, describe
from billhook.log.copy import copy_log
from billhook.log.sqlite import EventLog


@click.group()
def log() -> None:
    """The event log itself: back it up, or move it to PostgreSQL."""


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


@log.command("copy")
@config_option
@click.option(
    "--to",
    "url",
    required=True,
    metavar="postgresql://…",
    help="The PostgreSQL database to fill; its log must be empty. A password is better"
    " left to PGPASSWORD or ~/.pgpass than put here.",
)
def log_copy(config_path: Path | None, url: str) -> None:
    """Copy the configured SQLite log into an empty PostgreSQL log, seq and bytes intact.

    Stop `billhook serve` and workers first: events that arrive during the copy
    would not be in it (the copy then fails and keeps nothing).
    """
    settings = load(config_path)
    if settings.storage_url:
        raise click.ClickException(
            f"the configured log is already in PostgreSQL ({describe(settings)}):"
            " log copy reads an SQLite log: use the SQLite deployment's config, with no"
            " [storage] url and no BILLHOOK_DATABASE_URL"
        )
    if not url.startswith(("postgresql://", "postgres://")):
        raise click.ClickException("--to must be a postgresql:// URL")
    if problem := storage_url_problem(url):
        raise click.ClickException(f"--to: {problem}")
    source = open_existing_log(settings)
    assert isinstance(source, EventLog)  # no storage url: the SQLite log
    where = database_name(url)
    try:
        head = source.head_seq()
        with click.progressbar(length=head, label="copying", show_pos=True, file=sys.stderr) as bar:
            done = [0]

            def advance(seq: int) -> None:
                bar.update(seq - done[0])
                done[0] = seq

            copied = copy_log(source, url, progress=advance)
    finally:
        source.close()
    click.echo(f"copied {copied.events} events (up to seq {copied.head}) to {where}")
    click.echo(f"verified: {copied.events} events, sha256 {copied.digest} in both logs")
    click.echo(
        "next: set [storage] url (or BILLHOOK_DATABASE_URL) to this database, run"
        " `billhook replay` to build the projections there, then start billhook on it"
    )
