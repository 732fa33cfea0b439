"""The executor of HTTP jobs (``pgrelay.enqueue_http``): sends the request a job describes, safely.

``HttpExecutor.from_env()`` is what ``jobs-worker`` passes to ``Worker(http_executor=...)``; the worker awaits
``execute(job)`` for every claimed job of kind ``http`` and turns the outcome into ack or nack:

- 2xx: returns ``{status, headers (a few), body (text, at most max_body bytes), truncated}`` (the job's result);
- 408, 425, 429, 5xx, timeouts and connection errors: raises ``RetryAfter`` (the response had a usable
  ``Retry-After``) or ``HttpError`` (backoff), both carrying ``details`` for the attempt history;
- 3xx (redirects are never followed) and other 4xx: raises ``Permanent`` (dead letter) with ``details``;
- a target the guard refuses (``pgrelay.ssrf``): ``TargetRefused``, a ``Permanent`` naming the rule.

The request: the job's method, URL, headers (a value ``{"env": "NAME"}`` is read from the worker's
environment now, and only for a host ``PGRELAY_HTTP_SECRET_ENV`` binds NAME to) and JSON body;
``Idempotency-Key`` (the job's idempotency key, else its id; a replay, however long its replay chain, carries
the one of the chain's first job, its ``delivery_id``, so receivers can recognise a resent delivery),
``User-Agent: pgrelay/<version>``, ``traceparent`` (a W3C trace id) or ``X-Trace-Id`` (any other trace id),
and, for hosts with a secret in ``PGRELAY_HTTP_SIGNING_SECRETS``, the Standard Webhooks headers
``webhook-id`` (the same value as ``Idempotency-Key``), ``webhook-timestamp`` and ``webhook-signature``.

Configuration (``from_env``): PGRELAY_HTTP_ALLOWED_HOSTS, PGRELAY_HTTP_ALLOW_CIDRS (see ``pgrelay.ssrf``),
PGRELAY_HTTP_SIGNING_SECRETS (``host=whsec_<base64>,*.example.com=whsec_...``; a host listed twice gets
two signatures, for key rotation), PGRELAY_HTTP_SECRET_ENV (the variables ``{"env": ...}`` may name, each
bound to the hosts it may be sent to, with the same host patterns: ``BILLING_TOKEN=billing.example.com,
HOOK_*=*.hooks.example.com``; list a variable again for another host; unset: none; ``PG*`` never; an entry
without ``=host``, the form before 0.3.0, is refused at startup, since it would let any job send the secret
to any allowed host; a job naming a variable for a host it is not bound to dead-letters and nothing is sent),
PGRELAY_HTTP_CONNECT_TIMEOUT (10 s), PGRELAY_HTTP_READ_TIMEOUT (30 s), PGRELAY_HTTP_TIMEOUT (60 s total,
capped by the job's timeout_seconds), PGRELAY_HTTP_MAX_BODY (65536 bytes of response body read).
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import hashlib
import hmac
import json
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import timezone
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import aiohttp
from aiohttp.abc import AbstractResolver
from multidict import CIMultiDict

from ._version import __version__
from .models import ClaimedJob
from .router import Permanent, RetryAfter
from .ssrf import GuardedResolver, TargetPolicy, TargetRefused, describe, host_matches, parse_host_patterns

__all__ = ["HttpError", "HttpExecutor", "SecretEnv", "SigningSecrets", "TargetRefused", "parse_retry_after"]

USER_AGENT = f"pgrelay/{__version__}"
RETRY_STATUSES = frozenset({408, 425, 429})
DETAILS_BODY_BYTES = 4096  # of a failed response's body, kept in the attempt's details

SIGNING_SECRETS_VARIABLE = "PGRELAY_HTTP_SIGNING_SECRETS"
SECRET_ENV_VARIABLE = "PGRELAY_HTTP_SECRET_ENV"

# W3C Trace Context: version-traceid-parentid-flags, lowercase hex; version ff and all-zero ids are invalid
_TRACEPARENT = re.compile(r"^(?!ff)[0-9a-f]{2}-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}$")
_KEPT_HEADERS = frozenset({"content-type", "content-length", "location", "retry-after", "etag", "cf-ray"})
_REQUEST_ID_HEADER = re.compile(r"(^|-)(request|correlation|trace|event|message)-?id$")
# set by the worker or the connection; a job may not set them (Host would also sidestep the host allowlist)
_WORKER_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection", "upgrade", "te",
                             "trailer", "keep-alive", "webhook-id", "webhook-timestamp", "webhook-signature"})
_HEADER_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")
# what enqueue_http accepts as {"env": NAME}, optionally ending in * (a prefix)
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}\*?$")
_T = TypeVar("_T")


class HttpError(Exception):
    """A failed attempt that is retried with backoff (5xx, 408, 425, 429, timeout, connection error)."""

    def __init__(self, message: str, *, details: Any = None) -> None:
        super().__init__(message)
        self.details = details


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delta-seconds or an HTTP-date); None when unusable.

    However long: nack waits a year at most."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # isdigit() alone accepts "²"
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    seconds = when.timestamp() - (time.time() if now is None else now)
    return max(0.0, seconds)


def _parse_host_bound(text: str | None, variable: str, *, host_first: bool,
                      usage: Callable[[str], str]) -> list[tuple[str, str]]:
    """The comma-separated ``a=b`` entries of a variable that binds something to host patterns (``pgrelay.ssrf``'s
    syntax, on the left when ``host_first``, else on the right): ``[(normalised pattern, the other side)]``.
    ``usage(left side)`` is the message for an entry without both sides; it must not quote a secret."""
    entries: list[tuple[str, str]] = []
    for item in (text or "").split(","):
        left, sep, right = (part.strip() for part in item.strip().partition("="))
        if not (left or sep or right):
            continue
        if not sep or not left or not right:
            raise ValueError(f"{variable}: {usage(left)}")
        host, value = (left, right) if host_first else (right, left)
        [pattern] = parse_host_patterns([host], what=variable)
        entries.append((pattern, value))
    return entries


class _HostBound(Generic[_T]):
    """Values bound to host patterns; the values for a host are those of every pattern it matches."""

    def __init__(self, entries: Sequence[tuple[str, _T]] = ()) -> None:
        self._entries = list(entries)

    def for_host(self, host: str) -> list[_T]:
        return [value for pattern, value in self._entries if host_matches(host, pattern)]

    @property
    def hosts(self) -> list[str]:
        return sorted({pattern for pattern, _ in self._entries})

    def __bool__(self) -> bool:
        return bool(self._entries)


class SigningSecrets(_HostBound[bytes]):
    """Standard Webhooks signing keys by host pattern (``host=whsec_<base64>,*.example.com=whsec_...``)."""

    @classmethod
    def parse(cls, text: str | None) -> SigningSecrets:
        entries: list[tuple[str, bytes]] = []
        for host, secret in _parse_host_bound(text, SIGNING_SECRETS_VARIABLE, host_first=True,
                                              usage=lambda _: "use host=whsec_<base64>, comma-separated"):
            secret = secret[len("whsec_"):] if secret.startswith("whsec_") else secret
            try:
                key = base64.b64decode(secret, validate=True)
            except (binascii.Error, ValueError):
                raise ValueError(f"{SIGNING_SECRETS_VARIABLE}: the secret for {host} is not base64 (after whsec_)") from None
            if len(key) < 16:
                raise ValueError(f"{SIGNING_SECRETS_VARIABLE}: the secret for {host} is shorter than 16 bytes")
            entries.append((host, key))
        return cls(entries)


def _secret_env_usage(name: str) -> str:
    if name and _ENV_NAME.match(name):
        return (f"{name} names no host: write {name}=hooks.example.com (the host, or *.domain, it may be sent to; "
                "list the variable again for another host). A bare name, the form before 0.3.0, would let any job "
                "send the secret to any allowed host")
    return "use NAME=host (BILLING_TOKEN=hooks.example.com, HOOK_*=*.example.com), comma-separated"


class SecretEnv(_HostBound[str]):
    """The environment variables a header ``{"env": NAME}`` may send, by host pattern
    (``BILLING_TOKEN=billing.example.com,HOOK_*=*.hooks.example.com``): a variable goes only to its hosts."""

    @classmethod
    def parse(cls, text: str | None) -> SecretEnv:
        entries: list[tuple[str, str]] = []
        for host, name in _parse_host_bound(text, SECRET_ENV_VARIABLE, host_first=False, usage=_secret_env_usage):
            if not _ENV_NAME.match(name):
                raise ValueError(f"{SECRET_ENV_VARIABLE}: {name!r} is not a variable name or a PREFIX* "
                                 "(letters, digits and _, not starting with a digit)")
            if name.startswith("PG"):
                raise ValueError(f"{SECRET_ENV_VARIABLE}: {name} is never sent: PG* variables configure this "
                                 "worker's own database connection")
            entries.append((host, name))
        return cls(entries)

    @staticmethod
    def _names(name: str, entry: str) -> bool:
        return name == entry or (entry.endswith("*") and name.startswith(entry[:-1]))

    def allows(self, name: str, host: str) -> bool:
        """May variable ``name`` be sent to ``host``? Never a PG* variable (libpq's settings)."""
        return not name.startswith("PG") and any(self._names(name, entry) for entry in self.for_host(host))

    def hosts_of(self, name: str) -> list[str]:
        """The host patterns ``name`` is bound to (for messages)."""
        if name.startswith("PG"):
            return []
        return sorted({pattern for pattern, entry in self._entries if self._names(name, entry)})

    def describe(self) -> list[str]:
        return [f"{entry}={pattern}" for pattern, entry in self._entries]


def sign(keys: Sequence[bytes], message_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: ``v1,<base64 HMAC-SHA256 of "id.timestamp.body">`` per key, space-separated."""
    content = f"{message_id}.{timestamp}.".encode() + body
    return " ".join("v1," + base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()
                    for key in keys)


def _header_safe(value: str) -> str:
    """A header value from job data: printable ASCII kept, anything else percent-encoded."""
    return value if all(" " <= c <= "~" for c in value) else quote(value, safe=_HEADER_SAFE)


def _kept_headers(headers: Mapping[str, str]) -> dict[str, str]:
    kept: dict[str, str] = {}
    for name, value in headers.items():
        lower = name.lower()
        if (lower in _KEPT_HEADERS or _REQUEST_ID_HEADER.search(lower)) and lower not in kept:
            kept[lower] = value[:512]
    return kept


class HttpExecutor:
    """Sends HTTP jobs; pass it to ``Worker(http_executor=...)`` and ``await close()`` it afterwards
    (or ``async with HttpExecutor.from_env() as http: ...``)."""

    def __init__(
        self,
        *,
        policy: TargetPolicy | None = None,
        signing_secrets: SigningSecrets | None = None,
        secret_env: SecretEnv | None = None,
        connect_timeout: float = 10.0,
        read_timeout: float = 30.0,
        total_timeout: float = 60.0,
        max_body: int = 65536,
        resolver: AbstractResolver | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        for name, value in (("connect_timeout", connect_timeout), ("read_timeout", read_timeout),
                            ("total_timeout", total_timeout), ("max_body", max_body)):
            if not value > 0:
                raise ValueError(f"{name} must be positive, not {value!r}")
        self.policy = policy or TargetPolicy()
        self.signing_secrets = signing_secrets or SigningSecrets()
        self.secret_env = secret_env or SecretEnv()
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.total_timeout = total_timeout
        self.max_body = int(max_body)
        self._inner_resolver = resolver  # None: the system's getaddrinfo (tests pass their own)
        self._environ = environ
        self._session: aiohttp.ClientSession | None = None
        self._resolver: GuardedResolver | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> HttpExecutor:
        """Configured from PGRELAY_HTTP_* variables; ValueError names a bad one."""
        env = os.environ if environ is None else environ

        def number(name: str, default: float) -> float:
            text = env.get(name, "").strip()
            if not text:
                return default
            try:
                value = float(text)
            except ValueError:
                raise ValueError(f"{name} must be a number, not {text!r}") from None
            if not value > 0:
                raise ValueError(f"{name} must be positive, not {text!r}")
            return value

        options: dict[str, Any] = dict(
            policy=TargetPolicy.from_env(env),
            signing_secrets=SigningSecrets.parse(env.get(SIGNING_SECRETS_VARIABLE)),
            secret_env=SecretEnv.parse(env.get(SECRET_ENV_VARIABLE)),
            connect_timeout=number("PGRELAY_HTTP_CONNECT_TIMEOUT", 10.0),
            read_timeout=number("PGRELAY_HTTP_READ_TIMEOUT", 30.0),
            total_timeout=number("PGRELAY_HTTP_TIMEOUT", 60.0),
            max_body=int(number("PGRELAY_HTTP_MAX_BODY", 65536)),
            environ=environ,
        )
        options.update(overrides)
        return cls(**options)

    def describe(self) -> dict[str, Any]:
        """The configuration for a log line (host names only, never a secret)."""
        return {**describe(self.policy), "signing_hosts": self.signing_secrets.hosts,
                "secret_env": self.secret_env.describe(),
                "timeouts": [self.connect_timeout, self.read_timeout, self.total_timeout], "max_body": self.max_body}

    async def __aenter__(self) -> HttpExecutor:
        return self

    async def __aexit__(self, *_: Any) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._resolver is not None:
            await self._resolver.close()
            self._resolver = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._resolver = GuardedResolver(self.policy, self._inner_resolver)
            connector = aiohttp.TCPConnector(resolver=self._resolver, use_dns_cache=False)
            self._session = aiohttp.ClientSession(
                connector=connector,
                trust_env=False,  # no proxy from the environment: the guard must see the real target
                cookie_jar=aiohttp.DummyCookieJar(),  # no cookies carried from one job to another
            )
        return self._session

    # -- building the request -----------------------------------------------------------------

    def _header_value(self, name: str, value: Any, host: str) -> str:
        if isinstance(value, str):
            resolved = value
        elif isinstance(value, dict) and set(value) == {"env"} and isinstance(value["env"], str):
            variable = value["env"]
            # deny by default: whoever may enqueue chooses both the URL and the variable, so a variable leaves
            # the worker only for the hosts an operator bound it to (never libpq's PG* settings)
            if not self.secret_env.allows(variable, host):
                bound = self.secret_env.hosts_of(variable)
                details = {"error": "secret_env", "header": name, "variable": variable, "host": host}
                if not bound:
                    raise Permanent(f"header {name} names environment variable {variable}, which this worker may not "
                                    f"send: list it in {SECRET_ENV_VARIABLE} as {variable}=<host> "
                                    "(PG* variables are never sent)", details=details)
                raise Permanent(f"header {name} names environment variable {variable}, which this worker sends only "
                                f"to {', '.join(bound)}, not to {host}: {SECRET_ENV_VARIABLE} binds each variable "
                                "to its hosts", details={**details, "bound_to": bound})
            environ = os.environ if self._environ is None else self._environ
            resolved = environ.get(variable)
            if resolved is None:
                raise Permanent(f"header {name} names environment variable {variable}, which is not set in this worker")
        else:
            raise Permanent(f'header {name} must be a string or {{"env": "VARIABLE"}}')
        if any((c < " " and c != "\t") or c == "\x7f" for c in resolved):
            raise Permanent(f"header {name} contains a line break or another control character")
        return resolved

    def _request(self, job: ClaimedJob) -> tuple[str, Any, CIMultiDict[str], bytes | None]:
        payload = job.payload if isinstance(job.payload, dict) else {}
        url = payload.get("url")
        if not isinstance(url, str):
            raise Permanent("the HTTP job has no url in its payload")
        parsed = self.policy.check_url(url)
        method = str(payload.get("method") or "POST").upper()
        job_headers = payload.get("headers") or {}
        if not isinstance(job_headers, dict):
            raise Permanent("the HTTP job's headers are not a JSON object")
        host = parsed.raw_host or ""
        # a replay repeats a delivery: it carries the message id of the chain's first job (delivery_id), so
        # receivers can deduplicate it
        message_id = _header_safe(job.delivery_id or job.idempotency_key or str(job.id))
        headers: CIMultiDict[str] = CIMultiDict()
        headers["User-Agent"] = USER_AGENT
        headers["Idempotency-Key"] = message_id
        if job.trace_id:
            if _TRACEPARENT.match(job.trace_id):
                headers["traceparent"] = job.trace_id
            else:
                headers["X-Trace-Id"] = _header_safe(job.trace_id)
        for name, value in job_headers.items():
            if name.lower() in _WORKER_HEADERS:
                raise Permanent(f"header {name} is set by the worker, not by the job")
            headers[name] = self._header_value(name, value, host)  # the job's own value wins
        body: bytes | None = None
        if payload.get("body") is not None:
            body = json.dumps(payload["body"], separators=(",", ":"), ensure_ascii=False).encode()
            headers.setdefault("Content-Type", "application/json")
        keys = self.signing_secrets.for_host(host)
        if keys:
            timestamp = int(time.time())
            headers["webhook-id"] = message_id
            headers["webhook-timestamp"] = str(timestamp)
            headers["webhook-signature"] = sign(keys, message_id, timestamp, body or b"")
        return method, parsed, headers, body

    def _timeout(self, job: ClaimedJob) -> aiohttp.ClientTimeout:
        total = self.total_timeout
        if job.timeout_seconds:
            # a little under the job's timeout, so this fires (with details) before the worker's own
            total = min(total, job.timeout_seconds * 0.95)
        return aiohttp.ClientTimeout(total=total, sock_connect=min(self.connect_timeout, total),
                                     sock_read=min(self.read_timeout, total))

    # -- sending --------------------------------------------------------------------------------

    async def _read(self, response: aiohttp.ClientResponse) -> tuple[bytes, bool]:
        """At most ``max_body`` bytes of the body, and whether there was more."""
        chunks: list[bytes] = []
        size = 0
        while size < self.max_body:
            chunk = await response.content.read(self.max_body - size)
            if not chunk:
                return b"".join(chunks), False
            chunks.append(chunk)
            size += len(chunk)
        more = await response.content.read(1)
        return b"".join(chunks), bool(more)

    async def execute(self, job: ClaimedJob) -> dict[str, Any]:
        """Send the job's request; the result on 2xx, else raises (see the module docstring)."""
        method, url, headers, body = self._request(job)
        timeout = self._timeout(job)
        session = self._get_session()
        started = time.monotonic()
        try:
            async with session.request(method, url, headers=headers, data=body, allow_redirects=False,
                                       timeout=timeout) as response:
                content, truncated = await self._read(response)
                if truncated:
                    response.close()  # do not drain the rest; drop the connection instead
                status, reason = response.status, response.reason or ""
                kept = _kept_headers(response.headers)
                try:
                    text = content.decode(response.charset or "utf-8", errors="replace")
                except LookupError:
                    text = content.decode("utf-8", errors="replace")
        except TargetRefused:
            raise
        except aiohttp.ConnectionTimeoutError as exc:
            raise HttpError(f"connect timeout after {timeout.sock_connect:g} s",
                            details={"error": "connect_timeout"}) from exc
        except aiohttp.SocketTimeoutError as exc:
            raise HttpError(f"read timeout: no data for {timeout.sock_read:g} s",
                            details={"error": "read_timeout"}) from exc
        except TimeoutError as exc:
            raise HttpError(f"timed out after {timeout.total:g} s (total)", details={"error": "timeout"}) from exc
        except aiohttp.InvalidURL as exc:
            raise Permanent(f"invalid url: {exc}", details={"error": "invalid_url"}) from exc
        except aiohttp.ClientConnectorDNSError as exc:
            raise HttpError(f"cannot resolve {url.raw_host}: {exc.os_error}",
                            details={"error": "dns", "host": url.raw_host}) from exc
        except aiohttp.ClientError as exc:
            raise HttpError(f"connection error: {type(exc).__name__}: {exc}",
                            details={"error": "connection", "exception": type(exc).__name__}) from exc
        elapsed_ms = round((time.monotonic() - started) * 1000, 1)
        if 200 <= status < 300:
            return {"status": status, "headers": kept, "body": text, "truncated": truncated, "elapsed_ms": elapsed_ms}
        cut = text.encode()[:DETAILS_BODY_BYTES].decode(errors="ignore")
        details = {"status": status, "headers": kept, "body": cut,
                   "truncated": truncated or len(cut) < len(text), "elapsed_ms": elapsed_ms}
        summary = f"HTTP {status} {reason}".rstrip()
        if status in RETRY_STATUSES or 500 <= status < 600:
            wait = parse_retry_after(response.headers.get("Retry-After"))
            if wait is not None:
                details["retry_after_seconds"] = wait
                raise RetryAfter(wait, f"{summary} (Retry-After: {wait:g} s)", details=details)
            raise HttpError(summary, details=details)
        if 300 <= status < 400:
            location = kept.get("location")
            raise Permanent(f"{summary}: redirects are not followed" + (f" (Location: {location})" if location else ""),
                            details=details)
        raise Permanent(summary, details=details)
