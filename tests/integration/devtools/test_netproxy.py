"""devtools/netproxy.py: a TCP proxy that holds, black-holes, drops and releases a link on purpose.

Against an echo server (which records what reached it), then between a Redis replica and its
master, which is what tests/integration/store/test_durability.py builds on."""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Iterator

import pytest
import redis

from devtools.netproxy import BOTH, TO_CLIENT, TO_UPSTREAM, NetProxy
from devtools.procs import start_redis
from helpers import serving


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        server = self.server
        assert isinstance(server, EchoServer)   # the one server this handler serves
        while True:
            try:
                data = self.request.recv(65536)
            except OSError:
                return
            if not data:
                server.closed.set()
                return
            with server.lock:
                server.received += data
            try:
                self.request.sendall(data)
            except OSError:
                return


class EchoServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Echo)
        self.received = b""
        self.lock = threading.Lock()
        self.closed = threading.Event()

    @property
    def port(self) -> int:
        return int(self.server_address[1])


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    with serving(EchoServer(), poll_interval=0.05) as server:
        yield server


@pytest.fixture
def proxy(echo: EchoServer) -> Iterator[NetProxy]:
    with NetProxy(echo.port) as started:
        yield started


def connect(proxy: NetProxy) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=2.0)
    sock.settimeout(0.3)
    return sock


def receive(sock: socket.socket, size: int, timeout_s: float = 2.0) -> bytes:
    """Up to `size` bytes, waiting at most `timeout_s` for them."""
    got = b""
    deadline = time.monotonic() + timeout_s
    while len(got) < size and time.monotonic() < deadline:
        try:
            chunk = sock.recv(size - len(got))
        except TimeoutError:
            continue
        if not chunk:
            break
        got += chunk
    return got


def silent(sock: socket.socket, wait_s: float = 0.3) -> bool:
    """Nothing arrives within `wait_s`."""
    sock.settimeout(wait_s)
    try:
        sock.recv(1, socket.MSG_PEEK)
    except TimeoutError:
        return True
    finally:
        sock.settimeout(0.3)
    return False


def test_forwards_both_ways(proxy: NetProxy, echo: EchoServer) -> None:
    with connect(proxy) as sock:
        sock.sendall(b"hello")
        assert receive(sock, 5) == b"hello"
    stats = proxy.stats()
    assert stats.accepted == 1 and stats.forwarded == {TO_UPSTREAM: 5, TO_CLIENT: 5}


def test_hold_keeps_bytes_in_order_until_release(proxy: NetProxy, echo: EchoServer) -> None:
    with connect(proxy) as sock:
        proxy.hold(TO_CLIENT)
        sock.sendall(b"one,")
        sock.sendall(b"two,")
        assert silent(sock)                       # the server answered; the proxy keeps the answer
        assert echo.received == b"one,two,"
        assert proxy.stats().held[TO_CLIENT] == 8
        proxy.release()
        assert receive(sock, 8) == b"one,two,"
        sock.sendall(b"three")
        assert receive(sock, 5) == b"three"
        assert proxy.stats().held[TO_CLIENT] == 0

        proxy.hold(TO_UPSTREAM)                   # the other way: the server hears nothing
        sock.sendall(b"four")
        assert silent(sock)
        assert echo.received == b"one,two,three"
        proxy.release()
        assert receive(sock, 4) == b"four"


def test_black_hole_discards_and_keeps_connections(proxy: NetProxy, echo: EchoServer) -> None:
    with connect(proxy) as sock:
        proxy.black_hole(BOTH)
        sock.sendall(b"lost")
        assert silent(sock)
        assert echo.received == b""
        assert proxy.stats().discarded[TO_UPSTREAM] == 4 and proxy.stats().open == 1
        proxy.release()
        assert silent(sock, 0.2)                 # what vanished stays vanished
        sock.sendall(b"back")
        assert receive(sock, 4) == b"back"


def test_drop_resets_both_ends_and_discards_what_was_held(proxy: NetProxy, echo: EchoServer) -> None:
    sock = connect(proxy)
    proxy.hold(TO_CLIENT)
    sock.sendall(b"held")
    deadline = time.monotonic() + 2
    while proxy.stats().held[TO_CLIENT] < 4:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    proxy.drop()
    try:
        ended = sock.recv(1) == b""          # closed
    except ConnectionResetError:
        ended = True                          # reset
    assert ended
    sock.close()
    assert echo.closed.wait(2.0)                  # the server's side was closed too
    stats = proxy.stats()
    assert stats.open == 0 and stats.discarded[TO_CLIENT] == 4 and stats.held[TO_CLIENT] == 0
    proxy.release()
    with connect(proxy) as again:                 # new connections are accepted as before
        again.sendall(b"new")
        assert receive(again, 3) == b"new"


def test_a_server_that_is_not_there_resets_the_client(echo: EchoServer) -> None:
    with NetProxy(echo.port) as proxy:
        echo.shutdown()
        echo.server_close()
        with connect(proxy) as sock:
            assert receive(sock, 1) == b""


def test_holds_a_redis_replication_stream(tmp_path) -> None:
    """The master's stream to its replica, held: the replica falls behind; released: it catches up."""
    master = start_redis(tmp_path / "master", appendonly=False)
    redis.Redis(port=master.port).config_set("repl-diskless-sync-delay", 0)   # sync at once, not in 5 s
    proxy = NetProxy(master.port).start()
    replica = start_redis(tmp_path / "replica", appendonly=False, replica_of=proxy.port)
    try:
        source, copy = redis.Redis(port=master.port), redis.Redis(port=replica.port)
        deadline = time.monotonic() + 10
        while copy.info("replication")["master_link_status"] != "up":
            assert time.monotonic() < deadline, "the replica never synced through the proxy"
            time.sleep(0.05)
        source.set("before", 1)
        assert source.wait(1, 2000) == 1
        proxy.hold(TO_CLIENT)
        source.set("during", 1)
        assert source.wait(1, 300) == 0           # WAIT sees the replica behind
        assert copy.get("during") is None
        proxy.release()
        assert source.wait(1, 2000) == 1
        assert copy.get("during") == b"1"
    finally:
        replica.stop()
        proxy.stop()
        master.stop()
