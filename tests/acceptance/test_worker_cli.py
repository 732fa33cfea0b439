"""jobs-worker's command line: options from the environment, and clear errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "jobs-worker"), *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


def test_a_bad_app_is_a_clear_usage_error():
    result = run("postgresql://x@127.0.0.1:1/db", "--app", "no_such_module:router")
    assert result.returncode == 2 and "cannot import 'no_such_module'" in result.stderr
    result = run("postgresql://x@127.0.0.1:1/db", "--app", "tests.acceptance.worker_app:nothing")
    assert result.returncode == 2 and "is not a pgrelay.Router" in result.stderr


def test_options_come_from_the_environment():
    result = run("postgresql://x@127.0.0.1:1/db", env={"PGRELAY_CONCURRENCY": "0"})
    assert result.returncode == 2 and "--concurrency" in result.stderr


def test_pgrelay_worker_is_the_same_command():
    result = subprocess.run([str(BIN / "pgrelay"), "worker", "--help"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and "--shutdown-grace" in result.stdout
