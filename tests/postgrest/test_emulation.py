"""The emulation answers as the real PostgREST 12.0.2 does: same statuses, codes, messages and bodies.

These run only where the real server runs; they are what makes the emulation worth trusting elsewhere.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from psycopg import sql

from tests.postgrest import state
from tests.postgrest.api import Api, Response, make_jwt, wait_for
from tests.postgrest.emulation import http_status

Request = Callable[[Api], Response]


def requests_for(queue: str) -> dict[str, Request]:
    body = {"Content-Type": "application/json"}
    return {
        "enqueue, bad task": lambda a: a.call("producer", "POST", "/rpc/enqueue", {"task": "a b", "queue": queue}),
        "enqueue, bad type": lambda a: a.call("producer", "POST", "/rpc/enqueue", {"task": "t", "priority": "x"}),
        "enqueue, bad timestamp": lambda a: a.call("producer", "POST", "/rpc/enqueue", {"task": "t", "run_at": "x"}),
        "enqueue, unknown key": lambda a: a.call("producer", "POST", "/rpc/enqueue", {"task": "t", "nope": 1}),
        "enqueue, no task": lambda a: a.call("producer", "POST", "/rpc/enqueue", {"queue": queue}),
        "enqueue, mixed array": lambda a: a.call("producer", "POST", "/rpc/enqueue", [{"task": "t"}, {"queue": queue}]),
        "enqueue by GET": lambda a: a.call("producer", "GET", "/rpc/enqueue", query={"task": "t", "queue": queue}),
        "enqueue by PUT": lambda a: a.call("producer", "PUT", "/rpc/enqueue", {"task": "t"}),
        "enqueue, invalid JSON": lambda a: a.send("POST", "/rpc/enqueue",
                                                  {**body, "Authorization": f"Bearer {a.token('producer')}"}, b"{"),
        "enqueue, anon": lambda a: a.call(None, "POST", "/rpc/enqueue", {"task": "t"}),
        "enqueue, reader": lambda a: a.call("reader", "POST", "/rpc/enqueue", {"task": "t"}),
        "enqueue, bad signature": lambda a: a.call(None, "POST", "/rpc/enqueue", {"task": "t"},
                                                   token=make_jwt("x" * 40, {"role": "pgrelay_producer"})),
        "enqueue, expired": lambda a: a.call(None, "POST", "/rpc/enqueue", {"task": "t"},
                                             token=make_jwt(a.jwt_secret, {"role": "pgrelay_producer", "exp": 1})),
        "enqueue, as postgres": lambda a: a.call(None, "POST", "/rpc/enqueue", {"task": "t"},
                                                 token=make_jwt(a.jwt_secret, {"role": "postgres"})),
        "enqueue, unknown role": lambda a: a.call(None, "POST", "/rpc/enqueue", {"task": "t"},
                                                  token=make_jwt(a.jwt_secret, {"role": "nobody_at_all"})),
        "enqueue_bulk, empty": lambda a: a.call("producer", "POST", "/rpc/enqueue_bulk", {"jobs": []}),
        "enqueue_bulk, bad element": lambda a: a.call("producer", "POST", "/rpc/enqueue_bulk", {"jobs": [{"x": 1}]}),
        "enqueue_http, ftp": lambda a: a.call("producer", "POST", "/rpc/enqueue_http", {"url": "ftp://x/"}),
        "get_job unknown, GET": lambda a: a.call("reader", "GET", "/rpc/get_job", query={"id": "999999999999"}),
        "get_job unknown, POST": lambda a: a.call("reader", "POST", "/rpc/get_job", {"id": 999999999999}),
        "get_job, bad id": lambda a: a.call("reader", "GET", "/rpc/get_job", query={"id": "x"}),
        "get_attempts unknown": lambda a: a.call("worker", "POST", "/rpc/get_attempts", {"id": 999999999999}),
        "consume, empty queue": lambda a: a.call("worker", "POST", "/rpc/consume", {"worker": "w", "queues": [queue]}),
        "consume, batch 0": lambda a: a.call("worker", "POST", "/rpc/consume", {"worker": "w", "batch": 0}),
        "consume by GET": lambda a: a.call("worker", "GET", "/rpc/consume", query={"worker": "w"}),
        "ack, unknown": lambda a: a.call("worker", "POST", "/rpc/ack", {"id": 999999999999, "attempt": 1}),
        "nack, unknown": lambda a: a.call("worker", "POST", "/rpc/nack", {"id": 999999999999, "attempt": 1, "error": "e"}),
        "recover, no body": lambda a: a.send("POST", "/rpc/recover", {"Authorization": f"Bearer {a.token('worker')}"}),
        "maintenance_scheduled": lambda a: a.call("admin", "POST", "/rpc/maintenance_scheduled", {}),
        "configure_queue": lambda a: a.call("admin", "POST", "/rpc/configure_queue",
                                            {"queue": queue, "concurrency": 4, "lease_seconds": 60}),
        "replay unknown": lambda a: a.call("admin", "POST", "/rpc/replay", {"id": 999999999999}),
        "cancel unknown": lambda a: a.call("admin", "POST", "/rpc/cancel", {"id": 999999999999}),
        "jobs of an empty queue": lambda a: a.call("admin", "GET", "/jobs", query={"queue": f"eq.{queue}"}),
        "dead_letters, ordered": lambda a: a.call("reader", "GET", "/dead_letters",
                                                  query={"queue": f"eq.{queue}", "order": "id.desc", "limit": "5"}),
        "a view, unknown column": lambda a: a.call("reader", "GET", "/jobs", query={"colour": "eq.red"}),
        "an unknown view": lambda a: a.call("reader", "GET", "/no_such_view"),
        "a table": lambda a: a.call("admin", "GET", "/_jobs"),
        "a private function": lambda a: a.call("admin", "POST", "/rpc/_check", {"p_error": "x"}),
    }


def comparable(response: Response) -> dict[str, Any]:
    seen: dict[str, Any] = {"status": response.status}
    if response.status >= 400:
        error = response.json
        seen["code"] = error["code"]
        if not error["code"].startswith("PGRST"):  # PostgREST's own messages are not emulated word for word
            seen["message"], seen["hint"] = error["message"], error["hint"]
        seen["www-authenticate"] = response.headers.get("www-authenticate", "").split(" ")[0]
    elif response.status == 200:
        seen["body"] = json.loads(response.body)
    seen["json"] = response.headers.get("content-type", "").startswith("application/json")
    return seen


def test_the_emulation_answers_each_request_as_postgrest_does(postgrest_api, emulated_api, queue):
    differ = {}
    for what, request in requests_for(queue).items():
        real, emulated = comparable(request(postgrest_api)), comparable(request(emulated_api))
        if real != emulated:
            differ[what] = {"postgrest": real, "emulated": emulated}
    assert differ == {}, json.dumps(differ, indent=1)


def test_the_emulation_reads_views_as_postgrest_does(postgrest_api, emulated_api, pg, queue):
    for _ in range(2):
        state.dead_letter(pg, queue)
    for relation, query, rows in [("dead_letters", {"queue": f"eq.{queue}"}, 2),
                                  ("jobs", {"queue": f"eq.{queue}", "order": "id.desc"}, 2),
                                  ("jobs", {"queue": f"eq.{queue}", "attempt": "gte.1", "limit": "1"}, 1),
                                  ("jobs", {"queue": f"eq.{queue}", "finished_at": "is.null"}, 0),
                                  ("expired_leases", {"queue": f"eq.{queue}"}, 0)]:
        real = postgrest_api.call("admin", "GET", f"/{relation}", query=query)
        emulated = emulated_api.call("admin", "GET", f"/{relation}", query=query)
        assert real.status == 200 and len(real.json) == rows, (relation, query, real)
        assert (emulated.status, emulated.json) == (real.status, real.json), (relation, query)


CODES = ["P0001", "P0002", "P0004", "PT400", "PT404", "PT409", "PT418", "23502", "23503", "23505", "23514",
         "22P02", "22007", "22023", "42501", "42883", "42P01", "42P17", "42703", "0A000", "08006", "09000",
         "0L000", "0P000", "21000", "25001", "25006", "28000", "2D000", "38000", "39000", "3B000", "53000",
         "53300", "53400", "54000", "55000", "57014", "58000", "F0000", "HV000", "XX000", "PR001", "PR005"]


@pytest.fixture
def raise_probe(postgrest_api, pg):
    """pgrelay.postgrest_raise_probe(code) raises that SQLSTATE; served by the real server too."""
    probe = sql.Identifier("pgrelay", "postgrest_raise_probe")
    pg.execute(sql.SQL("CREATE FUNCTION {}(code text) RETURNS integer LANGUAGE plpgsql AS "
                       "$$BEGIN RAISE EXCEPTION USING ERRCODE = code, MESSAGE = 'probe ' || code; END$$").format(probe))
    pg.execute(sql.SQL("GRANT EXECUTE ON FUNCTION {}(text) TO pgrelay_admin").format(probe))
    pg.execute("NOTIFY pgrst, 'reload schema'")
    wait_for(lambda: postgrest_api.call("admin", "POST", "/rpc/postgrest_raise_probe", {"code": "PT418"}).status == 418,
             what="the probe in the schema cache")
    yield "/rpc/postgrest_raise_probe"
    pg.execute(sql.SQL("DROP FUNCTION {}(text)").format(probe))
    pg.execute("NOTIFY pgrst, 'reload schema'")


def test_the_emulations_status_table_is_postgrests(postgrest_api, emulated_api, raise_probe):
    def status(api: Api, code: str) -> tuple[int, str | None]:
        response = api.send("POST", raise_probe, {"Authorization": f"Bearer {api.token('admin')}",
                                                  "Content-Type": "application/json"}, json.dumps({"code": code}).encode())
        return response.status, response.code

    differ = {}
    for code in CODES:
        (real, real_code), (emulated, emulated_code) = status(postgrest_api, code), status(emulated_api, code)
        if not real == emulated == http_status(code, authed=True) or not real_code == emulated_code == code:
            differ[code] = (real, emulated, http_status(code, authed=True))
    assert differ == {}, f"(postgrest, emulated, table) per SQLSTATE: {differ}"
