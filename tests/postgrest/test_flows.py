"""What producers, workers, operators and dashboards do over HTTP, end to end."""

from __future__ import annotations

from tests.postgrest import state


def test_a_job_goes_from_a_producer_through_a_worker_to_a_reader(api, queue):
    job_id = api.rpc("producer", "enqueue", task="mail.send", queue=queue, payload={"to": "ada@example.com"})
    assert isinstance(job_id, int)
    job = api.rpc("reader", "get_job", id=job_id)
    assert (job["status"], job["queue"], job["task"], job["payload"]) == ("pending", queue, "mail.send",
                                                                         {"to": "ada@example.com"})

    claimed = api.rpc("worker", "consume", worker="http-worker", queues=[queue], batch=10)
    assert [(j["id"], j["attempt"], j["payload"]) for j in claimed] == [(job_id, 1, {"to": "ada@example.com"})]
    assert api.rpc("worker", "heartbeat", worker="http-worker", ids=[job_id]) == []  # still held

    assert api.rpc("worker", "ack", id=job_id, attempt=1, result={"sent": True}) is True
    # the same ack again is stale: not an error, 200 with false, and nothing changes
    assert api.rpc("worker", "ack", id=job_id, attempt=1) is False
    assert api.rpc("worker", "heartbeat", worker="http-worker", ids=[job_id]) == [job_id]  # no longer held

    job = api.rpc("reader", "get_job", id=job_id)
    assert (job["status"], job["attempt"], job["result"]) == ("succeeded", 1, {"sent": True})
    attempts = api.rpc("reader", "get_attempts", id=job_id)
    assert [(a["attempt"], a["worker"], a["outcome"]) for a in attempts] == [(1, "http-worker", "succeeded")]


def test_a_reader_sees_the_queue_in_queue_stats(api, queue, pg):
    for _ in range(3):
        state.pending(pg, queue)
    state.dead_letter(pg, queue)
    rows = api.rows("reader", "queue_stats", queue=queue)
    assert len(rows) == 1
    assert (rows[0]["pending"], rows[0]["leased"], rows[0]["dead_letter"], rows[0]["paused"]) == (3, 0, 1, False)
    assert api.rows("reader", "queue_stats", queue=queue + "_none") == []


def test_a_reader_sees_the_workers_and_their_leases(api, queue, pg):
    worker = f"{queue}-w"
    api.rpc("worker", "heartbeat", worker=worker, host="web-1", pid=4242, queues=[queue])
    state.pending(pg, queue)
    assert len(api.rpc("worker", "consume", worker=worker, queues=[queue])) == 1
    rows = api.rows("reader", "workers", worker=worker)
    assert [(r["host"], r["pid"], r["queues"], r["leased"]) for r in rows] == [("web-1", 4242, [queue], 1)]


def test_enqueue_bulk_takes_its_array_under_the_key_jobs(api, queue, pg):
    ids = api.rpc("producer", "enqueue_bulk", jobs=[
        {"task": "a", "queue": queue}, {"task": "b", "queue": queue, "priority": 5},
        {"url": "https://hooks.example.com/x", "queue": queue}])
    assert len(ids) == 3 and len(set(ids)) == 3
    assert [api.rpc("reader", "get_job", id=i)["task"] for i in ids] == ["a", "b", "http"]
    # one bad element rejects the whole call, nothing is enqueued
    response = api.call("producer", "POST", "/rpc/enqueue_bulk",
                        {"jobs": [{"task": "c", "queue": queue}, {"task": "no spaces", "queue": queue}]})
    assert (response.status, response.code) == (400, "PR002")
    assert "jobs[1]" in response.json["message"]
    assert state.count(pg, queue) == 3


def test_a_dead_letter_is_replayed_once_by_an_admin(api, queue):
    job_id = api.rpc("producer", "enqueue", task="mail.send", queue=queue)
    (claimed,) = api.rpc("worker", "consume", worker="w", queues=[queue])
    attempt = claimed["attempt"]
    assert api.rpc("worker", "nack", id=job_id, attempt=attempt, error="SMTP 550", permanent=True) == "dead_letter"
    assert api.rpc("worker", "nack", id=job_id, attempt=attempt, error="again") == "stale"
    dead = api.rows("reader", "dead_letters", queue=queue)
    assert [(d["id"], d["last_error"]) for d in dead] == [(job_id, "SMTP 550")]

    new_id = api.rpc("admin", "replay", id=job_id)
    assert new_id != job_id
    replayed = api.rpc("reader", "get_job", id=new_id)
    assert (replayed["status"], replayed["replayed_from"], replayed["task"]) == ("pending", job_id, "mail.send")
    assert api.rows("reader", "dead_letters", queue=queue) == []

    again = api.call("admin", "POST", "/rpc/replay", {"id": job_id})
    assert (again.status, again.code) == (409, "PT409")  # already replayed
    still_pending = api.call("admin", "POST", "/rpc/replay", {"id": new_id})
    assert (still_pending.status, still_pending.code) == (409, "PT409")
    unknown = api.call("admin", "POST", "/rpc/replay", {"id": 999_999_999_999})
    assert (unknown.status, unknown.code) == (404, "PT404")
    assert isinstance(unknown.json["message"], str) and unknown.json["message"]


def test_replay_dead_letters_replays_each_dead_letter_of_the_queue_once(api, queue, pg):
    dead = {state.dead_letter(pg, queue) for _ in range(2)}
    assert api.rpc("admin", "replay_dead_letters", queue=queue) == 2
    assert api.rpc("admin", "replay_dead_letters", queue=queue) == 0
    claimed = api.rpc("worker", "consume", worker="w", queues=[queue], batch=10)
    assert {api.rpc("reader", "get_job", id=j["id"])["replayed_from"] for j in claimed} == dead


def test_an_admin_pauses_and_resumes_a_queue(api, queue, pg):
    job_id = state.pending(pg, queue)
    assert api.rpc("admin", "pause", queue=queue) is True
    assert api.rpc("admin", "pause", queue=queue) is False  # already paused
    assert api.rpc("worker", "consume", worker="w", queues=[queue]) == []
    assert api.rows("reader", "queue_stats", queue=queue)[0]["paused"] is True
    assert api.rpc("admin", "resume", queue=queue) is True
    assert [j["id"] for j in api.rpc("worker", "consume", worker="w", queues=[queue])] == [job_id]


def test_an_admin_cancels_a_pending_job(api, queue, pg):
    job_id = state.pending(pg, queue)
    assert api.rpc("admin", "cancel", id=job_id) is True
    assert api.rpc("reader", "get_job", id=job_id)["status"] == "cancelled"
    assert api.rpc("admin", "cancel", id=job_id) is False  # already finished
    assert api.rpc("worker", "consume", worker="w", queues=[queue]) == []
    unknown = api.call("admin", "POST", "/rpc/cancel", {"id": 999_999_999_999})
    assert (unknown.status, unknown.code) == (404, "PT404")


def test_configure_queue_answers_one_json_object(api, queue):
    settings = api.rpc("admin", "configure_queue", queue=queue, concurrency=2, max_attempts=3)
    assert isinstance(settings, dict)
    assert (settings["queue"], settings["concurrency"], settings["max_attempts"], settings["paused"]) == (queue, 2, 3, False)


def test_get_job_answers_null_for_an_unknown_id_by_get_and_post(api):
    assert api.call("reader", "GET", "/rpc/get_job", query={"id": "999999999999"}).json is None
    assert api.rpc("reader", "get_job", id=999_999_999_999) is None


def test_a_worker_consumes_and_acks_in_batches(api, queue, pg):
    ids = [state.pending(pg, queue) for _ in range(5)]
    claimed = api.rpc("worker", "consume", worker="w", queues=[queue], batch=10)
    assert sorted(j["id"] for j in claimed) == ids
    acked = api.rpc("worker", "ack_each", ids=[j["id"] for j in claimed[:3]], attempts=[j["attempt"] for j in claimed[:3]])
    assert sorted(acked) == sorted(j["id"] for j in claimed[:3])
    assert api.rpc("worker", "ack_many", ids=[j["id"] for j in claimed], attempts=[j["attempt"] for j in claimed]) == 2
    assert api.rows("reader", "queue_stats", queue=queue)[0]["succeeded"] == 5
