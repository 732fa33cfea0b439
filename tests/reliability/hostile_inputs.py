"""What test_hostile_input.py throws at pgrelay, the rules it judges the answers by, and a fingerprint of
the database that shows whether a refused call left it exactly as it was.

    hostile_text()          any code point (NUL, lone surrogates, RTL marks, combining marks, ...) and
                            SQL metacharacters ('  ;  $$  --  /* ...), mixed
    valid_name / name_like  queue/task/worker names that pass pgrelay's rule / mostly valid, else hostile
                            text or one character too long; name_ok(value, kind) is the rule itself
    good_keys / keys        idempotency and dedupe keys, trace ids: valid / any (empty, 256 characters, ...)
    clean_json / dirty_json JSON values the database can store / that it must refuse (NUL, a lone
                            surrogate, NaN or Infinity somewhere inside); raw_json: JSON text as written
    hostile_ints / floats   the edges of every range pgrelay checks, int4/int8 overflow, NaN, infinities
    Arguments               draws a call's arguments: all valid, exactly one hostile, or any mix
    urls()                  URLs aimed at private addresses in every spelling (decimal, octal, hex, short
                            IPv4; IPv6 literals with embedded IPv4; IDNA; userinfo; odd schemes; CRLF)
    run(conn, sql, params)  an Outcome: the rows, or the SQLSTATE (``driver`` when psycopg refused to
                            send the value at all: NUL in text, a surrogate)
    snapshot(conn)          counts and hashes of every pgrelay table
    unsafe(address)         an oracle for "a request must never go there", independent of pgrelay.ssrf
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
from collections import Counter
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import psycopg
from hypothesis import strategies as st
from psycopg.types.json import Jsonb

# --- what a refusal may look like ---------------------------------------------------------------

PGRELAY_CODES = {
    "PR001": "invalid argument",
    "PR002": "invalid element of enqueue_bulk",
    "PR003": "invalid url",
    "PR004": "invalid HTTP method or headers",
    "PR005": "consume outside READ COMMITTED",
    "PT404": "no such job",
    "PT409": "the job's state does not allow this",
}
# Refusals by PostgreSQL itself (the value never reaches pgrelay's checks): every one seen in these tests.
POSTGRES_CODES = {
    "22P05": "untranslatable character: \\u0000 in json/jsonb (\\u0000 cannot be converted to text)",
    "22P02": "invalid text representation: not JSON (NaN, Infinity, a lone surrogate escape) or not an integer",
    "22003": "numeric value out of range: an integer beyond int4 / int8",
    "22007": "invalid datetime format",
    "22008": "datetime field overflow: a timestamp or interval out of range",
    "22009": "invalid time zone displacement value: a number given for a timestamp (PostgREST, run_at: -16)",
    "22021": "invalid byte sequence for encoding UTF8: 0x00 (NUL in text, as asyncpg sends it)",
    "54001": "stack depth limit exceeded: JSON nested about 100,000 deep",
}
DRIVER = "driver"  # psycopg refused to send the value: NUL in a text parameter, or a surrogate
ALLOWED_CODES = set(PGRELAY_CODES) | set(POSTGRES_CODES) | {DRIVER}

SEEN: Counter[str] = Counter()  # every refusal code, for the report printed at the end of the module


@dataclass
class Outcome:
    rows: list[Any] | None = None
    code: str | None = None
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.code is None

    @property
    def value(self) -> Any:
        assert self.rows is not None
        return self.rows[0][0]

    def __repr__(self) -> str:
        return f"Outcome(ok, {self.rows!r:.200})" if self.ok else f"Outcome({self.code}: {self.message[:300]})"


def run(conn: psycopg.Connection, statement: str, params: Any = None) -> Outcome:
    """Run one autocommit statement; never raises for an error the database (or the driver) reports."""
    try:
        rows = conn.execute(statement, params).fetchall()
    except psycopg.Error as error:
        code = error.sqlstate or DRIVER
        SEEN[code] += 1
        return Outcome(code=code, message=str(error))
    except UnicodeEncodeError as error:  # psycopg encodes text parameters as strict UTF-8
        SEEN[DRIVER] += 1
        return Outcome(code=DRIVER, message=str(error))
    return Outcome(rows=rows)


def assert_clear_refusal(outcome: Outcome, *expected: str) -> None:
    """A refusal with an allowed code (one of ``expected`` when given), never XX000 or class 40, with a message."""
    assert not outcome.ok
    assert outcome.code is not None
    assert not outcome.code.startswith(("XX", "40")), outcome
    assert outcome.code in ALLOWED_CODES, f"an unexpected SQLSTATE: {outcome}"
    if expected:
        assert outcome.code in expected, f"expected one of {expected}: {outcome}"
    assert outcome.message.strip(), outcome


# --- calling the SQL API with every argument typed ----------------------------------------------

TYPES = {
    # producer
    "task": "text", "payload": "jsonb", "queue": "text", "run_at": "timestamptz", "priority": "integer",
    "max_attempts": "integer", "timeout_seconds": "integer", "idempotency_key": "text", "dedupe_key": "text",
    "trace_id": "text", "url": "text", "body": "jsonb", "method": "text", "headers": "jsonb", "jobs": "jsonb",
    "payloads": "jsonb[]",
    # worker
    "worker": "text", "queues": "text[]", "batch": "integer", "lease_seconds": "integer", "tasks": "text[]",
    "handlers": "text[]", "kinds": "text[]", "id": "bigint", "attempt": "integer", "result": "jsonb",
    "ids": "bigint[]", "attempts": "integer[]", "results": "jsonb[]", "error": "text",
    "retry_after_seconds": "double precision", "permanent": "boolean", "outcome": "text", "details": "jsonb",
    "host": "text", "pid": "integer", "reason": "text",
    # operator
    "concurrency": "integer", "backoff_base_seconds": "double precision", "backoff_max_seconds": "double precision",
    "reset": "text[]", "retention_succeeded_days": "integer", "retention_dead_letter_days": "integer",
    "force": "boolean", "since": "timestamptz", "older_than_days": "integer", "max_jobs": "integer",
}


class RawJson(str):
    """JSON text sent as it is (``%s::jsonb`` of a text parameter), for what a Python value cannot say."""

    def __repr__(self) -> str:
        shown = str.__repr__(str(self[:40]))
        return f"RawJson({shown}{f' ... {len(self)} characters' if len(self) > 40 else ''})"


def call(conn: psycopg.Connection, function: str, args: dict[str, Any], *, rows: bool = False) -> Outcome:
    """``SELECT pgrelay.<function>(name => %s::type, ...)``. A jsonb value is sent as JSON (RawJson: as
    written); a jsonb[] as text[] of JSON texts, cast; None is SQL NULL."""
    params: dict[str, Any] = {}
    casts: dict[str, str] = {}
    for name, value in args.items():
        kind = TYPES[name]
        casts[name] = kind
        if kind == "jsonb" and value is not None:
            value = str(value) if isinstance(value, RawJson) else Jsonb(value)
        elif kind == "jsonb[]" and isinstance(value, list):
            value = [None if v is None else str(v) if isinstance(v, RawJson) else json.dumps(v) for v in value]
            casts[name] = "text[]::jsonb[]"
        params[name] = value
    named = ", ".join(f"{name} => %({name})s::{casts[name]}" for name in args)
    return run(conn, f"SELECT {'* FROM ' if rows else ''}pgrelay.{function}({named})", params)


# --- the database's fingerprint -----------------------------------------------------------------

_SNAPSHOT = """
SELECT
  (SELECT count(*) FROM pgrelay._jobs),
  (SELECT md5(coalesce(string_agg(concat_ws(',', id, queue, task, kind, priority, run_at, attempt,
          options, leased_by, leased_at, lease_expires_at, last_error, cancel_requested_at, md5(payload::text)),
          '|' ORDER BY id), ''))
   FROM pgrelay._jobs),
  (SELECT count(*) FROM pgrelay._finished),
  (SELECT md5(coalesce(string_agg(concat_ws(',', id, status, attempt, last_error, md5(result::text), finished_at,
          replayed_as), '|' ORDER BY id), '')) FROM pgrelay._finished),
  (SELECT count(*) FROM pgrelay._attempts),
  (SELECT md5(coalesce(string_agg(concat_ws(',', job_id, attempt, worker, outcome, error, md5(details::text)), '|'
          ORDER BY job_id, attempt), '')) FROM pgrelay._attempts),
  (SELECT md5(coalesce(string_agg(concat_ws(',', key, job_id), '|' ORDER BY key COLLATE "C"), ''))
   FROM pgrelay._idempotency_keys),
  (SELECT md5(coalesce(string_agg(q::text, '|' ORDER BY q.queue COLLATE "C"), '')) FROM pgrelay._queues q),
  (SELECT md5(coalesce(string_agg(w::text, '|' ORDER BY w.worker COLLATE "C"), '')) FROM pgrelay._workers w),
  (SELECT md5(coalesce(string_agg(c::text, '|' ORDER BY c.queue COLLATE "C", c.minute, c.backend), ''))
   FROM pgrelay._counts c)
"""
_SNAPSHOT_NAMES = ("jobs", "jobs_hash", "finished", "finished_hash", "attempts", "attempts_hash",
                   "idempotency_keys", "queues", "workers", "counts")


def snapshot(conn: psycopg.Connection) -> dict[str, Any]:
    """Row counts and content hashes of every pgrelay table (a refused call must leave them all alone)."""
    row = conn.execute(_SNAPSHOT).fetchone()
    return dict(zip(_SNAPSHOT_NAMES, row, strict=True))


# --- text ---------------------------------------------------------------------------------------

FRAGMENTS = [
    "'", "''", '"', ";", "$$", "$tag$", "--", "/*", "*/", "\\", "%", "_", "%%", "\x00", "a\x00b",
    "\u202e", "\u200f", "\u200b", "\u0301", "e\u0301", "\ufeff", "\U0001f600", "\ud800", "\udfff", "\udcff",
    "\ud83d\ude00", "\r\n", "\n", "\t", " ", "\x7f", "\x1b[31m", "\x1b]0;title\x07", "\u2028", "\u00a0",
    "\u0130", "\u00df", "\ufdfa", "\U000e0041", "\uffff", "\U0010ffff", "\u212a", "\u017f", "\u0660",
    "NULL", "null", "{}", "[]", '{"a":', "Robert'); DROP TABLE pgrelay._jobs; --", "' OR '1'='1",
    "%s", "%(x)s", "$1", "\\x00", "\\u0000", "a:b", "a/b", "a@b", ".", "..", "-", "0", "__", "a" * 201,
]

any_char = st.characters(exclude_categories=())  # every code point, surrogates included


def hostile_text(max_size: int = 30) -> st.SearchStrategy[str]:
    return st.one_of(
        st.text(any_char, max_size=max_size),
        st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(any_char, max_size=4)), max_size=5).map("".join),
    )


def clean_text(max_size: int = 30) -> st.SearchStrategy[str]:
    """Any text PostgreSQL can store (no NUL, no surrogate), hostile in every other way."""
    return hostile_text(max_size).map(lambda s: "".join(c for c in s if c != "\x00" and not 0xD800 <= ord(c) <= 0xDFFF))


def sendable(value: str) -> bool:
    """Whether psycopg will send this text and PostgreSQL store it (no NUL, valid UTF-8)."""
    if "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


NAME_LIMITS = {"task": (200, "/"), "queue": (128, ""), "worker": (200, "/@")}


def name_ok(value: Any, kind: str) -> bool:
    """pgrelay's rule for names (sql/pgrelay.sql, _name_error), written again in Python."""
    max_len, extra = NAME_LIMITS[kind]
    return (isinstance(value, str) and len(value) <= max_len
            and re.fullmatch(rf"[A-Za-z0-9_][A-Za-z0-9_.:{re.escape(extra)}-]*", value) is not None)


def valid_name(kind: str) -> st.SearchStrategy[str]:
    _, extra = NAME_LIMITS[kind]
    return st.from_regex(rf"[A-Za-z0-9_][A-Za-z0-9_.:{re.escape(extra)}-]{{0,30}}", fullmatch=True)


def name_like(kind: str) -> st.SearchStrategy[str]:
    max_len, _ = NAME_LIMITS[kind]
    valid = valid_name(kind)
    return st.one_of(
        valid, valid, valid,
        hostile_text(),
        st.builds(lambda v, f: v + f, valid, st.sampled_from(FRAGMENTS)),
        st.builds(lambda f, v: f + v, st.sampled_from(FRAGMENTS), valid),
        st.sampled_from(["a" * max_len, "a" * (max_len + 1), "", "a\n", "\na", "a b", "é", "a" * 100_000]),
    )


def key_ok(value: Any) -> bool:
    return value is None or (isinstance(value, str) and 1 <= len(value) <= 255)


def good_keys() -> st.SearchStrategy[str | None]:
    """Keys every rule accepts: a few shared ones (to hit existing keys) and any storable text of 1-255."""
    return st.one_of(st.none(), st.sampled_from(["k1", "k2", "ключ", "'; --", "$$", "\u202e\u0301"]),
                     clean_text(40).filter(lambda k: 1 <= len(k) <= 255))


def keys() -> st.SearchStrategy[str | None]:
    """Idempotency / dedupe keys and trace ids: a few shared ones (to hit existing keys), hostile text, edges."""
    return st.one_of(st.none(), st.sampled_from(["k1", "k2", "ключ", "'; --", "$$"]), hostile_text(40),
                     st.sampled_from(["", "k" * 255, "k" * 256, "é" * 255, "\U0001f600" * 255, "x" * 100_000]))


class Arguments:
    """Draws a call's arguments so that every path is exercised: in a third of the examples every argument
    is valid, in a third exactly one is hostile, in the rest each may be either (a call with nine
    independently hostile arguments is almost never accepted, and acceptance is half of the property)."""

    def __init__(self, data: Any, names: list[str]) -> None:
        self.data = data
        self.mode = data.draw(st.sampled_from(["valid", "one hostile", "any"]), label="mode")
        self.hostile = data.draw(st.sampled_from(names), label="the hostile one") if self.mode == "one hostile" else None

    def __call__(self, name: str, valid: st.SearchStrategy[Any], hostile: st.SearchStrategy[Any]) -> Any:
        if self.mode == "valid" or (self.mode == "one hostile" and name != self.hostile):
            return self.data.draw(valid, label=name)
        if self.mode == "one hostile":
            return self.data.draw(hostile, label=name)
        return self.data.draw(st.one_of(valid, hostile), label=name)


# --- numbers ------------------------------------------------------------------------------------

EDGE_INTS = [0, 1, -1, 2, 5, 100, 999, 1000, 1001, 10000, 10001, 36500, 36501, 86400, 86401, 100000, 100001,
             10_000_000, 10_000_001, 31_536_000, 2**31 - 1, 2**31, -2**31, -2**31 - 1, 2**63 - 1, 2**63, -2**63,
             -2**63 - 1, 10**30]
hostile_ints = st.one_of(st.sampled_from(EDGE_INTS), st.integers(-2**31, 2**31 - 1), st.integers())
EDGE_FLOATS = [math.nan, math.inf, -math.inf, 0.0, -0.0, 5e-324, 1e-300, 0.001, 0.0009, 1.0, 86400.0, 86400.5,
               604800.0, 604800.1, 31536000.0, 31536000.5, 1e308, -1.0, -1e-9]
hostile_floats = st.one_of(st.sampled_from(EDGE_FLOATS), st.floats())


def in_range(value: Any, low: int, high: int) -> bool:
    return value is None or low <= value <= high


INT4 = (-2**31, 2**31 - 1)


# --- JSON ---------------------------------------------------------------------------------------

_leaf = st.one_of(
    st.none(), st.booleans(),
    st.integers(), st.sampled_from([2**63, -2**63 - 1, 10**400, -(10**400)]),
    st.floats(allow_nan=False, allow_infinity=False),
    clean_text(), clean_text(),
)
clean_json = st.recursive(
    _leaf, lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(clean_text(12), inner, max_size=4)),
    max_leaves=12,
)
_poison = st.sampled_from(["\x00", "a\x00b", "\ud800", "x\udfffy", "\udc80", math.nan, math.inf, -math.inf])
_poison_key = st.sampled_from(["\x00", "k\x00", "\ud800", "\udfff"])
dirty_json = st.one_of(
    st.builds(lambda ok, bad: {"ok": ok, "bad": [bad]}, clean_json, _poison),
    st.builds(lambda ok, bad: [ok, bad], clean_json, _poison),
    st.builds(lambda ok, key: {key: ok}, clean_json, _poison_key),
    _poison,
)
# JSON text a Python value cannot say, or the database must refuse
RAW_JSON = [
    '{"a": 1, "a": 2}', " {} ", "1e400", "-0", "-0.0", "1E-400", "123456789012345678901234567890.5",
    '"\\u0000"', '{"\\u0000": 1}', '"\\ud800"', '"\\udfff\\ud800"', '"\\ud83d\\ude00"', '"\\uffff"',
    "NaN", "Infinity", "-Infinity", "", " ", "nul", "tru", '{"a":1} x', "[1,]", "{'a': 1}", "[" * 5000 + "]" * 5000,
    '"' + "\\" * 2 + '"', '"\x01"', '"\t"', "[\"\u2028\"]", '{"a":{"b":{"c":[[[[[]]]]]}}}',
]
raw_json = st.sampled_from(RAW_JSON).map(RawJson)


def json_problem(value: Any) -> str | None:
    """Why the database must refuse this Python value as JSON (None when it stores it)."""
    if isinstance(value, float) and not math.isfinite(value):
        return "not finite"
    if isinstance(value, str):
        joined = join_surrogates(value)
        if "\x00" in joined:
            return "NUL"
        if any(0xD800 <= ord(c) <= 0xDFFF for c in joined):
            return "lone surrogate"
        return None
    if isinstance(value, list):
        return next((p for p in map(json_problem, value) if p), None)
    if isinstance(value, dict):
        return next((p for p in (*map(json_problem, value.keys()), *map(json_problem, value.values())) if p), None)
    return None


def join_surrogates(text: str) -> str:
    """What JSON makes of a Python string: a high surrogate followed by a low one is one character
    (psycopg sends JSON ASCII-escaped, "\\ud83d\\ude00", which the database reads as U+1F600)."""
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")


def as_stored(value: Any) -> Any:
    """A JSON value as the database gives it back: numbers exact (Decimal), surrogate pairs joined."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float)):
        return Decimal(value) if isinstance(value, int) else Decimal(repr(value))
    if isinstance(value, str):
        return join_surrogates(value)
    if isinstance(value, list):
        return [as_stored(v) for v in value]
    if isinstance(value, dict):
        return {join_surrogates(k): as_stored(v) for k, v in value.items()}
    raise TypeError(type(value))


def same_json(stored: Any, sent: Any) -> bool:
    return as_stored(stored) == as_stored(sent)


# --- addresses and URLs -------------------------------------------------------------------------

METADATA = {ipaddress.ip_address(a) for a in (
    "169.254.169.254", "169.254.170.2", "169.254.170.23", "100.100.100.200", "168.63.129.16", "192.0.0.192",
    "fd00:ec2::254", "fd00:ec2::23")}


def unsafe(address: str) -> str | None:
    """Why a request must never go to this address (None when it may), by Python's ipaddress alone.

    Not a public unicast address (private, loopback, link-local, multicast, reserved such as ::/8, ...:
    Python's is_global alone calls multicast and ::/8 global) or a cloud metadata address; an IPv6 address
    that embeds an IPv4 one (mapped, NAT64, 6to4, compatible, SIIT-translated) is judged by the IPv4
    address too (mapped and NAT64 only by it)."""
    ip = ipaddress.ip_address(address.split("%")[0])
    if ip in METADATA:
        return f"{ip} is a cloud metadata address"
    if isinstance(ip, ipaddress.IPv6Address):
        embedded, judged_by_it = None, False
        if ip.ipv4_mapped is not None:
            embedded, judged_by_it = ip.ipv4_mapped, True  # ::ffff:a.b.c.d is a.b.c.d
        elif ip in _NAT64:
            embedded, judged_by_it = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF), True  # NAT64 of a.b.c.d
        elif ip.sixtofour is not None:
            embedded = ip.sixtofour
        elif ip in _IPV4_TRANSLATED or (ip in _IPV4_COMPATIBLE and int(ip) > 1):
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            inner = unsafe(str(embedded))
            if inner:
                return f"{ip} embeds {embedded}: {inner}"
            if judged_by_it:
                return None
    if not ip.is_global or ip.is_multicast or ip.is_reserved or ip.is_loopback or ip.is_link_local \
            or ip.is_unspecified or ip.is_private or (isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local):
        return f"{ip} is not a public unicast address"
    return None


_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_IPV4_TRANSLATED = ipaddress.ip_network("::ffff:0:0:0/96")  # SIIT, RFC 6145 (::ffff:0:a.b.c.d)
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


_PRIVATE_V4 = ["127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16", "0.0.0.0/8",
               "100.64.0.0/10", "224.0.0.0/4", "240.0.0.0/4", "192.0.0.0/24", "198.18.0.0/15"]


@st.composite
def ipv4(draw: Any) -> ipaddress.IPv4Address:
    choice = draw(st.integers(0, 5))
    if choice <= 2:
        return ipaddress.IPv4Address(draw(st.integers(0, 2**32 - 1)))
    if choice == 3:
        return draw(st.sampled_from(sorted(a for a in METADATA if a.version == 4)))
    network = ipaddress.ip_network(draw(st.sampled_from(_PRIVATE_V4)))
    return network[draw(st.integers(0, network.num_addresses - 1))]


@st.composite
def ipv4_spelling(draw: Any, address: ipaddress.IPv4Address) -> str:
    """The many ways inet_aton (and so getaddrinfo) reads an IPv4 address."""
    n = int(address)
    octets = [(n >> s) & 0xFF for s in (24, 16, 8, 0)]
    style = draw(st.integers(-4, 9))
    if style <= 0:
        return str(address)
    if style == 1:
        return str(n)  # http://2130706433/
    if style == 2:
        return hex(n)  # 0x7f000001
    if style == 3:
        return ".".join(f"0{o:o}" for o in octets)  # 0177.0.0.01
    if style == 4:
        return f"{octets[0]}.{n & 0xFFFFFF}"  # 127.1
    if style == 5:
        return f"{octets[0]}.{octets[1]}.{n & 0xFFFF}"
    if style == 6:
        return ".".join(f"{o:03d}" for o in octets)  # 127.000.000.001
    if style == 7:
        return str(address) + "."
    if style == 8:
        return ".".join(draw(st.sampled_from([str(o), hex(o), f"0{o:o}"])) for o in octets)
    return "0" + f"{n:o}"  # 017700000001


@st.composite
def ipv6_spelling(draw: Any) -> str:
    style = draw(st.integers(0, 6))
    v4 = draw(ipv4())
    if style == 0:
        ip = ipaddress.IPv6Address(draw(st.integers(0, 2**128 - 1)))
    elif style == 1:
        ip = ipaddress.IPv6Address(f"::ffff:{v4}")
    elif style == 2:
        ip = ipaddress.IPv6Address((0x2002 << 112) | (int(v4) << 80))  # 6to4
    elif style == 3:
        ip = ipaddress.IPv6Address(f"64:ff9b::{v4}")
    elif style == 4:
        ip = ipaddress.IPv6Address(int(v4) | (draw(st.sampled_from([0, 0xFFFF0000])) << 32))  # compatible, SIIT
    elif style == 5:
        ip = draw(st.sampled_from([ipaddress.IPv6Address(a) for a in (
            "::1", "::", "fe80::1", "fc00::1", "fd12:3456::1", "fec0::1", "ff02::1", "fd00:ec2::254", "2001:db8::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2", "100::1", "64:ff9b:1::a00:1", "2606:4700:4700::1111")]))
    else:
        network = ipaddress.ip_network(draw(st.sampled_from(["fe80::/10", "fc00::/7", "ff00::/8", "::/96"])))
        ip = network[draw(st.integers(0, min(network.num_addresses, 2**64) - 1))]
    text = draw(st.sampled_from([ip.compressed, ip.exploded, ip.compressed.upper()]))
    if ip.ipv4_mapped is not None and draw(st.booleans()):
        text = f"::ffff:{ip.ipv4_mapped}"
    if draw(st.integers(0, 9)) == 0:
        text += draw(st.sampled_from(["%25eth0", "%eth0", "%251"]))
    return f"[{text}]"


_label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
dns_names = st.one_of(
    st.lists(_label, min_size=1, max_size=4).map(".".join),
    st.sampled_from(["localhost", "localhost.", "LOCALHOST", "localtest.me", "metadata.google.internal",
                     "xn--bcher-kva.example", "a" * 63 + ".example", "a" * 64 + ".example",
                     ".".join(["a" * 63] * 4), "a" * 300, "-a.example", "a_b.example", "example.com."]),
)
idna_names = st.builds(lambda a, tld: a + tld, st.text(st.characters(categories=("L", "M", "N")), min_size=1,
                                                         max_size=12), st.sampled_from([".com", ".рф", "", ".0.0.1"]))


@st.composite
def urls(draw: Any) -> str:
    if draw(st.integers(0, 19)) == 0:
        return draw(hostile_text(60))
    scheme = draw(st.sampled_from(["http"] * 6 + ["https"] * 6 + ["HTTP", "hTtPs", "ftp", "file", "gopher",
                                                                   "javascript", "data", "dict", "ws", "", "http "]))
    separator = draw(st.sampled_from(["://"] * 12 + [":/", ":///", ":\\\\", "://\\", ":"]))
    userinfo = draw(st.sampled_from([""] * 10 + ["user:pass@", "@", "a@b@", "example.com@", "%40@",
                                                  "user@", ":@"]))
    kind = draw(st.integers(0, 5))
    if kind <= 1:
        host = draw(ipv4_spelling(draw(ipv4())))
    elif kind == 2:
        host = draw(ipv6_spelling())
    elif kind == 3:
        host = draw(dns_names)
    elif kind == 4:
        host = draw(idna_names)
    else:
        host = draw(hostile_text(20))
    port = draw(st.sampled_from([""] * 6 + [":80", ":0", ":65535", ":65536", ":99999999999", ":", ":-1",
                                             ":00080", ":8080"]))
    rest = draw(st.sampled_from(["/", "", "/a?b=c#d", "?@evil.example", "#@evil.example", "/%2e%2e/",
                                 "/\r\nHost: evil", "/ x", "/é", "/" + "a" * 3000]))
    return f"{scheme}{separator}{userinfo}{host}{port}{rest}"


def resolved_addresses() -> st.SearchStrategy[list[str]]:
    """What a hostile DNS answers for a name: any mix of private and public addresses."""
    v4 = ipv4().map(str)
    v6 = ipv6_spelling().map(lambda s: s[1:-1].split("%")[0])
    return st.lists(st.one_of(v4, v4, v6), min_size=1, max_size=4)
