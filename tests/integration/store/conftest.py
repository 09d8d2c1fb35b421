"""The store's tests on both layouts (issue 23): the `layout` fixture runs a test once on the session's
Redis (`[single]`) and once on a Redis Cluster of three masters (`[cluster]`); tests/helpers_layouts.py.

The Redis Cluster has no replicas and is started once per pytest process that runs such a test (a
`-n 2` run: once per worker, about a second), and shared by them all: each test works under a prefix of
its own, as on the session's Redis, and none kills, pauses or reshards it (those drills have their own
cluster, `redis_cluster`, in test_store_on_redis_cluster.py).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devtools.procs import RedisServer
from devtools.redis_cluster import LocalRedisCluster, start_redis_cluster
from helpers_layouts import CLUSTER, LAYOUTS, SINGLE, StoreLayout
from redis_mode import start_test_redis


@pytest.fixture(scope="session")
def layout_redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRedisCluster]:
    """The `[cluster]` layout's Redis Cluster: three masters, no replicas (nothing here fails one over).
    Redis's own node timeout (15 s), not the drills' 1 s: a server drops its bus link to another that left a
    ping unanswered for half of it, and a PUBLISH sent while that link is made again never reaches the
    other servers' subscribers (a `changed` lost so on a loaded machine); nothing here waits for a
    failure to be noticed."""
    cluster = start_redis_cluster(tmp_path_factory.mktemp("layout-cluster"), masters=3, replicas=0,
                                  node_timeout_ms=15_000)
    try:
        yield cluster
    finally:
        cluster.stop()


def layout_of(name: str, request: pytest.FixtureRequest) -> StoreLayout:
    """The layout `name` on the session's servers, each started when first asked for (a session that
    runs no `[cluster]` test starts no Redis Cluster)."""
    if name == SINGLE:
        server: RedisServer = request.getfixturevalue("redis_server")
        return StoreLayout(SINGLE, redis_url=server.url)
    cluster: LocalRedisCluster = request.getfixturevalue("layout_redis_cluster")
    return StoreLayout(CLUSTER, seeds=[m.address for m in cluster.masters()])


@pytest.fixture(params=LAYOUTS)
def layout(request: pytest.FixtureRequest) -> Iterator[StoreLayout]:
    """One Redis or a Redis Cluster; the stores a test makes through it are closed after it at the latest."""
    made = layout_of(request.param, request)
    try:
        yield made
    finally:
        made.close_all()


@pytest.fixture(scope="module", params=LAYOUTS)
def module_layout(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoreLayout]:
    """A layout for the nodes of one test module that counts their commands (INFO commandstats), which
    must be theirs alone: on one Redis, a Redis of the module's own; on a Redis Cluster, the session's,
    which no other test uses meanwhile (a pytest process runs its tests one at a time, and each closes
    its stores and stops its nodes when done)."""
    if request.param == CLUSTER:
        yield layout_of(CLUSTER, request)
        return
    server = start_test_redis(tmp_path_factory.mktemp("redis"))
    try:
        yield StoreLayout(SINGLE, redis_url=server.url)
    finally:
        server.stop()
