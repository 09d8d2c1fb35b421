"""HTTP servers on loopback addresses that count the connections they accept: what an HTTP task
reached, or did not (the SSRF tests, in-process and on a real node)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from helpers import send_json


class Handler(BaseHTTPRequestHandler):
    """200 with what was asked; /redirect?to=URL answers 302 to URL."""

    server: CountingServer

    def do_GET(self) -> None:
        self.server.requests.append({"path": self.path, "host": self.headers.get("Host")})
        if self.path.startswith("/redirect?to="):
            self.send_response(302)
            self.send_header("Location", self.path.split("=", 1)[1])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        send_json(self, {"served_by": self.server.name, "path": self.path})

    def log_message(self, format: str, *args: Any) -> None:
        pass


class CountingServer(ThreadingHTTPServer):
    """An HTTP server that counts the connections it accepts (before reading anything)."""

    daemon_threads = True

    def __init__(self, host: str, port: int = 0, name: str = "") -> None:
        super().__init__((host, port), Handler)
        self.name = name or host
        self.connections = 0
        self.requests: list[dict[str, Any]] = []
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    def get_request(self) -> tuple[socket.socket, Any]:
        accepted = super().get_request()
        self.connections += 1
        return accepted

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def close(self) -> None:
        self.shutdown()
        self.server_close()


def pair_of_servers() -> tuple[CountingServer, CountingServer]:
    """A server on 127.0.0.2 (allowed) and one on 127.0.0.1 (not) on the same port number."""
    for _ in range(20):
        allowed = CountingServer("127.0.0.2", name="allowed")
        try:
            return allowed, CountingServer("127.0.0.1", allowed.port, name="forbidden")
        except OSError:
            allowed.close()
    raise AssertionError("no port free on both 127.0.0.1 and 127.0.0.2")


@contextmanager
def allowed_and_forbidden() -> Iterator[tuple[CountingServer, CountingServer]]:
    """The pair of `pair_of_servers`, closed when done."""
    allowed, forbidden = pair_of_servers()
    try:
        yield allowed, forbidden
    finally:
        allowed.close()
        forbidden.close()
