"""A real HTTP server on 127.0.0.1 for the HTTP-job tests (http.server in a thread, so sync and async
tests and a jobs-worker subprocess can all use it). It records every request it receives.

Paths: ``/ok`` (200 JSON), ``/status/<code>?retry_after=..&location=..&body=..``, ``/big?size=N``,
``/slow?delay=S`` (headers after S seconds), ``/trickle?chunks=N&every=S`` (body a byte at a time),
``/close`` (200 and ``Connection: close``). Any path ends with the query kept in ``path``.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]  # lowercased names
    body: bytes


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, *_: Any) -> None:  # quiet
        pass

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.received.append(
            Received(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body))
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        path = parts.path
        if path == "/ok" or path == "/close":
            payload = json.dumps({"ok": True, "n": len(self.server.received)}).encode()
            headers = {"Content-Type": "application/json", "X-Request-Id": "req-123", "Set-Cookie": "s=1",
                       "X-Secret-Internal": "not kept"}
            if path == "/close":
                headers["Connection"] = "close"
                self.close_connection = True
            self._send(200, payload, headers)
        elif path.startswith("/status/"):
            code = int(path.rsplit("/", 1)[1])
            headers = {"Content-Type": "text/plain; charset=utf-8"}
            if "retry_after" in query:
                headers["Retry-After"] = query["retry_after"]
            if "location" in query:
                headers["Location"] = query["location"]
            self._send(code, query.get("body", f"status {code}").encode(), headers)
        elif path == "/big":
            self._send(200, b"x" * int(query.get("size", "1048576")), {"Content-Type": "text/plain"})
        elif path == "/slow":
            time.sleep(float(query.get("delay", "5")))
            self._send(200, b"late", {"Content-Type": "text/plain"})
        elif path == "/trickle":
            chunks, every = int(query.get("chunks", "50")), float(query.get("every", "0.2"))
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(chunks))
            self.end_headers()
            try:
                for _ in range(chunks):
                    self.wfile.write(b".")
                    self.wfile.flush()
                    time.sleep(every)
            except OSError:
                pass
        else:
            self._send(404, b"no such path", {"Content-Type": "text/plain"})

    def _send(self, code: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(code)
        for name, value in headers.items():
            self.send_header(name, value)
        if code not in (204, 304):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if code not in (204, 304) and self.command != "HEAD":
            try:
                self.wfile.write(body)
            except OSError:
                pass

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _handle


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.received: list[Received] = []


class WebhookServer:
    """``with WebhookServer() as server: server.url("/ok")``; ``server.received`` lists the requests."""

    def __init__(self) -> None:
        self._server = _Server()
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def received(self) -> list[Received]:
        return self._server.received

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def __enter__(self) -> WebhookServer:
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._server.shutdown()
        self._server.server_close()
