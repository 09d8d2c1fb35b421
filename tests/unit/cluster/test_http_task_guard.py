"""HTTP tasks are kept from addresses, not from spellings (issue 22 item 4), in-process: the
policy's classes and the default; a name that resolves elsewhere on a second look (DNS rebinding)
is connected to where it was checked; TLS is verified against the name, not that address. (On a
real node, every spelling and redirect: tests/integration/security/test_ssrf.py.)"""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from counting_http import CountingServer, allowed_and_forbidden
from devtools.certs import make_dev_certs
from orchestrator.cluster.http_client import guarded_client
from orchestrator.cluster.http_tasks import AddressGuard
from orchestrator.config import NodeConfig
from orchestrator.core.http_request import AddressDenied, AddressPolicy, address_class


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[CountingServer, CountingServer]]:
    with allowed_and_forbidden() as pair:
        yield pair


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
