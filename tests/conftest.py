"""Fixtures: real etcd, real Redis and real orchestrator nodes on free loopback ports.

Every process is started here (or in orchestrator.local_cluster) and stopped by
PID when its fixture ends. Tests share one etcd and one Redis per session but
each module gets its own cluster name, so keys and election prefixes never mix.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any
from collections.abc import Callable, Iterator

import pytest

from devtools.local_cluster import start_node_on_free_ports, wait_for_leader
from devtools.procs import EtcdCluster, ManagedProcess, RedisServer, start_etcd_cluster
from devtools.redis_cluster import LocalRedisCluster, start_redis_cluster
from browser import CHROMIUM, CHROMIUM_ARGS
from helpers import BackgroundWorker
from redis_mode import redis_mode, start_test_redis
from worker import Worker, WorkflowClient

TESTS = Path(__file__).resolve().parent
UNIT, INTEGRATION = TESTS / "unit", TESTS / "integration"

# The fixtures below that start etcd, Redis, a node, a worker or a browser. Everything under tests/integration
# is an integration test (`make test-fast` runs tests/unit, in seconds); a test under tests/unit that asks for
# one of these fails the collection, so a slow test cannot hide among the fast ones.
SERVER_FIXTURES = frozenset({"etcd", "redis_server", "redis_cluster", "node", "run_worker", "browser", "page"})


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "integration: starts real processes (etcd, Redis, nodes, workers, "
                                       "browsers, builds): every test under tests/integration")
    try:
        redis_mode()   # a mistyped ORCHESTRATOR_TEST_REDIS ends the session before any test runs
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    misplaced = []
    for item in items:
        if item.path.is_relative_to(INTEGRATION):
            item.add_marker(pytest.mark.integration)
        elif not item.path.is_relative_to(UNIT):
            misplaced.append(f"{item.nodeid}: a test lives under tests/unit or tests/integration")
        elif servers := sorted(SERVER_FIXTURES & set(getattr(item, "fixturenames", ()))):
            misplaced.append(f"{item.nodeid} asks for {', '.join(servers)}: it belongs under tests/integration")
    if misplaced:
        raise pytest.UsageError("tests in the wrong folder:\n  " + "\n  ".join(misplaced))


# Short leases keep lease-expiry tests quick; etcd rounds TTLs below 2 s up to 2 s.
TEST_TTL_S = 2.0


@pytest.fixture(scope="session")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    cluster = start_etcd_cluster(tmp_path_factory.mktemp("etcd"), size=1)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """The session's Redis: plain, or slot-checked under ORCHESTRATOR_TEST_REDIS=slots (tests/redis_mode.py)."""
    server = start_test_redis(tmp_path_factory.mktemp("redis"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRedisCluster]:
    """A Redis Cluster of 3 masters with a replica each (devtools/redis_cluster.py), one per test module:
    its tests may kill, pause and reshard it, so each leaves it healthy (`wait_healthy`) for the next."""
    cluster = start_redis_cluster(tmp_path_factory.mktemp("redis-cluster"))
    try:
        yield cluster
    finally:
        cluster.stop()


class NodeHandle:
    """One node process and a client bound to it."""

    def __init__(self, process: ManagedProcess, endpoint: str, cluster: str, redis_url: str,
                 http_address: str = "") -> None:
        self.process = process
        self.endpoint = endpoint
        self.http_address = http_address   # host:port of its console, /metrics and Conductor API
        self.cluster = cluster
        self.redis_url = redis_url
        self.client = WorkflowClient([endpoint])


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, etcd: EtcdCluster,
         redis_server: RedisServer) -> Iterator[NodeHandle]:
    """A single leader node of its own cluster (fresh key prefix) for this test module. Its HTTP
    tasks may call the tests' servers on loopback (a node's default allows public addresses only:
    tests/integration/security/test_ssrf.py); etcd and Redis stay out of their reach."""
    cluster = f"t{uuid.uuid4().hex[:8]}"
    process, port, http_port = start_node_on_free_ports(
        tmp_path_factory.mktemp("node"), node_id="solo", redis_url=redis_server.url, etcd_endpoints=etcd.endpoints,
        cluster=cluster, lease_ttl_s=TEST_TTL_S, extra=["--http-task-allow-cidrs", "127.0.0.0/8,::1/128"])
    handle = NodeHandle(process, f"127.0.0.1:{port}", cluster, redis_server.url, f"127.0.0.1:{http_port}")
    try:
        wait_for_leader(handle.client, 20.0)
        yield handle
    finally:
        handle.client.close()
        process.stop()


@pytest.fixture
def run_worker() -> Iterator[Callable[..., BackgroundWorker]]:
    started: list[BackgroundWorker] = []

    def start(endpoints: list[str], handlers: list[Any], concurrency: int = 4) -> BackgroundWorker:
        background = BackgroundWorker(Worker(endpoints=endpoints, handlers=handlers, concurrency=concurrency))
        started.append(background)
        return background

    try:
        yield start
    finally:
        for background in started:
            background.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Debian chromium for one test module (the console tests)."""
    from playwright.sync_api import sync_playwright   # only the browser tests need Playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh browser context and page per test (no cookies carried over)."""
    context = browser.new_context(viewport={"width": 1280, "height": 820})
    page = context.new_page()
    page.set_default_timeout(15_000)
    try:
        yield page
    finally:
        context.close()
