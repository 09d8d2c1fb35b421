"""Noticing a dead leader sooner than its lease: the node next in line watches the leader's process.

A hard-killed leader holds its etcd lease until the TTL runs out, and until then its clocks
(timers, the lease reaper, the sweep) are stopped. The candidate right behind the leader keeps
a gRPC health stream open to it. When the stream breaks and a new TCP connection to the
leader's address is *refused*, the process is gone while its host is up: the watcher revokes
the leader's lease, etcd deletes its keys, and the next candidate wins at once.

Why this is safe even when the guess is wrong: leadership only ever decides who runs the
clocks, and every write they make is fenced by the epoch the new leader raises in Redis. A
leader that was wrongly deposed finds its lease gone at its next keep-alive and steps down,
and whatever it writes before that is refused once the new epoch is stored.

What it does not cover, on purpose: a paused process (SIGSTOP) or an unreachable host still
accepts or times out connections rather than refusing them, so those wait for the TTL; that
keeps a slow network from deposing a healthy leader.
"""

from __future__ import annotations

import asyncio
import logging

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from .election import Candidacy, Candidate
from .etcd import EtcdClient, EtcdError

log = logging.getLogger(__name__)

CHECK_EVERY_S = 0.2       # how often the watcher looks at who is ahead of it
PROBE_TIMEOUT_S = 0.3     # a connect that neither succeeds nor is refused in this time proves nothing


def lease_of(candidate: Candidate) -> int:
    """The lease behind an election key: `<prefix>/election/<lease id in hex>`."""
    return int(candidate.key.rsplit("/", 1)[1], 16)


async def connection_refused(address: str, timeout_s: float = PROBE_TIMEOUT_S) -> bool:
    """True only when the host answered that nothing listens on the port (RST): the process is gone."""
    host, _, port = address.rpartition(":")
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), timeout_s)
    except ConnectionRefusedError:
        return True
    except (OSError, TimeoutError, ValueError):
        return False
    writer.close()
    return False


class LeaderWatch:
    def __init__(self, candidacy: Candidacy, etcd: EtcdClient,
                 credentials: grpc.ChannelCredentials | None = None) -> None:
        self.candidacy = candidacy
        self.etcd = etcd
        self.credentials = credentials   # this node's certificate, when the cluster runs mutual TLS
        self.revoked = 0

    async def run(self) -> None:
        """Until cancelled: while this node is second in line, watch the leader."""
        while True:
            ahead = await self._leader_ahead()
            if ahead is None:
                await asyncio.sleep(CHECK_EVERY_S)
                continue
            await self._watch(ahead)

    async def _leader_ahead(self) -> Candidate | None:
        """The candidate ahead of this node, if it is the leader (its key is the oldest)."""
        if self.candidacy.is_leader:
            return None
        ahead = self.candidacy.predecessor
        if ahead is None:
            return None
        try:
            leader = await self.candidacy.leader()
        except EtcdError:
            return None
        if leader is None or leader.epoch != ahead.create_revision or not ahead.address:
            return None
        return ahead

    async def _watch(self, leader: Candidate) -> None:
        """Hold a health stream to the leader; when it breaks, probe the port and act."""
        stream = asyncio.create_task(self._stream_until_broken(leader.address))
        try:
            while not stream.done():
                await asyncio.wait({stream}, timeout=CHECK_EVERY_S)
                if self.candidacy.predecessor != leader or self.candidacy.is_leader:
                    return   # the queue moved on without us
        finally:
            stream.cancel()
            await asyncio.gather(stream, return_exceptions=True)
        if await connection_refused(leader.address):
            await self._revoke(leader)
        else:
            await asyncio.sleep(CHECK_EVERY_S)   # alive, or unreachable: the lease decides

    async def _stream_until_broken(self, address: str) -> None:
        channel = (grpc.aio.secure_channel(address, self.credentials) if self.credentials is not None
                   else grpc.aio.insecure_channel(address))
        async with channel:
            stub = health_pb2_grpc.HealthStub(channel)
            try:
                async for _ in stub.Watch(health_pb2.HealthCheckRequest(service="")):
                    pass
            except grpc.aio.AioRpcError:
                pass

    async def _revoke(self, leader: Candidate) -> None:
        lease = lease_of(leader)
        log.warning("leader %s at %s refuses connections: its process is gone; revoking its lease %x so that "
                    "the next candidate takes over now rather than when the lease expires",
                    leader.node_id, leader.address, lease)
        try:
            await self.etcd.revoke(lease)
            self.revoked += 1
        except EtcdError as exc:
            log.warning("could not revoke lease %x (%s); it expires by itself", lease, exc)

