"""The Python client: one thin wrapper per SQL function, usable in the caller's transaction."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone

import asyncpg
import pytest

import pgrelay
from pgrelay import client, models
from pgrelay.errors import Conflict, InvalidArgument, InvalidBulkJob, InvalidUrl, JobNotFound


@pytest.fixture
async def conn(dsn):
    connection = await asyncpg.connect(dsn)
    yield connection
    await connection.close()


@pytest.fixture
async def pool(dsn):
    p = await asyncpg.create_pool(dsn, min_size=1, max_size=3)
    yield p
    await p.close()


async def test_every_statement_names_a_function_or_view_that_exists(conn):
    for name, sql in client.SQL.items():
        for obj in re.findall(r"pgrelay\.(\w+)", sql):
            exists = await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM pg_proc WHERE proname = $1 AND pronamespace = 'pgrelay'::regnamespace)"
                " OR to_regclass('pgrelay.' || $1) IS NOT NULL", obj)
            assert exists, f"client.SQL[{name!r}] names pgrelay.{obj}, which does not exist"


async def test_claimed_job_fields_are_the_claimed_job_type_in_order(conn):
    # ClaimedJob.from_row builds by position, so the dataclass must list the SQL type's columns in order
    columns = await conn.fetch(
        "SELECT attname FROM pg_attribute WHERE attrelid = 'pgrelay.claimed_job'::regclass AND attnum > 0"
        " AND NOT attisdropped ORDER BY attnum")
    assert [c["attname"] for c in columns] == list(pgrelay.ClaimedJob.__dataclass_fields__)


async def test_every_public_function_has_a_wrapper(conn):
    public = await conn.fetch(
        "SELECT proname FROM pg_proc WHERE pronamespace = 'pgrelay'::regnamespace AND proname NOT LIKE '\\_%'"
        " AND prorettype <> 'trigger'::regtype")
    missing = [r["proname"] for r in public if not callable(getattr(client, r["proname"], None))]
    assert missing == []


async def test_the_notify_channel_matches_the_sql(conn):
    assert await conn.fetchval("SELECT pgrelay._channel()") == client.CHANNEL


async def test_enqueue_joins_the_callers_transaction(conn):
    await conn.execute("CREATE TABLE orders (id int PRIMARY KEY)")
    async with conn.transaction():
        await conn.execute("INSERT INTO orders VALUES (1)")
        kept = await client.enqueue(conn, "orders.created", {"id": 1})
    with pytest.raises(RuntimeError):
        async with conn.transaction():
            await conn.execute("INSERT INTO orders VALUES (2)")
            await client.enqueue(conn, "orders.created", {"id": 2})
            raise RuntimeError("the business transaction fails")
    jobs = await conn.fetch("SELECT id, payload::text FROM pgrelay.jobs ORDER BY id")
    assert [(r["id"], json.loads(r["payload"])) for r in jobs] == [(kept, {"id": 1})]


async def test_defaults_come_from_the_sql_and_options_are_stored(pool):
    job_id = await client.enqueue(pool, "mail.send")
    job = await client.get_job(pool, job_id)
    assert (job.queue, job.payload, job.priority, job.kind, job.status, job.max_attempts) == (
        "default", {}, 0, "handler", "pending", 10)
    other = await client.enqueue(pool, "mail.send", [1, "two"], queue="mail", priority=5, max_attempts=3,
                                 timeout_seconds=9, idempotency_key="k", dedupe_key="d", trace_id="t")
    job = await client.get_job(pool, other)
    assert (job.queue, job.payload, job.priority, job.max_attempts, job.timeout_seconds,
            job.idempotency_key, job.dedupe_key, job.trace_id) == ("mail", [1, "two"], 5, 3, 9, "k", "d", "t")


async def test_a_callers_own_jsonb_codec_does_not_change_what_is_stored(dsn):
    conn = await asyncpg.connect(dsn)
    try:
        await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
        job_id = await client.enqueue(conn, "codec.test", {"a": [1, 2]})
        assert await conn.fetchval("SELECT payload FROM pgrelay.jobs WHERE id = $1", job_id) == {"a": [1, 2]}
        assert (await client.get_job(conn, job_id)).payload == {"a": [1, 2]}
    finally:
        await conn.close()


async def test_errors_come_out_as_pgrelay_exceptions_by_sqlstate(pool):
    with pytest.raises(InvalidArgument) as info:
        await client.enqueue(pool, "bad task name")
    assert info.value.sqlstate == "PR001" and "task" in str(info.value)
    assert isinstance(info.value.__cause__, asyncpg.PostgresError)
    with pytest.raises(InvalidUrl):
        await client.enqueue_http(pool, "ftp://example.com/")
    with pytest.raises(InvalidBulkJob, match=r"jobs\[1\]"):
        await client.enqueue_bulk(pool, [{"task": "ok"}, {"task": "ok", "priority": "high"}])
    assert await pool.fetchval("SELECT count(*) FROM pgrelay.jobs") == 0


async def test_enqueue_bulk_takes_a_datetime_run_at_and_any_mapping(pool):
    from datetime import datetime, timezone
    from types import MappingProxyType

    later = datetime(2031, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    first, second = await client.enqueue_bulk(
        pool, [{"task": "a", "run_at": later}, MappingProxyType({"task": "b", "payload": {"n": 1}})])
    assert (await client.get_job(pool, first)).run_at == later
    assert (await client.get_job(pool, second)).payload == {"n": 1}


async def test_enqueue_many_returns_ids_in_input_order_and_maps_errors(pool):
    ids = await client.enqueue_many(pool, "mail.send", [{"to": 3}, {"to": 1}, None], queue="mail", priority=2)
    jobs = [await client.get_job(pool, i) for i in ids]
    assert [(j.payload, j.queue, j.priority, j.task) for j in jobs] == [
        ({"to": 3}, "mail", 2, "mail.send"), ({"to": 1}, "mail", 2, "mail.send"), ({}, "mail", 2, "mail.send")]
    assert await client.enqueue_many(pool, "mail.send", []) == []
    with pytest.raises(InvalidArgument, match="queue"):
        await client.enqueue_many(pool, "mail.send", [{}], queue="no spaces")
    assert await pool.fetchval("SELECT count(*) FROM pgrelay.jobs") == 3


async def test_a_worker_round_trip(pool):
    ids = await client.enqueue_bulk(pool, [{"task": "a", "priority": 1}, {"task": "b"}, {"task": "c"}])
    http = await client.enqueue_http(pool, "https://example.com/hook", {"x": 1}, headers={"X-Key": "v"})
    claimed = await client.consume(pool, "w1", batch=10, lease_seconds=60, handlers=["a", "b", "c"])
    assert [j.id for j in claimed] == [ids[0], ids[1], ids[2], http]
    assert claimed[3].payload == {"url": "https://example.com/hook", "method": "POST", "headers": {"X-Key": "v"},
                                  "body": {"x": 1}}
    a, b, c, h = claimed
    assert await client.heartbeat(pool, "w1", [a.id, b.id, 999999]) == [999999]
    assert await client.ack(pool, a.id, a.attempt, {"done": True}) is True
    assert await client.ack(pool, a.id, a.attempt) is False
    assert await client.nack(pool, b.id, b.attempt, "boom", retry_after_seconds=0) == "pending"
    assert await client.ack_each(pool, [c.id, b.id], [c.attempt, b.attempt], [None, None]) == [c.id]
    assert await client.release(pool, h.id, h.attempt, "shutting down") is True
    assert await client.ack_many(pool, [], []) == 0
    assert (await client.get_job(pool, a.id)).result == {"done": True}
    assert [(x.attempt, x.outcome) for x in await client.get_attempts(pool, b.id)] == [(1, "failed")]
    assert await client.get_job(pool, 424242) is None
    assert await client.recover(pool) == 0
    assert await client.recover_if_free(pool, 1) == 0


async def test_queue_settings_and_stats(pool):
    settings = await client.configure_queue(pool, "mail", concurrency=3, backoff_base_seconds=2,
                                            retention_succeeded_days=2)
    assert (settings.concurrency, settings.max_attempts, settings.backoff_base_seconds,
            settings.retention_succeeded_days) == (3, 10, 2.0, 2)
    settings = await client.configure_queue(pool, "mail", reset=["concurrency"], retention_dead_letter_days=9)
    assert (settings.concurrency, settings.retention_succeeded_days, settings.retention_dead_letter_days) == (None, 2, 9)
    assert await client.pause(pool, "mail") is True
    assert await client.resume(pool, "mail") is True
    await client.enqueue(pool, "x", queue="mail")
    [stats] = await client.queue_stats(pool)
    assert (stats.queue, stats.pending, stats.paused, stats.retention_dead_letter_days, stats.succeeded_last_hour) == (
        "mail", 1, False, 9, 0)
    assert await client.version(pool) == pgrelay.__version__


@pytest.mark.parametrize(("model", "sql_object"), [
    (pgrelay.Job, "pgrelay.jobs"),
    (pgrelay.QueueStats, "pgrelay.queue_stats"),
    (pgrelay.QueueSettings, "pgrelay.queue_settings"),
    (models.WorkerInfo, "pgrelay.workers"),
    (models.ExpiredLease, "pgrelay.expired_leases"),
    (models.RecentFailure, "pgrelay.recent_failures"),
    (models.Maintenance, "pgrelay.maintenance"),
    (pgrelay.Attempt, "pgrelay.attempt"),
])
async def test_each_model_has_the_columns_of_its_view_or_type_in_order(conn, model, sql_object):
    # models are built by column name, ignoring columns they do not know: this keeps the two in step
    columns = await conn.fetch(
        "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped"
        " ORDER BY attnum", sql_object)
    assert [c["attname"] for c in columns] == list(model.__dataclass_fields__)


def test_a_model_ignores_columns_added_after_it():
    row = {"recovered": 1, "purged": 2, "added_in_a_later_version": 3}
    assert models.Maintenance.from_row(row) == models.Maintenance(1, 2)


async def test_enqueue_delay_counts_from_the_database_clock(pool):
    job_id = await client.enqueue(pool, "mail.send", delay_seconds=30)
    assert await pool.fetchval("SELECT run_at - created_at FROM pgrelay.jobs WHERE id = $1", job_id) == timedelta(seconds=30)
    with pytest.raises(ValueError, match="not both"):
        await client.enqueue(pool, "mail.send", delay_seconds=1, run_at=datetime.now(timezone.utc))


async def dead_letter(pool, task="mail.send", queue="mail"):
    job_id = await client.enqueue(pool, task, queue=queue, max_attempts=1)
    [job] = await client.consume(pool, "w1", queues=[queue], tasks=[task])
    assert job.id == job_id and await client.nack(pool, job.id, job.attempt, "SMTP 550") == "dead_letter"
    return job_id


async def test_replay_and_its_errors(pool):
    dead = await dead_letter(pool)
    new = await client.replay(pool, dead)
    assert (await client.get_job(pool, new)).replayed_from == dead
    with pytest.raises(Conflict) as info:
        await client.replay(pool, dead)
    assert info.value.sqlstate == "PT409" and info.value.hint
    assert (await client.get_job(pool, await client.replay(pool, dead, force=True))).replayed_from == dead
    with pytest.raises(Conflict):
        await client.replay(pool, new)  # still pending
    with pytest.raises(JobNotFound):
        await client.replay(pool, 424242)


async def test_replay_dead_letters_counts_what_it_replayed(pool):
    await dead_letter(pool, "mail.send")
    await dead_letter(pool, "sms.send")
    assert await client.replay_dead_letters(pool, "mail", task="sms.%") == 1
    assert await client.replay_dead_letters(pool, "mail", since=datetime(2999, 1, 1, tzinfo=timezone.utc)) == 0
    assert await client.replay_dead_letters(pool, "mail") == 1
    with pytest.raises(InvalidArgument):
        await client.replay_dead_letters(pool, "no spaces")


async def test_cancel_purge_and_maintain(pool):
    job_id = await client.enqueue(pool, "mail.send")
    assert await client.cancel(pool, job_id) is True
    assert await client.cancel(pool, job_id) is False
    with pytest.raises(JobNotFound):
        await client.cancel(pool, 424242)
    assert await client.purge(pool, older_than_days=1) == 0
    assert await client.purge(pool, older_than_days=0, max_jobs=5) == 1
    assert await client.get_job(pool, job_id) is None
    assert await client.purge(pool) == 0
    assert await client.maintain(pool) == models.Maintenance(recovered=0, purged=0)
    assert await client.maintain(pool, max_jobs=10) == models.Maintenance(recovered=0, purged=0)
    assert await client.maintenance_scheduled(pool) is False


async def test_list_jobs_filters_newest_first(pool):
    first = await client.enqueue(pool, "orders.created", {"id": 1}, queue="orders")
    second = await client.enqueue(pool, "mail.send", queue="mail")
    third = await client.enqueue(pool, "orders.paid", queue="orders")
    assert [j.id for j in await client.list_jobs(pool)] == [third, second, first]
    assert [j.id for j in await client.list_jobs(pool, queue="orders", limit=1)] == [third]
    assert [j.id for j in await client.list_jobs(pool, task="orders.c%")] == [first]
    assert [j.id for j in await client.list_jobs(pool, status="succeeded")] == []
    [job] = await client.list_jobs(pool, task="orders.created")
    assert (job.payload, job.status, job.result, job.max_attempts) == ({"id": 1}, "pending", None, None)


async def test_workers_expired_leases_and_recent_failures(pool):
    job_id = await client.enqueue(pool, "mail.send")
    await client.heartbeat(pool, "w1", host="web-1", pid=7)
    [job] = await client.consume(pool, "w1", lease_seconds=1)
    [worker] = await client.workers(pool)
    assert (worker.worker, worker.host, worker.pid, worker.leased, worker.status) == ("w1", "web-1", 7, 1, "alive")
    assert await client.expired_leases(pool) == []
    await pool.execute("UPDATE pgrelay._jobs SET lease_expires_at = now() - interval '10 minutes' WHERE id = $1",
                       job_id)  # white box: the lease ran out ten minutes ago
    [expired] = await client.expired_leases(pool, older_than_seconds=300)
    assert (expired.id, expired.leased_by) == (job_id, "w1") and expired.expired_for >= timedelta(minutes=10)
    assert await client.expired_leases(pool, older_than_seconds=3600) == []
    assert await client.recover(pool) == 1
    [failure] = await client.recent_failures(pool)
    assert (failure.queue, failure.task, failure.failures, failure.last_error) == ("default", "mail.send", 1, "lease expired")
    assert job.id == job_id
