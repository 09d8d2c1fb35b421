"""A real Redis Cluster on loopback (Debian's redis-server), for the tests and drills of the partitioned layout.

`start_redis_cluster` starts N masters and a replica of each, every server with its own node file and
AOF directory, joins them with `redis-cli --cluster create` and returns once every live server agrees
that every slot is served. The cluster's methods are what a drill does to it: find the master of a key
or slot, SIGKILL or SIGSTOP a master by PID, wait for its replica's promotion, start a killed server
again (it comes back as a replica of whoever took its slots), move slots with `redis-cli --cluster
reshard`, and stop everything by PID. Processes are `devtools.procs.ManagedProcess`es, so the same
rules hold: logs in the server's folder, stopped by PID only, ended at interpreter exit at the latest.

Two settings differ from Redis's defaults on purpose:
- `cluster-node-timeout` is 1000 ms (Redis: 15 s): a dead master is failed over in about 2 s.
- `cluster-require-full-coverage no`: while one master is down (before its replica is promoted) the
  other masters keep serving their slots; with Redis's default `yes` the whole cluster answers
  CLUSTERDOWN until every slot is served again, and no partition could go on.

One behaviour of Redis 7.0 a drill must allow for: the target of a reshard SIGKILLed within a second of
the reshard can leave the slot moved last served by nobody in its promoted replica's own view, for good
(cluster_slots_ok 16383; 2 of 65 rounds here, 0 of 40 kills without a reshard; compare redis/redis#3122).
`redis-cli --cluster fix` is the operator's repair; the tests here do not kill a fresh reshard target.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .procs import ProcessError, RedisServer, free_port, lost_its_port, stop_all

if TYPE_CHECKING:
    import redis

__all__ = ["SLOTS", "ClusterMember", "NodeView", "LocalRedisCluster", "start_redis_cluster", "key_slot",
           "redis_version", "parse_cluster_nodes"]

LOOPBACK = "127.0.0.1"
SLOTS = 16384
NODE_TIMEOUT_MS = 1000


def redis_version() -> tuple[int, ...]:
    """The version of the redis-server on PATH, e.g. (7, 0, 15) (Debian 12's: no WAITAOF, which is 7.2)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise ProcessError("redis-server not found on PATH; install it (make servers) and retry")
    text = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10, check=False).stdout
    found = re.search(r"v=(\d+(?:\.\d+)*)", text)
    if found is None:
        raise ProcessError(f"cannot read redis-server's version from {text.strip()!r}")
    return tuple(int(part) for part in found.group(1).split("."))


def key_slot(key: str | bytes) -> int:
    """The slot of `key` (CRC16 of its hash tag, or of the whole key), as Redis computes it."""
    from redis.crc import key_slot as crc_slot   # lazily: procs and this module start without redis-py

    return int(crc_slot(key.encode() if isinstance(key, str) else key))


@dataclass
class ClusterMember:
    """One redis-server of the cluster: its ports, its folder (node file, AOF, log) and its process."""

    index: int
    server: RedisServer
    bus_port: int
    node_id: str = ""   # its id in the cluster (CLUSTER MYID), fixed for its life: kept in its node file
    paused: bool = False   # SIGSTOPped: alive, but answering nothing
    # when last killed or paused: the slot ranges it served and the ids of its replicas
    slots_before: set[tuple[int, int]] = field(default_factory=set)
    replicas_before: set[str] = field(default_factory=set)
    stopped_at: float = 0.0   # time.monotonic() then

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def address(self) -> str:
        """127.0.0.1:PORT, as clients and redis-cli name it."""
        return f"{LOOPBACK}:{self.port}"

    @property
    def pid(self) -> int:
        return self.server.process.pid

    def alive(self) -> bool:
        return self.server.process.alive()

    def __repr__(self) -> str:
        return f"ClusterMember({self.index}, {self.address}, pid={self.pid}, alive={self.alive()})"


@dataclass(frozen=True)
class NodeView:
    """One line of CLUSTER NODES: how one server sees another."""

    node_id: str
    port: int
    flags: frozenset[str]
    master_id: str                          # the master it replicates ("" for a master)
    slots: tuple[tuple[int, int], ...]      # the ranges it serves (first, last), both included
    config_epoch: int = 0                   # its configEpoch (a replica's line shows its master's)

    @property
    def is_master(self) -> bool:
        return "master" in self.flags

    @property
    def failing(self) -> bool:
        return bool({"fail", "fail?", "noaddr"} & self.flags)


def parse_cluster_nodes(text: str) -> list[NodeView]:
    """CLUSTER NODES' reply as NodeViews (slots being imported or migrated, "[...]", are left out)."""
    views = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 8:
            continue
        address = parts[1].split("@", 1)[0]
        ranges = []
        for item in parts[8:]:
            if item.startswith("["):
                continue
            first, _, last = item.partition("-")
            ranges.append((int(first), int(last or first)))
        views.append(NodeView(parts[0], int(address.rpartition(":")[2] or 0), frozenset(parts[2].split(",")),
                              "" if parts[3] == "-" else parts[3], tuple(sorted(ranges)), int(parts[6])))
    return views


def _client(port: int, timeout: float = 1.0) -> redis.Redis:
    import redis

    return redis.Redis(host=LOOPBACK, port=port, socket_timeout=timeout, socket_connect_timeout=timeout,
                       decode_responses=True)


def _ask(port: int, *command: Any, timeout: float = 1.0) -> Any:
    """One command to one server on its own connection (closed again)."""
    client = _client(port, timeout)
    try:
        return client.execute_command(*command)  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
    finally:
        client.close()


def _info(port: int, section: str) -> dict[str, str]:
    """INFO `section` (or CLUSTER INFO for "cluster-info") as text fields."""
    reply = _ask(port, "CLUSTER", "INFO") if section == "cluster-info" else _ask(port, "INFO", section)
    if isinstance(reply, dict):
        return {k: str(v) for k, v in reply.items()}
    fields = (line.split(":", 1) for line in str(reply).splitlines() if ":" in line)
    return {k.strip(): v.strip() for k, v in fields}


def _wait(what: str, check: Callable[[], str], timeout: float, interval: float = 0.05) -> None:
    """Poll `check` (it answers "" when done, else what is still missing) until done or `timeout`."""
    import redis

    deadline = time.monotonic() + timeout
    missing = "never checked"
    while True:
        try:
            missing = check()
        except (redis.RedisError, OSError) as exc:
            missing = f"{type(exc).__name__}: {exc}"
        if not missing:
            return
        if time.monotonic() >= deadline:
            raise ProcessError(f"{what} not done after {timeout:.0f} s: {missing}")
        time.sleep(interval)


@dataclass
class LocalRedisCluster:
    """A Redis Cluster of loopback servers started by this process; see the module's docstring."""

    base_dir: Path
    members: list[ClusterMember]
    node_timeout_ms: int = NODE_TIMEOUT_MS
    options: tuple[str, ...] = ()
    log: Callable[[str], None] = field(default=lambda _line: None)

    # ------------------------------------------------------------------ addresses and the map of slots

    @property
    def seeds(self) -> list[str]:
        """host:port of every server, killed or not: what a client is given to find the cluster."""
        return [m.address for m in self.members]

    def live(self) -> list[ClusterMember]:
        return [m for m in self.members if m.alive() and not m.paused]

    def member(self, node_id_or_port: str | int) -> ClusterMember:
        for m in self.members:
            if node_id_or_port in (m.node_id, m.port):
                return m
        raise KeyError(f"no server {node_id_or_port!r} in this cluster ({', '.join(self.seeds)})")

    def views(self, asked: ClusterMember | None = None) -> list[NodeView]:
        """CLUSTER NODES as the first live server (or `asked`) sees it."""
        for m in [asked] if asked else self.live():
            return parse_cluster_nodes(str(_ask(m.port, "CLUSTER", "NODES")))
        raise ProcessError("no server of the Redis Cluster is running")

    def masters(self) -> list[ClusterMember]:
        """The servers that serve slots now, in the order of their first slot."""
        serving = sorted((v for v in self.views() if v.is_master and v.slots and not v.failing),
                         key=lambda v: v.slots[0])
        return [self.member(v.node_id) for v in serving]

    def replicas_of(self, master: ClusterMember) -> list[ClusterMember]:
        """The live servers that replicate `master` now."""
        return [self.member(v.node_id) for v in self.views()
                if v.master_id == master.node_id and not v.failing and self.member(v.node_id).alive()]

    def slots_of(self, master: ClusterMember) -> list[tuple[int, int]]:
        """The slot ranges `master` serves now (first, last)."""
        for view in self.views():
            if view.node_id == master.node_id:
                return list(view.slots)
        return []

    def master_of_slot(self, slot: int) -> ClusterMember:
        for view in self.views():
            if view.is_master and not view.failing and any(first <= slot <= last for first, last in view.slots):
                return self.member(view.node_id)
        raise ProcessError(f"no live master serves slot {slot}")

    def master_of_key(self, key: str | bytes) -> ClusterMember:
        return self.master_of_slot(key_slot(key))

    def key_on(self, master: ClusterMember, prefix: str = "k") -> str:
        """A key (`prefix` and a number) whose slot `master` serves now."""
        ranges = self.slots_of(master)
        for n in range(100_000):
            key = f"{prefix}{n}"
            slot = key_slot(key)
            if any(first <= slot <= last for first, last in ranges):
                return key
        raise ProcessError(f"no key found for {master}")

    def client(self, member: ClusterMember, timeout: float = 1.0) -> redis.Redis:
        """A plain (not cluster-aware) client of one server; close it when done."""
        return _client(member.port, timeout)

    # ------------------------------------------------------------------ health

    def problems(self) -> str:
        """"" when every live server says the cluster is ok with every slot served, all of them see the
        same servers in the same roles serving the same slots with the same config epochs, and every live
        replica streams from its master; else what is not so.

        The epochs matter after a reshard: its target raises its own config epoch without a vote, and a
        failover of that target before every server (its replica above all) has heard the new epoch can
        elect the replica with an epoch no higher than the old master's."""
        live = self.live()
        if not live:
            return "no server is running"
        pictures: dict[str, list[str]] = {}
        for m in live:
            info = _info(m.port, "cluster-info")
            if info.get("cluster_state") != "ok" or info.get("cluster_slots_ok") != str(SLOTS):
                return (f"{m.address} says cluster_state:{info.get('cluster_state')} with "
                        f"{info.get('cluster_slots_ok')} of {SLOTS} slots ok")
            views = parse_cluster_nodes(str(_ask(m.port, "CLUSTER", "NODES")))
            picture = sorted((v.port, v.is_master, v.master_id, v.slots, v.failing, v.config_epoch) for v in views)
            pictures.setdefault(repr(picture), []).append(m.address)
            if len(views) < len(self.members):
                return f"{m.address} knows {len(views)} of the {len(self.members)} servers"
            myself = next(v for v in views if "myself" in v.flags)
            if not myself.is_master and _info(m.port, "replication").get("master_link_status") != "up":
                return f"replica {m.address} is not in sync with its master yet"
        if len(pictures) > 1:
            return ("the servers see the cluster differently: "
                    + " vs ".join(", ".join(addresses) for addresses in pictures.values()))
        return ""

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Block until `problems()` finds none (ProcessError after `timeout`)."""
        _wait("the Redis Cluster's agreement on every slot", self.problems, timeout)

    # ------------------------------------------------------------------ what drills do to it

    def kill(self, member: ClusterMember) -> None:
        """SIGKILL the server (its AOF keeps what it had written to the OS) and reap it."""
        self._note_role(member)
        member.server.process.kill()
        member.server.process.wait(5.0)
        member.paused = False
        self.log(f"killed {member.address} (pid {member.pid})")

    def pause(self, member: ClusterMember) -> None:
        """SIGSTOP the server: its sockets stay open and it answers nothing, like a hung host."""
        self._note_role(member)
        member.server.process.pause()
        member.paused = True
        self.log(f"paused {member.address} (pid {member.pid})")

    def resume(self, member: ClusterMember) -> None:
        member.server.process.resume()
        member.paused = False
        self.log(f"resumed {member.address} (pid {member.pid})")

    def _note_role(self, member: ClusterMember) -> None:
        """What `member` serves and who replicates it, kept for `wait_for_promotion` (once its replica is
        promoted, no server says any more what it was)."""
        views = self.views()
        member.slots_before = {r for v in views if v.node_id == member.node_id for r in v.slots}
        member.replicas_before = {v.node_id for v in views if v.master_id == member.node_id}
        member.stopped_at = time.monotonic()

    def wait_for_promotion(self, old_master: ClusterMember, timeout: float = 30.0) -> ClusterMember:
        """Block until a replica of `old_master` (killed or paused here) serves every slot it served and
        the other servers agree; returns the new master."""
        ranges, replicas = old_master.slots_before, old_master.replicas_before
        if not ranges or not replicas:
            raise ProcessError(f"{old_master.address} served no slots or had no replica when it was stopped")

        def promoted() -> str:
            now = {v.node_id: v for v in self.views()}
            winner = [now[r] for r in replicas if r in now and now[r].is_master and now[r].slots]
            if not winner:
                return f"no replica of {old_master.address} serves slots yet"
            if not ranges <= set(winner[0].slots):
                return f"the promoted replica serves {winner[0].slots}, not all of {sorted(ranges)}"
            return self.problems()

        _wait(f"the promotion of a replica of {old_master.address}", promoted, timeout)
        new_master = next(self.member(r) for r in replicas if self.member(r) in self.masters())
        self.log(f"{new_master.address} took over from {old_master.address} "
                 f"{time.monotonic() - old_master.stopped_at:.1f} s after it was stopped")
        return new_master

    def restart(self, member: ClusterMember, timeout: float = 30.0) -> None:
        """Start a killed server again on its ports and folder. It rejoins from its node file; a master
        whose replica was promoted meanwhile comes back as that replica's replica. Blocks until the
        cluster is healthy again (the server in sync, if a replica)."""
        if member.alive():
            raise ProcessError(f"{member.address} is running (pid {member.pid}); kill it first")
        member.server.start()
        self.log(f"restarted {member.address} (pid {member.pid})")
        self.wait_healthy(timeout)

    def reshard(self, source: ClusterMember, target: ClusterMember, slots: int, timeout: float = 120.0) -> None:
        """Move `slots` slots (and their keys, by MIGRATE) from `source` to `target` with `redis-cli
        --cluster reshard`; blocks until it is done and every server agrees on the new map."""
        self._redis_cli(["--cluster", "reshard", source.address, "--cluster-from", source.node_id,
                         "--cluster-to", target.node_id, "--cluster-slots", str(slots), "--cluster-yes"], timeout)
        self.log(f"moved {slots} slots from {source.address} to {target.address}")
        self.wait_healthy(timeout)

    def _redis_cli(self, arguments: Sequence[str], timeout: float) -> str:
        binary = shutil.which("redis-cli")
        if binary is None:
            raise ProcessError("redis-cli not found on PATH; install redis-tools (make servers) and retry")
        done = subprocess.run([binary, *arguments], capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, check=False)
        with open(self.base_dir / "redis-cli.log", "a") as log:
            log.write(f"$ redis-cli {' '.join(arguments)}\n{done.stdout}{done.stderr}\n")
        if done.returncode != 0 or "[ERR]" in done.stdout:
            lines = [ln for ln in (done.stdout + done.stderr).splitlines() if ln.strip()]
            raise ProcessError(f"redis-cli {' '.join(arguments[:2])} failed (status {done.returncode}): "
                               + " / ".join(lines[-5:]))
        return done.stdout

    def stop(self) -> None:
        """Stop every server that runs (SIGTERM, then SIGKILL), by PID."""
        stop_all(m.server.process for m in self.members)

    def __enter__(self) -> LocalRedisCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __iter__(self) -> Iterator[ClusterMember]:
        return iter(self.members)


def _cluster_options(node_timeout_ms: int, bus_port: int, extra: Sequence[str]) -> tuple[str, ...]:
    return ("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(node_timeout_ms), "--cluster-port", str(bus_port),
            "--cluster-require-full-coverage", "no",
            "--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0",   # a replica syncs at once
            *extra)


def _start_member(index: int, folder: Path, node_timeout_ms: int, extra: Sequence[str]) -> ClusterMember:
    """One server on a free data port and a free bus port (both chosen again if someone takes one first)."""
    for attempt in range(3):
        port, bus_port = free_port(), free_port()
        server = RedisServer(folder, port, options=_cluster_options(node_timeout_ms, bus_port, extra))
        try:
            server.start()
            return ClusterMember(index, server, bus_port)
        except ProcessError as exc:
            if attempt == 2 or not (lost_its_port(str(exc)) or "already in use" in str(exc)
                                    or "not the one" in str(exc)):
                raise
    raise AssertionError("unreachable")


def start_redis_cluster(base_dir: Path, masters: int = 3, replicas: int = 1, *,
                        node_timeout_ms: int = NODE_TIMEOUT_MS, options: Sequence[str] = (),
                        timeout: float = 60.0, log: Callable[[str], None] | None = None) -> LocalRedisCluster:
    """Start `masters` x (1 + `replicas`) servers in `base_dir/server-N/`, join them into one cluster
    (`redis-cli --cluster create ... --cluster-replicas`) and block until it is healthy (every slot
    served, every server agreeing, every replica in sync). `options`: more redis-server arguments
    for every server. On any failure every server started is stopped again."""
    if masters < 3:
        raise ValueError("a Redis Cluster needs at least 3 masters (redis-cli --cluster create refuses fewer)")
    if redis_version() < (7, 0):
        raise ProcessError(f"redis-server {'.'.join(map(str, redis_version()))} is older than 7.0, which "
                           "--cluster-port (a free bus port of each server's own) needs")
    base_dir = Path(base_dir)
    base_dir.mkdir(parents=True, exist_ok=True)
    cluster = LocalRedisCluster(base_dir, [], node_timeout_ms, tuple(options), log or (lambda _line: None))
    try:
        for index in range(masters * (1 + replicas)):
            cluster.members.append(_start_member(index, base_dir / f"server-{index}", node_timeout_ms, options))
        for member in cluster.members:
            member.node_id = str(_ask(member.port, "CLUSTER", "MYID"))
        cluster._redis_cli(["--cluster", "create", *cluster.seeds, "--cluster-replicas", str(replicas),
                            "--cluster-yes"], timeout)
        cluster.wait_healthy(timeout)
        cluster.log(f"Redis Cluster of {masters} masters and {masters * replicas} replicas on "
                    f"{', '.join(cluster.seeds)}")
        return cluster
    except BaseException:
        cluster.stop()
        raise
