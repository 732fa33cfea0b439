import re
from pathlib import Path

import pgrelay
from tests.harness.releases import INSTALL, upgrade_chain


def test_version_matches_package_and_control_file(db):
    installed = db.execute("SELECT pgrelay.version()").fetchone()[0]
    control = (Path(__file__).parents[2] / "sql" / "pgrelay.control").read_text()
    assert installed == pgrelay.__version__
    assert re.search(r"default_version = '([^']+)'", control).group(1) == installed


def test_install_is_recorded_in_migrations(db):
    rows = db.execute("SELECT version, method FROM pgrelay._migrations ORDER BY installed_at, version").fetchall()
    if INSTALL == "fresh":
        assert rows == [(pgrelay.__version__, "jobs-migrate")]
    else:  # the oldest release, then each upgrade
        assert rows == [(version, "jobs-migrate") for version in upgrade_chain()]
