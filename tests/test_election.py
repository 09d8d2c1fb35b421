"""Election against real etcd processes (started on free loopback ports, stopped by PID).

Drills: one leader, agreement, graceful hand-over, resign, lease loss while etcd hangs,
a hung leader process (SIGSTOP past its TTL), and a 3-member etcd cluster missing a member.
"""

from __future__ import annotations

import json
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path
from collections.abc import Callable, Iterator

import pyetcd
import pytest

from devtools import procs
from orchestrator.cluster.election_threads import DEPOSED_LEASE, DEPOSED_RESIGNED, Election, State

TTL = 2.0  # etcd rounds smaller TTLs up to ceil(1.5 * election timeout) = 2 s anyway


def wait_until(predicate: Callable[[], object], timeout: float, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


class Recorder:
    """Collects callbacks as (kind, arg, monotonic time, election deadline at that time)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, object, float, float]] = []
        self.election: Election | None = None
        self._lock = threading.Lock()

    def _add(self, kind: str, arg: object) -> None:
        deadline = self.election.deadline if self.election else 0.0
        with self._lock:
            self.events.append((kind, arg, time.monotonic(), deadline))

    def elected(self, epoch: int) -> None:
        self._add("elected", epoch)

    def deposed(self, reason: str) -> None:
        self._add("deposed", reason)

    def of(self, kind: str) -> list[tuple[str, object, float, float]]:
        with self._lock:
            return [e for e in self.events if e[0] == kind]


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[procs.EtcdCluster]:
    cluster = procs.start_etcd_cluster(tmp_path_factory.mktemp("etcd1"), size=1)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def own_etcd(tmp_path: Path) -> Iterator[procs.EtcdCluster]:
    """A private 1-member cluster, for tests that pause it."""
    cluster = procs.start_etcd_cluster(tmp_path / "etcd", size=1)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def make_election() -> Iterator[Callable[..., tuple[Election, Recorder]]]:
    """Builds started Elections on a fresh prefix and closes them all at the end."""
    made: list[Election] = []
    prefix = f"/test-{uuid.uuid4().hex[:8]}"

    def make(endpoints: list[str], node_id: str, start: bool = True) -> tuple[Election, Recorder]:
        rec = Recorder()
        election = Election(endpoints, node_id=node_id, address=f"{node_id}:7000", prefix=prefix,
                            ttl=TTL, on_elected=rec.elected, on_deposed=rec.deposed)
        rec.election = election
        made.append(election)
        if start:
            election.start()
        return election, rec

    make.prefix = prefix  # type: ignore[attr-defined]
    try:
        yield make
    finally:
        for election in made:
            election.close()


def raw_client(endpoint: str) -> pyetcd.Etcd3Client:
    host, port = endpoint.rsplit(":", 1)
    return pyetcd.client(host, int(port), timeout=2.0)


def leaders(elections: list[Election]) -> list[Election]:
    return [e for e in elections if e.is_leader]


def test_single_node_leads_with_epoch_equal_to_its_key_revision(etcd, make_election):
    election, rec = make_election(etcd.endpoints, "solo")
    assert wait_until(lambda: election.is_leader, 5.0)
    assert election.state is State.LEADING and election.leadership_valid()
    prefix = make_election.prefix  # read etcd directly to check the key layout contract
    client = raw_client(etcd.endpoints[0])
    try:
        keys = list(client.get_prefix(f"{prefix}/election/"))
        assert len(keys) == 1
        assert election.epoch == keys[0][1].create_revision
        proclaimed, _ = client.get(f"{prefix}/leader")
        assert json.loads(proclaimed)["epoch"] == election.epoch
    finally:
        client.close()
    assert wait_until(lambda: rec.of("elected"), 1.0)
    assert [e[1] for e in rec.of("elected")] == [election.epoch]
    info = election.leader()
    assert info is not None and (info.node_id, info.address, info.epoch) == ("solo", "solo:7000", election.epoch)
    assert abs(info.elected_at_ms - time.time() * 1000) < 10_000


def test_three_nodes_one_leader_and_graceful_handover(etcd, make_election):
    made = [make_election(etcd.endpoints, f"n{i}") for i in range(3)]
    elections = [e for e, _ in made]
    assert wait_until(lambda: len(leaders(elections)) == 1, 5.0)
    time.sleep(0.3)  # the others must stay followers
    assert len(leaders(elections)) == 1
    old = leaders(elections)[0]
    old_epoch = old.epoch
    views = [e.leader() for e in elections]
    assert all(v is not None and v.node_id == old.node_id and v.epoch == old_epoch for v in views)
    assert {m.node_id for m in elections[0].members()} == {"n0", "n1", "n2"}
    assert all(e.state is State.FOLLOWING for e in elections if e is not old)

    started = time.monotonic()
    old.close()  # the SIGTERM path: revoke the lease instead of letting it expire
    rest = [e for e in elections if e is not old]
    assert wait_until(lambda: len(leaders(rest)) == 1, 1.0), "no hand-over within 1 s"
    new = leaders(rest)[0]
    rec = made[elections.index(new)][1]
    assert new.epoch > old_epoch
    assert wait_until(lambda: rec.of("elected"), 1.0)
    assert rec.of("elected")[-1][1] == new.epoch and rec.of("elected")[-1][2] - started < 1.0
    assert made[elections.index(old)][1].of("deposed")[-1][1] == "closing"
    assert {m.node_id for m in new.members()} == {e.node_id for e in rest}


def test_resign_hands_over_and_rejoins_at_the_back(etcd, make_election):
    (a, rec_a), (b, rec_b) = make_election(etcd.endpoints, "a"), make_election(etcd.endpoints, "b")
    assert wait_until(lambda: len(leaders([a, b])) == 1, 5.0)
    old, other = (a, b) if a.is_leader else (b, a)
    old_rec = rec_a if old is a else rec_b
    old_epoch = old.epoch
    started = time.monotonic()
    old.resign(rejoin=False)
    assert old_rec.of("deposed")[-1][1] == DEPOSED_RESIGNED and not old.leadership_valid()
    assert wait_until(lambda: other.is_leader, 1.0), "no hand-over within 1 s of resign"
    assert other.epoch > old_epoch and time.monotonic() - started < 1.0
    # Still a member, no longer a candidate, until asked to campaign again.
    assert wait_until(lambda: {m.node_id for m in other.members()} == {"a", "b"}, 2.0)
    assert wait_until(lambda: old.status == "not a candidate (resigned)", 2.0)
    old.campaign()
    assert wait_until(lambda: old.state is State.FOLLOWING and "ahead" in old.status, 3.0)
    assert other.is_leader and not old.is_leader
    # The default resign rejoins at once, behind the other candidate.
    second_epoch = other.epoch
    other.resign()
    assert wait_until(lambda: old.is_leader, 1.0) and old.epoch > second_epoch
    assert wait_until(lambda: other.state is State.FOLLOWING and "ahead" in other.status, 3.0)


def test_lone_node_resign_wins_again_with_a_new_epoch(etcd, make_election):
    solo, rec = make_election(etcd.endpoints, "lone")
    assert wait_until(lambda: solo.is_leader, 5.0)
    first = solo.epoch
    solo.resign()
    assert wait_until(lambda: solo.is_leader, 2.0) and solo.epoch > first
    assert wait_until(lambda: len(rec.of("elected")) == 2, 1.0)
    assert [e[1] for e in rec.of("deposed")] == [DEPOSED_RESIGNED]


def test_lease_loss_when_etcd_hangs_deposes_before_expiry_then_leads_again(own_etcd, make_election):
    election, rec = make_election(own_etcd.endpoints, "hung")
    assert wait_until(lambda: election.is_leader, 5.0)
    first_epoch = election.epoch
    etcd_proc = own_etcd.members[0].process
    paused_at = time.monotonic()
    etcd_proc.pause()
    try:
        assert wait_until(lambda: rec.of("deposed"), TTL + 1.0)
        _, reason, deposed_at, deadline = rec.of("deposed")[0]
        assert reason == DEPOSED_LEASE
        assert not election.leadership_valid() and not election.is_leader
        # Deposed at the safe deadline, i.e. before the lease could expire on the etcd side
        # (the lease lives at least until the last successful keep-alive was sent + TTL).
        margin = max(0.25, TTL / 4)
        assert deadline - 0.05 <= deposed_at < deadline + margin - 0.1
        assert deposed_at - paused_at < TTL
        time.sleep(max(0.0, paused_at + TTL + 1.0 - time.monotonic()))  # hang past the TTL
        assert election.state is State.ETCD_UNREACHABLE
    finally:
        etcd_proc.resume()
    assert wait_until(lambda: election.is_leader, 5.0), "did not lead again after etcd came back"
    assert election.epoch > first_epoch
    assert wait_until(lambda: len(rec.of("elected")) == 2, 1.0)  # on_elected follows is_leader
    assert [e[1] for e in rec.of("elected")] == [first_epoch, election.epoch]
    assert len(rec.of("deposed")) == 1  # exactly once


CHILD = textwrap.dedent("""
    import signal, sys, threading, time
    from orchestrator.cluster.election_threads import Election
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    def say(*words):
        print(*words, flush=True)
    e = Election(sys.argv[1].split(","), node_id="child", address="child:1", prefix=sys.argv[2],
                 ttl=2.0, on_elected=lambda ep: say("elected", ep, time.monotonic()),
                 on_deposed=lambda why: say("deposed", why.replace(" ", "_"), time.monotonic(),
                                            e.leadership_valid()))
    e.start()
    while not stop.is_set():  # a stand-in engine: works only while leadership is valid
        now = time.monotonic()  # read before the check: a pause in between must not count
        if e.leadership_valid():
            say("tick", e.epoch, now)
        time.sleep(0.05)
    e.close()
""")


def test_hung_leader_process_is_replaced_and_steps_down_on_resume(etcd, make_election, tmp_path):
    prefix = f"/hung-{uuid.uuid4().hex[:8]}"
    child = procs.ManagedProcess("child", [sys.executable, "-c", CHILD, ",".join(etcd.endpoints), prefix],
                                 tmp_path)
    try:
        def lines(kind: str) -> list[list[str]]:
            return [ln.split() for ln in child.log_path.read_text().splitlines() if ln.startswith(kind)]

        assert wait_until(lambda: lines("elected"), 10.0), child.tail()
        child_epoch = int(lines("elected")[0][1])
        follower = Election(etcd.endpoints, node_id="follower", address="f:1", prefix=prefix, ttl=TTL)
        try:
            follower.start()
            assert wait_until(lambda: follower.state is State.FOLLOWING, 3.0)
            paused_at = time.monotonic()
            child.pause()
            assert wait_until(lambda: follower.is_leader, TTL + 2.0), "no takeover from a hung leader"
            assert follower.epoch > child_epoch
            time.sleep(0.2)
            child.resume()
            assert wait_until(lambda: lines("deposed"), 2.0), child.tail()
            _, reason, deposed_at, valid = lines("deposed")[0]
            assert reason == DEPOSED_LEASE.replace(" ", "_") and valid == "False"
            # The stale leader did no work after the pause: every tick predates it.
            assert all(float(t) < paused_at + 0.06 for _, _, t in lines("tick")), lines("tick")[-3:]
            assert float(deposed_at) > paused_at + TTL
            time.sleep(0.5)
            assert follower.is_leader and follower.leader().node_id == "follower"
        finally:
            follower.close()
    finally:
        child.stop()
    assert child.returncode == 0, child.tail()


def test_three_member_etcd_with_a_member_down_still_elects(tmp_path, make_election):
    cluster = procs.start_etcd_cluster(tmp_path / "etcd3", size=3)
    try:
        made = [make_election(cluster.endpoints, f"m{i}") for i in range(2)]
        elections = [e for e, _ in made]
        assert wait_until(lambda: len(leaders(elections)) == 1, 8.0)
        old = leaders(elections)[0]
        old_rec = made[elections.index(old)][1]
        client = raw_client(cluster.endpoints[0])
        try:
            raft_leader = client.status().leader.name
        finally:
            client.close()
        # Stop a member that is not etcd's raft leader: keep-alives fail over, nobody is deposed.
        victim = next(i for i, m in enumerate(cluster.members) if m.name != raft_leader)
        cluster.stop_member(victim)
        time.sleep(2 * TTL)
        assert old.is_leader and old.leadership_valid() and not old_rec.of("deposed")
        late, _ = make_election(cluster.endpoints, "late")  # joins with a member down
        assert wait_until(lambda: late.state is State.FOLLOWING, 5.0)
        assert {m.node_id for m in late.members()} == {"m0", "m1", "late"}
        other = next(e for e in elections if e is not old)
        assert other.leader().node_id == old.node_id
        old.close()
        assert wait_until(lambda: other.is_leader, 3.0), "no hand-over with an etcd member down"
        assert not late.is_leader and late.leader().epoch == other.epoch
    finally:
        cluster.stop()
