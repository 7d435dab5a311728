"""The `billhook` command line. Errors are one line on stderr and a non-zero exit."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click
from click._termui_impl import ProgressBar

from ingest.envelope import EventRecord
from ingest.errors import IngestError
from ingest.log import EventLog, StoredEvent
from ingest.settings import Settings, load_settings, resolve_config_path
from projections import operator
from projections.errors import ProjectionError
from projections.facts import OVERRIDE_KINDS
from projections.projector import catch_up
from projections.query import entitlement_at
from projections.store import ProjectionStore
from worker.providers import ProviderError
from worker.sync import NotLinked

F = TypeVar("F", bound=Callable[..., Any])

# Longest message of an unexpected error we print; it must stay one short line.
MAX_ERROR_CHARS = 200


class BillhookGroup(click.Group):
    """A click group that turns every failure into one line and exit status 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except (IngestError, ProjectionError, ProviderError, NotLinked) as e:
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
    except IngestError as e:
        raise click.ClickException(f"invalid config: {e}") from None


def open_existing_log(settings: Settings) -> EventLog:
    """The event log for reading; a missing one is an error, not a new empty file."""
    if not settings.events_path.is_file():
        raise click.ClickException(f"no event log at {settings.events_path}")
    return EventLog(settings.events_path)


@click.group(cls=BillhookGroup)
@click.version_option(package_name="billhook")
def main() -> None:
    """billhook: billing webhooks in, entitlements out."""


@main.command()
@config_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
)
def serve(config_path: Path | None, host: str, port: int, log_level: str) -> None:
    """Serve the webhook receiver and the API."""
    import uvicorn

    from worker import logs
    from worker.server import create_app

    settings = load(config_path)
    logs.configure(log_level)
    app = create_app(settings)
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=10,
    )


@main.group()
def events() -> None:
    """Read the event log."""


@events.command("list")
@config_option
@click.option("--provider", type=click.Choice(["stripe", "polar", "billhook"]))
@click.option("--type", "event_type", help="Only events of this type.")
@click.option(
    "--after", type=click.IntRange(min=0), default=0, help="Only events with seq > AFTER."
)
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
def events_list(
    config_path: Path | None, provider: str | None, event_type: str | None, after: int, limit: int
) -> None:
    """List events, oldest first: seq, provider, id, type, livemode, times."""
    log = open_existing_log(load(config_path))
    try:
        rows = log.read(after=after, limit=limit, provider=provider, type=event_type)
    finally:
        log.close()
    click.echo("seq\tprovider\tevent_id\ttype\tlivemode\toccurred_at\treceived_at")
    for e in rows:
        livemode = "" if e.livemode is None else str(e.livemode)
        click.echo(
            f"{e.seq}\t{e.provider}\t{e.event_id}\t{e.type}\t{livemode}"
            f"\t{e.occurred_at or ''}\t{e.received_at}"
        )


@events.command("show")
@config_option
@click.argument("ref")
@click.option("--provider", type=click.Choice(["stripe", "polar", "billhook"]))
def events_show(config_path: Path | None, ref: str, provider: str | None) -> None:
    """Show one event, by SEQ or by provider EVENT_ID, with its stored payload."""
    log = open_existing_log(load(config_path))
    try:
        found = _find(log, ref, provider)
    finally:
        log.close()
    for key in ("seq", "provider", "event_id", "type", "livemode", "occurred_at", "received_at"):
        value = getattr(found, key)
        click.echo(f"{key}: {'' if value is None else value}")
    try:
        payload = json.dumps(json.loads(found.payload), indent=2, sort_keys=True)
    except ValueError:
        payload = found.payload
    click.echo("payload:")
    click.echo(payload)


def _find(log: EventLog, ref: str, provider: str | None) -> StoredEvent:
    if ref.isascii() and ref.isdigit():
        event = log.get(int(ref))
        if event is None:
            raise click.ClickException(f"no event with seq {ref}")
        return event
    matches = log.find(ref, provider)
    if not matches:
        raise click.ClickException(f"no event with id {ref!r}")
    if len(matches) > 1:
        raise click.ClickException(f"{len(matches)} events have id {ref!r}; pass --provider")
    return matches[0]


def _projection(settings: Settings) -> tuple[EventLog, ProjectionStore]:
    """The log and an up-to-date projection store (catching up is idempotent)."""
    log = open_existing_log(settings)
    store = ProjectionStore(settings.projections_path, settings)
    catch_up(log, store)
    return log, store


@main.command()
@config_option
@click.argument("workspace")
@click.option("--as-of", help="A seq or an ISO 8601 time: the entitlement as it stood then.")
def entitlements(config_path: Path | None, workspace: str, as_of: str | None) -> None:
    """Print a workspace's entitlement as JSON (the API's answer)."""
    settings = load(config_path)
    log, store = _projection(settings)
    try:
        entitlement, at = entitlement_at(store, log, settings, workspace, as_of, datetime.now(UTC))
    finally:
        log.close()
        store.close()
    click.echo(json.dumps(entitlement.to_json(at), indent=2))


@main.group()
def override() -> None:
    """Set or revoke an operator override (appended to the log, like the admin API)."""


@override.command("set")
@config_option
@click.argument("workspace")
@click.option("--kind", required=True, type=click.Choice(OVERRIDE_KINDS))
@click.option("--tier", required=True)
@click.option("--expires-at", help="ISO 8601 time with a timezone; default: never.")
@click.option("--reason", required=True)
@click.option("--actor", required=True, help="Who is doing this (kept in the log).")
def override_set(
    config_path: Path | None,
    workspace: str,
    kind: str,
    tier: str,
    expires_at: str | None,
    reason: str,
    actor: str,
) -> None:
    """Set an override for WORKSPACE."""
    settings = load(config_path)
    record = operator.override_set(
        settings,
        workspace_id=workspace,
        kind=kind,
        tier=tier,
        expires_at=expires_at,
        reason=reason,
        actor=actor,
        now=datetime.now(UTC),
    )
    log = EventLog(settings.events_path)
    try:
        click.echo(f"seq {log.append_batch([record])[0].seq}")
    finally:
        log.close()


@override.command("revoke")
@config_option
@click.argument("workspace")
@click.option("--kind", required=True, type=click.Choice(OVERRIDE_KINDS))
@click.option("--reason", required=True)
@click.option("--actor", required=True)
def override_revoke(
    config_path: Path | None, workspace: str, kind: str, reason: str, actor: str
) -> None:
    """Revoke WORKSPACE's active override of KIND."""
    settings = load(config_path)
    log, store = _projection(settings)
    try:
        record = operator.override_revoke(
            store,
            workspace_id=workspace,
            kind=kind,
            reason=reason,
            actor=actor,
            now=datetime.now(UTC),
        )
        click.echo(f"seq {log.append_batch([record])[0].seq}")
    finally:
        log.close()
        store.close()


@main.command()
def demo() -> None:
    """Drive a realistic Stripe and Polar lifecycle through a temporary server."""
    from worker import logs
    from worker.demo import run_demo

    logs.configure("warning")
    run_demo(click.echo)


@main.command()
@config_option
@click.option("--dry-run", is_flag=True, help="Print what would change; swap nothing.")
def replay(config_path: Path | None, dry_run: bool) -> None:
    """Rebuild every projection from seq 1 and swap it in atomically."""
    from worker.replay import replay as run_replay

    settings = load(config_path)
    log = open_existing_log(settings)
    try:
        total = log.head_seq()
        bar: ProgressBar[int] = click.progressbar(
            length=total, label="replaying", show_pos=True, file=sys.stderr
        )
        with bar:
            changes = run_replay(
                log,
                settings,
                dry_run=dry_run,
                now=datetime.now(UTC),
                progress=bar.update,
                report=lambda r: click.echo(
                    f"replayed {r.events:,} events in {r.seconds:.1f} s ({r.rate:,.0f} events/s)",
                    err=True,
                ),
            )
    finally:
        log.close()
    verb = "would change" if dry_run else "changed"
    for c in changes:
        before, after = "/".join(c.before), "/".join(c.after)
        click.echo(f"{c.workspace}: {before} -> {after}")
    tail = "; nothing swapped" if dry_run else ""
    click.echo(f"{len(changes)} workspace(s) {verb} (tier/source/status){tail}")


@main.group()
def quarantine() -> None:
    """Events a reducer failed on; the next replay retries them."""


@quarantine.command("list")
@config_option
def quarantine_list(config_path: Path | None) -> None:
    """List quarantined events: seq, provider, event id, type, error."""
    settings = load(config_path)
    log, store = _projection(settings)
    try:
        rows = store.quarantine()
    finally:
        log.close()
        store.close()
    click.echo("seq\tprovider\tevent_id\ttype\terror")
    for q in rows:
        click.echo(f"{q.seq}\t{q.provider}\t{q.event_id}\t{q.type}\t{q.error}")


@main.command()
@config_option
@click.option("--threads", type=click.IntRange(1, 64), default=1, show_default=True)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
)
def worker(config_path: Path | None, threads: int, log_level: str) -> None:
    """Apply projections from dramatiq wake-ups on Redis (needs [redis] url)."""
    from worker import logs
    from worker.runner import run_worker

    settings = load(config_path)
    if not settings.redis_url:
        raise click.ClickException(
            "billhook worker needs Redis: set [redis] url or BILLHOOK_REDIS_URL"
            " (without it, billhook serve projects in-process)"
        )
    logs.configure(log_level)
    run_worker(settings, threads=threads)


def _append(log: EventLog, records: list[EventRecord]) -> int:
    """Append in batches; how many were new to the log."""
    new = 0
    for start in range(0, len(records), 500):
        new += sum(not a.duplicate for a in log.append_batch(records[start : start + 500]))
    return new


@main.command()
@config_option
@click.option("--workspace", help="Reconcile this workspace.")
@click.option("--all", "everything", is_flag=True, help="Reconcile every linked workspace.")
@click.option("--provider", type=click.Choice(["stripe", "polar"]), help="Only this provider.")
def reconcile(
    config_path: Path | None, workspace: str | None, everything: bool, provider: str | None
) -> None:
    """Heal drift: append what the provider APIs show and the projection lacks."""
    from worker.providers import sources
    from worker.sync import NotLinked, drift, workspace_snapshots

    if bool(workspace) == everything:
        raise click.UsageError("give exactly one of --workspace W or --all")
    settings = load(config_path)
    log, store = _projection(settings)
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
                appended += _append(log, found.records)
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


@main.group()
def backfill() -> None:
    """Append events the log lacks, from the provider APIs."""


@backfill.command("stripe")
@config_option
@click.option("--since", "days", type=click.IntRange(1, 30), default=30, show_default=True,
              help="Days back; Stripe keeps events for 30.")  # fmt: skip
def backfill_stripe(config_path: Path | None, days: int) -> None:
    """Page through Stripe's Events API and append the events billhook projects."""
    from ingest.envelope import stripe_record
    from projections.decode import STRIPE_PROJECTED_TYPES
    from worker.providers import StripeSource

    settings = load(config_path)
    if not settings.stripe.api_key:
        raise click.ClickException("no Stripe API key: set [stripe] api_key or STRIPE_API_KEY")
    source = StripeSource(settings.stripe.api_key.reveal(), settings.stripe.api_base)
    since = int(datetime.now(UTC).timestamp()) - days * 86_400
    events = list(source.events(since, list(STRIPE_PROJECTED_TYPES)))
    # The API lists newest first; the log reads best in the order things happened.
    records = [stripe_record(json.dumps(event, default=str)) for event in reversed(events)]
    log = EventLog(settings.events_path)
    try:
        new = _append(log, records)
    finally:
        log.close()
    click.echo(f"fetched {len(records)} event(s) of the last {days} day(s); appended {new} new")


@backfill.command("polar")
@config_option
def backfill_polar(config_path: Path | None) -> None:
    """Reconcile every Polar subscription (Polar has no events API to page)."""
    from worker.providers import PolarSource
    from worker.sync import drift

    settings = load(config_path)
    if not settings.polar.access_token:
        raise click.ClickException(
            "no Polar access token: set [polar] access_token or POLAR_ACCESS_TOKEN"
        )
    source = PolarSource(
        settings.polar.access_token.reveal(),
        server=settings.polar.server,
        server_url=settings.polar.server_url,
    )
    # Like `backfill stripe`, a backfill may be the first thing a new deployment writes.
    log = EventLog(settings.events_path)
    store = ProjectionStore(settings.projections_path, settings)
    catch_up(log, store)
    try:
        snapshots = [("polar", sub) for sub in source.all_subscriptions()]
        found = drift(snapshots, store, settings, datetime.now(UTC))
        new = _append(log, found.records)
        catch_up(log, store)
    finally:
        source.close()
        log.close()
        store.close()
    click.echo(f"checked {found.checked} Polar subscription(s); appended {new} reconciled event(s)")


# -- check-config and pilots classify -----------------------------------------------------

# Exit status of `pilots classify` for a file it cannot use (1 means "unclassified").
EXIT_BAD_FILE = 2


@main.command("check-config")
@config_option
@click.option("--online", is_flag=True, help="Also look up every mapped price and product.")
def check_config(config_path: Path | None, online: bool) -> None:
    """Preflight before paid billing: one line per check, exit 1 on any ✗."""
    from ingest.errors import ConfigError
    from worker.preflight import Check, all_checks

    path = resolve_config_path(config_path, os.environ, Path.cwd())
    try:
        settings = load_settings(path, os.environ)
    except ConfigError as e:
        click.echo(Check(False, "config", str(e)).line())
        raise click.ClickException("the config does not load; nothing else was checked") from None
    click.echo(Check(True, "config", f"loaded from {path or 'the built-in defaults'}").line())
    total = failed = 0
    for check in all_checks(settings, online=online):
        click.echo(check.line())
        total += 1
        failed += not check.ok
    if failed:
        raise click.ClickException(f"{failed} of {total} checks failed")


class BadPilotsFile(click.ClickException):
    """A pilots file that cannot be used: one line naming the row and column."""

    exit_code = EXIT_BAD_FILE


@main.group()
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
    from worker.pilots import (
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
        # Importing writes, like `override set`: a deployment without a log gets one.
        log = EventLog(settings.events_path)
        store = ProjectionStore(settings.projections_path, settings)
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
    log, store = _projection(settings)
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
