"""Commands that talk to the provider APIs: reconcile, backfill, check-config, pilots."""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

import click

from billhook.cli.support import (
    append_all,
    config_option,
    load,
    open_existing_log,
    open_projection,
)
from billhook.config import load_settings, resolve_config_path
from billhook.errors import ConfigError
from billhook.projections.backend import open_live
from billhook.projections.projector import catch_up
from billhook.providers.clients import ProviderError


@click.command()
@config_option
@click.option("--workspace", help="Reconcile this workspace.")
@click.option("--all", "everything", is_flag=True, help="Reconcile every linked workspace.")
@click.option("--provider", type=click.Choice(["stripe", "polar"]), help="Only this provider.")
def reconcile(
    config_path: Path | None, workspace: str | None, everything: bool, provider: str | None
) -> None:
    """Heal drift: append what the provider APIs show and the projection lacks."""
    from billhook.providers.clients import sources
    from billhook.sync.reconcile import NotLinked, drift, workspace_snapshots

    if bool(workspace) == everything:
        raise click.UsageError("give exactly one of --workspace W or --all")
    settings = load(config_path)
    log, store = open_projection(settings)
    providers = sources(settings)
    checked = appended = 0
    failures: list[str] = []
    try:
        targets = [workspace] if workspace else sorted(store.workspaces())
        with click.progressbar(targets, label="reconciling", file=sys.stderr) as bar:
            for target in bar:
                try:
                    snapshots = workspace_snapshots(target, store, providers, provider)
                except NotLinked:
                    if workspace:
                        raise
                    continue
                except ProviderError as e:
                    if workspace:
                        raise
                    failures.append(f"{target}: {e}")
                    continue
                found = drift(snapshots, store, settings, datetime.now(UTC))
                checked += found.checked
                appended += append_all(log, found.records)
                catch_up(log, store)
    finally:
        log.close()
        store.close()
        for source in providers.values():
            source.close()
    for failure in failures:
        click.echo(f"failed: {failure}", err=True)
    click.echo(
        f"checked {checked} subscription(s) in {len(targets)} workspace(s);"
        f" drift healed: {appended} billhook.reconciled event(s) appended"
    )
    if failures:
        raise click.ClickException(f"{len(failures)} workspace(s) could not be reconciled")


@click.group()
def backfill() -> None:
    """Append events the log lacks, from the provider APIs."""


@backfill.command("stripe")
@config_option
@click.option("--since", "days", type=click.IntRange(1, 30), default=30, show_default=True,
              help="Days back; Stripe keeps events for 30.")  # fmt: skip
@click.option("--account", "accounts", multiple=True, metavar="ACCT",
              help="Also a Stripe Connect account's events (repeatable).")  # fmt: skip
def backfill_stripe(config_path: Path | None, days: int, accounts: tuple[str, ...]) -> None:
    """Page through Stripe's Events API and append the events billhook projects."""
    from billhook.providers.stripe.client import StripeSource
    from billhook.providers.stripe.decode import STRIPE_PROJECTED_TYPES
    from billhook.providers.stripe.webhook import stripe_record

    settings = load(config_path)
    if not settings.stripe.api_key:
        raise click.ClickException("no Stripe API key: set [stripe] api_key or STRIPE_API_KEY")
    # Before any request: a log that is not there is a mistyped path, not one to create.
    log = open_existing_log(settings)
    try:
        source = StripeSource(settings.stripe.api_key.reveal(), settings.stripe.api_base)
        since = int(datetime.now(UTC).timestamp()) - days * 86_400
        # The API lists newest first; the log reads best in the order things happened.
        events = list(reversed(list(source.events(since, list(STRIPE_PROJECTED_TYPES)))))
        for account in accounts:  # each comes with `account` set, as Connect webhooks do
            events += reversed(list(source.events(since, list(STRIPE_PROJECTED_TYPES), account)))
        events.sort(key=lambda event: int(event.get("created") or 0))
        records = [stripe_record(json.dumps(event, default=str)) for event in events]
        new = append_all(log, records)
    finally:
        log.close()
    click.echo(f"fetched {len(records)} event(s) of the last {days} day(s); appended {new} new")


@backfill.command("polar")
@config_option
def backfill_polar(config_path: Path | None) -> None:
    """Reconcile every Polar subscription (Polar has no events API to page)."""
    from billhook.providers.polar.client import PolarSource
    from billhook.sync.reconcile import drift

    settings = load(config_path)
    if not settings.polar.access_token:
        raise click.ClickException(
            "no Polar access token: set [polar] access_token or POLAR_ACCESS_TOKEN"
        )
    log, store = open_projection(settings)
    source = PolarSource(
        settings.polar.access_token.reveal(),
        server=settings.polar.server,
        server_url=settings.polar.server_url,
    )
    try:
        snapshots = [("polar", sub) for sub in source.all_subscriptions()]
        found = drift(snapshots, store, settings, datetime.now(UTC))
        new = append_all(log, found.records)
        catch_up(log, store)
    finally:
        source.close()
        log.close()
        store.close()
    click.echo(f"checked {found.checked} Polar subscription(s); appended {new} reconciled event(s)")


# -- check-config and pilots classify -----------------------------------------------------

# Exit status of `pilots classify` for a file it cannot use (1 means "unclassified").
EXIT_BAD_FILE = 2


@click.command("check-config")
@config_option
@click.option("--online", is_flag=True, help="Also look up every mapped price and product.")
def check_config(config_path: Path | None, online: bool) -> None:
    """Preflight before serving and paid billing: one line per check (✓, ! a warning,
    ✗ a failure), then `N checks, M failed` counting those lines; exit 1 on any ✗."""
    from billhook.sync.preflight import Check, all_checks

    path = resolve_config_path(config_path, os.environ, Path.cwd())
    try:
        settings = load_settings(path, os.environ)
    except ConfigError as e:
        click.echo(Check(False, "config", str(e)).line())
        raise click.ClickException("the config does not load; nothing else was checked") from None
    printed = [Check(True, "config", f"loaded from {path or 'the built-in defaults'}")]
    click.echo(printed[0].line())
    for check in all_checks(settings, online=online):
        click.echo(check.line())
        printed.append(check)
    failed = sum(not c.ok for c in printed)
    warned = sum(c.ok and c.warning for c in printed)
    summary = f"{len(printed)} checks, {failed} failed"
    if warned:
        summary += f", {warned} warning{'s' if warned > 1 else ''}"
    if failed:
        raise click.ClickException(summary)
    click.echo(summary)


class BadPilotsFile(click.ClickException):
    """A pilots file that cannot be used: one line naming the row and column."""

    exit_code = EXIT_BAD_FILE


@click.group()
def pilots() -> None:
    """Pilot workspaces: classify every one before turning on enforcement."""


@pilots.command("classify")
@config_option
@click.argument(
    "csv_file", metavar="FILE.csv", type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option("--actor", help="Who imports (kept in the log); needed to import.")
@click.option("--reason", help="For rows without one [default: pilots classify FILE.csv].")
def pilots_classify(
    config_path: Path | None, csv_file: Path, actor: str | None, reason: str | None
) -> None:
    """Import the classifications in FILE.csv, or report how its workspaces stand.

    Columns: workspace_id, and optionally classification (manual_pilot,
    enterprise_contract, explicit_solo) with tier, expires_at and reason. With
    classifications, the overrides not already in force are appended in one
    batch. Without, each workspace's classification is printed, and the exit
    status is 1 while any is unclassified. A file it cannot use exits with 2.
    """
    from billhook.cli.pilots import (
        UNCLASSIFIED,
        PilotsFileError,
        import_lines,
        import_rows,
        parse_pilots,
        report_lines,
        report_rows,
    )

    settings = load(config_path)
    now = datetime.now(UTC)
    try:
        parsed = parse_pilots(csv_file.read_text(encoding="utf-8-sig"), settings, now)
    except PilotsFileError as e:
        raise BadPilotsFile(f"{csv_file.name}: {e}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise BadPilotsFile(f"{csv_file.name}: unreadable ({e.__class__.__name__})") from None
    if parsed.classifies and (not actor or not actor.strip()):
        raise click.UsageError("--actor is required to import a classification column")
    if parsed.classifies:
        log = open_existing_log(settings)
        store = open_live(settings)
        try:
            reason = reason or f"pilots classify {csv_file.name}"
            results = import_rows(
                log, store, parsed.rows, settings, actor=str(actor), reason=reason, now=now
            )
        finally:
            log.close()
            store.close()
        for line in import_lines(results):
            click.echo(line)
        return
    log, store = open_projection(settings)
    try:
        reported = report_rows(store, parsed.rows, settings, now)
    finally:
        log.close()
        store.close()
    for line in report_lines(reported):
        click.echo(line)
    unclassified = sum(r.classification == UNCLASSIFIED for r in reported)
    if unclassified:
        raise click.ClickException(
            f"{unclassified} workspace(s) unclassified: classify them before enforcement"
        )
