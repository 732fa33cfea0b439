"""The HTTP executor against a real HTTP server on 127.0.0.1 (allowed by PGRELAY_HTTP_ALLOW_CIDRS here):
the request it sends, every outcome class, Retry-After, the body cap, no redirects, timeouts, signing
(checked by the independent `standardwebhooks` package), environment-referenced secrets and DNS rebinding."""

from __future__ import annotations

import base64
import email.utils
import json
import socket
import threading
import time
from datetime import datetime, timezone
from typing import Any

import pytest
from aiohttp.abc import AbstractResolver
from standardwebhooks import Webhook

import pgrelay
from pgrelay.http import HttpError, HttpExecutor, parse_retry_after
from pgrelay.models import ClaimedJob
from pgrelay.ssrf import TargetRefused

from .webhook_server import WebhookServer

ALLOW_LOCAL = {"PGRELAY_HTTP_ALLOW_CIDRS": "127.0.0.0/8"}
SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
OTHER_SECRET = "whsec_" + base64.b64encode(b"another key, 32 bytes long......").decode()


def make_job(url: str, *, method: str = "POST", headers: dict[str, Any] | None = None, body: Any = None,
             id: int = 7, idempotency_key: str | None = None, trace_id: str | None = None,
             timeout_seconds: int | None = None, delivery_id: str | None = None) -> ClaimedJob:
    now = datetime.now(timezone.utc)
    return ClaimedJob(
        id=id, queue="default", task="http", kind="http",
        payload={"url": url, "method": method, "headers": headers or {}, "body": body},
        attempt=1, max_attempts=10, lease_expires_at=now, timeout_seconds=timeout_seconds, trace_id=trace_id,
        priority=0, run_at=now, created_at=now, idempotency_key=idempotency_key, delivery_id=delivery_id,
    )


@pytest.fixture
def server():
    with WebhookServer() as s:
        yield s


@pytest.fixture
async def executor():
    async with HttpExecutor.from_env(ALLOW_LOCAL) as http:
        yield http


# -- the request -------------------------------------------------------------------------------


async def test_sends_method_url_headers_and_json_body(server, executor):
    job = make_job(server.url("/ok?a=1"), method="PUT", headers={"X-Custom": "yes"}, body={"order": 42, "név": "é"})
    result = await executor.execute(job)
    assert result["status"] == 200
    assert json.loads(result["body"]) == {"ok": True, "n": 1}
    assert result["truncated"] is False
    # a few response headers are kept: content type and request ids, not cookies or anything else
    assert result["headers"] == {"content-type": "application/json", "x-request-id": "req-123",
                                 "content-length": str(len(result["body"]))}
    [received] = server.received
    assert received.method == "PUT" and received.path == "/ok?a=1"
    assert json.loads(received.body) == {"order": 42, "név": "é"}
    assert received.headers["content-type"] == "application/json"
    assert received.headers["x-custom"] == "yes"
    assert received.headers["user-agent"] == f"pgrelay/{pgrelay.__version__}"
    assert received.headers["idempotency-key"] == "7"  # no idempotency key: the job id
    assert "traceparent" not in received.headers and "x-trace-id" not in received.headers
    assert "webhook-signature" not in received.headers  # no secret configured for this host


async def test_idempotency_key_and_trace_headers(server, executor):
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    await executor.execute(make_job(server.url("/ok"), idempotency_key="order-42", trace_id=traceparent))
    await executor.execute(make_job(server.url("/ok"), trace_id="abc-123"))
    await executor.execute(make_job(server.url("/ok"), trace_id="ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"))
    first, second, third = server.received
    assert first.headers["idempotency-key"] == "order-42"
    assert first.headers["traceparent"] == traceparent and "x-trace-id" not in first.headers
    assert second.headers["x-trace-id"] == "abc-123" and "traceparent" not in second.headers
    assert "x-trace-id" in third.headers  # version ff is not a valid traceparent


async def test_get_without_body_and_job_headers_override_defaults(server, executor):
    await executor.execute(make_job(server.url("/ok"), method="GET",
                                    headers={"User-Agent": "billing/2", "Idempotency-Key": "mine"}))
    [received] = server.received
    assert received.method == "GET" and received.body == b"" and "content-type" not in received.headers
    assert received.headers["user-agent"] == "billing/2" and received.headers["idempotency-key"] == "mine"


async def test_job_may_not_set_host_or_framing_headers(server, executor):
    for name in ("Host", "Content-Length", "Transfer-Encoding", "webhook-signature"):
        with pytest.raises(pgrelay.Permanent, match=f"header {name} is set by the worker"):
            await executor.execute(make_job(server.url("/ok"), headers={name: "x"}))
    assert server.received == []


async def test_control_characters_in_ids_are_encoded_not_injected(server, executor):
    await executor.execute(make_job(server.url("/ok"), idempotency_key="a\r\nX-Evil: 1", trace_id="t\nx"))
    [received] = server.received
    assert "x-evil" not in received.headers
    assert received.headers["idempotency-key"] == "a%0D%0AX-Evil: 1"
    assert received.headers["x-trace-id"] == "t%0Ax"


# -- outcomes ----------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [200, 201, 202, 204])
async def test_2xx_succeeds(server, executor, code):
    result = await executor.execute(make_job(server.url(f"/status/{code}")))
    assert result["status"] == code
    assert result["body"] == ("" if code == 204 else f"status {code}")


@pytest.mark.parametrize("code", [408, 425, 429, 500, 502, 503, 504, 599])
async def test_retryable_statuses_raise_for_backoff_with_details(server, executor, code):
    with pytest.raises(HttpError) as caught:
        await executor.execute(make_job(server.url(f"/status/{code}?body=upstream+down")))
    assert not isinstance(caught.value, (pgrelay.Permanent, pgrelay.RetryAfter))
    assert str(caught.value).startswith(f"HTTP {code}")
    details = caught.value.details
    assert details["status"] == code and details["body"] == "upstream down"
    assert details["headers"]["content-type"] == "text/plain; charset=utf-8"


@pytest.mark.parametrize("code", [400, 401, 403, 404, 405, 409, 410, 413, 422])
async def test_other_4xx_dead_letter(server, executor, code):
    with pytest.raises(pgrelay.Permanent) as caught:
        await executor.execute(make_job(server.url(f"/status/{code}")))
    assert str(caught.value).startswith(f"HTTP {code}")
    assert caught.value.details["status"] == code


@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
async def test_redirects_are_not_followed(server, executor, code):
    with pytest.raises(pgrelay.Permanent, match="redirects are not followed") as caught:
        await executor.execute(make_job(server.url(f"/status/{code}?location=/ok")))
    assert "(Location: /ok)" in str(caught.value)
    assert caught.value.details["headers"]["location"] == "/ok"
    assert [r.path for r in server.received] == [f"/status/{code}?location=/ok"]  # /ok never requested


async def test_retry_after_seconds_and_http_date(server, executor):
    with pytest.raises(pgrelay.RetryAfter) as caught:
        await executor.execute(make_job(server.url("/status/503?retry_after=120")))
    assert caught.value.seconds == 120 and caught.value.details["status"] == 503
    assert caught.value.details["retry_after_seconds"] == 120
    later = email.utils.formatdate(time.time() + 300, usegmt=True)
    with pytest.raises(pgrelay.RetryAfter) as caught:
        await executor.execute(make_job(server.url(f"/status/429?retry_after={later}")))
    assert 290 <= caught.value.seconds <= 301
    # a Retry-After on a permanent failure changes nothing; an unusable one falls back to backoff
    with pytest.raises(pgrelay.Permanent):
        await executor.execute(make_job(server.url("/status/404?retry_after=5")))
    with pytest.raises(HttpError):
        await executor.execute(make_job(server.url("/status/503?retry_after=soon")))


def test_parse_retry_after():
    now = 1_700_000_000.0
    assert parse_retry_after("0") == 0 and parse_retry_after(" 30 ") == 30
    assert parse_retry_after("99999999999") == 99999999999  # nack shortens it to its limit
    assert parse_retry_after(email.utils.formatdate(now + 60, usegmt=True), now=now) == 60
    assert parse_retry_after(email.utils.formatdate(now - 60, usegmt=True), now=now) == 0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=now) == 0
    for bad in (None, "", "-5", "1.5", "soon", "Wed, 99 Foo 2015"):
        assert parse_retry_after(bad, now=now) is None


async def test_body_is_read_up_to_the_cap(server):
    async with HttpExecutor.from_env({**ALLOW_LOCAL, "PGRELAY_HTTP_MAX_BODY": "1000"}) as http:
        result = await http.execute(make_job(server.url("/big?size=5000000")))
        assert result["body"] == "x" * 1000 and result["truncated"] is True
        exact = await http.execute(make_job(server.url("/big?size=1000")))
        assert exact["body"] == "x" * 1000 and exact["truncated"] is False
        # the same connection pool still works after a truncated read
        assert (await http.execute(make_job(server.url("/ok"))))["status"] == 200


async def test_failure_details_keep_the_start_of_the_body(server, executor):
    with pytest.raises(HttpError) as caught:
        await executor.execute(make_job(server.url("/status/500?body=" + "e" * 10000)))
    assert caught.value.details["body"] == "e" * 4096 and caught.value.details["truncated"] is True


# -- timeouts and connection errors ----------------------------------------------------------


async def test_read_timeout(server):
    async with HttpExecutor.from_env({**ALLOW_LOCAL, "PGRELAY_HTTP_READ_TIMEOUT": "0.3"}) as http:
        started = time.monotonic()
        with pytest.raises(HttpError, match="read timeout") as caught:
            await http.execute(make_job(server.url("/slow?delay=3")))
        assert time.monotonic() - started < 2
        assert caught.value.details == {"error": "read_timeout"}


async def test_total_timeout_even_while_data_trickles(server):
    async with HttpExecutor.from_env({**ALLOW_LOCAL, "PGRELAY_HTTP_TIMEOUT": "0.5"}) as http:
        started = time.monotonic()
        with pytest.raises(HttpError, match="timed out after 0.5 s") as caught:
            await http.execute(make_job(server.url("/trickle?chunks=100&every=0.05")))
        assert time.monotonic() - started < 2
        assert caught.value.details == {"error": "timeout"}


async def test_the_jobs_timeout_caps_the_total(server, executor):
    started = time.monotonic()
    with pytest.raises(HttpError, match="timed out after 0.95 s"):
        await executor.execute(make_job(server.url("/slow?delay=3"), timeout_seconds=1))
    assert time.monotonic() - started < 2


async def test_connect_timeout():
    # a listening socket whose accept queue is full: the kernel drops further SYNs, so connect() hangs
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(4):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            fillers.append(s)
        time.sleep(0.1)
        async with HttpExecutor.from_env({**ALLOW_LOCAL, "PGRELAY_HTTP_CONNECT_TIMEOUT": "0.3"}) as http:
            started = time.monotonic()
            with pytest.raises(HttpError, match="connect timeout after 0.3 s") as caught:
                await http.execute(make_job(f"http://127.0.0.1:{port}/"))
            assert time.monotonic() - started < 2
            assert caught.value.details == {"error": "connect_timeout"}
    finally:
        for s in fillers:
            s.close()
        listener.close()


async def test_connection_refused_and_dropped_connections_retry(executor):
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens here now
    with pytest.raises(HttpError, match="connection error") as caught:
        await executor.execute(make_job(f"http://127.0.0.1:{port}/"))
    assert caught.value.details["error"] == "connection"

    rude = socket.socket()  # accepts and hangs up without a response
    rude.bind(("127.0.0.1", 0))
    rude.listen(8)
    rude.settimeout(5)

    def hang_up() -> None:
        conn, _ = rude.accept()
        conn.recv(65536)
        conn.close()

    thread = threading.Thread(target=hang_up, daemon=True)
    thread.start()
    try:
        with pytest.raises(HttpError, match="connection error"):
            await executor.execute(make_job(f"http://127.0.0.1:{rude.getsockname()[1]}/"))
    finally:
        thread.join(5)
        rude.close()


# -- signing -----------------------------------------------------------------------------------


async def test_signed_requests_verify_with_the_standard_webhooks_library(server):
    env = {**ALLOW_LOCAL, "PGRELAY_HTTP_SIGNING_SECRETS": f"127.0.0.1={SECRET}, hooks.example.com={OTHER_SECRET}"}
    async with HttpExecutor.from_env(env) as http:
        await http.execute(make_job(server.url("/ok"), body={"id": 42, "text": "héllo"}, idempotency_key="order-42"))
        await http.execute(make_job(server.url("/ok"), method="DELETE", id=99))
    signed, bodiless = server.received
    assert signed.headers["webhook-id"] == "order-42"
    assert abs(int(signed.headers["webhook-timestamp"]) - time.time()) < 60
    assert signed.headers["webhook-signature"].startswith("v1,")
    # the independent implementation accepts it ...
    assert Webhook(SECRET).verify(signed.body, signed.headers) == {"id": 42, "text": "héllo"}
    Webhook(SECRET).verify(bodiless.body, bodiless.headers, json_parse=False)
    assert bodiless.headers["webhook-id"] == "99"
    # ... and rejects a tampered body or another host's secret
    from standardwebhooks.webhooks import WebhookVerificationError

    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(signed.body.replace(b"42", b"43"), signed.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(OTHER_SECRET).verify(signed.body, signed.headers)


async def test_two_secrets_for_a_host_sign_twice_for_rotation(server):
    env = {**ALLOW_LOCAL, "PGRELAY_HTTP_SIGNING_SECRETS": f"127.0.0.1={SECRET},127.0.0.*={OTHER_SECRET}"}
    with pytest.raises(ValueError, match="not a host name"):
        HttpExecutor.from_env(env)  # a pattern is *.domain, not a partial address
    env["PGRELAY_HTTP_SIGNING_SECRETS"] = f"127.0.0.1={SECRET},127.0.0.1={OTHER_SECRET}"
    async with HttpExecutor.from_env(env) as http:
        await http.execute(make_job(server.url("/ok"), body={"a": 1}))
    [received] = server.received
    assert len(received.headers["webhook-signature"].split(" ")) == 2
    Webhook(SECRET).verify(received.body, received.headers)
    Webhook(OTHER_SECRET).verify(received.body, received.headers)


def test_signing_secret_configuration_errors_name_the_host_not_the_secret():
    for text, message in (("hooks.example.com", "use host=whsec_"),
                          ("hooks.example.com=whsec_!!notbase64", "secret for hooks.example.com is not base64"),
                          ("hooks.example.com=whsec_c2hvcnQ=", "shorter than 16 bytes")):
        with pytest.raises(ValueError, match=message) as caught:
            HttpExecutor.from_env({"PGRELAY_HTTP_SIGNING_SECRETS": text})
        assert "notbase64" not in str(caught.value) and "c2hvcnQ" not in str(caught.value)


async def test_a_replay_carries_the_message_id_of_the_first_job_of_its_chain(server):
    env = {**ALLOW_LOCAL, "PGRELAY_HTTP_SIGNING_SECRETS": f"127.0.0.1={SECRET}"}
    async with HttpExecutor.from_env(env) as http:
        # consume gives a replay the delivery id of its chain's first job (its idempotency key, else its id)
        await http.execute(make_job(server.url("/ok"), id=7, body={"n": 1}))
        await http.execute(make_job(server.url("/ok"), id=8, delivery_id="7", body={"n": 1}))  # replay of 7
        await http.execute(make_job(server.url("/ok"), id=9, delivery_id="7", body={"n": 1}))  # replay of 8
        await http.execute(make_job(server.url("/ok"), id=10, idempotency_key="order-42"))
        await http.execute(make_job(server.url("/ok"), id=11, delivery_id="order-42"))  # replay of 10
    original, first, second, keyed, keyed_replay = server.received
    for delivery in (original, first, second):
        assert delivery.headers["idempotency-key"] == delivery.headers["webhook-id"] == "7"
        Webhook(SECRET).verify(delivery.body, delivery.headers)
    for delivery in (keyed, keyed_replay):
        assert delivery.headers["idempotency-key"] == delivery.headers["webhook-id"] == "order-42"
        Webhook(SECRET).verify(delivery.body, delivery.headers, json_parse=False)


# -- secrets from the environment --------------------------------------------------------------


async def test_env_referenced_header_is_resolved_at_send_time(server):
    environ = {**ALLOW_LOCAL, "PGRELAY_HTTP_SECRET_ENV": "BILLING_TOKEN=127.0.0.1", "BILLING_TOKEN": "Bearer s3cret"}
    async with HttpExecutor.from_env(environ) as http:
        job = make_job(server.url("/ok"), headers={"Authorization": {"env": "BILLING_TOKEN"}})
        await http.execute(job)
        environ["BILLING_TOKEN"] = "Bearer rotated"  # read when sending, not when configured
        await http.execute(job)
        del environ["BILLING_TOKEN"]
        with pytest.raises(pgrelay.Permanent, match="header Authorization names environment variable BILLING_TOKEN, "
                                                    "which is not set in this worker"):
            await http.execute(job)
        with pytest.raises(pgrelay.Permanent, match="PG\\* variables are never sent"):
            await http.execute(make_job(server.url("/ok"), headers={"X-Pw": {"env": "PGPASSWORD"}}))
    assert [r.headers["authorization"] for r in server.received] == ["Bearer s3cret", "Bearer rotated"]


async def test_control_characters_in_an_env_value_dead_letter(server):
    environ = {**ALLOW_LOCAL, "PGRELAY_HTTP_SECRET_ENV": "HOOK_TOKEN=127.0.0.1,OTHER=127.0.0.1",
               "HOOK_TOKEN": "abc\r\nX-Evil: 1", "OTHER": "a\x01b"}
    async with HttpExecutor.from_env(environ) as http:
        for variable in ("HOOK_TOKEN", "OTHER"):
            with pytest.raises(pgrelay.Permanent, match="control character"):
                await http.execute(make_job(server.url("/ok"), headers={"X-T": {"env": variable}}))
    assert server.received == []


async def test_secret_env_allowlist(server):
    environ = {**ALLOW_LOCAL, "PGRELAY_HTTP_SECRET_ENV": "BILLING_TOKEN=127.0.0.1, HOOK_*=127.0.0.1", "BILLING_TOKEN": "a",
               "HOOK_KEY": "b", "AWS_SECRET_ACCESS_KEY": "c"}
    async with HttpExecutor.from_env(environ) as http:
        await http.execute(make_job(server.url("/ok"), headers={"A": {"env": "BILLING_TOKEN"}, "B": {"env": "HOOK_KEY"}}))
        with pytest.raises(pgrelay.Permanent, match="may not send: list it in PGRELAY_HTTP_SECRET_ENV"):
            await http.execute(make_job(server.url("/ok"), headers={"A": {"env": "AWS_SECRET_ACCESS_KEY"}}))
    [received] = server.received
    assert (received.headers["a"], received.headers["b"]) == ("a", "b")


async def test_an_env_secret_is_sent_only_to_the_hosts_it_is_bound_to(server):
    # every name resolves to the local server: only the binding stands between the secret and another host
    resolver = SequenceResolver([["127.0.0.1"]])
    environ = {**ALLOW_LOCAL, "PGRELAY_HTTP_SECRET_ENV": "BILLING_TOKEN=billing.test, HOOK_*=*.hooks.test, "
               "BILLING_TOKEN=127.0.0.1", "BILLING_TOKEN": "Bearer b1ll1ng", "HOOK_KEY": "h00k"}
    port = server.port
    async with HttpExecutor.from_env(environ, resolver=resolver) as http:
        for host, variable in (("billing.test", "BILLING_TOKEN"), ("BILLING.test.", "BILLING_TOKEN"),
                               ("127.0.0.1", "BILLING_TOKEN"), ("a.hooks.test", "HOOK_KEY"),
                               ("b.c.hooks.test", "HOOK_KEY")):
            await http.execute(make_job(f"http://{host}:{port}/ok", headers={"Authorization": {"env": variable}}))
        for host, variable, bound in (("evil.test", "BILLING_TOKEN", "127.0.0.1, billing.test"),
                                      ("billing.test.evil.test", "BILLING_TOKEN", "127.0.0.1, billing.test"),
                                      ("hooks.test", "HOOK_KEY", "*.hooks.test"),
                                      ("billing.test", "HOOK_KEY", "*.hooks.test"),
                                      ("a.hooks.test", "BILLING_TOKEN", "127.0.0.1, billing.test")):
            job = make_job(f"http://{host}:{port}/ok", headers={"X-Ok": "1", "Authorization": {"env": variable}})
            with pytest.raises(pgrelay.Permanent) as caught:
                await http.execute(job)
            assert str(caught.value) == (
                f"header Authorization names environment variable {variable}, which this worker sends only to "
                f"{bound}, not to {host.lower()}: PGRELAY_HTTP_SECRET_ENV binds each variable to its hosts")
            assert caught.value.details["variable"] == variable and caught.value.details["host"] == host.lower()
            assert "b1ll1ng" not in repr(caught.value.details) and "h00k" not in repr(caught.value.details)
    # nothing at all was sent for a refused job, and the secrets went only where they are bound
    assert [r.headers["authorization"] for r in server.received] == ["Bearer b1ll1ng"] * 3 + ["h00k"] * 2
    assert [r.headers["host"].split(":")[0].lower().rstrip(".") for r in server.received] == [
        "billing.test", "billing.test", "127.0.0.1", "a.hooks.test", "b.c.hooks.test"]


def test_secret_env_entries_without_a_host_are_refused_at_startup():
    for text in ("BILLING_TOKEN", "BILLING_TOKEN=billing.test, HOOK_*", "HOOK_*="):
        name = "HOOK_*" if "HOOK" in text else "BILLING_TOKEN"
        with pytest.raises(ValueError) as caught:
            HttpExecutor.from_env({"PGRELAY_HTTP_SECRET_ENV": text, "BILLING_TOKEN": "s3cret"})
        assert str(caught.value) == (
            f"PGRELAY_HTTP_SECRET_ENV: {name} names no host: write {name}=hooks.example.com (the host, or *.domain, "
            "it may be sent to; list the variable again for another host). A bare name, the form before 0.3.0, "
            "would let any job send the secret to any allowed host")
    for text, message in (("=billing.test", "use NAME=host"),
                          ("PG*=db.test", "PG\\* is never sent"), ("PGPASSWORD=db.test", "PGPASSWORD is never sent"),
                          ("a-b=billing.test", "'a-b' is not a variable name"), ("*=billing.test", "'\\*' is not a"),
                          ("TOKEN=127.0.0.*", "'127.0.0.\\*' is not a host name or a \\*.domain pattern"),
                          ("TOKEN=a.test=b", "'a.test=b' is not a host name")):
        with pytest.raises(ValueError, match=f"^PGRELAY_HTTP_SECRET_ENV: {message}"):
            HttpExecutor.from_env({"PGRELAY_HTTP_SECRET_ENV": text})
    assert HttpExecutor.from_env({"PGRELAY_HTTP_SECRET_ENV": " TOKEN = Hooks.Test. ,, "}).describe()["secret_env"] == [
        "TOKEN=hooks.test"]


# -- the guard at connect time -----------------------------------------------------------------


class SequenceResolver(AbstractResolver):
    """Answers each lookup of a name with the next address list (a DNS-rebinding attacker)."""

    def __init__(self, answers: list[list[str]]) -> None:
        self.answers = answers
        self.lookups: list[str] = []

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[Any]:
        self.lookups.append(host)
        addresses = self.answers[min(len(self.lookups), len(self.answers)) - 1]
        return [{"hostname": host, "host": a, "port": port, "family": socket.AF_INET6 if ":" in a else socket.AF_INET,
                 "proto": 0, "flags": 0} for a in addresses]

    async def close(self) -> None:
        pass


async def test_a_name_that_rebinds_to_a_private_address_is_refused_at_connect_time(server):
    resolver = SequenceResolver([["127.0.0.1"], ["10.0.0.5"], ["127.0.0.1", "169.254.169.254"]])
    async with HttpExecutor.from_env(ALLOW_LOCAL, resolver=resolver) as http:
        url = f"http://hooks.rebind.test:{server.port}/close"  # the server closes the connection: no reuse
        assert (await http.execute(make_job(url)))["status"] == 200
        with pytest.raises(TargetRefused, match=r"10\.0\.0\.5 is private \(10\.0\.0\.0/8\) \(host hooks.rebind.test\)"):
            await http.execute(make_job(url))
        with pytest.raises(TargetRefused, match="cloud metadata"):
            await http.execute(make_job(url))
    assert resolver.lookups == ["hooks.rebind.test"] * 3
    assert len(server.received) == 1


async def test_allowed_hosts(server):
    resolver = SequenceResolver([["127.0.0.1"]])
    env = {**ALLOW_LOCAL, "PGRELAY_HTTP_ALLOWED_HOSTS": "exact.test, *.hooks.test"}
    async with HttpExecutor.from_env(env, resolver=resolver) as http:
        for host in ("exact.test", "a.hooks.test", "b.c.hooks.test", "EXACT.test"):
            assert (await http.execute(make_job(f"http://{host}:{server.port}/ok")))["status"] == 200
        for host in ("hooks.test", "other.test", "exact.test.evil.test", "evilhooks.test", "127.0.0.1"):
            with pytest.raises(TargetRefused, match="is not in PGRELAY_HTTP_ALLOWED_HOSTS"):
                await http.execute(make_job(f"http://{host}:{server.port}/ok"))
    assert len(server.received) == 4


async def test_allow_cidrs_are_required_for_local_targets(server):
    async with HttpExecutor.from_env({}) as http:
        with pytest.raises(TargetRefused, match=r"127\.0\.0\.1 is loopback \(127\.0\.0\.0/8\); allow the range with "
                                                "PGRELAY_HTTP_ALLOW_CIDRS") as caught:
            await http.execute(make_job(server.url("/ok")))
    assert caught.value.details == {"refused": "127.0.0.1 is loopback (127.0.0.0/8)", "host": "127.0.0.1",
                                    "address": "127.0.0.1"}
    assert server.received == []
    with pytest.raises(ValueError, match="PGRELAY_HTTP_ALLOW_CIDRS: 'localhost' is not a CIDR"):
        HttpExecutor.from_env({"PGRELAY_HTTP_ALLOW_CIDRS": "127.0.0.0/8,localhost"})


async def test_no_proxy_from_the_environment(server, monkeypatch):
    # with trust_env the request would go to this (closed) proxy and the guard would see the proxy's address
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    async with HttpExecutor.from_env(ALLOW_LOCAL) as http:
        assert (await http.execute(make_job(server.url("/ok"))))["status"] == 200


async def test_session_survives_close_and_reuse(server):
    http = HttpExecutor.from_env(ALLOW_LOCAL)
    assert (await http.execute(make_job(server.url("/ok"))))["status"] == 200
    await http.close()
    assert (await http.execute(make_job(server.url("/ok"))))["status"] == 200
    await http.close()


async def test_no_environment_variable_is_sent_unless_the_operator_lists_it(server):
    environ = {**ALLOW_LOCAL, "AWS_SECRET_ACCESS_KEY": "c"}
    async with HttpExecutor.from_env(environ) as http:
        with pytest.raises(pgrelay.Permanent, match="may not send: list it in PGRELAY_HTTP_SECRET_ENV"):
            await http.execute(make_job(server.url("/ok"), headers={"A": {"env": "AWS_SECRET_ACCESS_KEY"}}))
    assert server.received == []
