"""`billhook enforcement impact`, `billhook launch status` and `billhook diagnose`.

The first two print what `GET /v1/admin/impact` and `GET /v1/admin/readiness`
answer, `diagnose` the console's Diagnose page, read from this deployment's
log, projection and impact store. The counts a running server has not flushed
yet (at most its last second) are not in them.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import click
import msgspec

from billhook.api.diagnose import diagnose as diagnose_workspace
from billhook.api.diagnose import diagnosis_lines
from billhook.api.impact import DEFAULT_RETENTION_DAYS, impact_lines, impact_report
from billhook.cli.support import config_option, load, open_projection
from billhook.config import Settings
from billhook.log.backend import Log, open_log
from billhook.log.postgres import log_exists as postgres_log_exists
from billhook.projections.backend import open_live
from billhook.projections.impact import open_impact
from billhook.projections.projector import catch_up
from billhook.projections.store import ProjectionStore

_JSON = click.option("--json", "as_json", is_flag=True, help="Print the API's JSON answer.")


@click.group()
def enforcement() -> None:
    """What enforcement blocks, or would block."""


@enforcement.command("impact")
@config_option
@click.option(
    "--days",
    type=click.IntRange(1, DEFAULT_RETENTION_DAYS),
    default=30,
    show_default=True,
    help="How many days back, today included.",
)
@_JSON
def impact(config_path: Path | None, days: int, as_json: bool) -> None:
    """Per action and reason, the workspaces and checks refused (or that would be)."""
    settings = load(config_path)
    log, store = open_projection(settings)
    counts = open_impact(settings)
    try:
        report = impact_report(counts, store, settings, days=days, now=datetime.now(UTC))
    finally:
        counts.close()
        log.close()
        store.close()
    if as_json:
        click.echo(json.dumps(msgspec.to_builtins(report), indent=2))
    else:
        click.echo("\n".join(impact_lines(report)))


@click.group()
def launch() -> None:
    """Launch evidence."""


@launch.command("status")
@config_option
@_JSON
def status(config_path: Path | None, as_json: bool) -> None:
    """Each launch gate ✓ or ✗ with its evidence; exit status 1 when any is ✗."""
    # Imported here: the provider SDKs (through check-config's checks) load only for this.
    from billhook.api.launch import launch_report, report_lines

    settings = load(config_path)
    log, store = open_projection(settings)
    counts = open_impact(settings)
    try:
        report = launch_report(settings, log, store, counts, now=datetime.now(UTC))
    finally:
        counts.close()
        log.close()
        store.close()
    if as_json:
        click.echo(json.dumps(msgspec.to_builtins(report), indent=2, ensure_ascii=False))
    else:
        click.echo("\n".join(report_lines(report)))
    if not report.ready:
        raise click.exceptions.Exit(1)


@click.command()
@config_option
@click.argument("workspace")
@_JSON
def diagnose(config_path: Path | None, workspace: str, as_json: bool) -> None:
    """A short support report on WORKSPACE: ids, statuses, tiers, seqs, event types and
    times, problems and enforcement; never a payload, secret, token or local path."""
    settings = load(config_path)
    log, store = _open_quietly(settings)
    counts = open_impact(settings)
    try:
        report = diagnose_workspace(workspace, settings, log, store, counts, now=datetime.now(UTC))
    finally:
        counts.close()
        log.close()
        store.close()
    if as_json:
        click.echo(json.dumps(msgspec.to_builtins(report), indent=2, ensure_ascii=False))
    else:
        click.echo("\n".join(diagnosis_lines(report)))


def _open_quietly(settings: Settings) -> tuple[Log, ProjectionStore]:
    """`open_projection` without naming the log on stderr: the report is pasted into
    tickets, and the log's place is a local path (or a database's host)."""
    if settings.storage_url:
        found = postgres_log_exists(settings.storage_url.reveal())
    else:
        found = settings.events_path.absolute().is_file()
    if not found:
        raise click.ClickException(
            "no event log: check --config, data_dir or [storage] url (billhook serve creates it)"
        )
    log = open_log(settings)
    store = open_live(settings)
    catch_up(log, store)
    return log, store
