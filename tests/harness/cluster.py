"""Throwaway PostgreSQL clusters for the demo and the benchmarks (the tests use pytest-postgresql's
fixtures with the same pg_ctl wrapper).

Started by pytest-postgresql's executor through ``tests/harness/pg_ctl``, which runs the server as an
unprivileged OS user when we are root (initdb refuses root).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import port_for
from pytest_postgresql.executors import PostgreSQLExecutor

PG_CTL = str(Path(__file__).with_name("pg_ctl"))

# A cluster tuned for throwaway use: nothing here needs to survive an OS crash.
TEST_SETTINGS = "-c fsync=off -c full_page_writes=off -c max_connections=300"


@dataclass(frozen=True)
class Cluster:
    host: str
    port: int
    user: str
    executor: PostgreSQLExecutor

    def dsn(self, dbname: str = "postgres", user: str | None = None) -> str:
        return f"postgresql://{user or self.user}@{self.host}:{self.port}/{dbname}"


@contextlib.contextmanager
def throwaway_cluster(postgres_options: str = TEST_SETTINGS) -> Iterator[Cluster]:
    """Start a new cluster on a free loopback port; stop it and delete its files on exit."""
    workdir = Path(tempfile.mkdtemp(prefix="pgrelay-cluster-"))
    port = port_for.select_random()
    executor = PostgreSQLExecutor(
        executable=PG_CTL,
        host="127.0.0.1",
        port=port,
        datadir=str(workdir / "data"),
        unixsocketdir=tempfile.gettempdir(),
        logfile=str(workdir / "postgresql.log"),
        startparams="-w",
        dbname="postgres",
        user="postgres",
        postgres_options=postgres_options,
    )
    try:
        executor.start()
        executor.wait_for_postgres()
        yield Cluster("127.0.0.1", port, "postgres", executor)
    finally:
        with contextlib.suppress(Exception):
            executor.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def pg_bindir() -> str:
    """Where the PostgreSQL server binaries are (PGRELAY_PG_BINDIR, else pg_config --bindir)."""
    configured = os.environ.get("PGRELAY_PG_BINDIR")
    if configured:
        return configured
    import subprocess

    return subprocess.run(["pg_config", "--bindir"], check=True, capture_output=True, text=True).stdout.strip()
