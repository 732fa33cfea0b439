"""Hostile input at every entry point (issue 7, item 6): the SQL functions, the CLI, the real
PostgREST, the HTTP executor's guard and the worker.

Each property generates payloads, names, keys, URLs, headers and numbers meant to break something:
every code point (NUL, lone surrogates, RTL and zero-width marks, combining marks), SQL metacharacters,
10 MB values, integers beyond int4/int8, NaN and infinities, URLs aimed at private addresses in every
spelling. The contract checked:

1. SQL: a call is either accepted, and the job reads back exactly as sent, or refused with one of
   pgrelay's SQLSTATEs, or a data exception where PostgreSQL itself refuses the value (the codes are
   listed in hostile_inputs.POSTGRES_CODES), or by psycopg before anything is sent (NUL in text) — and a
   refused call leaves every pgrelay table exactly as it was. Never XX000, never class 40. Where the rule
   is simple (names, ranges, lengths), the property also says which of the two it must be.
2. CLI: exit 0, or one line ``pgrelay <command>: error: ...`` and exit 1 (click's usage error, exit 2, for
   a malformed option); never a traceback.
3. PostgREST: a 2xx or a 4xx, never a 5xx; nothing written on failure.
4. HTTP: whatever enqueue_http accepts, the executor never connects to a private address.
5. Worker: it keeps running over hostile jobs; each ends in a terminal state with its error recorded, or
   stays pending when this worker has no handler for it.

Sizes: ``size(short, full)`` examples per property (reliability/conftest.py). Examples share the test's
database, so each one compares the database with itself before and after, and idempotency/dedupe keys
are drawn partly from a small pool so that the "key already known" paths are hit too.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import math
import re
import socket
import sys
import unicodedata
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import aiohttp
import psycopg
import pytest
from aiohttp.abc import AbstractResolver
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, assume, event, given, note, settings
from hypothesis import strategies as st
from psycopg.types.json import Jsonb

import pgrelay
from pgrelay import cli
from pgrelay.http import HttpError, HttpExecutor
from pgrelay.models import ClaimedJob
from pgrelay.ssrf import GuardedResolver, TargetPolicy, TargetRefused
from tests.reliability.conftest import FULL, size
from tests.reliability.hostile_inputs import (
    ALLOWED_CODES,
    DRIVER,
    INT4,
    RAW_JSON,
    SEEN,
    Arguments,
    Outcome,
    RawJson,
    assert_clear_refusal,
    call,
    clean_json,
    clean_text,
    dirty_json,
    good_keys,
    hostile_floats,
    hostile_ints,
    hostile_text,
    in_range,
    ipv4_spelling,
    ipv6_spelling,
    json_problem,
    key_ok,
    keys,
    name_like,
    name_ok,
    raw_json,
    resolved_addresses,
    run,
    same_json,
    sendable,
    snapshot,
    unsafe,
    urls,
    valid_name,
)

HYPOTHESIS = settings(
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.large_base_example, HealthCheck.filter_too_much],
    deadline=None,
    database=None,  # no .hypothesis/ folder in the repository; a failure prints its example to reproduce
)


def examples(short: int, full: int) -> settings:
    return settings(HYPOTHESIS, max_examples=size(short, full))


@pytest.fixture(scope="module", autouse=True)
def _report_codes() -> Iterator[None]:
    """Every refusal code the module met (shown with -s): the list the report gives."""
    yield
    if SEEN:
        print("\nhostile input: refusals by SQLSTATE:", dict(sorted(SEEN.items())), file=sys.stderr)


def get_job(db: psycopg.Connection, job_id: int) -> dict[str, Any] | None:
    """get_job without its payload and result (which Python's json may not read back: see
    test_deep_json_is_stored_or_refused_by_the_database)."""
    return db.execute("SELECT pgrelay.get_job(%s) - 'payload' - 'result'", [job_id]).fetchone()[0]


def get_payload(db: psycopg.Connection, job_id: int, key: str = "payload") -> Any:
    return db.execute("SELECT pgrelay.get_job(%s) -> %s", [job_id, key]).fetchone()[0]


def stored_payload_equals(db: psycopg.Connection, job_id: int, sent: Any) -> bool:
    """The job's payload is what was sent: Python values compared exactly (numbers as decimals), JSON
    text compared by the database with the same text parsed again."""
    if isinstance(sent, RawJson):
        return db.execute("SELECT payload = %s::jsonb FROM pgrelay._jobs WHERE id = %s UNION ALL "
                          "SELECT payload = %s::jsonb FROM pgrelay._finished WHERE id = %s",
                          [str(sent), job_id, str(sent), job_id]).fetchone()[0]
    return same_json(get_payload(db, job_id), {} if sent is None else sent)


def no_controls(text: str) -> str:
    """Text without control characters (C0, DEL, C1): what enqueue_http accepts in a header value."""
    return "".join(c for c in text if unicodedata.category(c) != "Cc")


def nvl(value: Any, default: Any) -> Any:
    """What the SQL does with an argument passed as NULL: its default (an empty string is not NULL)."""
    return default if value is None else value


def text_problem(*values: Any) -> bool:
    """Some text argument psycopg will not send (NUL, a surrogate)."""
    for value in values:
        if isinstance(value, str) and not sendable(value):
            return True
        if isinstance(value, list) and text_problem(*value):
            return True
    return False


def int_overflow(*values: Any, bits: int = 32) -> bool:
    limit = 2 ** (bits - 1)
    return any(isinstance(v, int) and not isinstance(v, bool) and not -limit <= v < limit for v in values)


def json_refused(db: psycopg.Connection, value: Any) -> str | None:
    """Why the database refuses this JSON argument: Python values by json_problem, JSON text by asking it."""
    if value is None:
        return None
    if isinstance(value, RawJson):
        outcome = run(db, "SELECT %s::jsonb IS NOT NULL", [str(value)])
        return None if outcome.ok else outcome.code
    return json_problem(value)


JSON_CODES = ("22P05", "22P02", "54001")


def bad_like(pattern: str) -> bool:
    """A LIKE pattern PostgreSQL refuses (22025): it ends with a backslash that escapes nothing."""
    return re.search(r"(^|[^\\])(\\\\)*\\$", pattern) is not None


def refusal(driver: bool, data_bad: bool, rules: bool, data_codes: tuple[str, ...] = ("22003", *JSON_CODES)
            ) -> tuple[str, ...] | None:
    """The codes a clear refusal may carry for arguments the driver cannot send, the database cannot
    convert, or a pgrelay rule refuses, in that order; None for good arguments."""
    return (DRIVER,) if driver else data_codes if data_bad else ("PR001",) if rules else None


def call_judged(db: psycopg.Connection, function: str, args: dict[str, Any], *, rows: bool,
                refused_with: tuple[str, ...] | None) -> tuple[Outcome, dict[str, Any]] | None:
    """Call ``function``. Bad arguments (``refused_with``, from ``refusal``) must get a clear refusal with
    one of those codes and change nothing: None. Good ones: the outcome and the snapshot from before."""
    before = snapshot(db)
    outcome = call(db, function, args, rows=rows)
    note(repr(outcome))
    event("accepted" if outcome.ok else f"refused {outcome.code}")
    if refused_with is not None:
        assert_clear_refusal(outcome, *refused_with)
        assert snapshot(db) == before
        return None
    return outcome, before


# =============================================================================================
# 1. SQL functions, called directly
# =============================================================================================


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), strategy)


# the job an idempotency key of a queue names (white box: keys belong to their queue)
KEY_OF_QUEUE = """SELECT k.job_id FROM pgrelay._idempotency_keys k JOIN pgrelay._queues q ON q.id = k.queue_id
                  WHERE q.queue = %s AND k.key = %s"""


@examples(60, 500)
@given(data=st.data())
def test_enqueue_stores_exactly_what_it_accepts_and_refuses_without_a_trace(db, data):
    arg = Arguments(data, ["task", "queue", "payload", "priority", "max_attempts", "timeout_seconds",
                           "idempotency_key", "dedupe_key", "trace_id"])
    task = arg("task", valid_name("task"), name_like("task"))
    queue = arg("queue", maybe(valid_name("queue")), maybe(name_like("queue")))
    payload = arg("payload", maybe(clean_json), st.one_of(dirty_json, raw_json))
    priority = arg("priority", maybe(st.integers(*INT4)), hostile_ints)
    max_attempts = arg("max_attempts", maybe(st.integers(1, 1000)), hostile_ints)
    timeout_seconds = arg("timeout_seconds", maybe(st.integers(1, 86400)), hostile_ints)
    idempotency_key = arg("idempotency_key", good_keys(), keys())
    dedupe_key = arg("dedupe_key", good_keys(), keys())
    trace_id = arg("trace_id", good_keys(), keys())
    args = dict(task=task, queue=queue, payload=payload, priority=priority, max_attempts=max_attempts,
                timeout_seconds=timeout_seconds, idempotency_key=idempotency_key, dedupe_key=dedupe_key,
                trace_id=trace_id)
    driver = text_problem(task, queue, idempotency_key, dedupe_key, trace_id)
    data = int_overflow(priority, max_attempts, timeout_seconds) or json_refused(db, payload)
    rules = not (name_ok(task, "task") and name_ok(nvl(queue, "default"), "queue")
                 and in_range(max_attempts, 1, 1000) and in_range(timeout_seconds, 1, 86400)
                 and key_ok(idempotency_key) and key_ok(dedupe_key) and key_ok(trace_id))
    prior_key = prior_duplicate = None
    if not (driver or data or rules):
        if idempotency_key is not None:
            prior_key = db.execute(KEY_OF_QUEUE, [nvl(queue, "default"), idempotency_key]).fetchone()
        if dedupe_key is not None:
            prior_duplicate = db.execute("SELECT id FROM pgrelay._jobs WHERE queue = %s AND (options).dedupe_key = %s",
                                         [nvl(queue, "default"), dedupe_key]).fetchone()
    before = snapshot(db)

    outcome = call(db, "enqueue", args)
    note(repr(outcome))
    event("accepted" if outcome.ok else f"refused {outcome.code}")

    if driver or data or rules:
        expected = (DRIVER,) if driver else ("22003", *JSON_CODES) if data else ("PR001",)
        assert_clear_refusal(outcome, *expected)
        assert snapshot(db) == before
        return
    assert outcome.ok, f"a valid enqueue was refused: {outcome}"
    job_id = outcome.value
    if prior_key is not None:
        assert job_id == prior_key[0]  # the key's job, and nothing new
        assert snapshot(db)["jobs"] == before["jobs"]
        return
    if prior_duplicate is not None:
        assert job_id == prior_duplicate[0]
        assert snapshot(db)["jobs"] == before["jobs"]
        if idempotency_key is not None:  # the key now names the job it was deduplicated into
            assert db.execute(KEY_OF_QUEUE, [nvl(queue, "default"), idempotency_key]).fetchone()[0] == job_id
        return
    assert snapshot(db)["jobs"] == before["jobs"] + 1
    job = get_job(db, job_id)
    assert (job["task"], job["queue"], job["kind"], job["status"], job["attempt"]) == (
        task, nvl(queue, "default"), "handler", "pending", 0)
    assert (job["priority"], job["timeout_seconds"]) == (priority or 0, timeout_seconds)
    assert (job["idempotency_key"], job["dedupe_key"], job["trace_id"]) == (idempotency_key, dedupe_key, trace_id)
    if max_attempts is not None:
        assert job["max_attempts"] == max_attempts
    assert stored_payload_equals(db, job_id, payload)


HEADER_NAMES = st.one_of(
    st.from_regex(r"[A-Za-z][A-Za-z0-9-]{0,15}", fullmatch=True),
    st.sampled_from(["Host", "Content-Length", "Transfer-Encoding", "Authorization", "X-Api-Key", "Cookie",
                     "webhook-signature", "Idempotency-Key", "User-Agent", "a" * 256, "a" * 257, "X Y", "X:Y",
                     "X\r\nY", "Xé", "", "!#$%&'*+.^_`|~"]),
    hostile_text(10),
)
HEADER_VALUES = st.one_of(
    clean_text(40), hostile_text(20),
    st.sampled_from(["Bearer eyJhbGciOi.abc.def", "a\r\nX-Injected: 1", "a\nb", "a\x00b", "\t", "é" * 10,
                     "x" * 10_000]),
    st.builds(lambda v: {"env": v}, st.one_of(st.sampled_from(["HOOK_TOKEN", "PGPASSWORD", "A" * 128, "A" * 129,
                                                              "1A", "a-b", ""]), hostile_text(10))),
    st.sampled_from([{"env": "X", "other": 1}, {}, 1, None, True, [], ["a"], {"env": 1}]),
)
HEADER_DICTS = st.one_of(st.none(), st.dictionaries(HEADER_NAMES, HEADER_VALUES, max_size=4),
                         st.sampled_from([[], "x", 1, [{"a": "b"}]]))
HEADERS = st.one_of(HEADER_DICTS, raw_json)
METHODS = st.one_of(st.none(), st.sampled_from(["GET", "post", "Delete", "PATCH", "options", "head", "PUT",
                                                "BREW", "", " GET", "GET\r\n", "CONNECT", "TRACE", "po\u017ft",
                                                "g\u0130t", "GET;"]), hostile_text(8))
SIMPLE_URL = re.compile(r"https?://[a-z][a-z0-9-]{0,20}(\.[a-z][a-z0-9-]{0,20}){0,3}(:[1-9][0-9]{0,3})?(/[a-z0-9]*)*")
HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")


def connection_recorder(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every address aiohttp tries to connect to, recorded; the connection then fails (no network)."""
    addresses: list[str] = []

    async def refuse(self: Any, *args: Any, addr_infos: Any, req: Any, **kwargs: Any) -> Any:
        addresses.extend(info[4][0] for info in addr_infos)
        raise aiohttp.ClientConnectorError(req.connection_key, OSError(111, "no network in this test"))

    monkeypatch.setattr(aiohttp.TCPConnector, "_wrap_create_connection", refuse)
    return addresses


class HostileDns(AbstractResolver):
    """Answers every name with the addresses it is given (private and public mixed)."""

    def __init__(self, answers: list[str]) -> None:
        self.answers = answers

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[Any]:
        return [{"hostname": host, "host": a, "port": port, "family": socket.AF_INET6 if ":" in a else socket.AF_INET,
                 "proto": 0, "flags": 0} for a in self.answers]

    async def close(self) -> None:
        pass


def claimed(payload: Any, *, kind: str = "http", job_id: int = 1) -> ClaimedJob:
    now = datetime.now(timezone.utc)
    return ClaimedJob(id=job_id, queue="default", task="http", kind=kind, payload=payload, attempt=1, max_attempts=1,
                      lease_expires_at=now, timeout_seconds=None, trace_id=None, priority=0, run_at=now,
                      created_at=now, idempotency_key=None)


async def execute_without_network(payload: Any, answers: list[str], recorded: list[str]) -> BaseException | None:
    """Send an HTTP job's request through the real executor, with a hostile DNS and no network: what it
    raised. Only the executor's own outcomes are acceptable (anything else escapes its contract: the
    worker would retry such a job with backoff instead of dead-lettering it with the rule)."""
    recorded.clear()
    async with HttpExecutor(resolver=HostileDns(answers), connect_timeout=2, read_timeout=2, total_timeout=4) as http:
        try:
            await http.execute(claimed(payload))
        except (TargetRefused, pgrelay.Permanent, HttpError) as exc:
            return exc
    return None


GOOD_URLS = st.one_of(
    st.from_regex(SIMPLE_URL, fullmatch=True),
    st.builds(lambda scheme, host, path: f"{scheme}://{host}{path}", st.sampled_from(["http", "https", "HTTPS"]),
              st.one_of(ipv4_spelling(ipaddress.IPv4Address("93.184.216.34")), ipv6_spelling().map(str)),
              st.sampled_from(["/", "/a?b=c#d", "/%2e%2e/", "/é", ""])),
)
GOOD_HEADERS = maybe(st.dictionaries(st.from_regex(r"X-[A-Za-z0-9]{1,10}", fullmatch=True),
                                     st.one_of(clean_text(20).map(no_controls),
                                               st.sampled_from([{"env": "HOOK_TOKEN"}, "Bearer abc.def"])),
                                     max_size=3))


@examples(60, 500)
@given(data=st.data(), answers=resolved_addresses())
def test_enqueue_http_stores_the_request_as_sent_and_the_executor_never_reaches_a_private_address(
        db, monkeypatch, data, answers):
    recorded = connection_recorder(monkeypatch)
    arg = Arguments(data, ["url", "method", "headers", "body", "task", "queue", "idempotency_key"])
    url = arg("url", GOOD_URLS, urls())
    method = arg("method", maybe(st.sampled_from(HTTP_METHODS + ("get", "Post"))), METHODS)
    headers = arg("headers", GOOD_HEADERS, HEADERS)
    body = arg("body", maybe(clean_json), st.one_of(dirty_json, raw_json))
    task = arg("task", maybe(valid_name("task")), maybe(name_like("task")))
    queue = arg("queue", maybe(valid_name("queue")), maybe(name_like("queue")))
    idempotency_key = arg("idempotency_key", good_keys(), keys())
    args = dict(url=url, method=method, headers=headers, body=body, task=task, queue=queue,
                idempotency_key=idempotency_key)
    prior_key = None
    if isinstance(idempotency_key, str) and sendable(idempotency_key) and isinstance(nvl(queue, "default"), str) \
            and sendable(nvl(queue, "default")):
        prior_key = db.execute(KEY_OF_QUEUE, [nvl(queue, "default"), idempotency_key]).fetchone()
    before = snapshot(db)
    outcome = call(db, "enqueue_http", args)
    note(repr(outcome))
    event("accepted" if outcome.ok else f"refused {outcome.code}")
    if text_problem(url, method, task, queue, idempotency_key):
        assert_clear_refusal(outcome, DRIVER)
    # what must be refused, whatever the rest says
    lowered = url.lower() if isinstance(url, str) else ""
    authority = lowered.split("://", 1)[-1].split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
    must_refuse = (not lowered.startswith(("http://", "https://")) or len(url) > 2048 or "@" in authority
                   or any(c in " \t\n\r\x0b\x0c" or ord(c) < 32 or ord(c) == 127 for c in url))
    if not outcome.ok:
        assert_clear_refusal(outcome, "PR001", "PR003", "PR004", DRIVER, *JSON_CODES)
        assert snapshot(db) == before
        simple = (SIMPLE_URL.fullmatch(url) and (nvl(method, "POST")).upper() in HTTP_METHODS
                  and (headers is None or headers == {}) and not json_refused(db, body)
                  and name_ok(nvl(task, "http"), "task") and name_ok(nvl(queue, "default"), "queue")
                  and key_ok(idempotency_key) and not text_problem(idempotency_key))
        assert not simple, f"a plain request was refused: {outcome}"
        return
    assert not must_refuse, f"enqueue_http accepted {url!r}"
    job_id = outcome.value
    if prior_key is not None:
        assert job_id == prior_key[0] and snapshot(db)["jobs"] == before["jobs"]  # the key's job, nothing new
        return
    # the body apart: JSON text may nest deeper than Python's json reads (the database compares it below)
    payload, kind = db.execute("SELECT payload - 'body', pgrelay._kind_name(kind) FROM pgrelay._jobs WHERE id = %s",
                               [job_id]).fetchone()
    assert kind == "http"
    assert payload["url"] == url
    assert payload["method"] == db.execute("SELECT upper(%s)", [nvl(method, "POST")]).fetchone()[0]
    assert payload["method"] in HTTP_METHODS
    if isinstance(headers, RawJson):
        assert db.execute("SELECT %s::jsonb = %s::jsonb", [json.dumps(payload["headers"]), str(headers)]).fetchone()[0]
    else:
        assert same_json(payload["headers"], headers or {})
    if isinstance(body, RawJson):
        assert db.execute("SELECT payload -> 'body' = %s::jsonb FROM pgrelay._jobs WHERE id = %s",
                          [str(body), job_id]).fetchone()[0]
    else:
        assert same_json(db.execute("SELECT payload -> 'body' FROM pgrelay._jobs WHERE id = %s", [job_id]).fetchone()[0],
                         body)
    # what the worker would do with it (the guard looks at the URL, never at the body): never a connection to a private address
    raised = asyncio.run(execute_without_network(payload, answers, recorded))
    note(f"executor: {raised!r}; connected to {recorded}")
    for address in recorded:
        assert unsafe(address) is None, f"{url!r}: the executor connected to {address}: {unsafe(address)}"
    assert recorded or raised is not None


VALID_TASK = st.from_regex(r"[a-z][a-z0-9._:/-]{0,20}", fullmatch=True)
VALID_QUEUE = st.from_regex(r"[a-z][a-z0-9._:-]{0,20}", fullmatch=True)
CLEAN_KEY = clean_text(20).filter(lambda k: 1 <= len(k) <= 255)
VALID_ELEMENT = st.fixed_dictionaries(
    {"task": VALID_TASK},
    optional={"payload": clean_json, "queue": VALID_QUEUE, "priority": st.integers(*INT4),
              "max_attempts": st.integers(1, 1000), "timeout_seconds": st.integers(1, 86400),
              "idempotency_key": st.one_of(st.sampled_from(["bulk-1", "bulk-2"]), CLEAN_KEY),
              "dedupe_key": st.one_of(st.sampled_from(["dd-1", "dd-2"]), CLEAN_KEY), "trace_id": CLEAN_KEY,
              "run_at": st.datetimes(min_value=datetime(1, 1, 2), timezones=st.just(timezone.utc)).map(
                  lambda d: d.isoformat())})
VALID_HTTP_ELEMENT = st.fixed_dictionaries(
    {"url": st.sampled_from(["https://hooks.example.com/x", "http://93.184.216.34:8080/p?q=1#f",
                             "https://[2606:4700:4700::1111]/"])},
    optional={"method": st.sampled_from(["GET", "post", "Delete"]), "body": clean_json, "queue": VALID_QUEUE,
              "headers": st.dictionaries(st.from_regex(r"X-[A-Za-z]{1,8}", fullmatch=True),
                                         clean_text(20).map(no_controls),
                                         max_size=2),
              "task": VALID_TASK})
# one change that makes an element invalid, whatever else it holds: (key, value)
BREAKS = st.one_of(
    st.tuples(st.just("task"), st.one_of(name_like("task").filter(lambda t: not name_ok(t, "task")),
                                         # (5 or true would be the task "5" or "true": jsonb_to_record's text)
                                         st.sampled_from([None, {"a": 1}, ["x"], -1, ""]))),
    st.tuples(st.just("queue"), name_like("queue").filter(lambda q: not name_ok(q, "queue"))),
    st.tuples(st.just("priority"), st.sampled_from([2**31, -2**31 - 1, 10**30, "x", 1.5, True, [], {}, "1e3", ""])),
    st.tuples(st.just("max_attempts"), st.sampled_from([0, 1001, -1, 2**40, "zero", 1.5])),
    st.tuples(st.just("timeout_seconds"), st.sampled_from([0, 86401, -5, 2**31, "1.5"])),
    st.tuples(st.sampled_from(["idempotency_key", "dedupe_key", "trace_id"]), st.sampled_from(["", "k" * 256])),
    st.tuples(st.just("run_at"), st.sampled_from(["infinity", "-infinity", "soon", "2024-13-01", "294277-01-01",
                                                  "", "2024-02-30", True, [1]])),
    st.tuples(st.sampled_from(["colour", "Task", "task ", "\u0000x", "id", "status"]), st.just(1)),
    st.tuples(st.just("method"), st.just("GET")),  # method without a url
)
HTTP_BREAKS = st.one_of(
    st.tuples(st.just("url"), st.sampled_from(["ftp://x/", "http://u:p@h/", "http://", "http://a b/",
                                               "https://" + "a" * 2100, "//x/", "http://[::1/", None, 5])),
    st.tuples(st.just("method"), st.sampled_from(["BREW", "", "GET\n", 5])),
    st.tuples(st.just("headers"), st.sampled_from(["x", [1], {"a b": "c"}, {"X": "a\r\nb"}, {"X": 1}, 5])),
    st.tuples(st.just("payload"), st.just({})),
)


@st.composite
def bulk_elements(draw: Any) -> tuple[Any, bool]:
    """(element, valid): valid ones follow every rule; a broken one breaks exactly one."""
    kind = draw(st.integers(0, 5))
    if kind <= 1:
        return draw(VALID_ELEMENT), True
    if kind == 2:
        return draw(VALID_HTTP_ELEMENT), True
    if kind == 3:
        key, value = draw(BREAKS)
        return {**draw(VALID_ELEMENT), key: value}, False
    if kind == 4:
        key, value = draw(HTTP_BREAKS)
        return {**draw(VALID_HTTP_ELEMENT), key: value}, False
    return draw(st.one_of(clean_json.filter(lambda j: not isinstance(j, dict)), dirty_json)), False


@examples(50, 400)
@given(data=st.data())
def test_enqueue_bulk_is_all_or_nothing_for_hostile_arrays(db, data):
    shape = data.draw(st.integers(0, 9))
    if shape == 0:
        jobs, valid = data.draw(st.one_of(clean_json.filter(lambda j: not isinstance(j, list)), raw_json)), [False]
    else:
        drawn = data.draw(st.lists(bulk_elements(), max_size=6))
        jobs, valid = [e for e, _ in drawn], [v for _, v in drawn]
    before = snapshot(db)
    prior_keys = {(row[0], row[1]): row[2] for row in db.execute(
        "SELECT q.queue, k.key, k.job_id FROM pgrelay._idempotency_keys k JOIN pgrelay._queues q ON q.id = k.queue_id")}
    outcome = call(db, "enqueue_bulk", {"jobs": jobs}, rows=True)
    note(repr(outcome))
    event("accepted" if outcome.ok else f"refused {outcome.code}")
    if not all(valid) or isinstance(jobs, RawJson):
        if isinstance(jobs, RawJson) and outcome.ok:
            assert db.execute("SELECT jsonb_typeof(%s::jsonb) = 'array'", [str(jobs)]).fetchone()[0]
            return
        assert_clear_refusal(outcome, "PR001", "PR002", *JSON_CODES)
        assert snapshot(db) == before
        if outcome.code == "PR002":
            index = int(re.match(r"jobs\[(\d+)\]", outcome.message).group(1))
            assert not valid[index], f"PR002 names a valid element: {outcome} (valid: {valid})"
        return
    assert outcome.ok, f"a valid array was refused: {outcome}"
    ids = [row[0] for row in outcome.rows]
    assert len(ids) == len(jobs)
    first_with_key: dict[tuple[str, str], int] = {}
    for element, job_id in zip(jobs, ids, strict=True):
        job = get_job(db, job_id)
        key = element.get("idempotency_key")
        if key is not None:  # a key belongs to its queue
            scoped = (element.get("queue", "default"), key)
            expected = prior_keys.get(scoped, first_with_key.setdefault(scoped, job_id))
            assert job_id == expected, (key, job_id, expected)
            continue
        if element.get("dedupe_key") is not None:
            assert (job["queue"], job["dedupe_key"]) == (element.get("queue", "default"), element["dedupe_key"])
            continue
        assert job["queue"] == element.get("queue", "default")
        assert job["priority"] == element.get("priority", 0)
        assert job["timeout_seconds"] == element.get("timeout_seconds")
        assert job["trace_id"] == element.get("trace_id")
        if "max_attempts" in element:
            assert job["max_attempts"] == element["max_attempts"]
        if "run_at" in element:
            assert datetime.fromisoformat(job["run_at"]) == datetime.fromisoformat(element["run_at"])
        if "url" in element:
            raw = db.execute("SELECT payload FROM pgrelay._jobs WHERE id = %s", [job_id]).fetchone()[0]
            assert (job["kind"], job["task"]) == ("http", element.get("task", "http"))
            assert (raw["url"], raw["method"]) == (element["url"], element.get("method", "POST").upper())
            assert same_json(raw["headers"], element.get("headers", {}))
            assert same_json(raw["body"], element.get("body"))
        else:
            assert (job["kind"], job["task"]) == ("handler", element["task"])
            assert same_json(get_payload(db, job_id), element["payload"] if element.get("payload") is not None else {})


@examples(50, 400)
@given(data=st.data())
def test_enqueue_many_stores_every_payload_in_order_or_none(db, data):
    arg = Arguments(data, ["task", "queue", "shaped", "priority", "max_attempts", "timeout_seconds", "trace_id"])
    task = arg("task", valid_name("task"), name_like("task"))
    queue = arg("queue", maybe(valid_name("queue")), maybe(name_like("queue")))
    shaped = arg("shaped", st.tuples(st.just(False), st.lists(maybe(clean_json), max_size=6)), st.one_of(
        st.tuples(st.just(False), maybe(st.lists(st.one_of(st.none(), clean_json, dirty_json, raw_json), max_size=6))),
        st.tuples(st.just(True), st.lists(st.lists(clean_json, min_size=2, max_size=2), min_size=1, max_size=2))))
    priority = arg("priority", maybe(st.integers(*INT4)), hostile_ints)
    max_attempts = arg("max_attempts", maybe(st.integers(1, 1000)), hostile_ints)
    timeout_seconds = arg("timeout_seconds", maybe(st.integers(1, 86400)), hostile_ints)
    trace_id = arg("trace_id", good_keys(), keys())
    two_d, payloads = shaped
    args = dict(task=task, queue=queue, priority=priority, max_attempts=max_attempts,
                timeout_seconds=timeout_seconds, trace_id=trace_id)
    if two_d:  # a 2-D jsonb[] array
        statement_payloads = [[json.dumps(x) for x in row] for row in payloads]
        before = snapshot(db)
        outcome = run(db, "SELECT * FROM pgrelay.enqueue_many(task => %s, payloads => %s::text[]::jsonb[])",
                      [task, statement_payloads])
        if text_problem(task):
            assert_clear_refusal(outcome, DRIVER)
        else:
            assert_clear_refusal(outcome, "PR001", *JSON_CODES)
        assert snapshot(db) == before
        return
    args["payloads"] = payloads
    driver = text_problem(task, queue, trace_id)
    data = int_overflow(priority, max_attempts, timeout_seconds) or any(
        json_refused(db, p) for p in payloads or [])
    rules = not (payloads is not None and name_ok(task, "task") and name_ok(nvl(queue, "default"), "queue")
                 and in_range(max_attempts, 1, 1000) and in_range(timeout_seconds, 1, 86400) and key_ok(trace_id))
    judged = call_judged(db, "enqueue_many", args, rows=True, refused_with=refusal(driver, data, rules))
    if judged is None:
        return
    outcome, before = judged
    assert outcome.ok, f"a valid enqueue_many was refused: {outcome}"
    ids = [row[0] for row in outcome.rows]
    assert len(ids) == len(payloads) and ids == sorted(ids)
    assert snapshot(db)["jobs"] == before["jobs"] + len(ids)
    for job_id, sent in zip(ids, payloads, strict=True):
        job = get_job(db, job_id)
        assert (job["task"], job["queue"], job["priority"], job["trace_id"]) == (
            task, nvl(queue, "default"), priority or 0, trace_id)
        assert stored_payload_equals(db, job_id, sent)


WORKER = "hostile-worker"


def lease_one(db: psycopg.Connection, counter: Iterator[int]) -> tuple[int, int, str]:
    """A fresh job leased to WORKER: (id, attempt, task)."""
    task = f"hostile.t{next(counter)}"
    job_id = db.execute("SELECT pgrelay.enqueue(task => %s, queue => 'hostile', max_attempts => 3)", [task]).fetchone()[0]
    row = db.execute("SELECT id, attempt FROM pgrelay.consume(%s, queues => '{hostile}', tasks => ARRAY[%s])",
                     [WORKER, task]).fetchone()
    assert row[0] == job_id
    return job_id, row[1], task


def _itercount() -> Iterator[int]:
    n = 0
    while True:
        n += 1
        yield n


_counter = _itercount()

NULLABLE_TEXT = st.one_of(st.none(), st.just(""), hostile_text(60), st.just("e" * 20_000))


@examples(80, 600)
@given(data=st.data(), function=st.sampled_from(["ack", "nack", "release", "heartbeat", "ack_many", "ack_each"]))
def test_worker_calls_with_hostile_arguments_change_only_what_they_say(db, data, function):
    job_id, attempt, _ = lease_one(db, _counter)
    ident = data.draw(st.one_of(st.just(job_id), st.just(job_id), hostile_ints, st.none()), label="id")
    att = data.draw(st.one_of(st.just(attempt), st.just(attempt), hostile_ints, st.none()), label="attempt")
    held = is_held(db, ident, att)
    if held:
        job_id, attempt = ident, att  # the job the call is about (an earlier example's lease, perhaps)
    jsonish = st.one_of(st.none(), clean_json, dirty_json, raw_json)
    if function == "ack":
        args: dict[str, Any] = {"id": ident, "attempt": att, "result": data.draw(jsonish, label="result")}
        driver, overflow = False, int_overflow(ident, bits=64) or int_overflow(att)
        data_bad = overflow or json_refused(db, args["result"])
        rules = ident is None or att is None
    elif function == "nack":
        args = {"id": ident, "attempt": att, "error": data.draw(NULLABLE_TEXT, label="error"),
                "retry_after_seconds": data.draw(st.one_of(st.none(), hostile_floats), label="retry_after"),
                "permanent": data.draw(st.one_of(st.none(), st.booleans()), label="permanent"),
                "outcome": data.draw(st.one_of(st.none(), st.sampled_from(["failed", "timeout", "cancelled", "succeeded",
                                                                          "FAILED", "", "lease_expired"]),
                                               hostile_text(10)), label="outcome"),
                "details": data.draw(jsonish, label="details")}
        driver = text_problem(args["error"], args["outcome"])
        data_bad = int_overflow(ident, bits=64) or int_overflow(att) or json_refused(db, args["details"])
        retry = args["retry_after_seconds"]
        rules = (ident is None or att is None or not args["error"]
                 # (a delay over a year, Infinity too, waits a year: nack's documented clamp)
                 or (retry is not None and (math.isnan(retry) or retry < 0))
                 or (nvl(args["outcome"], "failed")) not in ("failed", "timeout", "cancelled"))
    elif function == "release":
        args = {"id": ident, "attempt": att, "reason": data.draw(NULLABLE_TEXT, label="reason")}
        driver = text_problem(args["reason"])
        data_bad = int_overflow(ident, bits=64) or int_overflow(att)
        rules = ident is None or att is None
    elif function == "heartbeat":
        worker = data.draw(st.one_of(st.just(WORKER), name_like("worker")), label="worker")
        ids = data.draw(st.one_of(st.just([ident]), st.lists(st.one_of(st.none(), hostile_ints), max_size=4),
                                  st.none()), label="ids")
        args = {"worker": worker, "ids": ids,
                "lease_seconds": data.draw(st.one_of(st.none(), hostile_ints), label="lease_seconds"),
                "host": data.draw(NULLABLE_TEXT, label="host"),
                "pid": data.draw(st.one_of(st.none(), hostile_ints), label="pid"),
                "queues": data.draw(st.one_of(st.none(), st.lists(st.one_of(st.none(), hostile_text(10),
                                                                            name_like("queue")), max_size=3)),
                                    label="queues")}
        driver = text_problem(worker, args["host"], args["queues"] or [])
        data_bad = int_overflow(*(ids or []), bits=64) or int_overflow(args["lease_seconds"], args["pid"])
        rules = (not name_ok(worker, "worker") or not in_range(args["lease_seconds"], 1, 86400)
                 or (args["queues"] is not None and not all(name_ok(q, "queue") for q in args["queues"])))
    else:
        ids = data.draw(st.one_of(st.just([ident]), st.lists(st.one_of(st.none(), hostile_ints), max_size=3),
                                  st.none()), label="ids")
        attempts = data.draw(st.one_of(st.just([att]), st.lists(st.one_of(st.none(), hostile_ints), max_size=3),
                                       st.none()), label="attempts")
        results = data.draw(st.one_of(st.none(), st.lists(jsonish, max_size=3)), label="results")
        args = {"ids": ids, "attempts": attempts, "results": results}
        driver = False
        data_bad = (int_overflow(*(ids or []), bits=64) or int_overflow(*(attempts or []))
                    or any(json_refused(db, r) for r in results or []))
        rules = (ids is None or attempts is None or len(ids) != len(attempts)
                 or (results is not None and len(results) != len(ids)))
        pairs = list(zip(ids or [], attempts or [], strict=False))
        held_pairs = {(i, a) for i, a in pairs if is_held(db, i, a)}
        held = bool(held_pairs)
        if held and (job_id, attempt) not in held_pairs:
            job_id, attempt = sorted(held_pairs)[0]
    judged = call_judged(db, function, args, rows=function == "ack_each",
                         refused_with=refusal(driver, data_bad, rules))
    if judged is None:
        return
    outcome, before = judged
    assert outcome.ok, f"valid arguments were refused: {outcome}"
    job = get_job(db, job_id)
    if function == "ack":
        assert outcome.value is held
        assert job["status"] == ("succeeded" if held else "leased")
        if held:
            assert stored_payload_equals_result(db, job_id, args["result"])
    elif function in ("ack_many", "ack_each"):
        acked = outcome.value if function == "ack_many" else len(outcome.rows)
        assert acked == len(held_pairs)
        assert job["status"] == ("succeeded" if held else "leased")
    elif function == "nack":
        answer = outcome.value
        if not held:
            assert answer == "stale" and job["status"] == "leased" and snapshot(db) == before
        else:
            assert answer in ("pending", "dead_letter")
            assert job["status"] == answer
            assert job["last_error"] == args["error"][:10000]
            [last] = [a for a in db.execute("SELECT attempt, outcome, error FROM pgrelay.get_attempts(%s)", [job_id])
                      if a[0] == attempt]
            assert last[1:] == (nvl(args["outcome"], "failed"), args["error"][:10000])
            if answer == "pending" and args["retry_after_seconds"] is not None:
                wait = db.execute("SELECT extract(epoch FROM run_at - now()) FROM pgrelay._jobs WHERE id = %s",
                                  [job_id]).fetchone()[0]
                assert float(wait) == pytest.approx(args["retry_after_seconds"], abs=5)
    elif function == "release":
        assert outcome.value is held
        assert job["status"] == ("pending" if held else "leased")
        if held:
            [last] = [a for a in db.execute("SELECT attempt, error FROM pgrelay.get_attempts(%s)", [job_id])
                      if a[0] == attempt]
            assert last[1] == (args["reason"][:10000] if args["reason"] is not None else "released by the worker")
    else:  # heartbeat
        lost = outcome.value
        mine = args["worker"] == WORKER
        assert (job_id in lost) == (job_id in (args["ids"] or []) and not mine)
        assert all(i in (args["ids"] or []) for i in lost)


def is_held(db: psycopg.Connection, job_id: Any, attempt: Any) -> bool:
    """Whether (job_id, attempt) is a current lease (False for values that are not even integers of the type)."""
    if not (isinstance(job_id, int) and isinstance(attempt, int)) or int_overflow(job_id, bits=64) or int_overflow(attempt):
        return False
    return db.execute("SELECT EXISTS (SELECT 1 FROM pgrelay._jobs WHERE id = %s AND attempt = %s AND leased_by IS NOT NULL)",
                      [job_id, attempt]).fetchone()[0]


def stored_payload_equals_result(db: psycopg.Connection, job_id: int, sent: Any) -> bool:
    if isinstance(sent, RawJson):
        return db.execute("SELECT result = %s::jsonb FROM pgrelay._finished WHERE id = %s",
                          [str(sent), job_id]).fetchone()[0]
    return same_json(get_payload(db, job_id, "result"), sent)


LIKE_PATTERNS = st.one_of(hostile_text(10), st.sampled_from(["%", "hostile.%", "_", "a\\", "%\\", "\\\\", "\\%",
                                                              "", "a" * 201, "[a-z]%"]))


@examples(50, 400)
@given(data=st.data())
def test_consume_with_hostile_arguments_leases_only_what_it_says(db, data):
    arg = Arguments(data, ["worker", "queues", "batch", "lease_seconds", "tasks", "handlers", "kinds"])
    worker = arg("worker", valid_name("worker"), name_like("worker"))
    queues = arg("queues", maybe(st.lists(st.sampled_from(["default", "q1", "other"]), max_size=3)),
                 maybe(st.lists(maybe(name_like("queue")), max_size=3)))
    batch = arg("batch", maybe(st.integers(1, 10000)), hostile_ints)
    lease_seconds = arg("lease_seconds", maybe(st.integers(1, 86400)), hostile_ints)
    tasks = arg("tasks", maybe(st.lists(st.sampled_from(["%", "hostile.%", "h_stile.consume", "x"]), max_size=3)),
                maybe(st.lists(maybe(LIKE_PATTERNS), max_size=3)))
    handlers = arg("handlers", maybe(st.lists(st.sampled_from(["hostile.consume", "y"]), max_size=2)),
                   maybe(st.lists(maybe(hostile_text(10)), max_size=3)))
    kinds = arg("kinds", maybe(st.lists(st.sampled_from(["handler", "http"]), max_size=2)),
                maybe(st.lists(st.sampled_from(["handler", "http", None, "HTTP", "x", ""]), max_size=3)))
    db.execute("SELECT pgrelay.enqueue('hostile.consume', queue => 'default')")
    args = dict(worker=worker, queues=queues, batch=batch, lease_seconds=lease_seconds, tasks=tasks,
                handlers=handlers, kinds=kinds)
    driver = text_problem(worker, queues or [], tasks or [], handlers or [])
    data_bad = int_overflow(batch, lease_seconds)
    rules = (not name_ok(worker, "worker") or not in_range(1 if batch is None else batch, 1, 10000)
             or not in_range(lease_seconds, 1, 86400)
             or (queues is not None and not all(name_ok(q, "queue") for q in queues))
             or (tasks is not None and not all(t is not None and 1 <= len(t) <= 200 and not bad_like(t) for t in tasks))
             or (handlers is not None and None in handlers)
             or (kinds is not None and not all(k in ("handler", "http") for k in kinds)))
    judged = call_judged(db, "consume", args, rows=True, refused_with=refusal(driver, data_bad, rules, ("22003",)))
    if judged is None:
        return
    outcome, before = judged
    assert outcome.ok, f"valid arguments were refused: {outcome}"
    for row in outcome.rows:
        job_id, queue, task, kind, _payload, attempt = row[:6]
        assert attempt >= 1
        assert queues is None or queue in queues
        assert kinds is None or kind in kinds
        assert handlers is None or kind != "handler" or task in handlers
        assert get_job(db, job_id)["leased_by"] == worker
    assert len(outcome.rows) <= (batch or 1)


TIMESTAMPS = st.one_of(st.none(), st.sampled_from(["infinity", "-infinity", "epoch", "now", "soon", "2024-13-01",
                                                   "2024-02-30", "294277-01-01", "4714-11-24 BC", "4713-11-24 BC",
                                                   "", "1999-01-08 04:05:06 +25:00", "allballs", "today"]),
                       st.datetimes(timezones=st.just(timezone.utc)).map(lambda d: d.isoformat()), hostile_text(10))
RESET_NAMES = st.sampled_from(["concurrency", "max_attempts", "lease_seconds", "backoff_base_seconds",
                               "backoff_max_seconds", "retention_succeeded_days", "retention_dead_letter_days",
                               "paused", "queue", "", None, "CONCURRENCY"])
SETTING_RANGES = {"concurrency": (1, 100000), "max_attempts": (1, 1000), "lease_seconds": (1, 86400),
                  "retention_succeeded_days": (0, 36500), "retention_dead_letter_days": (0, 36500)}


@pytest.fixture
def operator_jobs(db: psycopg.Connection) -> None:
    """A job in each state for replay, cancel, get_job, get_attempts and purge to act on."""
    from tests.sql.factory import make_job

    for state in ("pending", "leased", "succeeded", "dead_letter", "cancelled", "dead_letter"):
        make_job(db, state, queue="q1")


@examples(60, 500)
@given(data=st.data(), function=st.sampled_from(["configure_queue", "pause", "resume", "replay", "cancel", "get_job",
                                                 "get_attempts", "replay_dead_letters", "purge", "maintain"]))
def test_operator_calls_with_hostile_arguments_change_only_what_they_say(db, operator_jobs, data, function):
    queue = data.draw(st.one_of(st.sampled_from(["default", "q1"]), name_like("queue")), label="queue")
    if function == "configure_queue":
        args: dict[str, Any] = {"queue": queue}
        for name in SETTING_RANGES:
            args[name] = data.draw(st.one_of(st.none(), st.none(), hostile_ints), label=name)
        for name in ("backoff_base_seconds", "backoff_max_seconds"):
            args[name] = data.draw(st.one_of(st.none(), st.none(), hostile_floats), label=name)
        args["reset"] = data.draw(st.one_of(st.none(), st.lists(RESET_NAMES, max_size=3)), label="reset")
        driver = text_problem(queue)
        data_bad = int_overflow(*(args[n] for n in SETTING_RANGES))
        reset = args["reset"] or []
        base, top = args["backoff_base_seconds"], args["backoff_max_seconds"]
        rules = (not name_ok(queue, "queue")
                 or any(r not in ("concurrency", "max_attempts", "lease_seconds", "backoff_base_seconds",
                                  "backoff_max_seconds", "retention_succeeded_days", "retention_dead_letter_days")
                        for r in reset)
                 or any(not in_range(args[n], *SETTING_RANGES[n]) for n in SETTING_RANGES)
                 or (base is not None and (math.isnan(base) or not 0.001 <= base <= 86400))
                 or (top is not None and (math.isnan(top) or not 0.001 <= top <= 604800))
                 or any(args.get(r) is not None for r in reset))
        if not (driver or data_bad or rules):
            current = db.execute("SELECT backoff_base_seconds, backoff_max_seconds FROM pgrelay._queues WHERE queue = %s",
                                 [queue]).fetchone() or (None, None)
            effective_base = 1.0 if "backoff_base_seconds" in reset else base if base is not None else current[0] or 1.0
            effective_max = 3600.0 if "backoff_max_seconds" in reset else top if top is not None else current[1] or 3600.0
            rules = effective_base > effective_max
        rows = True
    elif function in ("pause", "resume"):
        args = {"queue": queue}
        driver, data_bad, rules, rows = text_problem(queue), False, not name_ok(queue, "queue"), False
    elif function in ("replay", "cancel", "get_job", "get_attempts"):
        # a job that exists (or just past the newest): drawn as a distance back from the newest id, so
        # what hypothesis draws never depends on the database, which grows as examples run
        back = data.draw(st.one_of(st.none(), hostile_ints, st.integers(-2, 20).map(lambda n: ("back", n))),
                         label="id")
        if isinstance(back, tuple):
            newest = db.execute("SELECT coalesce(max(id), 1) FROM pgrelay.jobs").fetchone()[0]
            ident = max(1, newest - back[1])
        else:
            ident = back
        args = {"id": ident}
        if function == "replay":
            args["force"] = data.draw(st.one_of(st.none(), st.booleans()), label="force")
        driver, data_bad = False, int_overflow(ident, bits=64)
        rules = ident is None and function in ("replay", "cancel")
        rows = function == "get_attempts"
    elif function == "replay_dead_letters":
        args = {"queue": queue, "task": data.draw(st.one_of(st.none(), LIKE_PATTERNS), label="task"),
                "since": data.draw(TIMESTAMPS, label="since")}
        driver, rows = text_problem(queue, args["task"], args["since"]), False
        parsed = (run(db, "SELECT coalesce(isfinite(%s::timestamptz), true)", [args["since"]]) if not driver
                  else Outcome(rows=[[True]]))
        data_bad = not parsed.ok
        rules = (not name_ok(queue, "queue")
                 or (args["task"] is not None and (not 1 <= len(args["task"]) <= 200 or bad_like(args["task"])))
                 or (parsed.ok and not parsed.value))
    else:  # purge, maintain
        args = {"max_jobs": data.draw(st.one_of(st.none(), hostile_ints), label="max_jobs")}
        if function == "purge":
            args["older_than_days"] = data.draw(st.one_of(st.none(), hostile_ints), label="older_than_days")
        driver, rows = False, True
        data_bad = int_overflow(*args.values())
        rules = (not in_range(args["max_jobs"], 1, 10_000_000)
                 or not in_range(args.get("older_than_days"), 0, 36500))
    judged = call_judged(db, function, args, rows=rows,
                         refused_with=refusal(driver, data_bad, rules, ("22003", "22007", "22008", "22009")))
    if judged is None:
        return
    outcome, before = judged
    if function in ("replay", "cancel") and not outcome.ok:
        assert_clear_refusal(outcome, "PT404", "PT409")
        assert snapshot(db) == before
        return
    assert outcome.ok, f"valid arguments were refused: {outcome}"
    if function == "configure_queue":
        settings_row = dict(zip(("queue", "paused", "concurrency", "max_attempts", "lease_seconds",
                                 "backoff_base_seconds", "backoff_max_seconds", "retention_succeeded_days",
                                 "retention_dead_letter_days"), outcome.rows[0], strict=True))
        assert settings_row["queue"] == queue
        for name in (*SETTING_RANGES, "backoff_base_seconds", "backoff_max_seconds"):
            if args.get(name) is not None:
                assert settings_row[name] == args[name], name


@pytest.fixture
def trigger_table(db: psycopg.Connection) -> str:
    db.execute('CREATE TABLE "hostile ""table""; --" (id serial PRIMARY KEY, t text, n numeric, f float8, j jsonb, '
               'b bytea, a text[], ts timestamptz)')
    return '"hostile ""table""; --"'


@examples(40, 300)
@given(task=name_like("task"), queue=st.one_of(st.none(), name_like("queue")),
       row=st.fixed_dictionaries({"t": st.one_of(st.none(), hostile_text(30)),
                                  "n": st.one_of(st.none(), st.integers().map(str),
                                                 st.decimals(min_value=-10**100, max_value=10**100).map(str),
                                                 st.sampled_from(["NaN", "Infinity", "-Infinity", "sNaN", "1e1000",
                                                                  "1e-1000", "-0", " 1 ", "1_000", "0x1F"])),
                                  "f": st.one_of(st.none(), hostile_floats),
                                  "j": st.one_of(st.none(), clean_json, dirty_json),
                                  "b": st.one_of(st.none(), st.binary(max_size=20)),
                                  "a": st.one_of(st.none(), st.lists(st.one_of(st.none(), hostile_text(5)), max_size=3))}),
       statement_level=st.booleans())
def test_the_enqueue_trigger_turns_hostile_rows_into_jobs_or_refuses_the_whole_insert(
        db, trigger_table, task, queue, row, statement_level):
    from psycopg import sql as pgsql

    db.execute(pgsql.SQL("DROP TRIGGER IF EXISTS hostile ON {}").format(pgsql.SQL(trigger_table)))
    if text_problem(task, queue):
        return  # a trigger argument is text in the catalog: the driver would not send it either
    trigger_args = pgsql.SQL(", ").join(pgsql.Literal(a) for a in ([task] if queue is None else [task, queue]))
    level = ("AFTER INSERT ON {} REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT" if statement_level
             else "AFTER INSERT ON {} FOR EACH ROW")
    db.execute(pgsql.SQL("CREATE TRIGGER hostile " + level + " EXECUTE FUNCTION pgrelay.enqueue_trigger({})")
               .format(pgsql.SQL(trigger_table), trigger_args))
    before = snapshot(db)
    rows_before = db.execute(pgsql.SQL("SELECT count(*) FROM {}").format(pgsql.SQL(trigger_table))).fetchone()[0]
    insert = run(db, pgsql.SQL("INSERT INTO {} (t, n, f, j, b, a) VALUES (%s, %s::numeric, %s, %s, %s, %s) RETURNING to_jsonb({}.*)")
                 .format(pgsql.SQL(trigger_table), pgsql.SQL(trigger_table)),
                 [row["t"], row["n"], row["f"], None if row["j"] is None else Jsonb(row["j"]), row["b"], row["a"]])
    note(repr(insert))
    rows_after = db.execute(pgsql.SQL("SELECT count(*) FROM {}").format(pgsql.SQL(trigger_table))).fetchone()[0]
    valid = name_ok(task, "task") and name_ok(nvl(queue, "default"), "queue")
    if not insert.ok:
        refused_by_value = (text_problem(row["t"], row["a"] or []) or (row["j"] is not None and json_problem(row["j"]))
                            or (row["n"] is not None and insert.code in ("22P02", "22003")))
        assert refused_by_value or not valid, f"a valid row was refused: {insert}"
        assert_clear_refusal(insert, DRIVER, "PR001", "22P02", "22P05", "22003")
        assert snapshot(db) == before and rows_after == rows_before  # the insert and the job, or neither
        return
    assert valid, "the trigger enqueued with an invalid task or queue"
    [new_row] = insert.rows[0]
    job = db.execute("SELECT payload, task, queue FROM pgrelay._jobs ORDER BY id DESC LIMIT 1").fetchone()
    assert (job[1], job[2]) == (task, nvl(queue, "default"))
    assert job[0]["op"] == "INSERT" and job[0]["old"] is None
    assert job[0]["new"] == new_row


# --- sizes: 10 MB values, 10,000-element arrays, deep nesting (a few examples each, not hundreds) ---

TEN_MB = 10 * 1024 * 1024


@pytest.mark.parametrize("shape", ["string", "object", *(["unicode"] if FULL else [])])
def test_a_10_mb_payload_goes_through_every_producer_function_and_back(db, shape):
    if shape == "string":
        payload: Any = "x" * TEN_MB
    elif shape == "object":
        payload = {f"k{i}": ["v" * 1000, i, None, {"n": -i}] for i in range(TEN_MB // 1000)}
    else:
        payload = {"text": "\u202e\u0301\U0001f600" * (TEN_MB // 10)}
    ids = [call(db, "enqueue", {"task": "big.one", "payload": payload}).value,
           *[r[0] for r in call(db, "enqueue_bulk", {"jobs": [{"task": "big.bulk", "payload": payload}]}, rows=True).rows],
           *[r[0] for r in call(db, "enqueue_many", {"task": "big.many", "payloads": [payload]}, rows=True).rows],
           call(db, "enqueue_http", {"url": "https://hooks.example.com/big", "body": payload}).value]
    for job_id in ids[:3]:
        assert same_json(get_payload(db, job_id), payload)
    assert same_json(get_payload(db, ids[3])["body"], payload)
    leased = run(db, "SELECT id, attempt FROM pgrelay.consume('big-worker', batch => 10)")
    assert sorted(r[0] for r in leased.rows) == sorted(ids)
    for job_id, attempt in leased.rows:  # a 10 MB result and details, too
        if job_id == ids[0]:
            assert call(db, "ack", {"id": job_id, "attempt": attempt, "result": payload}).value is True
        else:
            assert call(db, "nack", {"id": job_id, "attempt": attempt, "error": "x" * TEN_MB, "details": payload,
                                     "permanent": True}).value == "dead_letter"
    assert same_json(get_payload(db, ids[0], "result"), payload)
    assert get_job(db, ids[1])["last_error"] == "x" * 10000  # errors are kept to their first 10,000 characters


@pytest.mark.parametrize(("function", "args", "code"), [
    ("enqueue", {"task": "t" * TEN_MB}, "PR001"),
    ("enqueue", {"task": "t", "queue": "q" * TEN_MB}, "PR001"),
    ("enqueue", {"task": "t", "idempotency_key": "k" * TEN_MB}, "PR001"),
    ("enqueue", {"task": "t", "dedupe_key": "k" * TEN_MB}, "PR001"),
    ("enqueue", {"task": "t", "trace_id": "k" * TEN_MB}, "PR001"),
    ("enqueue_http", {"url": "https://hooks.example.com/" + "a" * TEN_MB}, "PR003"),
    ("enqueue_http", {"url": "https://hooks.example.com/", "headers": {"a" * TEN_MB: "x"}}, "PR004"),
    ("enqueue_bulk", {"jobs": [{"task": "t"}] * 10001}, "PR001"),
    ("enqueue_many", {"task": "t", "payloads": [{}] * 10001}, "PR001"),
    ("consume", {"worker": "w" * TEN_MB}, "PR001"),
    ("consume", {"worker": "w", "tasks": ["%" * TEN_MB]}, "PR001"),
    ("configure_queue", {"queue": "q" * TEN_MB}, "PR001"),
    ("heartbeat", {"worker": "w" * TEN_MB}, "PR001"),
])
def test_a_10_mb_name_key_or_url_is_refused_without_a_trace(db, function, args, code):
    before = snapshot(db)
    outcome = call(db, function, args, rows=function in ("enqueue_bulk", "enqueue_many", "consume", "configure_queue"))
    assert_clear_refusal(outcome, code)
    assert len(outcome.message) < 2000  # the message quotes the start of the value, not all of it
    assert snapshot(db) == before


@pytest.mark.parametrize(("depth", "accepted"), [(1000, True), (10_000, True), (200_000, False)])
def test_deep_json_is_stored_or_refused_by_the_database(db, depth, accepted):
    """JSON nested 10,000 deep is stored (Python's json cannot read it back: see the worker's tests); nested
    200,000 deep, PostgreSQL refuses it (54001, stack depth), and nothing is written."""
    text = "[" * depth + "]" * depth
    before = snapshot(db)
    outcomes = [call(db, "enqueue", {"task": "deep", "payload": RawJson(text)}),
                call(db, "enqueue_bulk", {"jobs": RawJson('[{"task": "deep", "payload": ' + text + "}]")}, rows=True),
                call(db, "enqueue_many", {"task": "deep", "payloads": [RawJson(text)]}, rows=True)]
    for outcome in outcomes:
        if accepted:
            assert outcome.ok, outcome
        else:
            assert_clear_refusal(outcome, "54001")
    if accepted:
        [(same,)] = db.execute("SELECT bool_and(payload = %s::jsonb) FROM pgrelay._jobs WHERE task = 'deep'",
                               [text]).fetchall()
        assert same
    else:
        assert snapshot(db) == before


# =============================================================================================
# 2. The CLI (click's CliRunner, in this process)
# =============================================================================================


def pgrelay_cli(dsn: str, *args: str) -> Result:
    return CliRunner().invoke(cli.main, [*args], env={"PGRELAY_DSN": dsn, "COLUMNS": "200"})


def assert_cli_answer(result: Result, command: str) -> None:
    """exit 0; or one line "pgrelay <command>: error: ..." and exit 1; or click's usage error, exit 2."""
    shown = f"exit {result.exit_code}\nstdout: {result.stdout[:2000]!r}\nstderr: {result.stderr[:2000]!r}"
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        import traceback

        raise AssertionError(f"pgrelay {command} crashed: {result.exception!r}\n"
                             + "".join(traceback.format_exception(result.exception, limit=-3)) + shown)
    assert "Traceback" not in result.stdout + result.stderr, shown
    if result.exit_code == 0:
        return
    if result.exit_code == 2:
        assert "Error:" in result.stderr, shown
        return
    assert result.exit_code == 1, shown
    lines = result.stderr.rstrip("\n").split("\n")
    assert len(lines) == 1, f"a multi-line error: {shown}"
    assert lines[0].startswith(f"pgrelay {command}: error: "), shown
    assert result.stdout == "", shown


argv_text = hostile_text(30).map(lambda s: s.replace("\x00", ""))  # argv cannot hold NUL; surrogates it can
CLI_JSON = st.one_of(
    clean_json.map(json.dumps), dirty_json.map(json.dumps),
    st.sampled_from(['"\\u0000"', "NaN", "Infinity", '"\\ud800"', "1e999", "{", "", "[1,]", '{"a": 1, "a": 2}']),
    argv_text,
)
CLI_INTS = st.one_of(hostile_ints.map(str), st.sampled_from(["1.5", "1e3", "0x10", " 7", "", "-0", "١٢"]), argv_text)
CLI_FLOATS = st.one_of(hostile_floats.map(str), st.sampled_from(["nan", "inf", "-inf", "1e400", "-1e400", "0x1p3",
                                                                 "", "1_0"]), argv_text)
CLI_TIMES = st.one_of(st.sampled_from(["0001-01-01T00:00:00", "0001-01-01", "9999-12-31T23:59:59", "9999-12-31T23:59:59-14:00",
                                       "0001-01-01T00:00:00+14:00", "2024-02-30", "infinity", "now", "", "2030-01-31T09:00:00Z",
                                       "2030-01-31 09:00:00+25:00"]), argv_text)


def option(name: str, values: st.SearchStrategy[str]) -> st.SearchStrategy[list[str]]:
    return st.one_of(st.just([]), values.map(lambda v: [name, v]))


@st.composite
def cli_commands(draw: Any) -> tuple[str, list[str]]:
    """(command as the error line names it, argv) for every operator command, with hostile arguments."""
    which = draw(st.sampled_from(["enqueue", "jobs show", "jobs attempts", "jobs list", "queues configure",
                                  "queues pause", "queues resume", "replay", "replay-dead", "cancel", "purge", "drain"]))
    name = lambda kind: st.one_of(name_like(kind), argv_text)  # noqa: E731
    ident = st.one_of(hostile_ints.map(str), st.sampled_from(["1", "2", "x", "", "1.0", "0x1"]), argv_text)
    if which == "enqueue":
        args = [draw(name("task"))]
        for flag, values in (("--payload", CLI_JSON), ("--queue", name("queue")), ("--priority", CLI_INTS),
                             ("--max-attempts", CLI_INTS), ("--idempotency-key", argv_text), ("--dedupe-key", argv_text)):
            args += draw(option(flag, values))
        args += draw(st.one_of(option("--run-at", CLI_TIMES), option("--delay-seconds", CLI_FLOATS)))
    elif which in ("jobs show", "jobs attempts", "replay", "cancel"):
        flags = draw(st.sampled_from([[], ["--json"]])) if which.startswith("jobs") else []
        args = [*flags, "--", draw(ident)]
    elif which == "jobs list":
        args = (draw(option("--queue", name("queue"))) + draw(option("--task", argv_text))
                + draw(option("--status", st.one_of(st.sampled_from(["pending", "dead_letter"]), argv_text)))
                + draw(option("--limit", CLI_INTS)) + draw(st.sampled_from([[], ["--json"]])))
    elif which == "queues configure":
        args = [draw(name("queue"))]
        for flag in ("--concurrency", "--max-attempts", "--lease-seconds", "--retention-succeeded-days",
                     "--retention-dead-letter-days"):
            args += draw(option(flag, CLI_INTS))
        for flag in ("--backoff-base-seconds", "--backoff-max-seconds"):
            args += draw(option(flag, CLI_FLOATS))
        args += draw(option("--reset", st.one_of(st.sampled_from(["concurrency", "paused", ""]), argv_text)))
    elif which in ("queues pause", "queues resume"):
        args = ["--", draw(name("queue"))]
    elif which == "replay-dead":
        args = ["--", draw(name("queue"))]
        args = draw(option("--task", argv_text)) + draw(option("--since", CLI_TIMES)) + args
    elif which == "purge":
        args = draw(option("--older-than-days", CLI_INTS)) + draw(option("--max-jobs", CLI_INTS))
    else:
        args = ["--timeout-seconds", draw(st.sampled_from(["0", "0.01", "nan"])), "--", draw(name("queue"))]
    return which, [*which.split(), *args]


@pytest.fixture
def cli_jobs(db: psycopg.Connection) -> None:
    from tests.sql.factory import make_job

    for state in ("pending", "leased", "succeeded", "dead_letter", "cancelled"):
        make_job(db, state, queue="q1", payload={"note": "\u202e\u0301 ' ; $$ --"})


@examples(60, 500)
@given(command=cli_commands())
def test_every_cli_command_answers_hostile_arguments_in_one_line_or_does_it(db, dsn, cli_jobs, command):
    which, argv = command
    before = snapshot(db)
    result = pgrelay_cli(dsn, *argv)
    note(f"{argv!r} -> exit {result.exit_code}: {result.stderr!r} {result.stdout[:300]!r}")
    event(f"{which}: exit {result.exit_code}")
    assert_cli_answer(result, which)
    if result.exit_code != 0:
        assert snapshot(db) == before
    elif which == "enqueue" and not {"--idempotency-key", "--dedupe-key"} & set(argv):
        job_id = int(result.stdout)
        assert get_job(db, job_id)["task"] == argv[1]
        sent = json.loads(argv[argv.index("--payload") + 1]) if "--payload" in argv else {}
        assert same_json(get_payload(db, job_id), {} if sent is None else sent)  # JSON null: the default payload


@examples(20, 150)
@given(payload=clean_json, error=clean_text(200), result=clean_json, queue=st.from_regex(r"[a-z][a-z0-9._:-]{0,20}",
                                                                                         fullmatch=True))
def test_the_cli_shows_hostile_jobs_it_reads(db, dsn, payload, error, result, queue):
    """What operators look at (jobs show/list/attempts, stats, queues list, top) copes with any stored text."""
    assume(error.strip())
    failed = call(db, "enqueue", {"task": "h.show", "queue": queue, "payload": payload, "max_attempts": 1}).value
    done = call(db, "enqueue", {"task": "h.show", "queue": queue, "payload": payload}).value
    claimed_rows = call(db, "consume", {"worker": "w", "queues": [queue], "batch": 2}, rows=True).rows
    leased = {row[0]: row[5] for row in claimed_rows}  # id -> attempt
    assert call(db, "nack", {"id": failed, "attempt": leased[failed], "error": error}).value == "dead_letter"
    assert call(db, "ack", {"id": done, "attempt": leased[done], "result": result}).value is True
    for argv in (["jobs", "show", str(failed)], ["jobs", "show", "--json", str(done)],
                 ["jobs", "attempts", str(failed)], ["jobs", "attempts", "--json", str(failed)],
                 ["jobs", "list", "--queue", queue], ["jobs", "list", "--json", "--queue", queue], ["stats"],
                 ["queues", "list"], ["top", "--iterations", "1"]):
        answer = pgrelay_cli(dsn, *argv)
        assert_cli_answer(answer, " ".join(argv[:2]) if argv[0] in ("jobs", "queues") else argv[0])
        assert answer.exit_code == 0, (argv, answer.stderr)
        if argv[:3] == ["jobs", "show", "--json"]:
            shown = json.loads(answer.stdout)
            assert same_json(shown["payload"], {} if payload is None else payload)
            assert same_json(shown["result"], result)
        if argv[:3] == ["jobs", "attempts", "--json"]:
            assert json.loads(answer.stdout)[0]["error"] == error[:10000]


# Regressions: each bug the properties above found, with its smallest example (fixed; see git log).

@pytest.mark.parametrize("payload", ["NaN", '"\\u0000"', '"\\ud800"', "Infinity"])
def test_cli_enqueue_a_payload_the_database_refuses_is_a_one_line_error(dsn, payload):
    """Python's json reads NaN, Infinity, \\u0000 and a lone surrogate escape; the CLI refuses the first two
    itself, and the database refuses the others with a DETAIL line, which the error line folds in (it
    once printed two lines)."""
    assert_cli_answer(pgrelay_cli(dsn, "enqueue", "t", "--payload", payload), "enqueue")


@pytest.mark.parametrize("argv", [["queues", "pause", "--", "\n"], ["enqueue", "a\nb"],
                                  ["queues", "configure", "--", "x\r\ny"]], ids=["pause", "enqueue", "configure"])
def test_cli_an_error_that_quotes_a_line_break_is_still_one_line(dsn, argv):
    """pgrelay's messages quote the bad value as it is (invalid queue '\n': ...); the CLI writes line
    breaks, escape sequences and other control characters of its error line as escapes (once a name
    holding a line break made the one-line error two lines)."""
    assert_cli_answer(pgrelay_cli(dsn, *argv), " ".join(argv[:2]) if argv[0] == "queues" else argv[0])


def test_cli_enqueue_a_deeply_nested_payload_is_an_error_not_a_traceback(dsn):
    """--payload nested about 1,000 deep (Python's json cannot read it) is a usage error (it once raised
    RecursionError)."""
    depth = 1000
    assert_cli_answer(pgrelay_cli(dsn, "enqueue", "t", "--payload", "[" * depth + "]" * depth), "enqueue")


@pytest.mark.parametrize("argv", [["enqueue", "t", "--run-at", "0001-01-01T00:00:00"],
                                  ["replay-dead", "q", "--since", "0001-01-01"]])
def test_cli_a_time_in_year_1_is_an_error_not_a_traceback(dsn, argv):
    """A time without an offset in year 1 cannot be moved to UTC: a usage error (it once raised ValueError,
    "year 0 is out of range", from _parse_time)."""
    assert_cli_answer(pgrelay_cli(dsn, *argv), argv[0])


@pytest.mark.parametrize("payload", ['{"n": 1' + "0" * 4300 + "}", "[" * 1000 + "]" * 1000])
@pytest.mark.parametrize("argv", [["jobs", "show"], ["jobs", "show", "--json"], ["jobs", "list"]])
def test_cli_shows_a_job_whose_payload_python_cannot_parse(db, dsn, payload, argv):
    """The bug this pins (fixed): the database stores an integer of 4,301 digits and JSON nested 1,000 deep; Python's json
    refuses both. `jobs show` then says "invalid DSN: Exceeds the limit (4300 digits)..." (a ValueError
    taken for a DSN problem) or crashes with RecursionError; `jobs list` likewise."""
    job_id = call(db, "enqueue", {"task": "t", "payload": RawJson(payload)}).value
    result = pgrelay_cli(dsn, *argv, *([str(job_id)] if argv[1] == "show" else []))
    assert_cli_answer(result, " ".join(argv[:2]))
    assert "invalid DSN" not in result.stderr


# =============================================================================================
# 3. PostgREST (the real PostgREST 12.0.2, on the test's own database)
# =============================================================================================


@pytest.fixture
def rest(db: psycopg.Connection, postgresql_proc: Any, tmp_path: Any) -> Iterator[Any]:
    """The real PostgREST with docs/postgrest.md's roles and config, in front of the test's database."""
    from urllib.parse import urlsplit

    from tests.postgrest import docs, server
    from tests.postgrest.api import Api, http_transport

    binary = server.postgrest_or_missing()
    doc = docs.doc_text()
    db.execute(docs.marked_block(doc, "postgrest-roles").text)  # cluster-wide and idempotent
    config = docs.parse_config(docs.marked_block(doc, "postgrest-conf").text)
    uri = urlsplit(str(config["db-uri"]))
    secret = "hostile-input-" + "s" * 40
    settings = dict(config)
    settings.update({
        "db-uri": f"postgresql://{uri.username}:{uri.password}@{postgresql_proc.host}:{postgresql_proc.port}/"
                  f"{db.info.dbname}",
        "jwt-secret": secret,
        "server-port": server.free_port(),
    })
    with server.run_postgrest(binary, settings, tmp_path) as running:
        yield Api("postgrest", http_transport(running.base_url), secret, running.base_url)


json_any = st.one_of(clean_json, dirty_json, hostile_ints, hostile_floats, hostile_text(20))
json_name = lambda kind: st.one_of(name_like(kind), name_like(kind), json_any)  # noqa: E731
json_int = st.one_of(hostile_ints, hostile_ints, hostile_floats, st.sampled_from(["5", "x", "", " 7 ", "1e3", True,
                                                                                    [], {}, None]))
json_time = st.one_of(TIMESTAMPS, hostile_ints)
json_texts = st.one_of(st.lists(st.one_of(name_like("queue"), hostile_text(10), st.none()), max_size=3),
                       st.sampled_from(["{a,b}", "{", "", "{NULL}", '{"a b"}']), json_any)
JOBS_JSON = st.one_of(st.lists(bulk_elements().map(lambda e: e[0]), max_size=4), json_any)
REST_FUNCTIONS: dict[str, tuple[str, dict[str, st.SearchStrategy[Any]], set[str]]] = {
    "enqueue": ("producer", {"task": json_name("task"), "payload": json_any, "queue": json_name("queue"),
                             "run_at": json_time, "priority": json_int, "max_attempts": json_int,
                             "timeout_seconds": json_int, "idempotency_key": json_any, "dedupe_key": json_any,
                             "trace_id": json_any}, {"task"}),
    "enqueue_http": ("producer", {"url": st.one_of(urls(), json_any), "body": json_any, "method": st.one_of(METHODS, json_any),
                                  "headers": st.one_of(HEADER_DICTS, json_any),
                                  "task": json_name("task"), "queue": json_name("queue"), "priority": json_int},
                     {"url"}),
    "enqueue_bulk": ("producer", {"jobs": JOBS_JSON}, {"jobs"}),
    "enqueue_many": ("producer", {"task": json_name("task"), "payloads": st.one_of(st.lists(json_any, max_size=3), json_any),
                                  "queue": json_name("queue"), "priority": json_int}, {"task", "payloads"}),
    "consume": ("worker", {"worker": json_name("worker"), "queues": json_texts, "batch": json_int,
                           "lease_seconds": json_int, "tasks": json_texts, "handlers": json_texts, "kinds": json_texts},
                {"worker"}),
    "ack": ("worker", {"id": json_int, "attempt": json_int, "result": json_any}, {"id", "attempt"}),
    "nack": ("worker", {"id": json_int, "attempt": json_int, "error": json_any, "retry_after_seconds": json_int,
                        "permanent": json_any, "outcome": json_any, "details": json_any}, {"id", "attempt", "error"}),
    "heartbeat": ("worker", {"worker": json_name("worker"), "ids": json_texts, "lease_seconds": json_int,
                             "host": json_any, "pid": json_int, "queues": json_texts}, {"worker"}),
    "configure_queue": ("admin", {"queue": json_name("queue"), "concurrency": json_int, "max_attempts": json_int,
                                  "lease_seconds": json_int, "backoff_base_seconds": json_int,
                                  "backoff_max_seconds": json_int, "reset": json_texts,
                                  "retention_succeeded_days": json_int}, {"queue"}),
    "pause": ("admin", {"queue": json_name("queue")}, {"queue"}),
    "replay": ("admin", {"id": json_int, "force": json_any}, {"id"}),
    "replay_dead_letters": ("admin", {"queue": json_name("queue"), "task": json_any, "since": json_time}, {"queue"}),
    "cancel": ("admin", {"id": json_int}, {"id"}),
    "purge": ("admin", {"older_than_days": json_int, "max_jobs": json_int}, set()),
    "get_job": ("reader", {"id": json_int}, {"id"}),
}


@st.composite
def rest_requests(draw: Any) -> tuple[str, str, str]:
    """(function, role, body text): a JSON object (or an array of them) of hostile arguments."""
    function = draw(st.sampled_from(sorted(REST_FUNCTIONS)))
    role, params, required = REST_FUNCTIONS[function]
    names = [n for n in params if n in required and draw(st.integers(0, 9)) > 0
             or n not in required and draw(st.booleans())]
    body = {n: draw(params[n], label=n) for n in names}
    if draw(st.integers(0, 9)) == 0:
        body[draw(st.one_of(hostile_text(10), st.sampled_from(["colour", "task ", "Task", "'; --"])))] = 1
    text = json.dumps(body)
    if draw(st.integers(0, 4)) == 0 and names:
        # one argument replaced by JSON text no Python value stands for
        raw = draw(st.sampled_from(RAW_JSON))
        text = json.dumps({k: v for k, v in body.items() if k != names[0]})[:-1]
        text += (", " if len(body) > 1 else "") + json.dumps(names[0]) + ": " + raw + "}"
    if draw(st.integers(0, 9)) == 0:
        text = f"[{text}, {text}]"
    return function, role, text


@examples(80, 600)
@given(request=rest_requests())
def test_postgrest_answers_hostile_bodies_with_a_4xx_and_writes_nothing(db, rest, operator_jobs, request):
    function, role, text = request
    before = snapshot(db)
    response = rest.send("POST", f"/rpc/{function}", {"Authorization": f"Bearer {rest.token(role)}",
                                                     "Content-Type": "application/json"}, text.encode())
    note(f"{function} as {role}: {text[:500]!r} -> {response}")
    event(f"{response.status} {response.code or ''}")
    assert response.status < 500, f"a server error: {response}"
    if response.status >= 400:
        error = response.json
        assert error["code"] and error["message"], response
        code = error["code"]
        assert code.startswith("PGRST") or code in ALLOWED_REST_CODES or code.startswith("22"), \
            f"an unexpected SQLSTATE: {response}"
        assert snapshot(db) == before
    elif function == "enqueue":
        sent = json.loads(text)
        sent = sent[0] if isinstance(sent, list) else sent
        job = get_job(db, response.json)
        assert job is not None
        if isinstance(sent.get("task"), str):
            assert job["task"] == sent["task"]


# what PostgreSQL answers for JSON it cannot turn into the argument's type, besides the codes of hostile_inputs;
# 42883 (404): an array of objects whose only key is "" makes PostgREST 12.0.2 call the function with no
# arguments at all, and PostgreSQL finds no such function
ALLOWED_REST_CODES = (ALLOWED_CODES - {DRIVER}) | {"22023", "42804", "2202E", "22P04", "42883"}


@examples(30, 200)
@given(function=st.sampled_from(["get_job", "get_attempts"]),
       value=st.one_of(hostile_ints.map(str), st.sampled_from(["", "x", "1e3", "1.5", "'; DROP TABLE x; --", "null",
                                                             "%00", "\u0661"]), clean_text(20)))
def test_postgrest_get_of_a_read_function_with_a_hostile_query_is_a_4xx_or_an_answer(rest, function, value):
    from urllib.parse import quote

    response = rest.send("GET", f"/rpc/{function}?id={quote(value, safe='')}",
                         {"Authorization": f"Bearer {rest.token('reader')}"})
    assert response.status < 500, response
    assert response.status in (200, 400), response


# =============================================================================================
# 4. The HTTP executor: hostile URLs never reach a private address
# =============================================================================================

POLICIES = ["", "10.0.0.0/8", "127.0.0.0/8, ::1/128", "169.254.0.0/16", "0.0.0.0/0, ::/0", "fd00::/8"]


def permitted(address: str, allow: str) -> bool:
    """May a request go to ``address`` when the operator allowed ``allow``? Public addresses, and
    allowed ranges except cloud metadata (an IPv4-mapped address counts as its IPv4 address)."""
    import ipaddress

    reason = unsafe(address)
    if reason is None:
        return True
    if "metadata" in reason:
        return False
    ip = ipaddress.ip_address(address.split("%")[0])
    networks = [ipaddress.ip_network(n.strip()) for n in allow.split(",") if n.strip()]
    candidates = [ip] + ([ip.ipv4_mapped] if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped else [])
    return any(c.version == n.version and c in n for c in candidates for n in networks)


def literal_address(host: str) -> str | None:
    """The IP address a host stands for without DNS, as getaddrinfo reads it (None for a name)."""
    import ipaddress

    bare = host[:-1] if host.endswith(".") else host
    try:
        return str(ipaddress.ip_address(bare.strip("[]").split("%")[0]))
    except ValueError:
        pass
    try:
        return socket.inet_ntoa(socket.inet_aton(bare))
    except OSError:
        return None


@examples(400, 5000)
@given(url=urls(), answers=resolved_addresses(), allow=st.sampled_from(POLICIES))
def test_the_guard_never_lets_a_hostile_url_reach_a_private_address(url, answers, allow):
    policy = TargetPolicy.create(allow_cidrs=allow)
    try:
        parsed = policy.check_url(url)
    except TargetRefused as refused:
        assert refused.rule and str(refused)
        event(f"refused: {refused.rule.split(' (')[0][:40]}")
        return
    note(f"allowed: {parsed!r}, host {parsed.raw_host!r}")
    event("allowed a literal" if literal_address(parsed.raw_host) else "allowed a name")
    assert parsed.scheme in ("http", "https")
    assert parsed.raw_user is None and parsed.raw_password is None
    host = parsed.raw_host
    address = literal_address(host)
    if address is not None:
        assert permitted(address, allow), f"{url!r}: the guard lets a request go to {address} ({unsafe(address)})"
        return
    # a name: every address it resolves to is checked when connecting
    try:
        asyncio.run(GuardedResolver(policy, HostileDns(answers)).resolve(host, 80))
    except TargetRefused as refused:
        assert refused.details["address"] in answers, refused.details  # it names the address it refused
        return
    for a in answers:
        assert permitted(a, allow), f"{url!r}: {host} resolving to {a} is let through ({unsafe(a)})"


@examples(150, 1500)
@given(url=urls(), answers=resolved_addresses(), method=st.sampled_from(HTTP_METHODS),
       headers=st.dictionaries(st.from_regex(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,20}", fullmatch=True),
                               st.one_of(clean_text(30).map(no_controls),
                                         st.builds(lambda v: {"env": v}, st.sampled_from(["HOOK_TOKEN", "PGPASSWORD"]))),
                               max_size=3),
       body=clean_json)
def test_the_executor_never_connects_to_a_private_address(monkeypatch, url, answers, method, headers, body):
    assume(sendable(url))  # a job's url comes from the database, which holds neither NUL nor a surrogate
    recorded = connection_recorder(monkeypatch)
    raised = asyncio.run(execute_without_network({"url": url, "method": method, "headers": headers, "body": body},
                                                 answers, recorded))
    note(f"raised {raised!r}; connections to {recorded}")
    event(type(raised).__name__ + (" after connecting" if recorded else ""))
    for address in recorded:
        assert unsafe(address) is None, f"{url!r}: a connection to {address} ({unsafe(address)})"
    assert raised is not None  # no network here: every request ends in a refusal or a connection error


@examples(40, 300)
@given(headers=st.dictionaries(
    st.from_regex(r"X-[A-Za-z0-9!#$%&'*+.^_`|~-]{1,15}", fullmatch=True),
    clean_text(40).map(no_controls), min_size=1, max_size=4),
    body=clean_json, trace_id=st.one_of(st.none(), clean_text(40).filter(bool)))
def test_hostile_header_values_reach_a_real_server_unchanged_and_inject_nothing(headers, body, trace_id):
    """What enqueue_http accepts as header values (any text without control characters) is sent as the
    header's value: one header each, no line injected, the server sees the names it was given."""
    from tests.integration.webhook_server import WebhookServer

    assume(len({name.lower() for name in headers}) == len(headers))  # names are case-insensitive: one wins

    async def send(url: str) -> Any:
        job = claimed({"url": url, "method": "POST", "headers": headers, "body": body})
        job = ClaimedJob(**{**{f: getattr(job, f) for f in job.__dataclass_fields__}, "trace_id": trace_id})
        async with HttpExecutor.from_env({"PGRELAY_HTTP_ALLOW_CIDRS": "127.0.0.0/8"}) as http:
            try:
                return await http.execute(job)
            except (pgrelay.Permanent, HttpError) as exc:
                return exc

    with WebhookServer() as server:
        outcome = asyncio.run(send(server.url("/ok")))
        note(f"{outcome!r}; received {[r.headers for r in server.received]}")
        if not isinstance(outcome, dict):
            assert server.received == [] or isinstance(outcome, HttpError)
            return
        [received] = server.received
    extra = set(received.headers) - {h.lower() for h in headers} - {
        "host", "user-agent", "idempotency-key", "content-type", "content-length", "accept", "accept-encoding",
        "traceparent", "x-trace-id"}
    assert extra == set(), f"headers the job did not set: {extra}"
    for name, value in headers.items():
        got = received.headers[name.lower()]
        assert got in (value, value.strip(), value.encode().decode("latin-1"), value.encode().decode("latin-1").strip()), \
            (name, value, got)


# =============================================================================================
# 5. The worker over hostile jobs (in-process pgrelay.Worker)
# =============================================================================================


def hostile_router() -> pgrelay.Router:
    router = pgrelay.Router()

    @router.task("h.echo")
    async def echo(ctx: Any) -> Any:
        return ctx.payload

    @router.task("h.sync-echo")
    def sync_echo(ctx: Any) -> Any:
        return ctx.payload

    @router.task("h.fail")
    async def fail(ctx: Any) -> Any:
        raise ValueError("cannot handle " + json.dumps(ctx.payload, ensure_ascii=False)[:3000])

    @router.task("h.permanent")
    async def permanent(ctx: Any) -> Any:
        raise pgrelay.Permanent(json.dumps(ctx.payload, ensure_ascii=False)[:3000], details=ctx.payload)

    @router.task("h.not-json")
    async def not_json(ctx: Any) -> Any:
        return {"a set": {1, 2}}

    return router


HANDLED = ("h.echo", "h.sync-echo", "h.fail", "h.permanent", "h.not-json")


@st.composite
def hostile_jobs(draw: Any) -> dict[str, Any]:
    kind = draw(st.integers(0, 9))
    if kind <= 6:
        return {"kind": "handler", "task": draw(st.one_of(st.sampled_from(HANDLED), name_like("task"))),
                "payload": draw(st.one_of(clean_json, st.just("x" * 1_000_000), st.just({"deep": [[[[[[[[[[]]]]]]]]]]})))}
    return {"kind": "http", "url": draw(urls()), "headers": draw(HEADER_DICTS),
            "body": draw(clean_json)}


async def run_worker(dsn: str, queue: str, until: Any, *, router: pgrelay.Router | None = None,
                     timeout: float = 30.0, **options: Any) -> None:
    """Run a worker on ``queue`` until ``until()``; it must keep running all along and get there in time."""
    options = {"concurrency": 4, "poll_interval": 0.05, "lease_seconds": 10, "maintenance_interval": 0, **options}
    worker = pgrelay.Worker(dsn, router or hostile_router(), queues=[queue], **options)
    task = asyncio.create_task(worker.run())
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while not until():
            assert not task.done(), f"the worker stopped: {task.exception()!r}"
            assert asyncio.get_running_loop().time() < deadline, "the jobs did not settle in time"
            await asyncio.sleep(0.05)
        assert not task.done(), f"the worker stopped: {task.exception()!r}"
    finally:
        worker.stop()
        await asyncio.wait_for(task, timeout=15)


_queues = _itercount()


@examples(10, 150)
@given(jobs=st.lists(hostile_jobs(), min_size=1, max_size=10), answers=resolved_addresses())
def test_the_worker_keeps_running_and_every_hostile_job_ends_with_its_error_recorded(
        db, dsn, monkeypatch, jobs, answers):
    recorded = connection_recorder(monkeypatch)
    queue = f"hostile-{next(_queues)}"
    enqueued: list[tuple[int, dict[str, Any]]] = []
    for job in jobs:
        if job["kind"] == "handler":
            outcome = call(db, "enqueue", {"task": job["task"], "payload": job["payload"], "queue": queue,
                                           "max_attempts": 1})
        else:
            outcome = call(db, "enqueue_http", {"url": job["url"], "headers": job["headers"], "body": job["body"],
                                                "queue": queue, "max_attempts": 1})
        if outcome.ok:
            enqueued.append((outcome.value, job))
    handled = [i for i, j in enqueued if j["kind"] == "http" or j["task"] in HANDLED]

    def settled() -> bool:
        return db.execute("SELECT count(*) FROM pgrelay.jobs WHERE id = ANY (%s) AND status IN "
                          "('succeeded', 'dead_letter')", [handled]).fetchone()[0] == len(handled)

    async def go() -> None:
        async with HttpExecutor(resolver=HostileDns(answers), connect_timeout=2, read_timeout=2,
                                total_timeout=4) as http:
            await run_worker(dsn, queue, settled, http_executor=http)

    asyncio.run(go())
    for address in recorded:
        assert unsafe(address) is None, f"the worker connected to {address}"
    for job_id, job in enqueued:
        found = get_job(db, job_id)
        event(f"{job['kind']} {job.get('task', '') if job.get('task') in HANDLED else ''}: {found['status']}")
        if job["kind"] == "handler" and job["task"] not in HANDLED:
            assert (found["status"], found["attempt"]) == ("pending", 0), found  # no handler here: never claimed
            continue
        expected = {"h.echo": "succeeded", "h.sync-echo": "succeeded"}.get(job.get("task"), "dead_letter")
        assert found["status"] == expected, found
        if expected == "succeeded":
            assert same_json(get_payload(db, job_id, "result"), {} if job["payload"] is None else job["payload"])
            continue
        assert found["last_error"], found
        [attempt] = db.execute("SELECT outcome, error FROM pgrelay.get_attempts(%s)", [job_id]).fetchall()
        assert attempt[0] == "failed" and attempt[1] == found["last_error"], (attempt, found)


def test_the_worker_runs_a_10_mb_job_and_stores_its_10_mb_result(db, dsn):
    payload = {"text": "\u202e\u0301\U0001f600" * (TEN_MB // 12), "n": 10**400}
    job_id = call(db, "enqueue", {"task": "h.echo", "payload": payload, "queue": "poison"}).value
    asyncio.run(settle_one(dsn, db, [job_id], timeout=60))
    assert get_job(db, job_id)["status"] == "succeeded"
    assert same_json(get_payload(db, job_id, "result"), payload)


async def settle_one(dsn: str, db: psycopg.Connection, job_ids: list[int], timeout: float = 20.0) -> None:
    def settled() -> bool:
        return db.execute("SELECT count(*) FROM pgrelay.jobs WHERE id = ANY (%s) AND status IN "
                          "('succeeded', 'dead_letter', 'cancelled')", [job_ids]).fetchone()[0] == len(job_ids)

    async with HttpExecutor() as http:
        await run_worker(dsn, "poison", settled, http_executor=http, timeout=timeout)


# Regressions: each bug the properties above found, with its smallest example (fixed; see git log).

@pytest.mark.parametrize("payload", ['{"n": 1' + "0" * 4300 + "}", "[" * 1000 + "]" * 1000],
                         ids=["integer-of-4301-digits", "nested-1000-deep"])
def test_the_worker_survives_a_payload_python_cannot_parse(db, dsn, payload):
    """The bug this pins (fixed): the database stores these payloads, but ClaimedJob.from_row's json.loads raises (ValueError:
    "Exceeds the limit (4300 digits) for integer string conversion"; RecursionError) inside the claim loop:
    Worker.run() dies, leaving the whole claimed batch leased. jobs-worker exits; started again, it claims
    the same job and dies again until the job runs out of attempts by lease expiry."""
    poison = call(db, "enqueue", {"task": "h.echo", "payload": RawJson(payload), "queue": "poison"}).value
    innocent = call(db, "enqueue", {"task": "h.echo", "payload": {"ok": True}, "queue": "poison"}).value
    asyncio.run(settle_one(dsn, db, [poison, innocent]))
    assert get_job(db, innocent)["status"] == "succeeded"
    assert get_job(db, poison)["status"] == "dead_letter" and get_job(db, poison)["last_error"]


def test_a_nan_result_dead_letters_its_job_without_failing_the_others_ack(db, dsn):
    """The bug this pins (fixed): the worker checks a handler's result with json.dumps, which writes NaN; the database refuses
    it, so the whole batch's ack_each fails: every job of the batch runs again after its lease expires,
    and the NaN job ends "lease expired; no attempts left" instead of saying why."""
    router_task = "h.nan"
    ids = [call(db, "enqueue", {"task": "h.echo", "payload": {"i": i}, "queue": "poison"}).value for i in range(3)]
    nan = call(db, "enqueue", {"task": router_task, "queue": "poison", "max_attempts": 1}).value

    router = hostile_router()

    @router.task(router_task)
    async def returns_nan(ctx: Any) -> Any:
        return {"ratio": float("nan")}

    def settled() -> bool:
        return db.execute("SELECT count(*) FROM pgrelay.jobs WHERE id = ANY (%s) AND status IN "
                          "('succeeded', 'dead_letter')", [[*ids, nan]]).fetchone()[0] == 4

    asyncio.run(run_worker(dsn, "poison", settled, router=router, concurrency=8, lease_seconds=3))
    for job_id in ids:
        job = get_job(db, job_id)
        assert (job["status"], job["attempt"]) == ("succeeded", 1), job  # acked the first time
    dead = get_job(db, nan)
    assert dead["status"] == "dead_letter" and "JSON" in (dead["last_error"] or ""), dead


@pytest.mark.parametrize("message", ["bad \x00 byte", "bad \udcff byte"], ids=["nul", "surrogate"])
def test_a_handler_error_with_nul_or_a_surrogate_is_recorded(db, dsn, message):
    _assert_handler_failure_recorded(db, dsn, ValueError(message))


@pytest.mark.parametrize("seconds", [-1.0, math.nan, 1e12], ids=["negative", "nan", "beyond-a-year"])
def test_a_retry_after_outside_nacks_range_is_recorded(db, dsn, seconds):
    """The bug this pins (fixed): RetryAfter(seconds) went to nack as it was; nack refused a negative, NaN or (then) more
    than a year (PR001), the worker logged an internal error and the job only ended when its lease expired. (nack now
    waits a year at most for a longer delay, and still refuses a negative or NaN.)"""
    _assert_handler_failure_recorded(db, dsn, pgrelay.RetryAfter(seconds, "bad retry"))


def _assert_handler_failure_recorded(db: psycopg.Connection, dsn: str, error: BaseException) -> None:
    """The bug this pins (fixed): the worker sends the handler's error text as it is; the database refuses NUL (22021) and the
    driver a surrogate, so nack fails, the worker logs an internal error and the job only ends when its
    lease expires ("lease expired; no attempts left"): the handler's error is never recorded."""
    job_id = call(db, "enqueue", {"task": "h.raise", "queue": "poison", "max_attempts": 1}).value

    router = hostile_router()

    @router.task("h.raise")
    async def raises(ctx: Any) -> Any:
        raise error

    asyncio.run(run_worker(dsn, "poison", lambda: get_job(db, job_id)["status"] == "dead_letter", router=router,
                           lease_seconds=2, recover_interval=0.5))
    [attempt] = db.execute("SELECT outcome, error FROM pgrelay.get_attempts(%s)", [job_id]).fetchall()
    assert attempt[0] == "failed" and "bad" in attempt[1], attempt


@examples(200, 2000)
@given(value=st.one_of(st.none(), hostile_text(40), hostile_floats.map(str), hostile_ints.map(str),
                       st.datetimes().map(lambda d: d.strftime("%a, %d %b %Y %H:%M:%S GMT"))))
def test_a_hostile_retry_after_header_becomes_a_delay_nack_accepts(value):
    """A server's Retry-After is hostile input too: it becomes None or a delay nack accepts (0 or more, any
    size: nack waits a year at most; tests/sql/test_owned_rules.py)."""
    from pgrelay.http import parse_retry_after

    delay = parse_retry_after(value)
    assert delay is None or (isinstance(delay, float) and delay >= 0), (value, delay)


def test_the_guard_refuses_a_host_with_nul_by_its_rule():
    """The bug this pins (fixed; minor: the database never stores NUL, so no job reaches it): check_url("http://\\x00/") raises
    ValueError ("embedded null character", from socket.inet_aton) instead of TargetRefused."""
    with pytest.raises(TargetRefused):
        TargetPolicy().check_url("http://\x00/")


@pytest.mark.parametrize("value", ["\u00b2", "1\u2070", "\u00b9\u00b2"])
def test_retry_after_with_superscript_digits_is_unusable_not_an_exception(value):
    """The bug this pins (fixed): parse_retry_after checks str.isdigit(), which is true for superscript digits, then float()
    raises ValueError: a server answering 503 with "Retry-After: ²" makes HttpExecutor.execute raise that
    ValueError (the response's status and body never reach the attempt's details)."""
    from pgrelay.http import parse_retry_after

    assert parse_retry_after(value) is None


async def test_a_server_sending_a_hostile_retry_after_gets_a_retry_with_details():
    """The same bug end to end: a real server on 127.0.0.1 answers 503 with the UTF-8 bytes of
    "Retry-After: ²"; the executor must raise HttpError (a retry with backoff) carrying the status."""
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: \xc2\xb2\r\nContent-Length: 4\r\n"
                     b"Connection: close\r\n\r\nbusy")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with HttpExecutor.from_env({"PGRELAY_HTTP_ALLOW_CIDRS": "127.0.0.0/8"}) as http:
            with pytest.raises(HttpError) as caught:
                await http.execute(claimed({"url": f"http://127.0.0.1:{port}/", "method": "POST", "headers": {},
                                            "body": None}))
        assert caught.value.details["status"] == 503
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("url", ["http://[::ffff:0:a9fe:a9fe]/latest/meta-data/", "http://[::ffff:0:7f00:1]/",
                                 "http://[::ffff:0:a00:1]/", "http://[::1:0:0]/", "http://[::100:0:0]/"])
def test_the_guard_refuses_reserved_ipv6_and_its_ipv4_translated_forms(db, monkeypatch, url):
    """The bug this pins (fixed; SSRF guard): IPv6 ::/8 is reserved (IETF), but Python 3.11's is_global calls it global and no
    row of ssrf._RANGES covers it (only ::/128, ::1/128 and ::/96): the guard lets these through. Among
    them ::ffff:0:0:0/96, the SIIT "IPv4-translated" form (RFC 6145) of any IPv4 address: behind a
    stateless translator ::ffff:0:a9fe:a9fe is 169.254.169.254, and ::ffff:0:7f00:1 is 127.0.0.1.
    enqueue_http accepts them, and the executor connects."""
    assert call(db, "enqueue_http", {"url": url}).ok
    with pytest.raises(TargetRefused):
        TargetPolicy().check_url(url)
    recorded = connection_recorder(monkeypatch)
    raised = asyncio.run(execute_without_network({"url": url, "method": "POST", "headers": {}, "body": None},
                                                 ["93.184.216.34"], recorded))
    assert recorded == [], f"the executor connected to {recorded} ({raised!r})"


def test_a_result_the_database_refuses_costs_only_its_own_job(db, dsn, monkeypatch):
    """The worker's second line of defence: when the batched ack is refused anyway (here the result check
    is switched off, so NaN reaches the client), it acks the batch one by one and dead-letters only the
    job whose result was refused, naming why."""
    import pgrelay._running

    monkeypatch.setattr(pgrelay._running, "unstorable", lambda value: None)
    test_a_nan_result_dead_letters_its_job_without_failing_the_others_ack(db, dsn)
