"""Throwaway PostgreSQL databases for tests, on the machine's server (SPEC §4a).

Each test that asks for one gets a database of its own, created from the
server's template and dropped after, so tests never see each other's log.
Where the server cannot be reached, the test fails under CI and is skipped
elsewhere (tests.support.unavailable).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

from tests.support import unavailable

# The maintenance database throwaway databases are created from.
ADMIN_URL = os.environ.get(
    "BILLHOOK_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def database_url(name: str, base: str = ADMIN_URL) -> str:
    """`base` with its database replaced by `name`."""
    parts = urlsplit(base)
    return urlunsplit(parts._replace(path=f"/{name}"))


def admin() -> psycopg.Connection[tuple[object, ...]]:
    try:
        return psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as e:
        unavailable(f"PostgreSQL is not reachable at {ADMIN_URL}: {e}")
        raise


@contextmanager
def throwaway_database() -> Iterator[str]:
    """A new, empty database; its URL. Dropped on exit, whoever is still connected."""
    name = f"billhook_test_{uuid.uuid4().hex[:16]}"
    with admin() as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield database_url(name)
    finally:
        with admin() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture
def pg_url() -> Iterator[str]:
    """The URL of a throwaway PostgreSQL database, for this test alone."""
    with throwaway_database() as url:
        yield url
