"""How a test talks to the real PostgREST 12.0.2 that tests/postgrest/conftest.py starts.

    api.call("producer", "POST", "/rpc/enqueue", {"task": "mail.send"})   -> Response
    api.call(None, "GET", "/queue_stats", query={"queue": "eq.mail"})     (None: no JWT, the anon role)
    api.send("POST", "/rpc/enqueue", headers={...}, body=b"...")         the raw request, nothing added

``call`` signs a JWT ``{"role": "pgrelay_<role>"}`` with the server's secret and fails the test on any
5xx answer: pgrelay must never make PostgREST answer with a server error.
"""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

import jwt

ROLES = ("producer", "worker", "admin", "reader")


def role_name(role: str) -> str:
    """The database role behind a short name: producer -> pgrelay_producer."""
    return f"pgrelay_{role}"


def make_jwt(secret: str, claims: Mapping[str, Any]) -> str:
    return jwt.encode(dict(claims), secret, algorithm="HS256")


@dataclass(frozen=True)
class Response:
    status: int
    headers: Mapping[str, str]  # lower-case names
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode()

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def code(self) -> str | None:
        """The error code of an error answer (a SQLSTATE or PGRSTnnn)."""
        if self.status < 400 or not self.body:
            return None
        return self.json.get("code")

    def __str__(self) -> str:
        return f"{self.status} {self.body[:500].decode(errors='replace')}"


Transport = Callable[[str, str, Mapping[str, str], bytes | None], Response]


@dataclass
class Api:
    """Requests to one running PostgREST; ``name`` says which in failure messages."""

    name: str
    transport: Transport
    jwt_secret: str
    base_url: str
    sent: list[tuple[str, str, int]] = field(default_factory=list)

    def token(self, role: str) -> str:
        return make_jwt(self.jwt_secret, {"role": role_name(role)})

    def send(self, method: str, target: str, headers: Mapping[str, str] | None = None,
             body: bytes | None = None) -> Response:
        response = self.transport(method, target, dict(headers or {}), body)
        self.sent.append((method, target, response.status))
        return response

    def call(self, role: str | None, method: str, path: str, body: Any = None, *,
             query: Mapping[str, str] | None = None, token: str | None = None,
             headers: Mapping[str, str] | None = None) -> Response:
        all_headers = {"Accept": "application/json"}
        if token is not None:
            all_headers["Authorization"] = f"Bearer {token}"
        elif role is not None:
            all_headers["Authorization"] = f"Bearer {self.token(role)}"
        data = None
        if body is not None:
            all_headers["Content-Type"] = "application/json"
            data = json.dumps(body).encode()
        all_headers.update(headers or {})
        target = path + ("?" + urlencode(query) if query else "")
        response = self.send(method, target, all_headers, data)
        assert response.status < 500, f"{self.name}: {method} {target} as {role}: a server error: {response}"
        return response

    # shorthands for the common case: a POST to /rpc/<function> that must succeed
    def rpc(self, role: str, function: str, **args: Any) -> Any:
        response = self.call(role, "POST", f"/rpc/{function}", args)
        assert response.status == 200, f"{self.name}: /rpc/{function} as {role}: {response}"
        return response.json

    def rows(self, role: str, relation: str, **filters: str) -> list[dict[str, Any]]:
        response = self.call(role, "GET", f"/{relation}", query={k: f"eq.{v}" for k, v in filters.items()})
        assert response.status == 200, f"{self.name}: GET /{relation} as {role}: {response}"
        return response.json


def http_transport(base_url: str, timeout: float = 10.0) -> Transport:
    """Plain HTTP/1.1 to a running server (http.client: no redirects followed, no retries)."""
    parts = urlsplit(base_url)
    assert parts.hostname and parts.port

    def send(method: str, target: str, headers: Mapping[str, str], body: bytes | None) -> Response:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
        try:
            conn.request(method, target, body=body, headers=dict(headers))
            answer = conn.getresponse()
            return Response(answer.status, {k.lower(): v for k, v in answer.getheaders()}, answer.read())
        finally:
            conn.close()

    return send


def wait_for(condition: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} not reached in {timeout} s"
        time.sleep(0.05)
