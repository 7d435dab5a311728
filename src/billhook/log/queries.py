"""The log's reads as SQL: one text for SQLite (`?`) and PostgreSQL (`%s`).

Both logs answer `get`, `find` and `read` with the same statements; only the
table's name and the placeholder differ. Every value is a bound parameter;
only constant fragments and `?`/`%s` marks are joined into the text.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

COLUMNS = "seq, provider, event_id, type, livemode, occurred_at, received_at"

Query = tuple[str, tuple[object, ...]]


class EventQueries:
    """The reads of the events table `table`, with `mark` as the placeholder."""

    def __init__(self, table: str, mark: str) -> None:
        self._table = table
        self._mark = mark
        self._select = f"SELECT {COLUMNS}, payload FROM {table}"  # noqa: S608

    def get(self, seq: int) -> Query:
        return f"{self._select} WHERE seq = {self._mark}", (seq,)

    def find(self, event_id: str, provider: str | None) -> Query:
        """Every event with this provider event id (one per provider at most)."""
        m = self._mark
        sql = f"{self._select} WHERE event_id = {m}"
        params: tuple[object, ...] = (event_id,)
        if provider is not None:
            sql += f" AND provider = {m}"
            params += (provider,)
        return sql + " ORDER BY seq", params

    def read(
        self,
        *,
        after: int,
        limit: int | None,
        provider: str | None,
        type: str | None,
        payloads_of: Mapping[str, Collection[str]] | None,
    ) -> Query:
        """Events with seq > `after`, oldest first, optionally filtered. With `payloads_of`
        ({provider: types}), only those events carry their payload; the others come with an
        empty one, so a projector that skips most events never reads their kilobytes."""
        m = self._mark
        where = [f"seq > {m}"]
        params: list[object] = [after]
        if provider is not None:
            where.append(f"provider = {m}")
            params.append(provider)
        if type is not None:
            where.append(f"type = {m}")
            params.append(type)
        select, select_params = self._select, list[object]()
        if payloads_of is not None:
            select, select_params = self._select_payloads_of(payloads_of)
        sql = select + " WHERE " + " AND ".join(where) + " ORDER BY seq"
        if limit is not None:
            sql += f" LIMIT {m}"
            params.append(limit)
        return sql, (*select_params, *params)

    def _select_payloads_of(
        self, payloads_of: Mapping[str, Collection[str]]
    ) -> tuple[str, list[object]]:
        """A SELECT whose payload column is empty except for the given provider types."""
        m = self._mark
        clauses: list[str] = []
        params: list[object] = []
        for provider, types in sorted(payloads_of.items()):
            if not types:
                continue  # none of its payloads: no clause (`IN ()` is SQLite's alone)
            marks = ", ".join([m] * len(types))
            clauses.append(f"(provider = {m} AND type IN ({marks}))")
            params += [provider, *sorted(types)]
        condition = " OR ".join(clauses) or "1 = 0"
        sql = f"SELECT {COLUMNS}, CASE WHEN {condition} THEN payload ELSE '' END FROM {self._table}"  # noqa: S608
        return sql, params
