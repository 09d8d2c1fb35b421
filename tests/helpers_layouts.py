"""The store's two layouts for the tests that touch it (issue 23): one Redis, or a Redis Cluster.

`single` is the session's Redis (slot-checked under ORCHESTRATOR_TEST_REDIS=slots, which proves each
script keeps to one slot); `cluster` is a Redis Cluster of three masters, which proves more: the
partitions really live on different servers, so every sweep, search, claim and pipeline of the store
is split per master by `RedisStore.from_cluster`. A test asks for the `layout` fixture
(tests/integration/store/conftest.py) and makes its stores, raw clients and nodes through it, so
the same body runs on both; its id ends in `[single]` or `[cluster]`.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.cluster import RedisCluster

from helpers import started_nodes
from orchestrator.store.redis import RedisStore
from orchestrator.store.redis.keys import Keys
from worker import WorkflowClient

SINGLE, CLUSTER = "single", "cluster"
LAYOUTS = (SINGLE, CLUSTER)


@dataclass
class StoreLayout:
    """Where a test's state lives: one Redis (`redis_url`) or a Redis Cluster (`seeds`, host:port of
    each master). Everything a test reaches Redis by comes from here, so that it runs on either."""

    name: str
    redis_url: str = ""
    seeds: list[str] = field(default_factory=list)
    made: list[RedisStore] = field(default_factory=list)

    @property
    def on_cluster(self) -> bool:
        return bool(self.seeds)

    def store(self, prefix: str = "", **options: Any) -> RedisStore:
        """A store of `prefix` (a fresh one if not given) on this layout, not prepared. Its test closes it in
        the event loop that used it; `close_all` is the safety net for one a failure left open."""
        prefix = prefix or f"ly{uuid.uuid4().hex[:8]}"
        store = (RedisStore.from_cluster(self.seeds, prefix, **options) if self.on_cluster
                 else RedisStore.from_url(self.redis_url, prefix, **options))
        self.made.append(store)
        return store

    def close_all(self) -> None:
        """Close every store made here (closing one already closed does nothing). A store its test left
        open after using it cannot be closed any more (its connections belong to that test's event loop,
        gone): that is the test's defect, said here rather than left as open sockets."""
        made, self.made = self.made, []
        for store in made:
            try:
                asyncio.run(store.close())
            except RuntimeError as exc:
                raise AssertionError(f"the store of prefix {store.prefix!r} was left open by its test: close it "
                                     "in the event loop that used it") from exc

    def client(self) -> redis.Redis | RedisCluster:
        """A synchronous client for a test's own reads of the cluster's keys: cluster-aware on a Redis
        Cluster (each key sent to its master, a pipeline split per master). Close it when done."""
        if self.on_cluster:
            host, port = self.seeds[0].rsplit(":", 1)   # one seed: it tells the client of the others
            return RedisCluster(host=host, port=int(port), decode_responses=True)
        return redis.Redis.from_url(self.redis_url, decode_responses=True)

    def servers(self) -> list[redis.Redis]:
        """A plain client of each server holding the state (one, or every master): for what Redis keeps
        per server, such as INFO commandstats or MONITOR. Close them when done."""
        if not self.on_cluster:
            return [redis.Redis.from_url(self.redis_url, decode_responses=True)]
        return [redis.Redis(host=host, port=int(port), decode_responses=True)
                for host, port in (s.rsplit(":", 1) for s in self.seeds)]

    def any_server(self) -> redis.Redis:
        """A plain client of one server of the layout (a Redis Cluster's PUBLISH reaches every server, so
        any one hears every channel). Close it when done."""
        if not self.on_cluster:
            return redis.Redis.from_url(self.redis_url, decode_responses=True)
        host, port = self.seeds[0].rsplit(":", 1)
        return redis.Redis(host=host, port=int(port), decode_responses=True)

    def server_of(self, key: str) -> str:
        """host:port of the server that holds `key` (on one Redis, always the same)."""
        if not self.on_cluster:
            return self.redis_url
        client = self.client()
        try:
            assert isinstance(client, RedisCluster)
            return str(client.get_node_from_key(key).name)  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
        finally:
            client.close()

    def node_options(self) -> dict[str, Any]:
        """start_node's arguments that put a node's state on this layout."""
        if self.on_cluster:
            return {"redis_url": "", "extra": ["--redis-cluster", ",".join(self.seeds)]}
        return {"redis_url": self.redis_url, "extra": []}


def failing_on_cluster(reason: str) -> pytest.MarkDecorator:
    """A test that runs on both layouts and is known to fail on a Redis Cluster for a reason of the
    product's (`reason`: what fails, in which function): strict, so a fix is noticed."""
    return pytest.mark.parametrize("layout", [SINGLE, pytest.param(CLUSTER, marks=pytest.mark.xfail(
        strict=True, reason=reason))], indirect=True)


def command_counts(layout: StoreLayout) -> dict[str, int]:
    """Calls of each command (INFO commandstats, scripts' own commands included), summed over every
    server of the layout: a cluster's work is split among its masters."""
    counts: dict[str, int] = {}
    for server in layout.servers():
        with server:
            for name, stats in server.info("commandstats").items():
                command = name.removeprefix("cmdstat_")
                counts[command] = counts.get(command, 0) + int(stats["calls"])
    return counts


@dataclass
class LayoutPair:
    """Nodes "plain" (no worker) and "serving" (the module's worker) of one cluster on a layout."""

    layout: StoreLayout
    keys: Keys
    plain: WorkflowClient
    serving: WorkflowClient


@contextmanager
def nodes_on_layout(folder: Path, layout: StoreLayout, etcd_endpoints: list[str], cluster: str,
                    node_ids: list[str]) -> Iterator[tuple[list[str], list[WorkflowClient]]]:
    """The nodes `node_ids` of a fresh cluster whose state is on `layout`: (their endpoints, a client of
    each), once one leads. Stopped by PID when done."""
    options = layout.node_options()
    with started_nodes(folder, etcd_endpoints, cluster, node_ids, options["redis_url"], options["extra"]) as nodes:
        yield nodes
