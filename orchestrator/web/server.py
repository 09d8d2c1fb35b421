"""The console's HTTP server: uvicorn's `Server` as a task of the node's event loop.

The listening socket is bound here, before uvicorn starts, so a taken port is an error the
node reports at startup (uvicorn itself would log and call `sys.exit`). uvicorn installs no
signal handlers: SIGTERM and SIGINT stay the node's, which stops this server with the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Generator
from typing import Any

import uvicorn
from starlette.types import ASGIApp

from ..cluster.tls import TlsFiles

log = logging.getLogger(__name__)


class _NodeOwnedServer(uvicorn.Server):
    """uvicorn without its signal handlers: the node owns SIGTERM and SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def bind(address: str) -> socket.socket:
    """A listening TCP socket on `address` (host:port, IPv6 hosts in brackets). Raises OSError
    (in use, not an address of this host) or ValueError (not host:port)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"{address!r} is not host:port")
    host = host.strip("[]") or "0.0.0.0"
    family, kind, proto, _, sockaddr = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM,
                                                          flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # a restart may follow a close at once
        sock.bind(sockaddr)
        sock.listen(128)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class ConsoleServer:
    """Bind first (`bind`: a taken port is known before anything else starts), serve later (`start`)."""

    def __init__(self, address: str, tls: TlsFiles | None = None) -> None:
        self.address = address
        self.tls = tls
        self._socket: socket.socket | None = None
        self._server: _NodeOwnedServer | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def bound(self) -> str:
        """host:port actually bound (the port chosen when `address` asked for port 0)."""
        if self._socket is None:
            return self.address
        host, port = self._socket.getsockname()[:2]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def bind(self) -> None:
        """Bind the port now; OSError or ValueError when it cannot be."""
        self._socket = bind(self.address)

    async def start(self, app: ASGIApp) -> None:
        if self._socket is None:
            self.bind()
        tls: dict[str, Any] = {}
        if self.tls is not None:   # the node's certificate; under mutual TLS, browsers and clients present theirs
            tls = {"ssl_certfile": self.tls.cert_file, "ssl_keyfile": self.tls.key_file,
                   "ssl_ca_certs": self.tls.ca_file or None,
                   "ssl_cert_reqs": ssl.CERT_REQUIRED if self.tls.mutual else ssl.CERT_NONE}
        config = uvicorn.Config(app, lifespan="off", http="httptools", ws="none", log_config=None,
                                log_level="warning", access_log=False, timeout_graceful_shutdown=1,
                                server_header=False, **tls)
        self._server = _NodeOwnedServer(config)
        assert self._socket is not None
        self._task = asyncio.create_task(self._server.serve(sockets=[self._socket]), name="console")

    async def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), 3.0)
            except TimeoutError:
                self._task.cancel()
            except Exception:
                log.exception("the console server ended with an error")
        if self._socket is not None:
            self._socket.close()
