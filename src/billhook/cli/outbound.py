"""`billhook endpoints list`, `billhook deliveries list` and `billhook deliveries redeliver`.

They read the outbox store (and, for endpoints, the projection) directly and
print what `GET /v1/admin/endpoints` and `GET /v1/admin/deliveries` answer, as
aligned columns. A redelivery only marks deliveries pending again: a running
dispatcher claims them within a second. Secrets and bodies are never printed.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import click

from billhook.api.endpoints import MAX_ID, MAX_LIMIT, delivery_answer, endpoint_statuses
from billhook.cli.support import config_option, load, open_projection
from billhook.config import Settings
from billhook.domain.times import parse_time, to_us
from billhook.outbound.store import FAILED, STATUSES, OutboxStore, open_outbox, outbound_path

# Column separator of the tables printed here.
GAP = "  "
ENDPOINT_COLUMNS = (
    *("id", "source", "status", "pending", "oldest_pending_s", "failing_since"),
    *("last_success_at", "workspaces", "url"),
)
DELIVERY_COLUMNS = (
    *("id", "endpoint", "workspace", "cursor", "status", "attempts", "last_status"),
    *("next_attempt_at", "created_at", "updated_at", "last_error"),
)


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """`rows` under `header`, each column as wide as its widest cell."""
    widths = [max(len(row[n]) for row in [header, *rows]) for n in range(len(header))]
    return [
        GAP.join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]


def open_existing_outbox(settings: Settings) -> OutboxStore:
    """The outbox store; an SQLite one that is not there is a one-line error, never a new
    empty store in a mistyped place (`billhook serve` creates it)."""
    if not settings.storage_url and not outbound_path(settings).absolute().is_file():
        raise click.ClickException(
            f"no outbox at {outbound_path(settings).absolute()}: check --config and data_dir"
            " (billhook serve creates it)"
        )
    return open_outbox(settings)


def _text(value: object) -> str:
    return "" if value is None else str(value)


@click.group()
def endpoints() -> None:
    """Outbound webhook endpoints: configured, and added through the admin API."""


@endpoints.command("list")
@config_option
def endpoints_list(config_path: Path | None) -> None:
    """List endpoints, configured ones first, with their delivery health (never secrets)."""
    settings = load(config_path)
    log, store = open_projection(settings)
    try:
        outbox = open_existing_outbox(settings)
        try:
            rows = endpoint_statuses(settings, store, outbox, to_us(datetime.now(UTC)))
        finally:
            outbox.close()
    finally:
        log.close()
        store.close()
    cells = [
        (
            e.id,
            e.source,
            e.status,
            str(e.pending),
            _text(e.oldest_pending_age_s),
            _text(e.failing_since),
            _text(e.last_success_at),
            ",".join(e.workspaces) or "all",
            e.url,
        )
        for e in rows
    ]
    for line in table(ENDPOINT_COLUMNS, cells):
        click.echo(line)


@click.group()
def deliveries() -> None:
    """The outbound delivery log: ids, statuses and attempts (never bodies)."""


@deliveries.command("list")
@config_option
@click.option("--failed", is_flag=True, help="Only deliveries given up on.")
@click.option("--status", type=click.Choice(STATUSES), help="Only deliveries of this status.")
@click.option("--endpoint", "endpoint_id", metavar="ID", help="Only deliveries to this endpoint.")
@click.option("--workspace", help="Only deliveries about this workspace.")
@click.option("--before", type=click.IntRange(1, MAX_ID), help="Only deliveries with a smaller id.")
@click.option("--limit", type=click.IntRange(1, MAX_LIMIT), default=100, show_default=True)
def deliveries_list(
    config_path: Path | None,
    failed: bool,
    status: str | None,
    endpoint_id: str | None,
    workspace: str | None,
    before: int | None,
    limit: int,
) -> None:
    """List deliveries, newest first."""
    if failed and status not in (None, FAILED):
        raise click.UsageError("--failed and --status: give one")
    settings = load(config_path)
    outbox = open_existing_outbox(settings)
    try:
        rows = outbox.deliveries(
            status=FAILED if failed else status,
            endpoint=endpoint_id,
            workspace=workspace,
            before_id=before,
            limit=limit,
        )
    finally:
        outbox.close()
    cells = []
    for row in rows:
        d = delivery_answer(row)
        cells.append(
            (
                str(d.id),
                d.endpoint,
                d.workspace,
                d.cursor,
                d.status,
                str(d.attempts),
                _text(d.last_status),
                _text(d.next_attempt_at),
                d.created_at,
                d.updated_at,
                " ".join(_text(d.last_error).split()),
            )
        )
    for line in table(DELIVERY_COLUMNS, cells):
        click.echo(line)


@deliveries.command("redeliver")
@config_option
@click.argument("ids", nargs=-1, type=click.IntRange(1, MAX_ID), metavar="[ID]...")
@click.option("--since", metavar="TIME", help="Every delivery created at or after TIME (ISO 8601).")
def deliveries_redeliver(config_path: Path | None, ids: tuple[int, ...], since: str | None) -> None:
    """Send delivered, failed or canceled deliveries again, with a fresh retry span: those
    with these IDs, or every one created --since TIME (UTC if it has no timezone)."""
    if bool(ids) == (since is not None):
        raise click.UsageError("give delivery IDs or --since TIME, not both")
    since_us = None if since is None else _since_us(since)
    settings = load(config_path)
    outbox = open_existing_outbox(settings)
    try:
        for delivery_id in ids:
            if outbox.delivery(delivery_id) is None:
                raise click.ClickException(f"no delivery with id {delivery_id}")
        now_us = to_us(datetime.now(UTC))
        give_up_us = now_us + settings.outbound.retry_span_s * 1_000_000
        count = outbox.redeliver(ids=ids, since_us=since_us, now_us=now_us, give_up_us=give_up_us)
    finally:
        outbox.close()
    click.echo(f"redelivered {count}")


def _since_us(value: str) -> int:
    try:
        return to_us(parse_time(value))
    except (ValueError, OverflowError):
        raise click.ClickException(
            f"--since must be an ISO 8601 time, e.g. 2027-01-01T00:00:00Z (got {value!r})"
        ) from None
