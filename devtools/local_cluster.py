"""A whole cluster on one machine, as real processes: etcd, Redis, nodes and workers.

`make cluster`, the failover drill and the integration tests all build their
clusters here, so what the tests kill is exactly what a user runs.
"""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from orchestrator.store.redis import RedisStore
from orchestrator.store.redis.keys import cluster_prefix

from .certs import DevCerts
from .procs import (EtcdCluster, ManagedProcess, RedisServer, free_port, start_etcd_cluster, start_redis,
                    stop_all, wait_for_port)

LOOPBACK = "127.0.0.1"


@dataclass
class ClusterSettings:
    """What `deploy/local-cluster.yaml` says; every port 0 means "pick a free one"."""

    name: str = "local"
    etcd_members: int = 3
    etcd_election_timeout_ms: int = 1000
    redis_port: int = 0
    redis_appendfsync: str = "everysec"
    node_ports: list[int] = field(default_factory=lambda: [0, 0, 0])
    lease_ttl_s: float = 2.0
    workers: int = 1
    worker_concurrency: int = 16
    log_level: str = "INFO"
    retention_s: float = 0.0   # 0: the nodes' default (7 days)

    @classmethod
    def load(cls, path: str | Path) -> ClusterSettings:
        return cls(**(yaml.safe_load(Path(path).read_text()) or {}))


def start_node(log_dir: Path, *, node_id: str, port: int, redis_url: str, etcd_endpoints: list[str],
               cluster: str, lease_ttl_s: float, log_level: str = "INFO",
               redis_sentinels: list[str] | None = None, extra: list[str] | None = None,
               http_port: int | None = None) -> ManagedProcess:
    """Start `orchestrator node` as a child process; returns once its gRPC port is open.
    `extra`: more `orchestrator node` flags (e.g. --retention, --archive-dir). Its console and
    /metrics listen on `http_port` (a free port when None; 0: no console)."""
    redis = ["--redis-sentinels", ",".join(redis_sentinels)] if redis_sentinels else ["--redis-url", redis_url]
    if http_port is None:
        http_port = free_port()
    console = f"{LOOPBACK}:{http_port}" if http_port else ""
    argv = [sys.executable, "-m", "orchestrator.cli", "node", "--node-id", node_id,
            "--listen", f"{LOOPBACK}:{port}", "--http-listen", console, *redis,
            "--etcd", ",".join(etcd_endpoints), "--cluster", cluster,
            "--lease-ttl", str(lease_ttl_s), "--log-level", log_level, *(extra or [])]
    process = ManagedProcess(node_id, argv, log_dir)
    try:
        wait_for_port(LOOPBACK, port, 20.0, process)
    except BaseException:
        process.stop()
        raise
    return process


def start_worker(log_dir: Path, *, name: str, endpoints: list[str], module: str = "worker.demo",
                 concurrency: int = 16, extra: list[str] | None = None) -> ManagedProcess:
    argv = [sys.executable, "-m", module, "--endpoints", ",".join(endpoints),
            "--concurrency", str(concurrency), *(extra or [])]
    return ManagedProcess(name, argv, log_dir)


class LocalCluster:
    """etcd (N members), Redis with AOF, M orchestrator nodes and demo workers, on loopback."""

    def __init__(self, base_dir: Path, settings: ClusterSettings, *, fresh_election: bool = False,
                 certs: DevCerts | None = None) -> None:
        """`fresh_election`: etcd starts empty although Redis may keep data of an earlier run,
        so the fencing epoch stored in Redis is forgotten before any node starts. `certs`: the
        nodes serve mutual TLS with them (clients need `certs.client_env()`)."""
        self.certs = certs
        self.base_dir = Path(base_dir)
        self.settings = settings
        self.fresh_election = fresh_election
        self.etcd: EtcdCluster | None = None
        self.redis: RedisServer | None = None
        self.nodes: dict[str, ManagedProcess] = {}
        self.node_ports: dict[str, int] = {}
        self.console_ports: dict[str, int] = {}
        self.workers: list[ManagedProcess] = []

    @property
    def endpoints(self) -> list[str]:
        return [f"{LOOPBACK}:{port}" for port in self.node_ports.values()]

    def start(self, *, workers: bool = True) -> LocalCluster:
        s = self.settings
        try:
            self.etcd = start_etcd_cluster(self.base_dir / "etcd", s.etcd_members, s.etcd_election_timeout_ms)
            self.redis = start_redis(self.base_dir / "redis", s.redis_port or None,
                                     appendonly=True, appendfsync=s.redis_appendfsync)
            if self.fresh_election:
                asyncio.run(_forget_epoch(self.redis.url, cluster_prefix(s.name)))
            for index, port in enumerate(s.node_ports):
                self.start_node(f"node-{index + 1}", port or free_port())
            if workers:
                for index in range(s.workers):
                    self.workers.append(start_worker(self.base_dir / "logs", name=f"worker-{index + 1}",
                                                     endpoints=self.endpoints,
                                                     concurrency=s.worker_concurrency))
        except BaseException:
            self.stop()
            raise
        return self

    def start_node(self, node_id: str, port: int | None = None) -> ManagedProcess:
        """Start (or restart) one node; a restarted node keeps its id and ports. Its console listens
        on its gRPC port + 1000 when the settings fix that port (the node's default), else on a free one."""
        assert self.etcd is not None and self.redis is not None
        fixed = bool(port) and port in self.settings.node_ports   # from the settings, not chosen here
        port = port or self.node_ports.get(node_id) or free_port()
        self.node_ports[node_id] = port
        self.console_ports[node_id] = self.console_ports.get(node_id) or (port + 1000 if fixed else free_port())
        self.nodes[node_id] = start_node(
            self.base_dir / "logs", node_id=node_id, port=port, redis_url=self.redis.url,
            etcd_endpoints=self.etcd.endpoints, cluster=self.settings.name,
            lease_ttl_s=self.settings.lease_ttl_s, log_level=self.settings.log_level,
            http_port=self.console_ports[node_id],
            extra=[*(self.certs.node_flags() if self.certs is not None else []),
                   "--archive-dir", str(self.base_dir / "archive"),
                   *(["--retention", str(self.settings.retention_s)] if self.settings.retention_s else [])])
        return self.nodes[node_id]

    def endpoint_of(self, node_id: str) -> str:
        return f"{LOOPBACK}:{self.node_ports[node_id]}"

    def console_of(self, node_id: str) -> str:
        """The node's web console (and /metrics) as a URL (https when the nodes serve TLS)."""
        scheme = "https" if self.certs is not None else "http"
        return f"{scheme}://{LOOPBACK}:{self.console_ports[node_id]}"

    def stop(self) -> None:
        """Stop everything this cluster started, workers first, by PID."""
        stop_all(self.workers)
        stop_all(self.nodes.values())
        if self.redis is not None and getattr(self.redis, "process", None) is not None:
            self.redis.stop()
        if self.etcd is not None:
            self.etcd.stop()

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


async def _forget_epoch(redis_url: str, prefix: str) -> None:
    store = RedisStore.from_url(redis_url, prefix)
    try:
        await store.forget_epoch()
    finally:
        await store.close()


def wait_for_leader(client: Any, timeout_s: float = 15.0, not_id: str = "", members: int = 0) -> dict[str, Any]:
    """Poll cluster status until some node (other than `not_id`) leads and, if `members` is
    given, that many nodes have registered (a node registers a moment after its port opens)."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = client.cluster_status()
            if (last.get("leader_id") and last["leader_id"] != not_id
                    and len(last.get("members", [])) >= members):
                return dict(last)
        except Exception as exc:  # a node may be down while we ask
            last = exc
        time.sleep(0.05)
    raise TimeoutError(f"no leader within {timeout_s} s (last answer: {last})")
