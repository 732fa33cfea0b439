"""A built wheel carries the SQL: installed alone in a new virtualenv, jobs-migrate installs the schema."""

from __future__ import annotations

import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import psycopg

import pgrelay

ROOT = Path(__file__).resolve().parents[2]


def test_wheel_installed_alone_runs_jobs_migrate(tmp_path, empty_dsn):
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(wheels), str(ROOT)],
        check=True, capture_output=True, timeout=300,
    )
    (wheel,) = wheels.glob("pgrelay-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    sql = sorted(name.removeprefix("pgrelay/sql/") for name in names if name.startswith("pgrelay/sql/"))
    shipped = sorted(p.name for p in (ROOT / "sql").iterdir()
                     if p.name in ("pgrelay.sql", "pgrelay.control") or p.name.startswith("pgrelay--"))
    assert sql == shipped  # the assembled script, the control file, every release and upgrade; not src/
    assert "pgrelay--0.1.0.sql" in sql and "pgrelay.sql" in sql
    assert not any("__pycache__" in name or name.startswith("tests/") for name in names)

    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    subprocess.run([str(env_dir / "bin" / "pip"), "install", "--quiet", str(wheel)],
                   check=True, capture_output=True, timeout=300)
    result = subprocess.run([str(env_dir / "bin" / "jobs-migrate"), empty_dsn],
                            capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"installed pgrelay {pgrelay.__version__}" in result.stdout
    with psycopg.connect(empty_dsn) as conn:
        assert conn.execute("SELECT pgrelay.version()").fetchone()[0] == pgrelay.__version__
