"""Command line: ``jobs-migrate``, ``jobs-worker`` and the operators' ``pgrelay`` group.

A DSN comes from the argument (``--dsn`` for the operator commands), else ``PGRELAY_DSN``, else the
libpq variables (PGHOST, PGPORT, PGUSER, PGDATABASE, PGPASSWORD, ...). Expected failures (bad DSN,
unreachable server, missing privileges, a newer schema, an error raised by a pgrelay function) print
one line, ``<command>: error: <what to fix>``, and exit 1; they never print a traceback. Bad usage
(a malformed option) exits 2, as click does.

The operator commands only call the wrappers of ``pgrelay.client``: what a command does to the queue
is what the SQL function it names does.

Where each command lives:

- ``entry``: ``jobs-migrate``, ``jobs-worker``, ``pgrelay migrate``, ``pgrelay worker``
- ``jobs``: ``enqueue``, ``jobs list|show|attempts``, ``replay``, ``replay-dead``, ``cancel``
- ``queues``: ``queues list|pause|resume|configure``, ``drain``, ``stats``, ``top``
- ``schedules``: ``schedules list|add|remove|pause|resume|run-now``
- ``operations``: ``purge``
- ``doctor``: ``doctor``
- ``common``: the ``pgrelay`` group, shared options, running an action and reporting its failure
- ``output``: tables, JSON and one-line text for the terminal
"""

from __future__ import annotations

# importing a command module registers its commands on the group main
from . import doctor, jobs, operations, queues, schedules  # noqa: F401
from .common import main
from .doctor import expected_indexes
from .entry import migrate_main, worker_main

__all__ = ["expected_indexes", "main", "migrate_main", "worker_main"]
