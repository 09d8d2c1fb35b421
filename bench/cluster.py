"""A benchmark cluster: `LocalCluster` (3 etcd members, Redis with AOF, 3 nodes) plus
the benchmark's worker processes, and the read-only probes the scenarios use
(who leads, process RSS and CPU time, Redis INFO).

The state is on one Redis, or (`redis_cluster_masters`) on a Redis Cluster of that many masters
and a replica each; the probes answer for both: a figure that is a sum (memory, command counts)
is summed over the masters, and every redis-server is in `pids()` under its role.

Worker i connects first to node i (mod the node count), so the dispatch work is
spread over the nodes the way a real deployment spreads workers.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from collections import Counter
from typing import Any, cast

import redis
from redis import Redis
from redis.cluster import RedisCluster

from orchestrator.store.redis.keys import Keys, cluster_prefix

from devtools.local_cluster import (
    ClusterSettings,
    LocalCluster,
    start_worker,
    wait_for_leader,
)
from devtools.procs import ProcessError
from worker import WorkflowClient

from .definitions import register_all
from .load import ClusterEndedWatcher, CompletionWatcher, EndedStreamWatcher, cluster_nodes

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
START_ATTEMPTS = 3


@dataclass(frozen=True)
class BenchSettings:
    name: str = "bench"
    workers: int = 2
    worker_concurrency: int = 32
    lease_ttl_s: float = 2.0
    retention_s: float = 0.0     # 0: the nodes' default
    etcd_members: int = 3
    redis_replicas: int = 0      # replicas of the master beside it, and Sentinels the nodes follow it through
    redis_min_replicas: int | None = None   # replicas an acknowledged write waits for (default: 1 with replicas)
    redis_cluster_masters: int = 0   # a Redis Cluster of this many masters (a replica each) instead of one Redis


class BenchCluster:
    """Starts everything in a fresh temporary folder; `stop()` ends it all by PID."""

    def __init__(self, settings: BenchSettings) -> None:
        self.settings = settings
        self._fresh()

    def _fresh(self) -> None:
        self.base_dir = Path(tempfile.mkdtemp(prefix=f"{self.settings.name}-"))
        self.local = LocalCluster(self.base_dir, ClusterSettings(
            name=self.settings.name, lease_ttl_s=self.settings.lease_ttl_s, workers=0, log_level="WARNING",
            retention_s=self.settings.retention_s, etcd_members=self.settings.etcd_members,
            redis_replicas=self.settings.redis_replicas, redis_min_replicas=self.settings.redis_min_replicas,
            redis_cluster_masters=self.settings.redis_cluster_masters),
            announce=False)
        self.client: WorkflowClient | None = None
        self._redis: redis.Redis | RedisCluster | None = None
        self._masters: dict[int, Redis] = {}   # plain clients of the Redis Cluster's masters, by port

    def start(self) -> BenchCluster:
        """Start it all; a server that could not bind its port is retried on new ports.

        `free_port` only finds a port that is free *now*: on a machine where other
        test runs start servers too, another process may bind it first.
        """
        for attempt in range(1, START_ATTEMPTS + 1):
            try:
                return self._start_once()
            except ProcessError as exc:
                if attempt == START_ATTEMPTS:
                    raise
                print(f"  starting {self.settings.name} failed ({str(exc).splitlines()[0]}); "
                      "retrying on new ports", flush=True)
                self._fresh()
        raise AssertionError("unreachable")

    def _start_once(self) -> BenchCluster:
        try:
            self.local.start(workers=False)
            endpoints = self.local.endpoints
            for index in range(self.settings.workers):
                shift = index % len(endpoints)
                self.local.workers.append(start_worker(
                    self.base_dir / "logs", name=f"bench-worker-{index + 1}", module="bench.worker_proc",
                    endpoints=endpoints[shift:] + endpoints[:shift],
                    concurrency=self.settings.worker_concurrency, extra=["--log-level", "WARNING"]))
            self.client = WorkflowClient(endpoints, timeout_s=15.0)
            wait_for_leader(self.client, 30.0)
            register_all(self.client)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every process by PID, then delete the temporary folder."""
        try:
            if self.client is not None:
                self.client.close()
            if self._redis is not None:
                self._redis.close()
            for client in self._masters.values():
                client.close()
            self.local.stop()
        finally:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> BenchCluster:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ------------------------------------------------------------- probes

    @property
    def prefix(self) -> str:
        return cluster_prefix(self.settings.name)

    @property
    def ended_keys(self) -> list[str]:
        """The audit streams of terminal transitions (one entry per workflow end), one per partition."""
        keys = Keys(self.prefix)
        return [keys.ended(p) for p in keys.all_partitions()]

    def ended(self) -> list[tuple[str, float]]:
        """(workflow id, end time in ms) of every end in the audit streams, oldest first."""
        found: list[tuple[str, float]] = []
        for key in self.ended_keys:
            last = "-"
            while True:
                # decode_responses=True: ids and fields are str (redis-py types them as bytes or str)
                entries = cast("list[tuple[str, dict[str, str]]]",
                               self.redis.xrange(key, min=last, max="+", count=10_000))
                if last != "-":
                    entries = entries[1:]
                if not entries:
                    break
                found += [(fields["wf"], float(fields["at"])) for _, fields in entries]
                last = entries[-1][0]
        return sorted(found, key=lambda row: row[1])

    @property
    def redis_url(self) -> str:
        """The one Redis's URL (a Redis Cluster has none: use `redis`, `master_clients` or `ended_watcher`)."""
        if self.local.redis_cluster is not None:
            seeds = ", ".join(self.local.redis_cluster.seeds)
            raise ValueError(f"{self.settings.name} runs on a Redis Cluster ({seeds}), which has no one URL")
        assert self.local.redis is not None
        return self.local.redis.url

    @property
    def redis(self) -> redis.Redis | RedisCluster:
        """A (read-only by convention) client of the cluster's state: a plain one on one Redis, redis-py's
        cluster client (commands routed by key) on a Redis Cluster."""
        if self._redis is None:
            if self.local.redis_cluster is not None:
                self._redis = RedisCluster(startup_nodes=cluster_nodes(self.local.redis_cluster.seeds),
                                           decode_responses=True)
            else:
                self._redis = redis.Redis.from_url(self.redis_url, decode_responses=True)
        return self._redis

    def master_clients(self) -> list[Redis]:
        """A plain client of each server that serves slots now (the one Redis, or each master)."""
        if self.local.redis_cluster is None:
            plain = self.redis
            assert isinstance(plain, Redis)
            return [plain]
        ports = [m.port for m in self.local.redis_cluster.masters()]
        for port in ports:
            if port not in self._masters:
                self._masters[port] = redis.Redis(host="127.0.0.1", port=port, decode_responses=True)
        return [self._masters[port] for port in ports]

    def ended_watcher(self) -> CompletionWatcher:
        """A watcher of the `ended` streams that fits the layout (see bench/load.py)."""
        if self.local.redis_cluster is not None:
            return ClusterEndedWatcher(self.local.redis_cluster.seeds, self.ended_keys)
        return EndedStreamWatcher(self.redis_url, self.ended_keys)

    def command_calls(self) -> dict[str, int]:
        """`command_calls` summed over the servers that serve slots (the replicas' replays left out)."""
        total: Counter[str] = Counter()
        for client in self.master_clients():
            total.update(command_calls(client))
        return dict(total)

    def redis_pids(self) -> dict[str, int]:
        """Every live redis-server by role: `redis` and `redis-replica-N` (one Redis and its replicas), or
        `redis-master-N` and `redis-replica-N` (a Redis Cluster; masters in the order of their first slot,
        replica N replicates master N)."""
        if self.local.redis_cluster is None:
            found = {"redis": self.local.redis.process.pid} if self.local.redis is not None else {}
            found.update({f"redis-replica-{i + 1}": r.process.pid for i, r in enumerate(self.local.replicas)
                          if r.process.alive()})
            return found
        rc = self.local.redis_cluster
        masters = rc.masters()
        found = {f"redis-master-{i + 1}": m.pid for i, m in enumerate(masters)}
        for i, master in enumerate(masters):
            for k, replica in enumerate(rc.replicas_of(master)):
                found[f"redis-replica-{i + 1}" + (f"-{k + 1}" if k else "")] = replica.pid
        return found

    def new_client(self, endpoints: list[str] | None = None) -> WorkflowClient:
        return WorkflowClient(endpoints or self.local.endpoints, timeout_s=15.0)

    def leader_id(self) -> str:
        assert self.client is not None
        return str(wait_for_leader(self.client, 30.0)["leader_id"])

    def pids(self) -> dict[str, int]:
        """Every process of the cluster by role name (node ids, workers, redis, etcd members)."""
        found = {node_id: proc.pid for node_id, proc in self.local.nodes.items() if proc.alive()}
        found.update({proc.name: proc.pid for proc in self.local.workers if proc.alive()})
        found.update(self.redis_pids())
        if self.local.etcd is not None:
            found.update({f"etcd-{m.name}": m.process.pid for m in self.local.etcd.members
                          if m.process is not None and m.process.alive()})
        return found

    def used_memory(self) -> int:
        """Redis's `used_memory`, summed over the masters on a Redis Cluster."""
        return sum(int(client.info("memory")["used_memory"]) for client in self.master_clients())

    def node_pids(self) -> dict[str, int]:
        return {node_id: proc.pid for node_id, proc in self.local.nodes.items() if proc.alive()}

    def starter(self, workflow: str) -> RoundRobinStarter:
        return RoundRobinStarter(self.local.endpoints, workflow)


class RoundRobinStarter:
    """Starts workflows through each node in turn, as clients behind a load balancer would.

    One client per node, each with the other nodes as its failover endpoints.
    Callable from many threads (gRPC channels are thread-safe).
    """

    def __init__(self, endpoints: list[str], workflow: str) -> None:
        self.workflow = workflow
        self.clients = [WorkflowClient(endpoints[i:] + endpoints[:i], timeout_s=15.0)
                        for i in range(len(endpoints))]
        self._turn = itertools.count()

    def __call__(self, n: int) -> str:
        client = self.clients[next(self._turn) % len(self.clients)]
        return client.start_workflow(self.workflow, {"n": n})

    def close(self) -> None:
        for client in self.clients:
            client.close()

    def __enter__(self) -> RoundRobinStarter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def command_calls(client: redis.Redis) -> dict[str, int]:
    """Calls per command since Redis started (INFO commandstats; commands run by Lua scripts count too)."""
    return {name.removeprefix("cmdstat_"): int(stats["calls"]) for name, stats in client.info("commandstats").items()}


def command_delta(before: dict[str, int], after: dict[str, int], per: int) -> dict[str, float]:
    """Calls per unit of work between two `command_calls` readings, largest first."""
    rows = {name: (calls - before.get(name, 0)) / max(per, 1) for name, calls in after.items()}
    return {name: round(value, 2) for name, value in sorted(rows.items(), key=lambda kv: -kv[1]) if value >= 0.01}


def rss_mb(pid: int) -> float:
    """Resident set size of a process, from /proc/<pid>/status (VmRSS), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (children not included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def machine_busy_seconds() -> float:
    """CPU time all cores spent busy since boot (everything but idle and iowait), from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(values) - values[3] - values[4]) / CLOCK_TICKS


class CpuMeter:
    """CPU used by each process between `__enter__` and `__exit__`, in % of one core.

    Two extra entries: `machine` (all cores busy, so 200 % on two cores is full) and
    `outside` (machine minus the processes listed, the benchmark's own client included):
    other tenants of the machine, the kernel's loopback networking and so on.
    """

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = {**pids, "bench-client": os.getpid()}
        self.share: dict[str, float] = {}
        self._start: dict[str, float] = {}
        self._machine0 = 0.0
        self._t0 = 0.0
        self.elapsed_s = 0.0

    def __enter__(self) -> CpuMeter:
        self._t0 = time.monotonic()
        self._machine0 = machine_busy_seconds()
        self._start = {name: _cpu_or_nan(pid) for name, pid in self.pids.items()}
        return self

    def __exit__(self, *exc: Any) -> None:
        elapsed = self.elapsed_s = max(time.monotonic() - self._t0, 1e-9)
        self.share = {name: round(100 * (_cpu_or_nan(pid) - self._start[name]) / elapsed, 1)
                      for name, pid in self.pids.items()}
        machine = 100 * (machine_busy_seconds() - self._machine0) / elapsed
        listed = sum(v for v in self.share.values() if v == v)
        self.share["machine"] = round(machine, 1)
        self.share["outside"] = round(max(0.0, machine - listed), 1)

    def cpu_ms(self, exclude: tuple[str, ...] = ("machine", "outside", "bench-client")) -> float:
        """CPU ms used by the listed processes (without `exclude`) during the measurement."""
        shares = [v for k, v in self.share.items() if k not in exclude and v == v]
        return sum(shares) / 100 * self.elapsed_s * 1000


class RssSampler:
    """Samples VmRSS of some processes every `interval_s` in a thread; keeps the maximum of each."""

    def __init__(self, pids: dict[str, int], interval_s: float = 0.5) -> None:
        self.pids = dict(pids)
        self.max_mb: dict[str, float] = {}
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def __enter__(self) -> RssSampler:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sample()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._sample()

    def _sample(self) -> None:
        for name, pid in self.pids.items():
            try:
                value = rss_mb(pid)
            except OSError:
                continue
            self.max_mb[name] = round(max(value, self.max_mb.get(name, 0.0)), 1)


def _cpu_or_nan(pid: int) -> float:
    try:
        return cpu_seconds(pid)
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return float("nan")
