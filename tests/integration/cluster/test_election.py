"""The asyncio election (orchestrator.cluster.election) against real etcd processes.

Drills: one leader among three; epochs grow with every term; resign and close hand over in
well under a second; keep-alives that stop reaching etcd depose the leader before etcd can elect
another; a revoked lease ends the term; one of three etcd members down costs nothing; all of
etcd down deposes at the deadline without a busy loop; a hung leader (its event loop blocked)
is replaced and knows at once that its leadership is no longer valid; no herd.

Each test is a plain function that runs one asyncio scenario (pytest-asyncio is not used).
Every etcd process is started on free loopback ports in a tmp dir and stopped by its PID.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any
from collections.abc import AsyncGenerator, Callable, Coroutine, Iterator

import pytest

from devtools.procs import EtcdCluster, start_etcd_cluster
from orchestrator.cluster.election import (DEPOSED_CLOSING, DEPOSED_KEY_LOST, DEPOSED_LEASE, DEPOSED_RESIGNED,
                                           Candidacy, Election, Session, SessionExpired, State, default_margin)
from orchestrator.cluster.etcd import EtcdClient, EtcdUnavailable, Get, Watch

TTL = 2.0  # etcd rounds smaller TTLs up to ceil(1.5 * election timeout) = 2 s anyway
MARGIN = default_margin(TTL)

pytestmark = pytest.mark.timeout(60)


# ---------------------------------------------------------------------------- helpers

def run(scenario: Coroutine[Any, Any, None]) -> None:
    asyncio.run(scenario)


async def wait_until(predicate: Callable[[], object], timeout: float, interval: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(interval)
    return bool(predicate())


class TestClient(EtcdClient):
    """An EtcdClient that records its watches and can lose its lease traffic."""

    __test__ = False

    def __init__(self, endpoints: list[str]) -> None:
        super().__init__(endpoints)
        self.watched: list[tuple[str, bool]] = []
        self.drop_lease_calls = False

    async def watch(self, key: str, *, start_revision: int, prefix: bool = False) -> Watch:
        self.watched.append((key, prefix))
        return await super().watch(key, start_revision=start_revision, prefix=prefix)

    async def _dropped(self) -> None:
        # Like a network that silently loses the requests: every endpoint times out.
        await asyncio.sleep(self.timeout * len(self.endpoints))
        raise EtcdUnavailable("dropped by the test")

    async def keep_alive(self, lease_id: int) -> int:
        if self.drop_lease_calls:
            await self._dropped()
        return await super().keep_alive(lease_id)

    async def revoke(self, lease_id: int) -> bool:
        if self.drop_lease_calls:
            await self._dropped()
        return await super().revoke(lease_id)


class Node:
    """A Candidacy with its own client, recording its callbacks as (kind, arg, time, deadline)."""

    def __init__(self, endpoints: list[str], node_id: str, prefix: str) -> None:
        self.client = TestClient(endpoints)
        self.events: list[tuple[str, object, float, float]] = []
        self.c = Candidacy(self.client, node_id=node_id, address=f"{node_id}:7000", prefix=prefix, ttl=TTL,
                           on_elected=self._elected, on_deposed=self._deposed)

    async def _elected(self, epoch: int) -> None:  # async callbacks
        self.events.append(("elected", epoch, time.monotonic(), self.c.deadline))

    def _deposed(self, reason: str) -> None:       # and plain ones both work
        self.events.append(("deposed", reason, time.monotonic(), self.c.deadline))

    def of(self, kind: str) -> list[tuple[str, object, float, float]]:
        return [e for e in self.events if e[0] == kind]

    async def close(self) -> None:
        await self.c.close()
        await self.client.close()


class Nodes:
    """Builds started nodes on a fresh prefix; ``async with`` closes them all."""

    def __init__(self, endpoints: list[str]) -> None:
        self.endpoints = endpoints
        self.prefix = f"/test-{uuid.uuid4().hex[:8]}"
        self.all: list[Node] = []

    def add(self, node_id: str, endpoints: list[str] | None = None) -> Node:
        node = Node(endpoints or self.endpoints, node_id, self.prefix)
        self.all.append(node)
        node.c.start()
        return node

    def leaders(self, among: list[Node] | None = None) -> list[Node]:
        return [n for n in (among or self.all) if n.c.is_leader]

    async def one_leader(self, timeout: float = 5.0, among: list[Node] | None = None) -> Node:
        assert await wait_until(lambda: len(self.leaders(among)) == 1, timeout), "no single leader"
        return self.leaders(among)[0]

    async def __aenter__(self) -> Nodes:
        return self

    async def __aexit__(self, *exc: object) -> None:
        for node in self.all:
            await node.close()


@pytest.fixture(scope="module")
def etcd1(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    cluster = start_etcd_cluster(tmp_path_factory.mktemp("etcd-async"), size=1)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def own_etcd(tmp_path: Path) -> Iterator[EtcdCluster]:
    """A private 1-member cluster, for tests that stop it."""
    cluster = start_etcd_cluster(tmp_path / "etcd", size=1)
    try:
        yield cluster
    finally:
        cluster.stop()


async def queue_of(endpoints: list[str], prefix: str) -> list[Any]:
    async with EtcdClient(endpoints) as client:
        return (await client.get(Get(f"{prefix}/election/", prefix=True, sort_by_create=True))).kvs


# ---------------------------------------------------------------------------- drills

def test_one_leader_among_three_reads_and_no_herd(etcd1: EtcdCluster) -> None:
    async def scenario() -> None:
        async with Nodes(etcd1.endpoints) as nodes:
            for i in range(3):
                nodes.add(f"n{i}")
                await asyncio.sleep(0.05)  # a known queue order: n0, n1, n2
            leader = await nodes.one_leader()
            await asyncio.sleep(0.3)
            assert nodes.leaders() == [leader], "the others must stay followers"
            assert leader.c.state is State.LEADING and leader.c.leadership_valid()

            queue = await queue_of(etcd1.endpoints, nodes.prefix)
            assert [json.loads(kv.value)["node_id"] for kv in queue] == ["n0", "n1", "n2"]
            assert leader.c.node_id == "n0" and leader.c.epoch == queue[0].create_revision
            assert await wait_until(lambda: leader.of("elected"), 1.0)
            assert [e[1] for e in leader.of("elected")] == [leader.c.epoch]
            async with EtcdClient(etcd1.endpoints) as client:
                proclaimed = (await client.get(Get(f"{nodes.prefix}/leader"))).kvs
            assert json.loads(proclaimed[0].value)["epoch"] == leader.c.epoch

            for node in nodes.all:
                info = await node.c.leader()
                assert info is not None
                assert (info.node_id, info.address, info.epoch) == ("n0", "n0:7000", leader.c.epoch)
                assert abs(info.elected_at_ms - time.time() * 1000) < 10_000
            assert [m.node_id for m in await nodes.all[2].c.members()] == ["n0", "n1", "n2"]

            # No herd: each follower waits for the key just ahead of its own, and watches only it.
            for i, follower in enumerate(nodes.all[1:], start=1):
                assert follower.c.state is State.FOLLOWING and "is ahead" in follower.c.status
                assert follower.c.predecessor is not None and follower.c.predecessor.key == queue[i - 1].key
                assert set(follower.client.watched) == {(queue[i - 1].key, False)}
            # the leader watches its own key, and the members (to note when one goes)
            assert set(leader.client.watched) == {(queue[0].key, False), (f"{nodes.prefix}/members/", True)}
            assert not leader.of("deposed")

    run(scenario())


def test_resign_hands_over_fast_and_epochs_grow(etcd1: EtcdCluster) -> None:
    async def scenario() -> None:
        async with Nodes(etcd1.endpoints) as nodes:
            a, b = nodes.add("a"), nodes.add("b")
            old = await nodes.one_leader()
            other = b if old is a else a
            first_epoch = old.c.epoch

            started = time.monotonic()
            await old.c.resign(rejoin=False)
            assert old.of("deposed")[-1][1] == DEPOSED_RESIGNED and not old.c.leadership_valid()
            assert await wait_until(lambda: other.c.is_leader, 1.0), "no hand-over within 1 s of resign"
            assert time.monotonic() - started < 0.5
            assert other.c.epoch > first_epoch

            # Still a member, no longer a candidate, until asked to campaign again.
            assert await wait_until(lambda: old.c.status == "not a candidate (resigned)", 2.0)
            assert [m.node_id for m in await other.c.members()] == ["a", "b"]
            old.c.campaign()
            assert await wait_until(lambda: old.c.state is State.FOLLOWING and "ahead" in old.c.status, 2.0)
            assert other.c.is_leader and not old.c.is_leader

            # The default resign rejoins at once, behind the other candidate.
            second_epoch = other.c.epoch
            started = time.monotonic()
            await other.c.resign()
            assert await wait_until(lambda: old.c.is_leader, 1.0) and time.monotonic() - started < 0.5
            assert old.c.epoch > second_epoch
            assert await wait_until(lambda: other.c.state is State.FOLLOWING and "ahead" in other.c.status, 2.0)

            assert await wait_until(lambda: len(old.of("elected")) == 2, 1.0)
            epochs = sorted((e[2], e[1]) for n in nodes.all for e in n.of("elected"))
            assert [epoch for _, epoch in epochs] == [first_epoch, second_epoch, old.c.epoch]
            assert first_epoch < second_epoch < old.c.epoch

    run(scenario())


def test_lone_node_resign_wins_again_with_a_new_epoch(etcd1: EtcdCluster) -> None:
    async def scenario() -> None:
        async with Nodes(etcd1.endpoints) as nodes:
            solo = nodes.add("lone")
            await nodes.one_leader()
            first = solo.c.epoch
            await solo.c.resign()
            assert await wait_until(lambda: solo.c.is_leader, 1.0) and solo.c.epoch > first
            assert await wait_until(lambda: len(solo.of("elected")) == 2, 1.0)  # on_elected follows is_leader
            assert [e[1] for e in solo.of("elected")] == [first, solo.c.epoch]
            assert [e[1] for e in solo.of("deposed")] == [DEPOSED_RESIGNED]

    run(scenario())


def test_close_of_the_leader_hands_over_fast(etcd1: EtcdCluster) -> None:
    async def scenario() -> None:
        async with Nodes(etcd1.endpoints) as nodes:
            for i in range(3):
                nodes.add(f"c{i}")
            old = await nodes.one_leader()
            old_epoch = old.c.epoch
            rest = [n for n in nodes.all if n is not old]

            started = time.monotonic()
            await old.c.close()  # the SIGTERM path: revoke the lease instead of letting it expire
            assert old.of("deposed")[-1][1] == DEPOSED_CLOSING and not old.c.is_leader
            new = await nodes.one_leader(timeout=1.0, among=rest)
            assert await wait_until(lambda: new.of("elected"), 1.0)
            assert new.of("elected")[-1][2] - started < 0.5, "hand-over took too long"
            assert new.c.epoch > old_epoch and new.of("elected")[-1][1] == new.c.epoch
            assert old.c.state is State.STEPPING_DOWN and old.c.status == "closed"
            assert {m.node_id for m in await new.c.members()} == {n.c.node_id for n in rest}
            await old.c.close()  # idempotent
            assert len(old.of("deposed")) == 1

    run(scenario())


def test_lost_keepalives_depose_the_leader_before_etcd_elects_another(etcd1: EtcdCluster) -> None:
    async def scenario() -> None:
        async with Nodes(etcd1.endpoints) as nodes:
            first, second = nodes.add("k0"), nodes.add("k1")
            old = await nodes.one_leader()
            follower = second if old is first else first
            old_epoch = old.c.epoch
            # The session dies: etcd hears no more renewals, nor the revoke that follows.
            old.client.drop_lease_calls = True

            assert await wait_until(lambda: follower.c.is_leader, TTL + 2.0), "no takeover"
            assert await wait_until(lambda: follower.of("elected"), 1.0)
            _, reason, deposed_at, deadline = old.of("deposed")[0]
            elected_at = follower.of("elected")[0][2]
            assert reason == DEPOSED_LEASE and not old.c.leadership_valid()
            # Deposed at its safe deadline, which is before etcd could expire the lease: the old
            # leader stopped well before the new one started.
            assert deadline - 0.02 <= deposed_at < deadline + 0.1
            assert elected_at - deposed_at > MARGIN / 2, (elected_at - deposed_at)
            assert follower.c.epoch > old_epoch

            old.client.drop_lease_calls = False  # it comes back as a follower with a new lease
            assert await wait_until(lambda: old.c.state is State.FOLLOWING, TTL + 1.0)
            assert follower.c.is_leader and len(old.of("deposed")) == 1 and len(old.of("elected")) == 1

    run(scenario())


def test_a_revoked_lease_ends_the_term_and_the_node_stands_again(etcd1: EtcdCluster) -> None:
    async def scenario() -> None:
        async with Nodes(etcd1.endpoints) as nodes:
            solo = nodes.add("revoked")
            await nodes.one_leader()
            first = solo.c.epoch
            key = (await queue_of(etcd1.endpoints, nodes.prefix))[0].key
            async with EtcdClient(etcd1.endpoints) as admin:
                revoked_at = time.monotonic()
                assert await admin.revoke(int(key.rsplit("/", 1)[1], 16))
            assert await wait_until(lambda: solo.of("deposed"), 1.0)
            assert solo.of("deposed")[0][1] in (DEPOSED_KEY_LOST, DEPOSED_LEASE)
            assert solo.of("deposed")[0][2] - revoked_at < 0.5
            assert await wait_until(lambda: solo.c.is_leader, 2.0), "did not stand again"
            assert solo.c.epoch > first  # a new lease, a new key, a larger epoch
            assert await wait_until(lambda: len(solo.of("elected")) == 2, 1.0)
            assert [e[1] for e in solo.of("elected")] == [first, solo.c.epoch]

    run(scenario())


def _raft_leader(cluster: EtcdCluster) -> int:
    for i, endpoint in enumerate(cluster.endpoints):
        with urllib.request.urlopen(f"http://{endpoint}/metrics", timeout=2) as response:
            if b"\netcd_server_is_leader 1" in response.read():
                return i
    raise AssertionError("no etcd member says it is the raft leader")


def test_one_of_three_etcd_members_down_keeps_the_leader(tmp_path: Path) -> None:
    cluster = start_etcd_cluster(tmp_path / "etcd3", size=3)
    try:
        # Stop a member that is not etcd's raft leader (that would pause etcd itself for an
        # election), and put it first in every node's endpoint list so failover must happen.
        victim = next(i for i in range(3) if i != _raft_leader(cluster))
        endpoints = [cluster.endpoints[victim]] + [e for i, e in enumerate(cluster.endpoints) if i != victim]

        async def scenario() -> None:
            async with Nodes(endpoints) as nodes:
                for i in range(2):
                    nodes.add(f"m{i}")
                old = await nodes.one_leader(timeout=8.0)
                other = next(n for n in nodes.all if n is not old)
                await asyncio.to_thread(cluster.stop_member, victim)
                await asyncio.sleep(1.5 * TTL)
                assert old.c.is_leader and old.c.leadership_valid() and not old.of("deposed")
                late = nodes.add("late")  # joins with a member down
                assert await wait_until(lambda: late.c.state is State.FOLLOWING, 5.0)
                assert [m.node_id for m in await late.c.members()] == ["late", "m0", "m1"]
                info = await other.c.leader()
                assert info is not None and info.node_id == old.c.node_id
                await old.c.close()
                assert await wait_until(lambda: other.c.is_leader, 2.0), "no hand-over with a member down"
                assert not late.c.is_leader
                info = await late.c.leader()
                assert info is not None and info.epoch == other.c.epoch

        run(scenario())
    finally:
        cluster.stop()


def test_all_of_etcd_down_deposes_by_the_deadline_without_a_busy_loop(own_etcd: EtcdCluster) -> None:
    async def scenario() -> None:
        async with Nodes(own_etcd.endpoints) as nodes:
            solo = nodes.add("lead")
            await nodes.one_leader()
            other = nodes.add("wait")
            assert await wait_until(lambda: other.c.state is State.FOLLOWING, 2.0)
            first = solo.c.epoch
            stopped_at = time.monotonic()
            await asyncio.to_thread(own_etcd.stop_member, 0)
            assert await wait_until(lambda: solo.of("deposed"), TTL)
            _, reason, deposed_at, deadline = solo.of("deposed")[0]
            assert reason == DEPOSED_LEASE and not solo.c.leadership_valid()
            assert deposed_at < deadline + 0.1 and deposed_at - stopped_at < TTL

            before = [n.client.attempts for n in nodes.all]  # every endpoint attempt counts
            await asyncio.sleep(3.0)
            attempts = [n.client.attempts - b for n, b in zip(nodes.all, before)]
            assert max(attempts) <= 20, f"{attempts} etcd attempts in 3 s: a busy loop"
            assert all(n.c.state is State.ETCD_UNREACHABLE for n in nodes.all)

            await asyncio.to_thread(own_etcd.start_member, 0)
            leader = await nodes.one_leader(timeout=5.0)
            assert leader.c.epoch > first
            follower = other if leader is solo else solo
            assert await wait_until(lambda: follower.c.state is State.FOLLOWING, 2.0), follower.c.status
            assert "is ahead" in follower.c.status
            assert await wait_until(lambda: leader.of("elected") and leader.of("elected")[-1][1] == leader.c.epoch, 1.0)
            assert len(solo.of("deposed")) == 1  # exactly once

    run(scenario())


def test_hung_leader_is_replaced_and_knows_it_at_once(etcd1: EtcdCluster) -> None:
    """The leader's event loop is blocked past the TTL (like SIGSTOP) while a follower runs on
    its own loop in a thread: etcd expires the lease, the follower takes over, and the old
    leader's leadership_valid() is false before its loop has run a single step."""
    prefix = f"/hung-{uuid.uuid4().hex[:8]}"
    stop = threading.Event()
    follower: list[Candidacy] = []

    async def follow() -> None:
        async with EtcdClient(etcd1.endpoints) as client:
            async with Candidacy(client, node_id="follower", address="f:1", prefix=prefix, ttl=TTL) as candidacy:
                follower.append(candidacy)
                while not stop.is_set():
                    await asyncio.sleep(0.02)

    thread = threading.Thread(target=asyncio.run, args=(follow(),), daemon=True)

    async def scenario() -> None:
        async with Nodes(etcd1.endpoints) as nodes:
            nodes.prefix = prefix
            hung = nodes.add("hung")
            await nodes.one_leader()
            epoch = hung.c.epoch
            thread.start()
            assert await wait_until(lambda: follower and follower[0].state is State.FOLLOWING, 5.0)

            time.sleep(TTL + 1.0)  # blocks this event loop: no keep-alive, no callback, nothing
            assert hung.c.is_leader and not hung.c.leadership_valid()  # the clock already said no
            assert follower[0].is_leader and follower[0].epoch > epoch

            assert await wait_until(lambda: hung.of("deposed"), 1.0)
            assert hung.of("deposed")[0][1] == DEPOSED_LEASE
            assert await wait_until(lambda: hung.c.state is State.FOLLOWING, TTL)
            assert follower[0].is_leader
            leader = await hung.c.leader()
            assert leader is not None and leader.node_id == "follower"

    try:
        run(scenario())
    finally:
        stop.set()
        if thread.is_alive():
            thread.join(10)


def test_session_and_election_used_directly(etcd1: EtcdCluster) -> None:
    """The building blocks alone, the way etcd's concurrency package is used."""
    prefix = f"/direct-{uuid.uuid4().hex[:8]}"

    async def scenario() -> None:
        async with EtcdClient(etcd1.endpoints) as client:
            async with Session(client, ttl=TTL) as s1, Session(client, ttl=TTL) as s2:
                e1 = Election(s1, prefix, node_id="one", address="1")
                e2 = Election(s2, prefix, node_id="two", address="2")
                epoch1 = await e1.campaign()
                seen: list[str] = []
                second = asyncio.ensure_future(e2.campaign(on_wait=lambda c: seen.append(c.node_id)))
                await asyncio.sleep(0.2)
                assert not second.done() and seen == ["one"]
                observed = e2.observe()
                assert isinstance(observed, AsyncGenerator)   # an async generator: it can be closed
                leader = await anext(observed)
                assert leader is not None and leader.node_id == "one"
                await e1.resign()
                epoch2 = await asyncio.wait_for(second, 1.0)
                assert epoch2 > epoch1
                leader = await anext(observed)
                assert leader is not None and leader.node_id == "two"
                await observed.aclose()
                assert s1.valid() and s1.deadline > time.monotonic()

                # A cancelled campaign withdraws its key, so it cannot be elected unawares.
                third = asyncio.ensure_future(e1.campaign())
                await asyncio.sleep(0.1)
                third.cancel()
                await asyncio.gather(third, return_exceptions=True)
                assert e1.key is None and len(await queue_of(etcd1.endpoints, prefix)) == 1
            assert s1.done.is_set() and not s1.valid()
            with pytest.raises(SessionExpired):
                await s1.until_done(asyncio.sleep(1))

    run(scenario())


def test_a_key_planted_without_a_lease_never_leads_nor_blocks(etcd1: EtcdCluster) -> None:
    """Anyone who can write to etcd could plant `<prefix>/election/<anything>` without a lease:
    it would be the oldest key for ever. The nodes ignore every key not held by the lease its
    name says, or not in their format; a planted member key is not a member either."""
    async def scenario() -> None:
        async with Nodes(etcd1.endpoints) as nodes, EtcdClient(etcd1.endpoints) as intruder:
            election = f"{nodes.prefix}/election/"
            await intruder.put(f"{election}0", json.dumps({"node_id": "fake", "address": "evil:1"}).encode())
            await intruder.put(f"{election}garbage", b"not json")
            await intruder.put(f"{nodes.prefix}/members/fake",
                               json.dumps({"node_id": "fake", "address": "evil:1"}).encode())
            real = nodes.add("real")
            leader = await nodes.one_leader()
            assert leader is real
            info = await real.c.leader()
            assert info is not None and info.node_id == "real"
            assert [m.node_id for m in await real.c.members()] == ["real"]
            second = nodes.add("second")
            await asyncio.sleep(0.5)
            assert second.c.predecessor is not None and second.c.predecessor.node_id == "real"
            await real.c.resign(rejoin=False)
            assert await nodes.one_leader(among=[second]) is second   # the queue was not blocked
    asyncio.run(scenario())
