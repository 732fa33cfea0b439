"""Every test runs against a real PostgreSQL that this test run starts (pytest-postgresql).

The cluster is started once per session through tests/harness/pg_ctl (which copes with being root).
A template database gets the pgrelay schema installed by the real installer; each test that asks
for ``db`` gets a fresh database cloned from it.

With ``PGRELAY_TEST_INSTALL=upgrade`` the template installs the oldest release instead and is then
upgraded along the whole chain, as a long-lived database would be (``make test`` runs the SQL
suite a second time that way).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import asyncpg
import psycopg
import pytest
from pytest_postgresql import factories
from pytest_postgresql.janitor import DatabaseJanitor

from pgrelay.schema import migrate, released_versions
from tests.harness.cluster import PG_CTL, TEST_SETTINGS
from tests.harness.releases import INSTALL


def install_pgrelay(host: str, port: int, user: str, dbname: str, password: str | None, **_: Any) -> None:
    """pytest-postgresql loader: install the schema into the template database with jobs-migrate's code."""

    async def go() -> None:
        conn = await asyncpg.connect(host=host, port=port, user=user, database=dbname, password=password)
        try:
            if INSTALL == "upgrade":
                await migrate(conn, target=released_versions()[0])
            await migrate(conn)
        finally:
            await conn.close()

    asyncio.run(go())


postgresql_proc = factories.postgresql_proc(
    executable=PG_CTL,
    host="127.0.0.1",
    port=None,
    user="postgres",
    postgres_options=TEST_SETTINGS,
    load=[install_pgrelay],
)
postgresql = factories.postgresql("postgresql_proc")


@pytest.fixture
def db(postgresql: psycopg.Connection) -> psycopg.Connection:
    """A fresh database with pgrelay installed, as a psycopg connection in autocommit mode."""
    postgresql.autocommit = True
    return postgresql


@pytest.fixture
def dsn(db: psycopg.Connection, postgresql_proc: Any) -> str:
    """A DSN for the test's database (for more connections, subprocesses and the CLI)."""
    info = db.info
    return f"postgresql://{info.user}@{postgresql_proc.host}:{postgresql_proc.port}/{info.dbname}"


@pytest.fixture
def connect(dsn: str) -> Iterator[Callable[..., psycopg.Connection]]:
    """Open more autocommit connections to the test's database; all are closed after the test."""
    opened: list[psycopg.Connection] = []

    def open_connection(**kwargs: Any) -> psycopg.Connection:
        conn = psycopg.connect(dsn, autocommit=True, **kwargs)
        opened.append(conn)
        return conn

    yield open_connection
    for conn in opened:
        conn.close()


@pytest.fixture
def new_database(postgresql_proc: Any) -> Callable[[str], contextlib.AbstractContextManager[str]]:
    """``with new_database(name) as dsn:`` an empty database (no pgrelay), dropped afterwards."""

    @contextlib.contextmanager
    def create(name: str) -> Iterator[str]:
        janitor = DatabaseJanitor(
            user=postgresql_proc.user,
            host=postgresql_proc.host,
            port=postgresql_proc.port,
            dbname=name,
            maintenance_dbname="postgres",
        )
        with janitor:
            yield f"postgresql://{postgresql_proc.user}@{postgresql_proc.host}:{postgresql_proc.port}/{name}"

    return create


@pytest.fixture
def empty_dsn(new_database: Callable[[str], contextlib.AbstractContextManager[str]]) -> Iterator[str]:
    """A DSN for a fresh database without pgrelay (installer tests)."""
    with new_database("pgrelay_empty") as dsn:
        yield dsn
