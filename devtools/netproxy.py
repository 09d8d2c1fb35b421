"""A TCP proxy on loopback that breaks a link on purpose: hold, black-hole, drop, release.

Put it between a client and a server (a Redis replica and its master: `replicaof 127.0.0.1
<proxy port>`; a node and its Redis) and drive the link from a test:

- `hold(direction)`: bytes going that way are kept, in order, instead of sent; the connections
  stay open, so neither end notices anything but silence (a slow or stalled link);
- `black_hole(direction)`: bytes going that way are read and thrown away (a link whose packets
  vanish); the connections stay open;
- `release()`: every direction forwards again, what was held first, in order;
- `drop()`: every connection is reset at both ends and whatever was held is thrown away (the
  link dies); new connections are accepted as before, in the current modes.

Directions are seen from the proxy: TO_UPSTREAM (client -> server), TO_CLIENT (server -> client),
or BOTH. Modes also apply to connections made later. An end that closes its side while its
direction is held or black-holed is not passed on until `release()` (held) or ever (black hole).

The proxy runs its own event loop in a daemon thread, so synchronous tests call its methods
directly; each returns once the change is in effect. Nothing here is a product dependency.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

__all__ = ["BOTH", "TO_CLIENT", "TO_UPSTREAM", "NetProxy", "ProxyStats"]

TO_UPSTREAM = "to_upstream"   # client -> server
TO_CLIENT = "to_client"       # server -> client
BOTH = "both"
_DIRECTIONS = (TO_UPSTREAM, TO_CLIENT)
_PASS, _HOLD, _DISCARD = "pass", "hold", "discard"
_LOOPBACK = "127.0.0.1"
_CHUNK = 65536
_CALL_TIMEOUT_S = 10.0

T = TypeVar("T")


@dataclass
class ProxyStats:
    """What went through the proxy since it started (bytes), and what it holds now."""

    accepted: int = 0                     # connections accepted
    open: int = 0                         # connections open now
    forwarded: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_DIRECTIONS, 0))
    held: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_DIRECTIONS, 0))       # kept now
    discarded: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_DIRECTIONS, 0))  # black hole, drop


class _Link:
    """One proxied connection: the client's and the server's streams, and what each way holds."""

    def __init__(self, client: asyncio.StreamWriter, upstream: asyncio.StreamWriter) -> None:
        self.writers = {TO_UPSTREAM: upstream, TO_CLIENT: client}
        self.held: dict[str, list[bytes]] = {d: [] for d in _DIRECTIONS}
        self.ended: dict[str, bool] = dict.fromkeys(_DIRECTIONS, False)   # its source closed while held
        self.closed = False

    def abort(self) -> None:
        self.closed = True
        for writer in self.writers.values():
            writer.transport.abort()

    def close(self) -> None:
        self.closed = True
        for writer in self.writers.values():
            writer.close()


class NetProxy:
    """Forwards every connection made to `port` (a free one by default) to upstream_host:upstream_port."""

    def __init__(self, upstream_port: int, *, upstream_host: str = _LOOPBACK, port: int = 0,
                 host: str = _LOOPBACK) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.host = host
        self.port = port
        self._modes = dict.fromkeys(_DIRECTIONS, _PASS)
        self._links: set[_Link] = set()
        self._stats = ProxyStats()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> NetProxy:
        """Listen (on a free port unless one was given) and forward; returns once listening."""
        loop = self._loop = asyncio.new_event_loop()
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                self._server = loop.run_until_complete(asyncio.start_server(self._accept, self.host, self.port))
                self.port = int(self._server.sockets[0].getsockname()[1])
            except BaseException as exc:
                ready.set_exception(exc)
                return
            ready.set_result(None)
            loop.run_forever()

        self._thread = threading.Thread(target=run, name=f"netproxy-{self.upstream[1]}", daemon=True)
        self._thread.start()
        try:
            ready.result(_CALL_TIMEOUT_S)
        except BaseException:
            self._thread.join(_CALL_TIMEOUT_S)
            loop.close()
            raise
        return self

    def stop(self) -> None:
        """Reset every connection, stop listening, end the thread. Idempotent."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return

        async def shutdown() -> None:
            self._drop()
            if self._server is not None:
                self._server.close()
            await asyncio.sleep(0)

        if self._thread is not None and self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(shutdown(), loop).result(_CALL_TIMEOUT_S)
            loop.call_soon_threadsafe(loop.stop)
            self._thread.join(_CALL_TIMEOUT_S)
        loop.close()

    def __enter__(self) -> NetProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ breaking the link

    def hold(self, direction: str = BOTH) -> None:
        """Keep what goes `direction` (in order) instead of sending it, until `release()`."""
        self._call(self._set, direction, _HOLD)

    def black_hole(self, direction: str = BOTH) -> None:
        """Throw away what goes `direction`; the connections stay open."""
        self._call(self._set, direction, _DISCARD)

    def release(self) -> None:
        """Forward both ways again: first what was held, in order (and a close that was held)."""
        self._call(self._release)

    def drop(self) -> None:
        """Reset every open connection at both ends, throwing away whatever is held."""
        self._call(self._drop)

    def stats(self) -> ProxyStats:
        """A copy of the counters, taken in the proxy's thread."""
        return self._call(lambda: ProxyStats(self._stats.accepted, len(self._links), dict(self._stats.forwarded),
                                             dict(self._stats.held), dict(self._stats.discarded)))

    # ------------------------------------------------------------------ in the proxy's thread

    def _call(self, fn: Callable[..., T], *args: Any) -> T:
        loop = self._loop
        if loop is None or loop.is_closed():
            raise RuntimeError("the proxy is not running (start() it first)")
        done: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                done.set_result(fn(*args))
            except BaseException as exc:
                done.set_exception(exc)

        loop.call_soon_threadsafe(run)
        return done.result(_CALL_TIMEOUT_S)

    def _set(self, direction: str, mode: str) -> None:
        for one in _directions(direction):
            if mode != _HOLD and self._modes[one] == _HOLD:
                self._flush(one)     # held bytes are not lost by switching from hold to a black hole
            self._modes[one] = mode

    def _release(self) -> None:
        for direction in _DIRECTIONS:
            self._flush(direction)
            self._modes[direction] = _PASS

    def _flush(self, direction: str) -> None:
        """Send what each link holds going `direction`, then pass a close that was held."""
        for link in list(self._links):
            chunks, link.held[direction] = link.held[direction], []
            size = sum(map(len, chunks))
            self._stats.held[direction] -= size
            if link.closed:
                continue
            if chunks:
                link.writers[direction].write(b"".join(chunks))
                self._stats.forwarded[direction] += size
            if link.ended[direction]:
                link.close()

    def _drop(self) -> None:
        for link in list(self._links):
            for direction in _DIRECTIONS:
                size = sum(map(len, link.held[direction]))
                link.held[direction] = []
                self._stats.held[direction] -= size
                self._stats.discarded[direction] += size
            link.abort()
        self._links.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._stats.accepted += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.transport.abort()   # the server is not there: the client sees its connection reset
            return
        link = _Link(writer, up_writer)
        self._links.add(link)
        try:
            await asyncio.gather(self._pump(link, TO_UPSTREAM, reader), self._pump(link, TO_CLIENT, up_reader))
        finally:
            self._links.discard(link)
            if not link.closed:
                link.abort()

    async def _pump(self, link: _Link, direction: str, source: asyncio.StreamReader) -> None:
        target = link.writers[direction]
        while not link.closed:
            try:
                data = await source.read(_CHUNK)
            except (ConnectionError, OSError):
                data = b""
            if link.closed:
                return
            mode = self._modes[direction]
            if not data:   # the source closed its side
                if mode == _PASS:
                    link.close()
                elif mode == _HOLD:
                    link.ended[direction] = True
                    await _until_closed(link)
                else:
                    await _until_closed(link)
                return
            if mode == _PASS:
                target.write(data)
                self._stats.forwarded[direction] += len(data)
                try:
                    await target.drain()
                except (ConnectionError, OSError):
                    link.abort()
                    return
            elif mode == _HOLD:
                link.held[direction].append(data)
                self._stats.held[direction] += len(data)
            else:
                self._stats.discarded[direction] += len(data)


async def _until_closed(link: _Link) -> None:
    """Keep a link whose source closed (its close held back) until it is released or dropped."""
    while not link.closed:
        await asyncio.sleep(0.05)


def _directions(direction: str) -> tuple[str, ...]:
    if direction == BOTH:
        return _DIRECTIONS
    if direction not in _DIRECTIONS:
        raise ValueError(f"direction must be {TO_UPSTREAM!r}, {TO_CLIENT!r} or {BOTH!r}, not {direction!r}")
    return (direction,)
