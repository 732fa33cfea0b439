"""`make install-extension` for the server the tests run, so that CREATE EXTENSION pgrelay works.

The files go into the server's `pg_config --sharedir`/extension (fine as root, or wherever that
folder is writable); when it is not, the tests that need them skip, saying why, or fail under CI
(tests/harness/tools.py).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests.harness.cluster import pg_bindir
from tests.harness.tools import missing

ROOT = Path(__file__).resolve().parents[2]


def _pg_config() -> str | None:
    """The pg_config of the server the tests run (so the files land where that server looks)."""
    beside_server = Path(pg_bindir()) / "pg_config"
    if beside_server.is_file() and os.access(beside_server, os.X_OK):
        return str(beside_server)
    return shutil.which(os.environ.get("PG_CONFIG", "pg_config"))


def install_extension() -> Path:
    """Run `make install-extension` for this server; returns the extension folder."""
    pg_config = _pg_config()
    if pg_config is None:
        missing("pg_config not found, so the server's extension folder is unknown")
    if shutil.which("make") is None:
        missing("make is not installed")
    sharedir = subprocess.run([pg_config, "--sharedir"], check=True, capture_output=True, text=True).stdout.strip()
    folder = Path(sharedir) / "extension"
    existing = folder if folder.exists() else folder.parent
    if not os.access(existing, os.W_OK):
        missing(f"{existing} is not writable by this user, so `make install-extension` cannot install "
                    f"pgrelay there (run the tests as root or as the owner of the PostgreSQL installation)")
    result = subprocess.run(["make", "--no-print-directory", "install-extension", f"PG_CONFIG={pg_config}"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return folder
