"""Header values that look like credentials are redacted in the views and get_job, while the worker still
sends them."""

from __future__ import annotations

import psycopg
import pytest

from .webhook_server import WebhookServer

HEADERS = {
    "Authorization": "Bearer abc.def",
    "Proxy-Authorization": "Basic dXNlcjpwYXNz",
    "X-Api-Key": "k-123",
    "X-Auth-Token": "t-123",
    "Cookie": "session=1",
    "X-Client-Secret": "s",
    "X-Custom": "Bearer hidden-by-shape",
    "X-Stripe": "sk_live_abcdef",
    "X-Jwt": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig",
    "X-Env-Token": {"env": "HOOK_TOKEN"},  # a reference, not a secret: shown
    "Accept": "application/json",
    "Content-Type": "application/json",
    "Idempotency-Key": "order-42",
    "X-Signature": "abc",
}
REDACTED = {"Authorization", "Proxy-Authorization", "X-Api-Key", "X-Auth-Token", "Cookie", "X-Client-Secret",
            "X-Custom", "X-Stripe", "X-Jwt"}


@pytest.fixture
def redacting_db(db: psycopg.Connection) -> psycopg.Connection:
    return db


def enqueue(db: psycopg.Connection, url: str) -> int:
    return db.execute("SELECT pgrelay.enqueue_http(%s, '{\"a\": 1}', headers => %s)",
                      (url, psycopg.types.json.Jsonb(HEADERS))).fetchone()[0]


def expected() -> dict:
    return {name: "[redacted]" if name in REDACTED else value for name, value in HEADERS.items()}


def test_views_and_get_job_redact_credentials_consume_does_not(redacting_db):
    db = redacting_db
    job_id = enqueue(db, "https://hooks.example.com/x")
    assert db.execute("SELECT pgrelay.get_job(%s) -> 'payload' -> 'headers'", (job_id,)).fetchone()[0] == expected()
    assert db.execute("SELECT payload -> 'headers' FROM pgrelay.jobs WHERE id = %s", (job_id,)).fetchone()[0] == expected()
    [claimed] = db.execute("SELECT payload FROM pgrelay.consume('w1')").fetchall()
    assert claimed[0]["headers"] == HEADERS  # the worker gets the real values
    db.execute("SELECT pgrelay.nack(%s, 1, 'gone', permanent => true)", (job_id,))
    assert db.execute("SELECT payload -> 'headers' FROM pgrelay.dead_letters WHERE id = %s",
                      (job_id,)).fetchone()[0] == expected()
    assert db.execute("SELECT pgrelay.get_job(%s) -> 'payload' -> 'headers'", (job_id,)).fetchone()[0] == expected()


def test_handler_payloads_are_untouched(redacting_db):
    db = redacting_db
    payload = {"headers": {"Authorization": "Bearer x"}, "token": "y"}
    job_id = db.execute("SELECT pgrelay.enqueue('t', %s)", (psycopg.types.json.Jsonb(payload),)).fetchone()[0]
    assert db.execute("SELECT pgrelay.get_job(%s) -> 'payload'", (job_id,)).fetchone()[0] == payload


def test_the_reader_role_can_read_the_views(redacting_db):
    db = redacting_db
    enqueue(db, "https://hooks.example.com/x")
    db.execute("SET ROLE pgrelay_reader")
    try:
        headers = db.execute("SELECT payload -> 'headers' FROM pgrelay.jobs").fetchone()[0]
        assert headers == expected()
        db.execute("SELECT count(*) FROM pgrelay.dead_letters").fetchone()
    finally:
        db.execute("RESET ROLE")


async def test_the_worker_still_sends_the_real_values(redacting_db, dsn, monkeypatch):
    import asyncio

    import pgrelay
    from pgrelay.http import HttpExecutor

    db = redacting_db
    with WebhookServer() as server:
        job_id = enqueue(db, server.url("/ok"))
        async with HttpExecutor.from_env({"PGRELAY_HTTP_ALLOW_CIDRS": "127.0.0.0/8",
                                          "PGRELAY_HTTP_SECRET_ENV": "HOOK_TOKEN=127.0.0.1", "HOOK_TOKEN": "ht"}) as http:
            worker = pgrelay.Worker(dsn, None, poll_interval=0.05, http_executor=http)
            task = asyncio.create_task(worker.run())
            try:
                for _ in range(200):
                    if db.execute("SELECT status FROM pgrelay.jobs WHERE id = %s", (job_id,)).fetchone()[0] == "succeeded":
                        break
                    await asyncio.sleep(0.05)
            finally:
                worker.stop()
                await asyncio.wait_for(task, 15)
        [received] = server.received
        assert received.headers["authorization"] == "Bearer abc.def"
        assert received.headers["x-env-token"] == "ht"
