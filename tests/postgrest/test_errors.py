"""pgrelay's errors become the HTTP statuses docs/postgrest.md lists; never a 5xx."""

from __future__ import annotations

import pytest

from tests.postgrest import state

BAD_INPUT = [
    # (function, arguments, status, code)
    ("enqueue", {"task": "no spaces allowed"}, 400, "PR001"),
    ("enqueue", {"task": "t", "max_attempts": 0}, 400, "PR001"),
    ("enqueue", {"task": "t", "priority": "high"}, 400, "22P02"),
    ("enqueue", {"task": "t", "run_at": "soon"}, 400, "22007"),
    ("enqueue_http", {"url": "ftp://files.example.com/x"}, 400, "PR003"),
    ("enqueue_http", {"url": "https://hooks.example.com/x", "method": "BREW"}, 400, "PR004"),
    ("enqueue_bulk", {"jobs": {"task": "t"}}, 400, "PR001"),
    ("enqueue_bulk", {"jobs": [{"task": "t", "colour": "red"}]}, 400, "PR002"),
    ("consume", {"worker": "w", "batch": 0}, 400, "PR001"),
    ("nack", {"id": 1, "attempt": 1, "error": ""}, 400, "PR001"),
    ("purge", {"older_than_days": -1}, 400, "PR001"),
    # a key that is no argument, or a required argument left out: no such function (before any SQL)
    ("enqueue", {"task": "t", "colour": "red"}, 404, "PGRST202"),
    ("enqueue", {"payload": {}}, 404, "PGRST202"),
    ("no_such_function", {}, 404, "PGRST202"),
]

ROLE_FOR = {"enqueue": "producer", "enqueue_http": "producer", "enqueue_bulk": "producer", "consume": "worker",
            "nack": "worker", "purge": "admin", "no_such_function": "admin"}


@pytest.mark.parametrize(("function", "args", "status", "code"), BAD_INPUT,
                         ids=[f"{f}-{c}-{i}" for i, (f, _, _, c) in enumerate(BAD_INPUT)])
def test_bad_input_is_a_4xx_with_the_sqlstate_and_a_message(api, pg, queue, function, args, status, code):
    if "task" in args or function == "enqueue_http":
        args = {**args, "queue": queue}
    response = api.call(ROLE_FOR[function], "POST", f"/rpc/{function}", args)
    assert (response.status, response.code) == (status, code), response
    assert response.json["message"]
    assert response.headers["content-type"].startswith("application/json")
    assert state.count(pg, queue) == 0


def test_invalid_json_is_400(api):
    response = api.send("POST", "/rpc/enqueue", {"Authorization": f"Bearer {api.token('producer')}",
                                                 "Content-Type": "application/json"}, b'{"task": ')
    assert (response.status, response.code) == (400, "PGRST102")


def test_a_get_of_a_function_that_writes_is_405_and_changes_nothing(api, pg, queue):
    response = api.call("producer", "GET", "/rpc/enqueue", query={"task": "t", "queue": queue})
    assert (response.status, response.code) == (405, "25006")
    assert state.count(pg, queue) == 0
    state.pending(pg, queue)
    response = api.call("worker", "GET", "/rpc/consume", query={"worker": "w", "queues": f"{{{queue}}}"})
    assert (response.status, response.code) == (405, "25006")
    assert state.count(pg, queue) == 1
    assert api.rows("admin", "jobs", queue=queue)[0]["status"] == "pending"


def test_a_get_of_a_stable_function_works_and_checks_its_argument_types(api, pg, queue):
    job_id = state.pending(pg, queue)
    assert api.call("reader", "GET", "/rpc/get_job", query={"id": str(job_id)}).json["id"] == job_id
    response = api.call("reader", "GET", "/rpc/get_job", query={"id": "forty-two"})
    assert (response.status, response.code) == (400, "22P02")


def test_only_get_and_post_reach_a_function(api):
    response = api.call("producer", "PUT", "/rpc/enqueue", {"task": "t"})
    assert (response.status, response.code) == (405, "PGRST101")


def test_an_unknown_view_is_404_for_a_role_and_401_for_anon(api):
    response = api.call("reader", "GET", "/no_such_view")
    assert (response.status, response.code) == (404, "42P01")
    assert api.call(None, "GET", "/no_such_view").status == 401


def test_an_array_body_calls_the_function_once_with_its_first_element(api, pg, queue):
    response = api.call("producer", "POST", "/rpc/enqueue",
                        [{"task": "first", "queue": queue}, {"task": "second", "queue": queue}])
    assert response.status == 200
    assert state.job(pg, response.json)["task"] == "first"
    assert state.count(pg, queue) == 1
    mixed = api.call("producer", "POST", "/rpc/enqueue", [{"task": "a", "queue": queue}, {"task": "b"}])
    assert (mixed.status, mixed.code) == (400, "PGRST102")
    assert state.count(pg, queue) == 1


def test_null_arguments_take_their_defaults(api, pg):
    job_id = api.rpc("producer", "enqueue", task="t", queue=None, priority=None, payload=None)
    job = state.job(pg, job_id)
    assert (job["queue"], job["priority"], job["payload"]) == ("default", 0, {})
    pg.execute("SELECT pgrelay.cancel(%s)", [job_id])


def test_a_stale_lease_is_a_200_answer_never_an_error(api, pg, queue):
    job_id, attempt = state.leased(pg, queue, worker="w1")
    assert api.rpc("worker", "ack", id=job_id, attempt=attempt + 1) is False
    assert api.rpc("worker", "nack", id=job_id, attempt=attempt + 1, error="e") == "stale"
    assert api.rpc("worker", "release", id=job_id, attempt=attempt + 1) is False
    assert api.rpc("worker", "heartbeat", worker="w2", ids=[job_id]) == [job_id]
    assert api.rpc("worker", "ack_many", ids=[job_id], attempts=[attempt + 1]) == 0
    assert state.job(pg, job_id)["status"] == "leased"  # the current lease is untouched
    assert api.rpc("worker", "ack", id=job_id, attempt=attempt) is True
