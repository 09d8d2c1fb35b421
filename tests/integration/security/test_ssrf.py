"""HTTP tasks are kept from addresses, not from spellings (issue 22 item 4).

The guard compared the URL's text with the etcd and Redis endpoints, so `http://0.0.0.0:2379`,
`127.1`, `2130706433`, `0x7f000001` and `[::ffff:127.0.0.1]` passed, and cloud metadata at
169.254.169.254 was not considered at all. Now the node resolves the host itself, judges every
address (loopback, link-local, unspecified, multicast, private and reserved ones are refused
unless `http_task_allow_cidrs` lists their range; etcd and Redis always), and connects to the
address it judged, for the first request and for every redirect.

On a real node whose settings allow only 127.0.0.2/32 (so 127.0.0.1, the loopback address every
spelling below reaches, keeps the default): a server on 127.0.0.1 that counts connections sees
none, whatever the spelling, directly or as the target of a redirect from the allowed server,
and each task fails at once with one line naming the address class. Beside it, in-process: the
policy's classes, the default, a name that resolves elsewhere on a second look (DNS rebinding)
is connected to where it was checked, and TLS is verified against the name, not that address.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from devtools.certs import make_dev_certs
from devtools.local_cluster import start_node, wait_for_leader
from devtools.procs import free_port
from helpers import send_json, unique, wait_for_status
from orchestrator.cluster.http_tasks import AddressGuard, guarded_client
from orchestrator.config import NodeConfig
from orchestrator.core.http_request import AddressDenied, AddressPolicy, address_class
from worker import WorkflowClient


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


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[CountingServer, CountingServer]]:
    allowed, forbidden = pair_of_servers()
    try:
        yield allowed, forbidden
    finally:
        allowed.close()
        forbidden.close()


@pytest.fixture(scope="module")
def strict_node(tmp_path_factory: pytest.TempPathFactory, etcd: Any, redis_server: Any) -> Iterator[WorkflowClient]:
    """A node with the default policy, except that 127.0.0.2 (and only it) is allowed."""
    port = free_port()
    process = start_node(tmp_path_factory.mktemp("ssrf"), node_id="ssrf", port=port, redis_url=redis_server.url,
                         etcd_endpoints=etcd.endpoints, cluster=f"t{uuid.uuid4().hex[:8]}", lease_ttl_s=2.0,
                         http_port=0, extra=["--http-task-allow-cidrs", "127.0.0.2/32"])
    client = WorkflowClient([f"127.0.0.1:{port}"])
    try:
        wait_for_leader(client, 20.0)
        yield client
    finally:
        client.close()
        process.stop()


def run_http_task(client: WorkflowClient, uri: str, kind: str = "HTTP") -> dict[str, Any]:
    """The call task of a one-task workflow calling `uri`, once it ended (retries would only repeat it)."""
    name = unique("ssrf")
    client.register_task_def({"name": f"{name}_call", "retryCount": 0})
    request: dict[str, Any] = {"uri": uri, "method": "GET", "connectionTimeOut": 2000, "readTimeOut": 2000}
    if kind == "HTTP_POLL":
        request.update(pollingInterval=0, maxPollCount=1, terminationCondition="true")
    client.register_workflow_def({"name": name, "tasks": [{"name": f"{name}_call", "taskReferenceName": "call",
                                                           "type": kind,
                                                           "inputParameters": {"http_request": request}}]})
    workflow = wait_for_status(client, client.start_workflow(name, {}), {"COMPLETED", "FAILED"})
    return next(t for t in workflow["tasks"] if t["reference_name"] == "call")


SPELLINGS = ["127.0.0.1", "127.1", "2130706433", "0x7f000001", "017700000001", "0177.0.0.1", "[::ffff:127.0.0.1]",
             "[::ffff:7f00:1]", "localhost", "0.0.0.0", "0"]


@pytest.mark.parametrize("host", SPELLINGS)
def test_no_spelling_of_this_machine_is_reached(strict_node: WorkflowClient, servers: Any, host: str) -> None:
    _, forbidden = servers
    before = forbidden.connections
    task = run_http_task(strict_node, f"http://{host}:{forbidden.port}/secret")
    assert task["status"] == "FAILED_WITH_TERMINAL_ERROR", task
    kind = "unspecified" if host in ("0.0.0.0", "0") else "loopback"
    expected = "not a URL to call: Invalid IPv4 address" if host == "0177.0.0.1" else \
        f"is a {kind} address: HTTP tasks may not call"   # httpx reads no octal part; getaddrinfo would
    assert expected in task["reason"], task["reason"]
    assert "\n" not in task["reason"]
    assert forbidden.connections == before, f"{host} reached the server on 127.0.0.1"


@pytest.mark.parametrize("uri,kind", [
    ("http://169.254.169.254/latest/meta-data/iam/security-credentials/", "link-local"),
    ("http://[fe80::1]/", "link-local"),
    ("http://10.0.0.1/", "private"),
    ("http://192.168.1.1:8080/admin", "private"),
    ("http://[fd00::1]/", "private"),
    ("http://224.0.0.1/", "multicast"),
    ("http://[::]/", "unspecified"),
    ("http://[::1]:9/", "loopback"),
])
def test_metadata_private_and_other_special_addresses_are_refused_by_class(strict_node: WorkflowClient,
                                                                           uri: str, kind: str) -> None:
    task = run_http_task(strict_node, uri)
    assert task["status"] == "FAILED_WITH_TERMINAL_ERROR", task
    assert f"is a {kind} address" in task["reason"], task["reason"]


def test_http_poll_is_held_to_the_same_addresses(strict_node: WorkflowClient, servers: Any) -> None:
    _, forbidden = servers
    before = forbidden.connections
    task = run_http_task(strict_node, f"http://0x7f000001:{forbidden.port}/poll", kind="HTTP_POLL")
    assert task["status"] == "FAILED_WITH_TERMINAL_ERROR" and "loopback address" in task["reason"], task
    assert forbidden.connections == before


def test_an_allowed_range_is_called(strict_node: WorkflowClient, servers: Any) -> None:
    allowed, _ = servers
    task = run_http_task(strict_node, f"http://127.0.0.2:{allowed.port}/ok")
    assert task["status"] == "COMPLETED", task
    assert task["output"]["response"]["body"] == {"served_by": "allowed", "path": "/ok"}


@pytest.mark.parametrize("target", ["http://127.0.0.1:{port}/secret", "http://0x7f000001:{port}/secret",
                                    "http://[::ffff:127.0.0.1]:{port}/secret", "http://localhost:{port}/secret",
                                    "http://169.254.169.254/latest/meta-data/"])
def test_a_redirect_from_an_allowed_server_to_a_refused_address_is_not_followed(
        strict_node: WorkflowClient, servers: Any, target: str) -> None:
    allowed, forbidden = servers
    before, asked = forbidden.connections, len(allowed.requests)
    to = target.format(port=forbidden.port)
    task = run_http_task(strict_node, f"http://127.0.0.2:{allowed.port}/redirect?to={to}")
    assert len(allowed.requests) == asked + 1   # the allowed server was called and answered 302
    assert task["status"] == "FAILED_WITH_TERMINAL_ERROR", task
    assert "address: HTTP tasks may not call" in task["reason"], task["reason"]
    assert forbidden.connections == before, f"the redirect to {to} reached the server on 127.0.0.1"


def test_etcd_is_refused_even_where_the_range_is_allowed(strict_node: WorkflowClient, etcd: Any) -> None:
    """127.0.0.2 is allowed, and is this machine, where etcd listens on the same port."""
    port = etcd.endpoints[0].rpartition(":")[2]
    task = run_http_task(strict_node, f"http://127.0.0.2:{port}/v3/kv/range")
    assert task["status"] == "FAILED_WITH_TERMINAL_ERROR"
    assert "is the cluster's own etcd or Redis" in task["reason"], task["reason"]


# ---------------------------------------------------------------- in-process: the policy and the connection


def test_a_node_allows_no_special_address_by_default() -> None:
    assert NodeConfig().http_task_allow_cidrs == []
    policy = AddressPolicy.from_cidrs(NodeConfig().http_task_allow_cidrs)
    for text in ("127.0.0.1", "::1", "0.0.0.0", "::", "::ffff:127.0.0.1", "169.254.169.254", "fe80::1", "10.1.2.3",
                 "172.16.0.1", "192.168.0.1", "100.64.0.1", "fd12::1", "224.0.0.1", "ff02::1", "255.255.255.255",
                 "192.0.2.1", "2001:db8::1", "2002:7f00:1::", "64:ff9b::a9fe:a9fe", "::7f00:1"):
        assert policy.denied(ipaddress.ip_address(text)) is not None, text
    for text in ("93.184.216.34", "2606:4700::1111", "8.8.8.8"):
        assert policy.denied(ipaddress.ip_address(text)) is None, text


@pytest.mark.parametrize("text,kind", [
    ("::ffff:169.254.169.254", "link-local"), ("::ffff:10.0.0.1", "private"), ("0.1.2.3", "unspecified"),
    ("2002:a9fe:a9fe::", "link-local"), ("64:ff9b::7f00:1", "loopback")])
def test_ipv4_inside_ipv6_is_judged_as_the_ipv4_address(text: str, kind: str) -> None:
    assert address_class(ipaddress.ip_address(text)) == kind


def test_allowed_ranges_cover_their_class_but_never_the_unspecified_address() -> None:
    policy = AddressPolicy.from_cidrs(["10.0.0.0/8", "127.0.0.0/8", "0.0.0.0/0"])
    assert policy.denied(ipaddress.ip_address("10.9.8.7")) is None
    assert policy.denied(ipaddress.ip_address("::ffff:10.9.8.7")) is None
    assert policy.denied(ipaddress.ip_address("127.0.0.1")) is None
    assert policy.denied(ipaddress.ip_address("0.0.0.0")) == "unspecified"
    assert policy.denied(ipaddress.ip_address("224.0.0.1")) == "multicast"
    with pytest.raises(ValueError, match="http_task_allow_cidrs: 'ten' is not an address range"):
        NodeConfig(http_task_allow_cidrs=["ten"])


def test_a_name_is_connected_to_where_it_was_checked_dns_rebinding(servers: Any) -> None:
    """A resolver that answers an allowed address first and a refused one after (the rebinding
    attack): the connection goes to the address that was checked, once, with the name as Host."""
    allowed, forbidden = servers
    asked: list[str] = []

    async def rebinding(host: str, port: int) -> list[str]:
        asked.append(host)
        return ["127.0.0.2"] if len(asked) == 1 else ["127.0.0.1"]

    async def call() -> Any:
        guard = AddressGuard(AddressPolicy.from_cidrs(["127.0.0.2/32"]), [], resolver=rebinding)
        async with guarded_client(guard, 4) as client:
            return await client.get(f"http://rebind.example:{allowed.port}/once")

    before = forbidden.connections
    response = asyncio.run(call())
    assert response.json() == {"served_by": "allowed", "path": "/once"}
    assert allowed.requests[-1]["host"] == f"rebind.example:{allowed.port}"
    assert asked == ["rebind.example"] and forbidden.connections == before


def test_a_name_with_any_refused_address_is_refused_before_connecting(servers: Any) -> None:
    allowed, forbidden = servers

    async def both(host: str, port: int) -> list[str]:
        return ["127.0.0.2", "127.0.0.1"]

    async def call() -> None:
        guard = AddressGuard(AddressPolicy.from_cidrs(["127.0.0.2/32"]), [], resolver=both)
        async with guarded_client(guard, 4) as client:
            await client.get(f"http://mixed.example:{allowed.port}/")

    asked, before = len(allowed.requests), forbidden.connections
    with pytest.raises(AddressDenied, match=r"mixed.example \(127.0.0.1\):\d+ is a loopback address"):
        asyncio.run(call())
    assert len(allowed.requests) == asked and forbidden.connections == before


def test_tls_is_verified_against_the_name_not_the_checked_address(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The connection goes to the address that was checked (127.0.0.2), while TLS's server name
    and the certificate check stay the URL's name (the certificate names localhost, not 127.0.0.2)."""
    certs = make_dev_certs(tmp_path)
    server = CountingServer("127.0.0.2", name="tls")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certs.node_cert, certs.node_key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    monkeypatch.setenv("SSL_CERT_FILE", str(certs.ca))   # the client trusts the throwaway CA

    async def to_allowed(host: str, port: int) -> list[str]:
        return ["127.0.0.2"]

    async def call(url: str) -> Any:
        guard = AddressGuard(AddressPolicy.from_cidrs(["127.0.0.2/32"]), [], resolver=to_allowed)
        async with guarded_client(guard, 4) as client:
            return await client.get(url)

    try:
        response = asyncio.run(call(f"https://localhost:{server.port}/tls"))
        assert response.json() == {"served_by": "tls", "path": "/tls"}
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            asyncio.run(call(f"https://127.0.0.2:{server.port}/tls"))   # the certificate does not name it
    finally:
        server.close()
