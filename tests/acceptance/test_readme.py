"""The README's Python, run as a newcomer would paste it: in a fresh interpreter, against a database
that jobs-migrate installed (the test's own), with only PGRELAY_DSN set."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```$", README.read_text(), flags=re.DOTALL | re.MULTILINE)


def test_the_first_python_example_runs_as_written(db, dsn, tmp_path):
    example = tmp_path / "example.py"
    example.write_text(python_blocks()[0])
    done = subprocess.run([sys.executable, str(example)], env={**os.environ, "PGRELAY_DSN": dsn}, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    # the order and its job, committed together
    assert db.execute("SELECT total FROM orders WHERE id = 42").fetchone()[0] == 99.5
    job = db.execute("SELECT task, payload, idempotency_key FROM pgrelay.jobs").fetchall()
    assert job == [("orders.confirm", {"order_id": 42}, "order-42")]
