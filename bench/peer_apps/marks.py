"""What a peer's worker process tells bench/peers.py, through files in a run's own directory.

    ready-<pid>   written once the process has connected and registered its handlers;
                  the process then waits for the file ``go`` (so every worker starts together)
    first-<pid>   the wall-clock time (time.time()) the first no-op job's handler started
    probe-<pid>   one line per latency probe: "<job id> <wall-clock time the handler started>"

time.time() is CLOCK_REALTIME, the clock PostgreSQL's now() reads on this same host, so a handler's
start can be compared with timestamps the peer wrote in its own tables. Taking the time costs
nothing; the first-start file is written once per process and probe lines only by probe jobs.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path


class Marks:
    def __init__(self, workdir: str) -> None:
        self.dir = Path(workdir)
        self.pid = os.getpid()
        self.first: float | None = None
        self._probes = None

    def started(self) -> None:
        """Call first thing in the no-op handler."""
        if self.first is None:
            self.first = time.time()
            (self.dir / f"first-{self.pid}").write_text(repr(self.first))

    def probe(self, job_id: int) -> None:
        """Call first thing in the probe handler."""
        t = time.time()
        if self._probes is None:
            self._probes = open(self.dir / f"probe-{self.pid}", "a", buffering=1)
        self._probes.write(f"{job_id} {t!r}\n")

    async def ready_and_wait(self) -> None:
        (self.dir / f"ready-{self.pid}").write_text("")
        go = self.dir / "go"
        while not go.exists():
            await asyncio.sleep(0.002)
