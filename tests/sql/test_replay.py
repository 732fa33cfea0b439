"""pgrelay.replay and pgrelay.replay_dead_letters: running finished jobs again as new jobs."""

from __future__ import annotations

import pytest

from tests.sql.factory import (
    age_finished,
    call,
    consume,
    dicts,
    enqueue,
    get_job,
    make_job,
    raises_sqlstate,
    scalar,
)


def job_rows(db) -> int:
    return scalar(db, "SELECT count(*) FROM pgrelay.jobs")


@pytest.mark.parametrize("state", ["dead_letter", "cancelled"])
def test_replay_creates_a_new_pending_job_from_the_old_one(db, state):
    old = make_job(db, state, queue="mail", payload={"to": "a@example.com"}, priority=5, trace_id="trace-1",
                   max_attempts=4, timeout_seconds=9)

    new_id = call(db, "replay", id=old.id)

    assert new_id != old.id
    new, before = get_job(db, new_id), get_job(db, old.id)
    assert new["status"] == "pending" and new["attempt"] == 0 and new["replayed_from"] == old.id
    for key in ("queue", "task", "kind", "payload", "priority", "trace_id", "max_attempts", "timeout_seconds"):
        assert new[key] == before[key], key
    assert before["status"] == state
    [claimed] = consume(db, queues=["mail"], tasks=[old.task])
    assert claimed["id"] == new_id


def test_a_replayed_dead_letter_leaves_the_dead_letters_view(db):
    old = make_job(db, "dead_letter")
    listed = lambda: [r["id"] for r in dicts(db, "SELECT id FROM pgrelay.dead_letters")]  # noqa: E731
    assert listed() == [old.id]

    call(db, "replay", id=old.id)

    assert listed() == []


def test_a_job_that_succeeded_replays_only_with_force(db):
    old = make_job(db, "succeeded")
    before = job_rows(db)

    with raises_sqlstate("PT409") as info:
        call(db, "replay", id=old.id)
    assert "succeeded" in str(info.value) and "force" in info.value.diag.message_hint
    assert job_rows(db) == before

    new_id = call(db, "replay", id=old.id, force=True)
    assert get_job(db, new_id)["replayed_from"] == old.id


def test_a_second_replay_is_refused_and_names_the_first(db):
    old = make_job(db, "dead_letter")
    first = call(db, "replay", id=old.id)

    with raises_sqlstate("PT409") as info:
        call(db, "replay", id=old.id)
    assert str(first) in str(info.value)

    again = call(db, "replay", id=old.id, force=True)
    assert again not in (first, old.id)


@pytest.mark.parametrize("state", ["pending", "scheduled", "leased", "retrying"])
def test_an_active_job_cannot_be_replayed(db, state):
    job = make_job(db, state)
    before = job_rows(db)

    with raises_sqlstate("PT409") as info:
        call(db, "replay", id=job.id)

    assert "only finished jobs" in str(info.value)
    assert job_rows(db) == before


def test_replaying_an_unknown_job_is_not_found(db):
    with raises_sqlstate("PT404") as info:
        call(db, "replay", id=987654)
    assert "987654" in str(info.value)


def test_replaying_a_purged_job_is_not_found(db):
    old = make_job(db, "dead_letter")
    age_finished(db, old, days=400)
    assert call(db, "purge", older_than_days=365) == 1

    with raises_sqlstate("PT404"):
        call(db, "replay", id=old.id)


def test_replay_needs_an_id(db):
    with raises_sqlstate("PR001"):
        db.execute("SELECT pgrelay.replay(NULL)")


def test_the_idempotency_key_stays_with_the_original_job(db):
    old = make_job(db, "dead_letter", idempotency_key="order-7")

    new_id = call(db, "replay", id=old.id)

    assert get_job(db, new_id)["idempotency_key"] is None
    assert enqueue(db, task="again", idempotency_key="order-7").id == old.id


# replay_dead_letters


def test_replay_dead_letters_replays_each_dead_letter_of_the_queue_once(db):
    dead = [make_job(db, "dead_letter", queue="mail") for _ in range(3)]
    other_queue = make_job(db, "dead_letter", queue="sms")
    cancelled = make_job(db, "cancelled", queue="mail")

    assert call(db, "replay_dead_letters", queue="mail") == 3
    assert call(db, "replay_dead_letters", queue="mail") == 0

    replayed = dicts(db, "SELECT replayed_from FROM pgrelay.jobs WHERE status = 'pending' ORDER BY id")
    assert [r["replayed_from"] for r in replayed] == [d.id for d in dead]
    assert get_job(db, other_queue.id)["status"] == "dead_letter"
    assert get_job(db, cancelled.id)["status"] == "cancelled"


def test_replay_dead_letters_filters_by_task_pattern_and_time(db):
    orders = make_job(db, "dead_letter", queue="mail", task="orders.created")
    old_orders = make_job(db, "dead_letter", queue="mail", task="orders.paid")
    make_job(db, "dead_letter", queue="mail", task="users.created")
    age_finished(db, old_orders, days=2)

    count = call(db, "replay_dead_letters", queue="mail", task="orders.%", since=scalar(db, "SELECT now() - interval '1 day'"))

    assert count == 1
    assert scalar(db, "SELECT replayed_from FROM pgrelay.jobs WHERE status = 'pending'") == orders.id


@pytest.mark.parametrize(("args", "message"), [
    ({"queue": "bad queue"}, "invalid queue"),
    ({"queue": None}, "queue must not be NULL"),
    ({"queue": "mail", "task": ""}, "LIKE pattern"),
    ({"queue": "mail", "task": "orders\\"}, "LIKE pattern"),  # PostgreSQL's LIKE refuses it (22025)
])
def test_replay_dead_letters_refuses_bad_input_and_replays_nothing(db, args, message):
    make_job(db, "dead_letter", queue="mail")
    before = job_rows(db)

    with raises_sqlstate("PR001") as info:
        call(db, "replay_dead_letters", **args)

    assert message in str(info.value)
    assert job_rows(db) == before


def test_replay_dead_letters_refuses_an_infinite_since(db):
    with raises_sqlstate("PR001"):
        db.execute("SELECT pgrelay.replay_dead_letters('mail', since => 'infinity')")


def test_every_replay_in_a_chain_is_delivered_with_the_id_of_the_first_job(db):
    first = make_job(db, "dead_letter", queue="chain")
    second = call(db, "replay", id=first.id)
    [claimed] = consume(db, queues=["chain"])
    assert (claimed["id"], claimed["delivery_id"]) == (second, str(first.id))
    assert call(db, "nack", id=second, attempt=claimed["attempt"], error="again", permanent=True) == "dead_letter"

    third = call(db, "replay", id=second)
    [claimed] = consume(db, queues=["chain"])

    assert (claimed["id"], claimed["delivery_id"]) == (third, str(first.id))


def test_a_replay_of_a_job_with_an_idempotency_key_is_delivered_with_that_key(db):
    keyed = make_job(db, "dead_letter", queue="keyed", idempotency_key="order-42")
    call(db, "replay", id=keyed.id)

    [claimed] = consume(db, queues=["keyed"])

    assert claimed["delivery_id"] == "order-42" and claimed["idempotency_key"] is None


def test_a_job_that_is_no_replay_has_no_delivery_id(db):
    make_job(db, "pending", queue="plain", idempotency_key="k-1")
    [claimed] = consume(db, queues=["plain"])
    assert claimed["delivery_id"] is None


def test_replay_dead_letters_gives_each_replay_the_delivery_id_of_its_chain(db):
    first = make_job(db, "dead_letter", queue="bulk")
    keyed = make_job(db, "dead_letter", queue="bulk", idempotency_key="bulk-key")

    assert call(db, "replay_dead_letters", queue="bulk") == 2

    delivered = {row["replayed_from"]: row["delivery_id"]
                 for row in dicts(db, "SELECT (options).replayed_from, (options).delivery_id FROM pgrelay._jobs")}
    assert delivered == {first.id: str(first.id), keyed.id: "bulk-key"}


def test_replay_dead_letters_replays_at_most_max_jobs_oldest_first(db):
    dead = [make_job(db, "dead_letter", queue="many") for _ in range(5)]

    assert call(db, "replay_dead_letters", queue="many", max_jobs=3) == 3
    replayed = {row["replayed_from"] for row in dicts(db, "SELECT (options).replayed_from FROM pgrelay._jobs")}
    assert replayed == {d.id for d in dead[:3]}

    assert call(db, "replay_dead_letters", queue="many", max_jobs=3) == 2  # fewer than asked: none left
    assert call(db, "replay_dead_letters", queue="many") == 0


@pytest.mark.parametrize("max_jobs", [0, 100001])
def test_replay_dead_letters_refuses_a_bound_out_of_range(db, max_jobs):
    with raises_sqlstate("PR001"):
        call(db, "replay_dead_letters", queue="q", max_jobs=max_jobs)
