"""The Python client: one thin wrapper per SQL function, usable in the caller's transaction."""

from __future__ import annotations

import json
import re

import asyncpg
import pytest

import pgrelay
from pgrelay import client
from pgrelay.errors import InvalidArgument, InvalidBulkJob, InvalidUrl


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
    settings = await client.configure_queue(pool, "mail", concurrency=3, backoff_base_seconds=2)
    assert (settings.concurrency, settings.max_attempts, settings.backoff_base_seconds) == (3, 10, 2.0)
    settings = await client.configure_queue(pool, "mail", reset=["concurrency"])
    assert settings.concurrency is None
    assert await client.pause(pool, "mail") is True
    assert await client.resume(pool, "mail") is True
    await client.enqueue(pool, "x", queue="mail")
    [stats] = await client.queue_stats(pool)
    assert (stats.queue, stats.pending, stats.paused) == ("mail", 1, False)
    assert await client.version(pool) == pgrelay.__version__
