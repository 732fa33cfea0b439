"""The release chain as the tests see it: how the test template was installed, the chain of
versions, and a package that ships one more release than this one.

``INSTALL`` is ``fresh`` (the template installed the current version) or ``upgrade`` (it installed
the oldest release and walked the chain; ``PGRELAY_TEST_INSTALL=upgrade``, the second run of
``make test``).
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import asyncpg
import pytest

from pgrelay import schema

INSTALL = os.environ.get("PGRELAY_TEST_INSTALL", "fresh")
if INSTALL not in ("fresh", "upgrade"):
    raise pytest.UsageError(f"PGRELAY_TEST_INSTALL={INSTALL!r}: use fresh (the default) or upgrade")


def migrate_dsn(dsn: str, target: str | None = None) -> schema.MigrationResult:
    """jobs-migrate's code (``pgrelay.schema.migrate``) on a connection of its own to ``dsn``."""

    async def go() -> schema.MigrationResult:
        conn = await asyncpg.connect(dsn)
        try:
            return await schema.migrate(conn, target=target)
        finally:
            await conn.close()

    return asyncio.run(go())


def upgrade_chain() -> list[str]:
    """Every version from the oldest release to the current one, in the order jobs-migrate walks them."""
    oldest = schema.released_versions()[0]
    steps = schema.upgrade_path(oldest, schema.schema_version())
    return [oldest] + [step.removesuffix(".sql").split("--")[2] for step in steps]


def next_version(version: str) -> str:
    major, minor, _ = (int(part) for part in version.split("."))
    return f"{major}.{minor + 1}.0"


def package_with_next_release(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, upgrade_sql: str) -> str:
    """Make pgrelay.schema read a copy of this package's SQL files with one more release, whose
    upgrade script from the current version is ``upgrade_sql`` followed by what every upgrade script
    ends with (version(), privileges, the record). Returns the new version."""
    files = tmp_path / "sql"
    shutil.copytree(Path(str(schema.sql_files())), files, ignore=shutil.ignore_patterns("src", "*.py"))
    current = schema.schema_version()
    new = next_version(current)
    control = files / "pgrelay.control"
    control.write_text(control.read_text().replace(f"default_version = '{current}'", f"default_version = '{new}'"))
    (files / f"pgrelay--{current}--{new}.sql").write_text(f"""{upgrade_sql}
CREATE OR REPLACE FUNCTION pgrelay.version() RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT '{new}'::text $$;
SELECT pgrelay._apply_privileges();
SELECT pgrelay._record_install('{new}');
""")
    monkeypatch.setattr(schema, "sql_files", lambda: files)
    return new
