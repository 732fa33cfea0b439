"""The committed schema dump (sql/schema-dump.sql) is what a fresh install gives: a change to a
function, privilege, setting, comment or index shows up in the diff of the commit that made it."""

from __future__ import annotations

import difflib

from tests.harness.schema_dump import DUMP_FILE, dump


def test_the_installed_schema_is_the_committed_dump(db, postgresql_proc):
    installed = dump(postgresql_proc.host, postgresql_proc.port, postgresql_proc.user, db.info.dbname)
    committed = DUMP_FILE.read_text(encoding="utf-8") if DUMP_FILE.is_file() else ""
    diff = list(difflib.unified_diff(committed.splitlines(), installed.splitlines(), "sql/schema-dump.sql",
                                     "installed", lineterm="", n=2))
    assert not diff, "the schema differs from sql/schema-dump.sql; run `make schema-dump` and commit it:\n" + \
        "\n".join(diff[:80])
