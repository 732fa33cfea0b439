"""pgrelay.enqueue_http: an HTTP request stored as a job of kind 'http'; the URL (PR003) and the method and
headers (PR004) are checked when it is enqueued, not when the worker sends it."""

from __future__ import annotations

import re
from datetime import datetime, timezone

from tests.sql.helpers import call, error_of, job, job_count, raises_sqlstate


def test_defaults_store_a_post_with_no_headers_and_no_body_under_task_http(db):
    job_id = call(db, "enqueue_http", url="https://hooks.example.com/orders")

    stored = job(db, job_id)
    assert {key: stored[key] for key in ("kind", "task", "queue", "status", "priority", "attempt")} == {
        "kind": "http", "task": "http", "queue": "default", "status": "pending", "priority": 0, "attempt": 0}
    assert stored["payload"] == {"url": "https://hooks.example.com/orders", "method": "POST", "headers": {}, "body": None}


def test_null_for_an_optional_argument_takes_its_default(db):
    job_id = call(db, "enqueue_http", url="https://example.com/", body=None, method=None, headers=None, task=None,
                  queue=None, run_at=None, priority=None)

    stored = job(db, job_id)
    assert (stored["task"], stored["queue"], stored["priority"], stored["status"]) == ("http", "default", 0, "pending")
    assert stored["payload"] == {"url": "https://example.com/", "method": "POST", "headers": {}, "body": None}


def test_url_method_headers_and_body_are_stored_in_the_payload_with_the_method_upper_cased(db):
    headers = {"Content-Type": "application/json", "X-Signature": "abc", "Authorization": {"env": "TOKEN"}}
    job_id = call(db, "enqueue_http", url="https://hooks.example.com/orders?id=42#frag", body={"id": 42, "ok": True},
                  method="put", headers=headers)

    assert job(db, job_id)["payload"] == {
        "url": "https://hooks.example.com/orders?id=42#frag", "method": "PUT", "headers": headers,
        "body": {"id": 42, "ok": True}}


def test_every_job_argument_is_stored(db):
    run_at = datetime(2031, 5, 6, 7, 8, 9, tzinfo=timezone.utc)
    job_id = call(db, "enqueue_http", url="http://example.com/", task="webhooks.order", queue="hooks",
                  run_at=run_at, priority=5, max_attempts=4, timeout_seconds=15, idempotency_key="ik",
                  dedupe_key="dk", trace_id="tr")

    stored = job(db, job_id)
    assert {key: stored[key] for key in (
        "task", "queue", "run_at", "priority", "max_attempts", "timeout_seconds", "idempotency_key", "dedupe_key",
        "trace_id", "kind")} == {
        "task": "webhooks.order", "queue": "hooks", "run_at": run_at, "priority": 5, "max_attempts": 4,
        "timeout_seconds": 15, "idempotency_key": "ik", "dedupe_key": "dk", "trace_id": "tr", "kind": "http"}


def test_keys_work_as_for_enqueue(db):
    first = call(db, "enqueue_http", url="https://example.com/a", idempotency_key="k")
    assert call(db, "enqueue_http", url="https://example.com/b", idempotency_key="k") == first
    deduped = call(db, "enqueue_http", url="https://example.com/c", dedupe_key="d")
    assert call(db, "enqueue_http", url="https://example.com/d", dedupe_key="d") == deduped
    assert job_count(db) == 2


ACCEPTED_URLS = [
    "http://localhost",
    "http://localhost:8080/path",
    "https://example.com/a/b?x=1&y=%20z#top",
    "HTTPS://Example.COM/",
    "http://[::1]:8080/hook",
    "http://[2001:db8::1]/",
    "http://127.0.0.1:1/",
    "https://example.com:65535",
    "https://example.com/users/a@b",          # an @ in the path is not a password
    "https://example.com/" + "x" * (2048 - len("https://example.com/")),
]


def test_absolute_http_urls_with_a_host_are_accepted_as_written(db):
    ids = [call(db, "enqueue_http", url=url) for url in ACCEPTED_URLS]
    assert [job(db, job_id)["payload"]["url"] for job_id in ids] == ACCEPTED_URLS


REFUSED_URLS = [
    None,
    "",
    "ftp://example.com/file",
    "file:///etc/passwd",
    "javascript:alert(1)",
    "mailto:a@example.com",
    "example.com/hook",
    "//example.com/hook",
    "http://",
    "http:///x",
    "https://?q=1",
    "http://user:pass@example.com/",
    "http://user@example.com/",
    "http://example.com/a b",
    " http://example.com/",
    "http://example.com/\n",
    "http://example.com/\t",
    "http://example.com:0/",
    "http://example.com:70000/",
    "http://example.com:65536",
    "http://example.com:port/",
    "http://exa mple.com/",
    "https://example.com/" + "x" * (2049 - len("https://example.com/")),
]


def test_urls_that_are_not_absolute_http_with_a_host_are_refused_with_pr003(db):
    wrong = []
    for url in REFUSED_URLS:
        error = error_of(lambda: call(db, "enqueue_http", url=url))
        if error is None or error.sqlstate != "PR003" or "url" not in (error.diag.message_primary or ""):
            wrong.append((url, error and error.sqlstate, error and error.diag.message_primary))

    assert wrong == []
    assert job_count(db) == 0


# (arguments, a word the message must contain)
REFUSED_REQUESTS = [
    ({"method": "FETCH"}, "method"),
    ({"method": ""}, "method"),
    ({"method": "CONNECT"}, "method"),
    ({"method": "TRACE"}, "method"),
    ({"headers": ["X-A", "b"]}, "headers"),
    ({"headers": '"X-A: b"'}, "headers"),
    ({"headers": {"X A": "b"}}, "header"),
    ({"headers": {"": "b"}}, "header"),
    ({"headers": {"X-A:": "b"}}, "header"),
    ({"headers": {"X-A": "b\r\nX-Injected: 1"}}, "X-A"),
    ({"headers": {"X-A": "b\n"}}, "X-A"),
    ({"headers": {"X-A": 5}}, "X-A"),
    ({"headers": {"X-A": True}}, "X-A"),
    ({"headers": {"X-A": None}}, "X-A"),
    ({"headers": {"X-A": ["b"]}}, "X-A"),
    ({"headers": {"X-A": {"env": "lower-case-dash"}}}, "X-A"),
    ({"headers": {"X-A": {"env": "TOKEN", "default": "x"}}}, "X-A"),
    ({"headers": {"X-A": {"var": "TOKEN"}}}, "X-A"),
]


def test_bad_methods_and_headers_are_refused_with_pr004(db):
    wrong = []
    for bad, word in REFUSED_REQUESTS:
        error = error_of(lambda: call(db, "enqueue_http", **{"url": "https://example.com/", **bad}))
        if error is None or error.sqlstate != "PR004" or word not in (error.diag.message_primary or ""):
            wrong.append((bad, error and error.sqlstate, error and error.diag.message_primary))

    assert wrong == []
    assert job_count(db) == 0


def test_every_supported_method_is_accepted_in_any_case(db):
    methods = ["get", "Post", "PUT", "patch", "DELETE", "head", "OPTIONS"]
    ids = [call(db, "enqueue_http", url="https://example.com/", method=method) for method in methods]
    assert [job(db, job_id)["payload"]["method"] for job_id in ids] == [m.upper() for m in methods]


def test_header_values_may_name_an_environment_variable_for_the_worker(db):
    headers = {"Authorization": {"env": "TOKEN"}, "X-Api-Key": {"env": "_API_KEY_2"}, "Accept": "application/json"}
    job_id = call(db, "enqueue_http", url="https://example.com/", headers=headers)
    assert job(db, job_id)["payload"]["headers"] == headers


def test_a_url_error_is_reported_before_a_method_error(db):
    with raises_sqlstate("PR003"):
        call(db, "enqueue_http", url="ftp://example.com/", method="FETCH")


def test_bad_job_arguments_are_refused_with_pr001_naming_them(db):
    wrong = []
    for bad, argument in [({"task": "bad task"}, "task"), ({"task": ""}, "task"), ({"queue": "a/b"}, "queue"),
                          ({"run_at": "infinity"}, "run_at"), ({"timeout_seconds": 0}, "timeout_seconds"),
                          ({"max_attempts": 0}, "max_attempts"), ({"timeout_seconds": 86401}, "timeout_seconds"),
                          ({"idempotency_key": ""}, "idempotency_key"), ({"dedupe_key": ""}, "dedupe_key"),
                          ({"trace_id": ""}, "trace_id")]:
        error = error_of(lambda: call(db, "enqueue_http", **{"url": "https://example.com/", **bad}))
        if (error is None or error.sqlstate != "PR001"
                or not re.search(rf"\b{argument}\b", error.diag.message_primary or "")):
            wrong.append((bad, error and error.sqlstate, error and error.diag.message_primary))

    assert wrong == []
    assert job_count(db) == 0
