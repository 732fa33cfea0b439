"""Install and upgrade the pgrelay schema from the SQL files (the single source of truth).

``sql/pgrelay.sql`` installs the current version (``make sql`` assembles it from ``sql/src/``);
``sql/pgrelay--X.Y.Z.sql`` installs a released version, frozen; ``sql/pgrelay--A--B.sql`` upgrade
one release to the next; ``sql/pgrelay.control`` names the current version. A wheel carries them as
``pgrelay/sql``; a source checkout reads them from the repository's ``sql/`` folder.

``migrate`` runs in one transaction under an advisory lock, so a second run, or two at once,
changes nothing and succeeds. It walks the upgrade chain one release at a time, and ends every run
by making the privileges exactly what the schema declares (``pgrelay._apply_privileges()``), so a
function added since the last run is callable by no one it does not name.

An upgrade first takes every pgrelay table's lock at once, giving up within ``UPGRADE_LOCK_TIMEOUT`` and trying again (up to ``UPGRADE_LOCK_ATTEMPTS`` times): live
workers take their locks in other orders, and a migration that waited while holding some of the
tables could deadlock with them. Giving up before PostgreSQL's deadlock_timeout (1 s) means no
worker ever sees 40P01; workers only wait, for as long as the upgrade runs.
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from dataclasses import dataclass, field
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

import asyncpg

from .errors import SchemaError

__all__ = ["MigrationResult", "install_script", "installed_version", "migrate", "released_versions", "schema_version",
           "sql_files"]

# pg_advisory_xact_lock key shared by every pgrelay installer: the bytes of "pgrelay".
ADVISORY_LOCK_KEY = int.from_bytes(b"pgrelay", "big")

UPGRADE_LOCK_TIMEOUT = "300ms"   # statement_timeout of the LOCK TABLE: below deadlock_timeout
UPGRADE_LOCK_ATTEMPTS = 50

# every table of the schema, in the order workers and producers lock them: first those some call takes
# before the hot table (consume reads _queues first, a keyed enqueue writes _idempotency_keys first, a
# heartbeat _workers, tick _schedules, idle() _waiting), then the hot table and the history, then the
# rest. A call holding one of the first while it waits for _jobs, which the LOCK below already holds,
# makes the LOCK wait for it in turn until its timeout: the longer the list between the two (the
# history's partitions), the more often.
_LOCK_TABLES = """
    SELECT string_agg(format('%I.%I', n.nspname, c.relname), ', '
                      ORDER BY array_position(ARRAY['_queues', '_idempotency_keys', '_workers', '_schedules',
                                                    '_waiting', '_jobs', '_finished']::name[], c.relname) NULLS LAST,
                               c.relname)
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = 'pgrelay' AND c.relkind IN ('r', 'p')
"""

_UPGRADE_RE = re.compile(r"^pgrelay--(\d+\.\d+\.\d+)--(\d+\.\d+\.\d+)\.sql$")
_RELEASE_RE = re.compile(r"^pgrelay--(\d+\.\d+\.\d+)\.sql$")


def sql_files() -> Traversable:
    """The folder holding pgrelay.control, pgrelay.sql and the upgrade scripts."""
    packaged = resources.files("pgrelay") / "sql"
    if packaged.is_dir():
        return packaged
    checkout = Path(__file__).resolve().parents[2] / "sql"
    if checkout.is_dir():
        return checkout
    raise SchemaError("pgrelay's SQL files are missing from this installation; reinstall the package")


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def _check_version(version: str) -> str:
    if not re.fullmatch(r"\d+\.\d+\.\d+", version):
        raise SchemaError(f"{version!r} is not a pgrelay version (MAJOR.MINOR.PATCH, e.g. 0.2.0)")
    return version


def install_script(version: str) -> str:
    """The file that installs ``version``: the frozen release file, else (the current version,
    not released yet) pgrelay.sql."""
    frozen = f"pgrelay--{_check_version(version)}.sql"
    if (sql_files() / frozen).is_file():
        return frozen
    if version == schema_version():
        return "pgrelay.sql"
    raise SchemaError(f"this package cannot install pgrelay {version}: it has no {frozen}")


def released_versions() -> list[str]:
    """The versions this package has a frozen install script of, oldest first."""
    found = [m.group(1) for entry in sql_files().iterdir() if (m := _RELEASE_RE.match(entry.name))]
    return sorted(found, key=_version_key)


def schema_version() -> str:
    """The schema version this package installs (default_version in pgrelay.control)."""
    control = (sql_files() / "pgrelay.control").read_text(encoding="utf-8")
    match = re.search(r"^default_version\s*=\s*'([^']+)'", control, re.MULTILINE)
    if not match:
        raise SchemaError("pgrelay.control has no default_version")
    return match.group(1)


def upgrade_path(start: str, target: str) -> list[str]:
    """The upgrade scripts leading from ``start`` to ``target``, shortest chain first."""
    edges: dict[str, list[tuple[str, str]]] = {}
    for entry in sql_files().iterdir():
        match = _UPGRADE_RE.match(entry.name)
        if match:
            edges.setdefault(match.group(1), []).append((match.group(2), entry.name))
    queue: deque[tuple[str, list[str]]] = deque([(start, [])])
    seen = {start}
    while queue:
        version, path = queue.popleft()
        if version == target:
            return path
        for nxt, script in sorted(edges.get(version, [])):
            if nxt not in seen:
                seen.add(nxt)
                queue.append((nxt, [*path, script]))
    raise SchemaError(f"no upgrade path from pgrelay {start} to {target} in this package")


@dataclass(frozen=True)
class MigrationResult:
    """What ``migrate`` did: ``action`` is "installed", "upgraded" or "unchanged"."""

    action: str
    previous: str | None
    current: str
    scripts: list[str] = field(default_factory=list)

    def describe(self) -> str:
        if self.action == "installed":
            return f"installed pgrelay {self.current} ({', '.join(self.scripts)})"
        if self.action == "upgraded":
            return f"upgraded pgrelay {self.previous} -> {self.current} ({', '.join(self.scripts)})"
        return f"pgrelay {self.current} is already installed; nothing to do"


async def installed_version(conn: asyncpg.Connection) -> str | None:
    """The pgrelay version installed in the connected database, or None."""
    if await conn.fetchval("SELECT to_regprocedure('pgrelay.version()') IS NULL"):
        return None
    return await conn.fetchval("SELECT pgrelay.version()")


async def migrate(conn: asyncpg.Connection, target: str | None = None) -> MigrationResult:
    """Install pgrelay into the connected database, or upgrade it to this package's version.

    ``target`` stops at an earlier release of this package's chain instead (to install the version
    another deployment runs, or to upgrade one release at a time); it never goes back.
    """
    target = _check_version(target) if target is not None else schema_version()
    if _version_key(target) > _version_key(schema_version()):
        raise SchemaError(f"this package goes up to pgrelay {schema_version()}, not {target}; upgrade the pgrelay package")
    for attempt in range(1, UPGRADE_LOCK_ATTEMPTS + 1):
        try:
            return await _migrate_once(conn, target)
        except (asyncpg.QueryCanceledError, asyncpg.LockNotAvailableError):
            if attempt == UPGRADE_LOCK_ATTEMPTS:
                raise SchemaError(
                    f"could not lock pgrelay's tables for the upgrade in {attempt} attempts; the database is "
                    "too busy (or a long transaction holds them): try again, or stop the workers first"
                ) from None
            await asyncio.sleep(min(0.05 * attempt, 1.0))
    raise AssertionError("unreachable")


async def _lock_for_upgrade(conn: asyncpg.Connection) -> None:
    tables = await conn.fetchval(_LOCK_TABLES)
    await conn.execute(f"SET LOCAL statement_timeout = '{UPGRADE_LOCK_TIMEOUT}'")
    # names from the catalog, quoted by format('%I'); no value of anyone's enters this statement
    await conn.execute(f"LOCK TABLE {tables} IN ACCESS EXCLUSIVE MODE")
    await conn.execute("SET LOCAL statement_timeout = DEFAULT")


async def _migrate_once(conn: asyncpg.Connection, target: str) -> MigrationResult:
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", ADVISORY_LOCK_KEY)
        await conn.execute("SELECT set_config('pgrelay.installer', 'jobs-migrate', true)")
        extension = await conn.fetchval("SELECT extversion FROM pg_extension WHERE extname = 'pgrelay'")
        current = await installed_version(conn)

        if current is not None and _version_key(current) > _version_key(schema_version()):
            raise SchemaError(
                f"the database has pgrelay {current}, newer than this package's {schema_version()}; "
                "upgrade the pgrelay package"
            )
        if current is not None and _version_key(current) > _version_key(target):
            raise SchemaError(f"the database has pgrelay {current}, past {target}; jobs-migrate never goes back")
        if current == target:
            await _apply_privileges(conn)
            return MigrationResult("unchanged", current, target)

        if extension is not None:
            # installed with CREATE EXTENSION: the extension machinery runs the same upgrade scripts,
            # from the server's extension folder (make install-extension puts them there)
            await _lock_for_upgrade(conn)
            update = await conn.fetchval("SELECT format('ALTER EXTENSION pgrelay UPDATE TO %L', $1::text)", target)
            try:
                async with conn.transaction():  # a savepoint: the error below replaces PostgreSQL's
                    await conn.execute(update)
            except asyncpg.InvalidParameterValueError:  # no update path in the server's extension folder
                pass
            await _apply_privileges(conn)
            now = await installed_version(conn)
            if now != target:
                raise SchemaError(
                    f"pgrelay was installed with CREATE EXTENSION and the server's extension files stop at {now}; "
                    f"run `make install-extension` with this release, then jobs-migrate again"
                )
            return MigrationResult("upgraded", current, target, ["ALTER EXTENSION pgrelay UPDATE"])

        if current is None:
            foreign = await conn.fetchval(
                """SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                   WHERE n.nspname = 'pgrelay'"""
            )
            if foreign:
                raise SchemaError(
                    "schema pgrelay exists and holds objects that are not an installed pgrelay; "
                    "rename or drop it, then run jobs-migrate again"
                )
            script = install_script(target)
            await conn.execute("CREATE SCHEMA IF NOT EXISTS pgrelay")
            await conn.execute(_read(script))
            await _apply_privileges(conn)
            return MigrationResult("installed", None, target, [script])

        scripts = upgrade_path(current, target)
        await _lock_for_upgrade(conn)
        for script in scripts:
            await conn.execute(_read(script))
        await _apply_privileges(conn)
        return MigrationResult("upgraded", current, target, scripts)


async def _apply_privileges(conn: asyncpg.Connection) -> None:
    """Make the privileges what the installed version declares (from 0.2.0 on; 0.1.0 granted its own)."""
    if await conn.fetchval("SELECT to_regprocedure('pgrelay._apply_privileges()') IS NOT NULL"):
        await conn.execute("SELECT pgrelay._apply_privileges()")


def _read(name: str) -> str:
    return (sql_files() / name).read_text(encoding="utf-8")
