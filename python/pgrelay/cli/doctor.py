"""``pgrelay doctor``: one check per line (server, schema, upgrade, roles, autovacuum, indexes,
leases, workers), PASS, WARN or FAIL with the fix."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Awaitable

import asyncpg
import click

from .. import client
from ..errors import PgRelayError, SchemaError
from ..schema import (
    _version_key,
    installed_version,
    schema_version,
    sql_files,
    upgrade_path,
)
from .common import OPERATOR_PRIVILEGES, _explain, _operate, dsn_option, main
from .output import _duration

STUCK_LEASE_SECONDS = 300


@dataclasses.dataclass(frozen=True)
class _Check:
    status: str  # PASS, WARN or FAIL
    name: str
    detail: str
    fix: str | None = None

    def line(self) -> str:
        fix = f"; fix: {self.fix}" if self.fix and self.status != "PASS" else ""
        return f"{self.status}  {self.name}: {self.detail}{fix}"


_CREATE_INDEX = re.compile(
    r"^[ \t]*CREATE\s+(?:UNIQUE\s+)?INDEX\s+(?:CONCURRENTLY\s+)?(?:IF\s+NOT\s+EXISTS\s+)?(\w+)\s+"
    r"ON\s+(?:ONLY\s+)?pgrelay\.(\w+)[^;]*;",
    re.IGNORECASE | re.MULTILINE,
)


def expected_indexes() -> list[tuple[str, str, str]]:
    """(table, index, statement) for every CREATE INDEX in this package's sql/pgrelay.sql."""
    text = (sql_files() / "pgrelay.sql").read_text(encoding="utf-8")
    return [(m.group(2), m.group(1), " ".join(m.group(0).split())) for m in _CREATE_INDEX.finditer(text)]


def _disabled(reloptions: list[str], name: str) -> bool:
    for option in reloptions:
        key, _, value = option.partition("=")
        if key == name and value.strip().lower() in ("false", "off", "no", "0", "f", "n"):
            return True
    return False


async def _check_server(conn: asyncpg.Connection) -> _Check:
    number, shown = await client.server_version(conn)
    if number >= 130000:
        return _Check("PASS", "server", f"PostgreSQL {shown}")
    return _Check("FAIL", "server", f"PostgreSQL {shown} is older than 13, which pgrelay needs",
                  "upgrade the server to PostgreSQL 13 or newer")


async def _check_upgrade(installed: str) -> _Check:
    package = schema_version()
    if installed == package:
        return _Check("PASS", "upgrade", f"none pending (the schema and this package are both {package})")
    if _version_key(installed) > _version_key(package):  # the installer's own comparison
        return _Check("FAIL", "upgrade", f"the schema ({installed}) is newer than this package ({package})",
                      "upgrade the pgrelay package")
    try:
        scripts = upgrade_path(installed, package)
    except SchemaError:
        return _Check("FAIL", "upgrade", f"this package ({package}) has no upgrade path from the schema's {installed}",
                      "install the pgrelay release that matches the schema")
    return _Check("WARN", "upgrade", f"the schema is {installed}, this package installs {package} "
                  f"({', '.join(scripts)})", "run pgrelay migrate")


async def _check_roles(conn: asyncpg.Connection) -> _Check:
    roles = await client.declared_roles(conn)
    missing = sorted(set(roles) - set(await client.existing_roles(conn, roles)))
    if not missing:
        return _Check("PASS", "roles", ", ".join(roles) + " exist")
    return _Check("WARN", "roles", f"missing: {', '.join(missing)} (the installer lacked CREATEROLE)",
                  "run jobs-migrate as a role with CREATEROLE: it creates them and grants what "
                  "pgrelay._privileges() declares")


async def _check_autovacuum(conn: asyncpg.Connection) -> _Check:
    found = await client.autovacuum_settings(conn, "pgrelay._jobs")
    if found is None:
        return _Check("FAIL", "autovacuum", "table pgrelay._jobs is missing", "run pgrelay migrate")
    server, reloptions = found
    if not server:
        return _Check("WARN", "autovacuum", "autovacuum is off on the server; the hot table pgrelay._jobs bloats",
                      "set autovacuum = on in postgresql.conf and reload")
    if _disabled(reloptions, "autovacuum_enabled"):
        return _Check("WARN", "autovacuum", f"disabled on the hot table pgrelay._jobs ({', '.join(reloptions)})",
                      "ALTER TABLE pgrelay._jobs RESET (autovacuum_enabled)")
    own = [o for o in reloptions if o.startswith("autovacuum_")]
    return _Check("PASS", "autovacuum", "enabled on pgrelay._jobs" + (f" ({', '.join(own)})" if own else ""))


async def _check_indexes(conn: asyncpg.Connection) -> _Check:
    expected = expected_indexes()
    present = {(i.table, i.index): i.valid for i in await client.indexes(conn)}
    missing = [(t, i, stmt) for t, i, stmt in expected if (t, i) not in present]
    invalid = [(t, i) for t, i, _ in expected if present.get((t, i)) is False]
    if not missing and not invalid:
        tables = sorted({t for t, _, _ in expected})
        return _Check("PASS", "indexes", f"all {len(expected)} indexes of {', '.join(tables)} are present")
    problems = [f"{i} on {t} is missing" for t, i, _ in missing] + [f"{i} on {t} is invalid" for t, i in invalid]
    fixes = [stmt for _, _, stmt in missing] + [f"REINDEX INDEX pgrelay.{i};" for _, i in invalid]
    return _Check("FAIL", "indexes", "; ".join(problems), " ".join(fixes))


async def _check_leases(conn: asyncpg.Connection) -> _Check:
    stuck = await client.expired_leases(conn, older_than_seconds=STUCK_LEASE_SECONDS)
    minutes = STUCK_LEASE_SECONDS // 60
    if not stuck:
        return _Check("PASS", "leases", f"no lease expired more than {minutes} minutes ago")
    oldest = stuck[0]
    return _Check("WARN", "leases", f"{len(stuck)} leases expired more than {minutes} minutes ago (oldest: job "
                  f"{oldest.id} of queue {oldest.queue}, {_duration(oldest.expired_for)} ago)",
                  "run SELECT pgrelay.recover() / start a worker")


async def _check_workers(conn: asyncpg.Connection) -> _Check:
    workers = await client.workers(conn)
    stale = [w.worker for w in workers if w.status == "stale"]
    if stale:
        return _Check("WARN", "workers", f"{len(stale)} of {len(workers)} not seen for longer than their lease: "
                      f"{', '.join(stale)}", "check that these worker processes are running; their expired leases "
                      "go back to pending by recover()")
    if not workers:
        return _Check("PASS", "workers", "no worker has sent a heartbeat yet")
    return _Check("PASS", "workers", f"{len(workers)} alive")


async def _doctor(conn: asyncpg.Connection) -> list[_Check]:
    async def guarded(name: str, check: Awaitable[_Check]) -> _Check:
        try:
            return await check
        except (PgRelayError, asyncpg.PostgresError) as exc:
            return _Check("FAIL", name, f"could not check: {_explain(exc, OPERATOR_PRIVILEGES)}")

    checks = [await guarded("server", _check_server(conn))]
    try:
        installed = await installed_version(conn)
    except (PgRelayError, asyncpg.PostgresError) as exc:
        installed = None
        checks.append(_Check("FAIL", "schema", f"could not read pgrelay.version(): {_explain(exc, OPERATOR_PRIVILEGES)}"))
    else:
        if installed is None:
            database = await client.database_name(conn)
            checks.append(_Check("FAIL", "schema", f"pgrelay is not installed in this database ({database})",
                                 "run pgrelay migrate"))
        else:
            checks.append(_Check("PASS", "schema", f"pgrelay {installed} is installed"))
    if installed is not None:
        checks.append(await _check_upgrade(installed))
    checks.append(await guarded("roles", _check_roles(conn)))
    if installed is not None:
        for name, check in (("autovacuum", _check_autovacuum), ("indexes", _check_indexes),
                            ("leases", _check_leases), ("workers", _check_workers)):
            checks.append(await guarded(name, check(conn)))
    return checks


@main.command(name="doctor")
@dsn_option
def doctor_command(dsn: str | None) -> None:
    """Check that pgrelay is healthy in a database.

    Checks the server version, the schema and pending upgrades, the roles, autovacuum on the hot
    table, missing indexes, stuck leases and stale workers. One line per check, PASS, WARN or FAIL,
    with the fix; exit code 1 if any check fails.

    \b
    Example:
      pgrelay doctor --dsn postgresql://admin@db/app
    """
    checks = _operate(dsn, _doctor)
    for check in checks:
        click.echo(check.line())
    if any(check.status == "FAIL" for check in checks):
        raise SystemExit(1)
