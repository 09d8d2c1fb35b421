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
and each task fails at once with one line naming the address class. In-process (the policy's
classes, the default, DNS rebinding, TLS verified against the name):
tests/unit/cluster/test_http_task_guard.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from counting_http import CountingServer, allowed_and_forbidden
from devtools.local_cluster import start_node, wait_for_leader
from devtools.procs import free_port
from helpers import unique, wait_for_status
from worker import WorkflowClient


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[CountingServer, CountingServer]]:
    with allowed_and_forbidden() as pair:
        yield pair


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
