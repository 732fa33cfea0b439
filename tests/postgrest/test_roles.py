"""Each JWT role can call exactly its part of the API over HTTP; everything else is refused.

Allowed: 200. Refused: 403 with a JWT, 401 without one (the anon role has no privileges at all).
Every endpoint is tried by all five (anon, producer, worker, admin, reader), each with a fresh job
where the call needs one, against the real PostgREST and the emulation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from tests.postgrest import state
from tests.postgrest.api import ROLES

ALL = frozenset(ROLES)
PRODUCERS = frozenset({"producer", "worker"})
WORKER = frozenset({"worker"})
ADMIN = frozenset({"admin"})
MAINTAINERS = frozenset({"worker", "admin"})
LOOKERS = frozenset({"admin", "reader"})
NOBODY: frozenset[str] = frozenset()


@dataclass
class Setup:
    pg: Any
    queue: str

    def pending(self) -> int:
        return state.pending(self.pg, self.queue)

    def dead(self) -> int:
        return state.dead_letter(self.pg, self.queue)


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    args: Callable[[Setup], dict[str, Any]]  # the JSON body, or the query of a GET
    allowed: frozenset[str]

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


ENDPOINTS = [
    Endpoint("POST", "/rpc/enqueue", lambda s: {"task": "t", "queue": s.queue}, PRODUCERS),
    Endpoint("POST", "/rpc/enqueue_http", lambda s: {"url": "https://hooks.example.com/x", "queue": s.queue}, PRODUCERS),
    Endpoint("POST", "/rpc/enqueue_bulk", lambda s: {"jobs": [{"task": "t", "queue": s.queue}]}, PRODUCERS),
    Endpoint("POST", "/rpc/enqueue_many", lambda s: {"task": "t", "payloads": [{}, {}], "queue": s.queue}, PRODUCERS),
    Endpoint("GET", "/rpc/get_job", lambda s: {"id": str(s.pending())}, ALL),
    Endpoint("POST", "/rpc/get_job", lambda s: {"id": s.pending()}, ALL),
    Endpoint("POST", "/rpc/get_attempts", lambda s: {"id": s.dead()}, frozenset({"worker", "admin", "reader"})),
    Endpoint("POST", "/rpc/consume", lambda s: {"worker": "matrix-w", "queues": [s.queue]}, WORKER),
    Endpoint("POST", "/rpc/ack", lambda s: {"id": s.pending(), "attempt": 1}, WORKER),
    Endpoint("POST", "/rpc/ack_many", lambda s: {"ids": [s.pending()], "attempts": [1]}, WORKER),
    Endpoint("POST", "/rpc/ack_each", lambda s: {"ids": [s.pending()], "attempts": [1]}, WORKER),
    Endpoint("POST", "/rpc/nack", lambda s: {"id": s.pending(), "attempt": 1, "error": "e"}, WORKER),
    Endpoint("POST", "/rpc/release", lambda s: {"id": s.pending(), "attempt": 1}, WORKER),
    Endpoint("POST", "/rpc/heartbeat", lambda s: {"worker": "matrix-w", "queues": [s.queue]}, WORKER),
    Endpoint("POST", "/rpc/recover", lambda s: {}, MAINTAINERS),
    Endpoint("POST", "/rpc/maintain", lambda s: {"max_jobs": 1}, MAINTAINERS),
    Endpoint("POST", "/rpc/maintenance_scheduled", lambda s: {}, MAINTAINERS),
    Endpoint("POST", "/rpc/pause", lambda s: {"queue": s.queue}, ADMIN),
    Endpoint("POST", "/rpc/resume", lambda s: {"queue": s.queue}, ADMIN),
    Endpoint("POST", "/rpc/configure_queue", lambda s: {"queue": s.queue, "max_attempts": 3}, ADMIN),
    Endpoint("POST", "/rpc/replay", lambda s: {"id": s.dead()}, ADMIN),
    Endpoint("POST", "/rpc/replay_dead_letters", lambda s: {"queue": s.queue}, ADMIN),
    Endpoint("POST", "/rpc/cancel", lambda s: {"id": s.pending()}, ADMIN),
    Endpoint("POST", "/rpc/purge", lambda s: {"older_than_days": 36500, "max_jobs": 1}, ADMIN),
    Endpoint("GET", "/queue_stats", lambda s: {"queue": f"eq.{s.queue}"}, LOOKERS),
    Endpoint("GET", "/dead_letters", lambda s: {"queue": f"eq.{s.queue}"}, LOOKERS),
    Endpoint("GET", "/workers", lambda s: {"worker": "eq.matrix-w"}, LOOKERS),
    Endpoint("GET", "/jobs", lambda s: {"queue": f"eq.{s.queue}"}, LOOKERS),
    Endpoint("GET", "/expired_leases", lambda s: {"queue": f"eq.{s.queue}"}, LOOKERS),
    Endpoint("GET", "/recent_failures", lambda s: {"queue": f"eq.{s.queue}"}, LOOKERS),
    # the tables and private functions are nobody's
    Endpoint("GET", "/_jobs", lambda s: {"queue": f"eq.{s.queue}"}, NOBODY),
    Endpoint("GET", "/_finished", lambda s: {"queue": f"eq.{s.queue}"}, NOBODY),
    Endpoint("GET", "/_attempts", lambda s: {}, NOBODY),
    Endpoint("POST", "/rpc/_check", lambda s: {"p_error": "x"}, NOBODY),
]


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=str)
def test_each_role_can_call_exactly_its_part(api, pg, queue, endpoint):
    wrong = []
    for role in (None, *ROLES):
        args = endpoint.args(Setup(pg, queue))
        if endpoint.method == "GET":
            response = api.call(role, "GET", endpoint.path, query=args)
        else:
            response = api.call(role, "POST", endpoint.path, args)
        expected = 200 if role in endpoint.allowed else (401 if role is None else 403)
        if response.status != expected:
            wrong.append(f"{role or 'anon'}: expected {expected}, got {response}")
        elif expected != 200:
            assert response.code == "42501", response
        if expected == 401:
            assert response.headers.get("www-authenticate", "").startswith("Bearer"), response.headers
    assert not wrong, f"{api.name} {endpoint}:\n" + "\n".join(wrong)


def test_every_granted_function_is_in_the_matrix(pg):
    # a function granted to one of the four roles but missing above would escape this test
    granted = pg.execute(
        """SELECT DISTINCT p.proname FROM pg_proc p
           CROSS JOIN unnest(ARRAY['pgrelay_producer', 'pgrelay_worker', 'pgrelay_admin', 'pgrelay_reader']) r
           WHERE p.pronamespace = 'pgrelay'::regnamespace AND p.prorettype <> 'trigger'::regtype
             AND has_function_privilege(r, p.oid, 'EXECUTE')""").fetchall()
    views = pg.execute(
        """SELECT c.relname FROM pg_class c WHERE c.relnamespace = 'pgrelay'::regnamespace AND c.relkind = 'v'""").fetchall()
    covered = {e.path.removeprefix("/rpc/").removeprefix("/") for e in ENDPOINTS}
    # version() is harmless and granted to all; private functions (_name) have their own test in test_setup.py
    missing = {name for (name,) in granted + views if not name.startswith("_")} - covered - {"version"}
    assert missing == set()
