"""A real PgBouncer in front of the test cluster, for the tests that check pgrelay behind a pooler.

    with run_pgbouncer(tmp_path, "127.0.0.1", 5432, default_pool_size=4) as bouncer:
        bouncer.dsn("mydb")            # postgresql://postgres@127.0.0.1:<port>/mydb, through PgBouncer
        bouncer.show("POOLS")          # the admin console: SHOW POOLS as a list of dicts

``run_pgbouncer`` writes ``pgbouncer.ini`` and ``userlist.txt`` into ``workdir``, starts PgBouncer on a
free loopback port (every database name maps to the same name on the upstream server), waits until it
answers, and stops it on exit. Pooling is per transaction by default, the mode that breaks session
state. PgBouncer refuses to run as root: as root it is started with ``-u`` and the unprivileged OS user
that owns the test cluster (PGRELAY_PG_OS_USER, default ``postgres``), which then owns ``workdir``.

``pgbouncer_binary()`` finds the binary (PGRELAY_PGBOUNCER, else ``pgbouncer`` on PATH, else
/usr/sbin/pgbouncer, where Debian puts it); ``None`` when there is none (the tests then skip, or fail under CI).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row


def pgbouncer_binary() -> str | None:
    configured = os.environ.get("PGRELAY_PGBOUNCER")
    if configured:
        return configured if os.access(configured, os.X_OK) else None
    found = shutil.which("pgbouncer")
    if found:
        return found
    return "/usr/sbin/pgbouncer" if os.access("/usr/sbin/pgbouncer", os.X_OK) else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _hand_over(directory: Path, owner: str) -> None:
    """Let ``owner`` write ``directory`` and reach it (o+x on every parent, never o+r), as tests/harness/pg_ctl does."""
    entry = pwd.getpwnam(owner)
    os.chown(directory, entry.pw_uid, entry.pw_gid)
    for parent in directory.parents:
        with contextlib.suppress(OSError):
            os.chmod(parent, os.stat(parent).st_mode | 0o001)


@dataclass
class PgBouncer:
    host: str
    port: int
    workdir: Path
    process: subprocess.Popen[bytes]
    user: str

    def dsn(self, dbname: str, user: str | None = None, password: str | None = None) -> str:
        auth = user or self.user
        if password:
            auth += f":{password}"
        return f"postgresql://{auth}@{self.host}:{self.port}/{dbname}"

    def log(self) -> str:
        path = self.workdir / "pgbouncer.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def show(self, what: str) -> list[dict[str, Any]]:
        """``SHOW <what>`` on the admin console (simple query protocol: the console knows no other)."""
        with psycopg.connect(self.dsn("pgbouncer"), autocommit=True) as conn:
            cur = psycopg.ClientCursor(conn, row_factory=dict_row)
            cur.execute(f"SHOW {what}")
            return cur.fetchall()

    def pool_counts(self, dbname: str) -> tuple[int, int]:
        """(server connections PgBouncer holds to ``dbname``, clients active or waiting on it) right now."""
        pools = [row for row in self.show("POOLS") if row["database"] == dbname]
        servers = sum(int(row[k]) for row in pools for k in ("sv_active", "sv_idle", "sv_used", "sv_tested", "sv_login"))
        return servers, sum(int(row[k]) for row in pools for k in ("cl_active", "cl_waiting"))

    def drop_server_connections(self, admin: psycopg.Connection, dbname: str, timeout: float = 10.0) -> None:
        """Terminate PgBouncer's server connections to ``dbname`` (through ``admin``, a direct connection),
        as server_lifetime or a database restart would, and wait until PgBouncer has dropped them (it may
        open new ones meanwhile). PgBouncer 1.18 disconnects a client it hands a server whose FATAL it has
        not read yet ("invalid server parameter"): waiting keeps that race of PgBouncer's out of a test."""
        pids = [int(row["remote_pid"]) for row in self.show("SERVERS") if row["database"] == dbname]
        admin.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", [pids])
        deadline = time.monotonic() + timeout
        while any(int(row["remote_pid"]) in pids for row in self.show("SERVERS")):
            if time.monotonic() > deadline:
                raise AssertionError(f"PgBouncer still holds server connections to {dbname} after {timeout} s")
            time.sleep(0.02)

    def connect(self, dbname: str, **kwargs: Any) -> psycopg.Connection:
        """An autocommit psycopg connection through PgBouncer. ``prepare_threshold=None``: psycopg never
        prepares a named statement, which a transaction pooler would hand to other clients' sessions."""
        return psycopg.connect(self.dsn(dbname), autocommit=True, prepare_threshold=None, **kwargs)


def render_ini(settings: Mapping[str, str | int], databases: Mapping[str, str]) -> str:
    lines = ["[databases]"]
    lines += [f"{name} = {value}" for name, value in databases.items()]
    lines += ["", "[pgbouncer]"]
    lines += [f"{name} = {value}" for name, value in settings.items()]
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def run_pgbouncer(
    workdir: Path,
    upstream_host: str,
    upstream_port: int,
    *,
    pool_mode: str = "transaction",
    default_pool_size: int = 4,
    max_client_conn: int = 500,
    users: Mapping[str, str] | None = None,
    settings: Mapping[str, str | int] | None = None,
    ready_timeout: float = 15.0,
) -> Iterator[PgBouncer]:
    """Run PgBouncer in front of ``upstream_host:upstream_port`` until the block ends.

    ``users``: name -> password for userlist.txt (clients authenticate with ``trust``; PgBouncer logs in
    upstream with these). The admin console (database ``pgbouncer``) is open to ``postgres``.
    """
    binary = pgbouncer_binary()
    if binary is None:
        raise FileNotFoundError("pgbouncer is not installed (apt-get install pgbouncer, or set PGRELAY_PGBOUNCER)")
    workdir.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    all_users = {"postgres": "", **(users or {})}
    (workdir / "userlist.txt").write_text("".join(f'"{u}" "{p}"\n' for u, p in all_users.items()))
    ini = {
        "listen_addr": "127.0.0.1",
        "listen_port": port,
        "unix_socket_dir": "",
        "auth_type": "trust",
        "auth_file": str(workdir / "userlist.txt"),
        "admin_users": "postgres",
        "stats_users": "postgres",
        "pool_mode": pool_mode,
        "default_pool_size": default_pool_size,
        "min_pool_size": 0,
        "reserve_pool_size": 0,
        "max_client_conn": max_client_conn,
        "max_db_connections": default_pool_size,
        "logfile": str(workdir / "pgbouncer.log"),
        "pidfile": str(workdir / "pgbouncer.pid"),
        # drivers that send these at startup are not refused; PgBouncer then simply does not track them
        "ignore_startup_parameters": "extra_float_digits,options",
        "server_login_retry": 1,
        "query_wait_timeout": 120,
        "log_connections": 0,
        "log_disconnections": 0,
        **(settings or {}),
    }
    # every database name is the same name upstream
    (workdir / "pgbouncer.ini").write_text(
        render_ini(ini, {"*": f"host={upstream_host} port={upstream_port}"}))

    command = [binary]
    if os.geteuid() == 0:
        owner = os.environ.get("PGRELAY_PG_OS_USER", "postgres")
        _hand_over(workdir, owner)
        for name in ("pgbouncer.ini", "userlist.txt"):
            os.chmod(workdir / name, 0o644)
        command += ["-u", owner]
    command.append(str(workdir / "pgbouncer.ini"))
    stderr_path = workdir / "pgbouncer.stderr"
    with open(stderr_path, "wb") as err:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=err, stderr=subprocess.STDOUT)
    bouncer = PgBouncer("127.0.0.1", port, workdir, process, "postgres")
    try:
        deadline = time.monotonic() + ready_timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"pgbouncer exited with {process.returncode} while starting:\n"
                                   f"{stderr_path.read_text(errors='replace')}\n{bouncer.log()}")
            try:
                bouncer.show("VERSION")
                break
            except psycopg.OperationalError as e:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"pgbouncer not ready after {ready_timeout} s ({e}):\n{bouncer.log()}") from e
                time.sleep(0.05)
        yield bouncer
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)  # immediate shutdown: clients are dropped
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
