"""HTTP jobs end to end: enqueue_http -> a worker (in-process, and jobs-worker as a process) -> a real HTTP
server on 127.0.0.1 -> the job succeeded with the status in its result, or retried / dead-lettered with the
HTTP details in its attempt history."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import psycopg
import pytest
from standardwebhooks import Webhook

import pgrelay
from pgrelay import client
from pgrelay.http import HttpExecutor
from tests.integration.helpers import run_until

from .webhook_server import WebhookServer

ALLOW_LOCAL = {"PGRELAY_HTTP_ALLOW_CIDRS": "127.0.0.0/8"}
SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
BIN = Path(sys.executable).parent
ROOT = Path(__file__).parents[2]


@pytest.fixture
def server():
    with WebhookServer() as s:
        yield s


@pytest.fixture
async def pool(dsn):
    p = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
    yield p
    await p.close()


async def test_in_process_worker_sends_http_jobs_and_records_outcomes(dsn, pool, server):
    router = pgrelay.Router()

    @router.task("local.echo")
    async def echo(ctx):
        return {"echo": ctx.payload}

    ok = await client.enqueue_http(pool, server.url("/ok"), {"order": 42}, idempotency_key="order-42",
                                   trace_id="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    handler = await client.enqueue(pool, "local.echo", {"n": 1})
    busy = await client.enqueue_http(pool, server.url("/status/503?retry_after=600"), {"x": 1})
    gone = await client.enqueue_http(pool, server.url("/status/404"), {"x": 2})
    moved = await client.enqueue_http(pool, server.url("/status/301?location=https://elsewhere.test/"), None,
                                      method="GET")
    flaky = await client.enqueue_http(pool, server.url("/status/500"), {"x": 3}, max_attempts=1)
    refused = await client.enqueue_http(pool, "http://169.254.169.254/latest/meta-data/", None, method="GET")
    no_secret = await client.enqueue_http(pool, server.url("/ok"), {"x": 4},
                                          headers={"Authorization": {"env": "TEST_UNSET_HOOK_TOKEN"}})

    env = {**ALLOW_LOCAL, "PGRELAY_HTTP_SECRET_ENV": "TEST_UNSET_HOOK_TOKEN=127.0.0.1"}
    async with HttpExecutor.from_env(env) as http:
        worker = pgrelay.Worker(dsn, router, concurrency=8, poll_interval=0.05, http_executor=http)
        assert worker._kinds() == ["handler", "http"]

        async def settled():
            jobs = [await client.get_job(pool, i) for i in (ok, handler, gone, moved, flaky, refused, no_secret)]
            busy_job = await client.get_job(pool, busy)
            return all(j.status in ("succeeded", "dead_letter") for j in jobs) and busy_job.attempt == 1 \
                and busy_job.status == "pending"

        await run_until(worker, settled)

    job = await client.get_job(pool, ok)
    assert job.status == "succeeded"
    assert job.result["status"] == 200 and json.loads(job.result["body"])["ok"] is True
    assert job.result["headers"]["x-request-id"] == "req-123"
    assert (await client.get_job(pool, handler)).result == {"echo": {"n": 1}}
    [sent] = [r for r in server.received if r.path == "/ok" and r.body == b'{"order":42}']
    assert sent.headers["idempotency-key"] == "order-42"
    assert sent.headers["traceparent"].startswith("00-4bf92f35")

    # 503 with Retry-After: pending again, due in ten minutes, the status in the attempt's details
    busy_job = await client.get_job(pool, busy)
    assert busy_job.status == "pending" and "HTTP 503" in busy_job.last_error
    assert 590 <= (busy_job.run_at - busy_job.created_at).total_seconds() <= 620
    [attempt] = await client.get_attempts(pool, busy)
    assert attempt.outcome == "failed"
    assert attempt.details["status"] == 503 and attempt.details["retry_after_seconds"] == 600

    for job_id, status, text in ((gone, 404, "HTTP 404"), (moved, 301, "redirects are not followed"),
                                 (flaky, 500, "HTTP 500")):
        job = await client.get_job(pool, job_id)
        assert job.status == "dead_letter" and text in job.last_error and job.attempt == 1, job
        [attempt] = await client.get_attempts(pool, job_id)
        assert attempt.details["status"] == status

    job = await client.get_job(pool, refused)
    assert job.status == "dead_letter" and job.attempt == 1
    assert "TargetRefused: refused by the address guard: 169.254.169.254 is a cloud metadata address" in job.last_error
    [attempt] = await client.get_attempts(pool, refused)
    assert attempt.details["refused"].startswith("169.254.169.254 is a cloud metadata address")

    job = await client.get_job(pool, no_secret)
    assert job.status == "dead_letter" and "TEST_UNSET_HOOK_TOKEN, which is not set" in job.last_error
    assert not any(r.body == b'{"x":4}' for r in server.received)


async def test_without_an_executor_http_jobs_are_not_claimed(dsn, pool, server):
    router = pgrelay.Router()

    @router.task("ping")
    async def ping(ctx):
        return "pong"

    http_job = await client.enqueue_http(pool, server.url("/ok"), {"x": 1})
    ping_job = await client.enqueue(pool, "ping")
    worker = pgrelay.Worker(dsn, router, poll_interval=0.05)
    await run_until(worker, lambda: _status(pool, ping_job, "succeeded"))
    assert (await client.get_job(pool, http_job)).status == "pending"
    assert server.received == []


async def _status(pool, job_id, status):
    return (await client.get_job(pool, job_id)).status == status


async def test_a_job_naming_a_secret_for_a_host_it_is_not_bound_to_dead_letters_and_sends_nothing(dsn, pool, server):
    job_id = await client.enqueue_http(pool, server.url("/ok"), {"x": 1}, max_attempts=5,
                                       headers={"Authorization": {"env": "HOOK_TOKEN"}})
    env = {**ALLOW_LOCAL, "PGRELAY_HTTP_SECRET_ENV": "HOOK_TOKEN=hooks.example.com", "HOOK_TOKEN": "Bearer s3cr3t"}
    async with HttpExecutor.from_env(env) as http:
        worker = pgrelay.Worker(dsn, None, poll_interval=0.05, http_executor=http)
        await run_until(worker, lambda: _status(pool, job_id, "dead_letter"))
    job = await client.get_job(pool, job_id)
    assert job.attempt == 1  # permanent: no retry
    assert ("header Authorization names environment variable HOOK_TOKEN, which this worker sends only to "
            "hooks.example.com, not to 127.0.0.1") in job.last_error
    [attempt] = await client.get_attempts(pool, job_id)
    assert attempt.details == {"error": "secret_env", "header": "Authorization", "variable": "HOOK_TOKEN",
                               "host": "127.0.0.1", "bound_to": ["hooks.example.com"]}
    assert "s3cr3t" not in repr(job) + repr(attempt)
    assert server.received == []


async def test_replays_of_a_webhook_carry_the_message_id_of_the_original(dsn, pool, server):
    """A receiver deduplicating by webhook-id / Idempotency-Key recognises every replay of a delivery,
    however long the replay chain (needs pgrelay.consume's delivery_id, issue 22 item 14)."""
    original = await client.enqueue_http(pool, server.url("/status/410"), {"order": 42})
    keyed = await client.enqueue_http(pool, server.url("/status/410"), {"order": 43}, idempotency_key="order-43")
    chains = [[original], [keyed]]
    async with HttpExecutor.from_env({**ALLOW_LOCAL, "PGRELAY_HTTP_SIGNING_SECRETS": f"127.0.0.1={SECRET}"}) as http:
        for replays in range(3):
            if replays:
                for chain in chains:
                    chain.append(await client.replay(pool, chain[-1]))  # the replay of the replay: a chain

            async def all_dead() -> bool:
                return all([await _status(pool, chain[-1], "dead_letter") for chain in chains])

            await run_until(pgrelay.Worker(dsn, None, poll_interval=0.05, http_executor=http), all_dead)
    for chain in chains:
        assert [(await client.get_job(pool, i)).replayed_from for i in chain] == [None, chain[0], chain[1]]
    by_order: dict[int, list[str]] = {}
    for delivery in server.received:
        assert delivery.headers["webhook-id"] == delivery.headers["idempotency-key"]
        Webhook(SECRET).verify(delivery.body, delivery.headers)
        by_order.setdefault(json.loads(delivery.body)["order"], []).append(delivery.headers["webhook-id"])
    assert by_order == {42: [str(original)] * 3, 43: ["order-43"] * 3}


# -- jobs-worker as a process ----------------------------------------------------------------


def wait_for(condition: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture
def start_worker(dsn) -> Iterator[Callable[..., subprocess.Popen]]:
    started: list[subprocess.Popen] = []

    def start(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        environment = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
        proc = subprocess.Popen([str(BIN / "jobs-worker"), dsn, "--poll-interval", "0.1", *args],
                                env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def job_row(db: psycopg.Connection, job_id: int) -> tuple:
    return db.execute("SELECT status, result, last_error FROM pgrelay.jobs WHERE id = %s", (job_id,)).fetchone()


def enqueue_http(db: psycopg.Connection, url: str, **kwargs) -> int:
    headers = psycopg.types.json.Jsonb(kwargs.pop("headers", {}))
    return db.execute("SELECT pgrelay.enqueue_http(%s, %s::jsonb, headers => %s)",
                      (url, json.dumps(kwargs), headers)).fetchone()[0]


def test_jobs_worker_without_app_runs_only_http_jobs(db, server, start_worker):
    db.execute("CREATE TABLE executions (job_id bigint, attempt int, pid int, note text, at timestamptz)")
    http_job = enqueue_http(db, server.url("/ok"), order=7, headers={"X-Token": {"env": "HOOK_TOKEN"}})
    handler_job = db.execute("SELECT pgrelay.enqueue('record')").fetchone()[0]
    proc = start_worker("--log-format", "json",
                        env={**ALLOW_LOCAL, "PGRELAY_HTTP_SECRET_ENV": "HOOK_TOKEN=127.0.0.1", "HOOK_TOKEN": "t0k3n"})
    wait_for(lambda: job_row(db, http_job)[0] == "succeeded", what="the HTTP job to succeed")
    status, result, _ = job_row(db, http_job)
    assert result["status"] == 200 and result["headers"]["content-type"] == "application/json"
    [received] = server.received
    assert json.loads(received.body) == {"order": 7} and received.headers["x-token"] == "t0k3n"
    assert received.headers["user-agent"] == f"pgrelay/{pgrelay.__version__}"
    assert job_row(db, handler_job)[0] == "pending"  # no --app: handler jobs are not claimed
    proc.terminate()
    output, _ = proc.communicate(timeout=20)
    assert "t0k3n" not in output  # the secret is never logged
    assert '"HTTP jobs' in output or "HTTP jobs" in output


def test_jobs_worker_with_app_runs_both_and_no_http_turns_http_off(db, server, start_worker):
    db.execute("CREATE TABLE executions (job_id bigint, attempt int, pid int, note text, "
               "at timestamptz DEFAULT clock_timestamp())")
    app = ("--app", "tests.acceptance.worker_app:router")
    first_http = enqueue_http(db, server.url("/ok"), n=1)
    first_handler = db.execute("SELECT pgrelay.enqueue('record')").fetchone()[0]
    proc = start_worker(*app, "--no-http", env=ALLOW_LOCAL)
    wait_for(lambda: job_row(db, first_handler)[0] == "succeeded", what="the handler job")
    time.sleep(0.5)  # several polls
    assert job_row(db, first_http)[0] == "pending" and server.received == []
    proc.terminate()
    proc.communicate(timeout=20)

    proc = start_worker(*app, env=ALLOW_LOCAL)
    second_handler = db.execute("SELECT pgrelay.enqueue('record')").fetchone()[0]
    wait_for(lambda: job_row(db, first_http)[0] == "succeeded" and job_row(db, second_handler)[0] == "succeeded",
             what="both kinds to run")
    proc.terminate()
    proc.communicate(timeout=20)


def test_jobs_worker_refuses_a_secret_env_entry_without_a_host(dsn):
    result = subprocess.run([str(BIN / "jobs-worker"), dsn], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PGRELAY_HTTP_SECRET_ENV": "HOOK_TOKEN", "HOOK_TOKEN": "t0k3n"})
    assert result.returncode == 1
    assert ("jobs-worker: error: PGRELAY_HTTP_SECRET_ENV: HOOK_TOKEN names no host: write "
            "HOOK_TOKEN=hooks.example.com") in result.stderr
    assert "Traceback" not in result.stderr and "t0k3n" not in result.stderr + result.stdout


def test_jobs_worker_refuses_a_bad_http_setting(dsn):
    result = subprocess.run([str(BIN / "jobs-worker"), dsn], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PGRELAY_HTTP_ALLOW_CIDRS": "10.0.0.0/33"})
    assert result.returncode == 1
    assert "jobs-worker: error: PGRELAY_HTTP_ALLOW_CIDRS: '10.0.0.0/33' is not a CIDR" in result.stderr
    assert "Traceback" not in result.stderr
