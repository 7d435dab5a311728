"""The `billhook` command line. Errors are one line on stderr and a non-zero exit."""

from __future__ import annotations

import gc
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

import click
import msgspec
from click._termui_impl import ProgressBar

from billhook.api.schemas import entitlement_answer
from billhook.cli import launch as cli_launch
from billhook.cli import outbound as cli_outbound
from billhook.cli.log import log
from billhook.cli.support import (
    BillhookGroup,
    config_option,
    load,
    log_event_log,
    open_existing_log,
    open_projection,
)
from billhook.config import DEFAULT_CONFIG_NAME
from billhook.domain.facts import OVERRIDE_KINDS
from billhook.domain.records import StoredEvent
from billhook.log.backend import Log
from billhook.projections import actions as operator
from billhook.projections.query import entitlement_at
from billhook.providers.reasons import family


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

    from billhook.api.app import create_app
    from billhook.api.deadlines import uvicorn_options
    from billhook.cli.devconfig import program_name
    from billhook.cli.startup import before_serving
    from billhook.observability import logs

    settings = load(config_path)
    logs.configure(log_level)
    log_event_log(settings)
    before_serving(
        settings, host, port, program_name(sys.argv[0]), lambda s: click.echo(s, err=True)
    )
    app = create_app(settings)
    # What is loaded by now (the SDKs, the app) lives as long as the process. Left to the
    # collector, each full collection walks all of it (~90,000 objects) while holding the
    # GIL, stalling every request in flight for 50-170 ms (docs/performance.md).
    gc.collect()
    gc.freeze()
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=10,
        **uvicorn_options(settings),
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


def _find(log: Log, ref: str, provider: str | None) -> StoredEvent:
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


@main.command()
@config_option
@click.argument("workspace")
@click.option("--as-of", help="A seq or an ISO 8601 time: the entitlement as it stood then.")
def entitlements(config_path: Path | None, workspace: str, as_of: str | None) -> None:
    """Print a workspace's entitlement as JSON (the API's answer)."""
    settings = load(config_path)
    log, store = open_projection(settings)
    try:
        entitlement, at = entitlement_at(store, log, settings, workspace, as_of, datetime.now(UTC))
    finally:
        log.close()
        store.close()
    answer = msgspec.to_builtins(entitlement_answer(entitlement, at))
    click.echo(json.dumps(answer, indent=2))


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
    log = open_existing_log(settings)
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
    log, store = open_projection(settings)
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


@main.command("init")
@click.argument(
    "path", type=click.Path(dir_okay=False, path_type=Path), default=DEFAULT_CONFIG_NAME
)
def init_command(path: Path) -> None:
    """Write PATH (./billhook.toml): a commented config with fresh tokens, to fill in."""
    from billhook.cli.init_config import next_steps, write_new_config

    try:
        write_new_config(path)
    except FileExistsError:
        raise click.ClickException(
            f"{path} exists; billhook init never overwrites a config (move it, or give a new PATH)"
        ) from None
    except OSError as e:
        raise click.ClickException(f"cannot write {path}: {e.strerror or e}") from None
    for line in next_steps(path, Path.cwd()):
        click.echo(line)


@main.command()
@click.option(
    "--target",
    metavar="URL",
    help="Deliver to the billhook serving at URL (`make run`: http://127.0.0.1:8000),"
    " filling its log, instead of to a temporary server.",
)
@click.option(
    "--stripe-secret",
    help="With --target: the Stripe webhook secret it trusts [default: examples/dev.toml's].",
)
@click.option(
    "--polar-secret",
    help="With --target: the Polar webhook secret it trusts [default: examples/dev.toml's].",
)
@click.option(
    "--admin-token",
    help="With --target: one of its admin tokens [default: examples/dev.toml's].",
)
@click.option(
    "--stripe-fake-port",
    type=click.IntRange(1, 65535),
    help="With --target: also buy, through billhook's Stripe fake listening on this port;"
    " the target must serve with STRIPE_API_BASE=http://127.0.0.1:PORT and STRIPE_API_KEY the"
    " fake's key (billhook.testing.settings.STRIPE_API_KEY). Without it, no purchase.",
)
def demo(
    target: str | None,
    stripe_secret: str | None,
    polar_secret: str | None,
    admin_token: str | None,
    stripe_fake_port: int | None,
) -> None:
    """Drive a realistic Stripe and Polar lifecycle through a temporary server, or --target."""
    from billhook.cli import devconfig
    from billhook.cli.demo import Target, run_demo
    from billhook.observability import logs

    given = {
        "--stripe-secret": stripe_secret,
        "--polar-secret": polar_secret,
        "--admin-token": admin_token,
        "--stripe-fake-port": stripe_fake_port,
    }
    if target is None and any(value is not None for value in given.values()):
        used = ", ".join(name for name, value in given.items() if value is not None)
        raise click.UsageError(f"{used}: only with --target")
    logs.configure("warning")
    run_demo(
        click.echo,
        None
        if target is None
        else Target(
            url=target,
            stripe_secret=stripe_secret or devconfig.DEV_STRIPE_WEBHOOK_SECRET,
            polar_secret=polar_secret or devconfig.DEV_POLAR_WEBHOOK_SECRET,
            admin_token=admin_token or devconfig.DEV_ADMIN_TOKEN,
            stripe_fake_port=stripe_fake_port,
        ),
    )


@main.command()
@config_option
@click.option("--dry-run", is_flag=True, help="Print what would change; swap nothing.")
def replay(config_path: Path | None, dry_run: bool) -> None:
    """Rebuild every projection from seq 1 and swap it in atomically."""
    from billhook.runners.replay import replay as run_replay

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
    """List quarantined events: seq, provider, event id, type, error.

    On stderr, after the list: for each kind of reason, how many events and
    what would make them readable (fixed sentences, no payload data).
    """
    settings = load(config_path)
    log, store = open_projection(settings)
    try:
        rows = store.quarantine()
    finally:
        log.close()
        store.close()
    click.echo("seq\tprovider\tevent_id\ttype\terror")
    for q in rows:
        click.echo(f"{q.seq}\t{q.provider}\t{q.event_id}\t{q.type}\t{q.error}")
    counts: dict[str, int] = {}
    hints: dict[str, str] = {}
    for q in rows:
        kind = family(q.error)
        counts[kind.name] = counts.get(kind.name, 0) + 1
        hints[kind.name] = kind.hint
    for name, hint in hints.items():
        click.echo(f"{name} ({counts[name]}): {hint}", err=True)


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
    from billhook.observability import logs
    from billhook.runners.worker import run_worker

    settings = load(config_path)
    if not settings.redis_url:
        raise click.ClickException(
            "billhook worker needs Redis: set [redis] url or BILLHOOK_REDIS_URL"
            " (without it, billhook serve projects in-process)"
        )
    logs.configure(log_level)
    log_event_log(settings)
    run_worker(settings, threads=threads)


def _register_provider_commands() -> None:
    # Imported here: the provider SDKs load only for the commands that use them.
    from billhook.cli import sync as cli_sync

    for command in (cli_sync.reconcile, cli_sync.backfill, cli_sync.check_config, cli_sync.pilots):
        main.add_command(command)


main.add_command(log)
main.add_command(cli_launch.enforcement)
main.add_command(cli_launch.launch)
main.add_command(cli_launch.diagnose)


_register_provider_commands()
main.add_command(cli_outbound.endpoints)
main.add_command(cli_outbound.deliveries)
