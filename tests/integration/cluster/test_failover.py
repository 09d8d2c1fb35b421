"""The failure matrix, drilled on real processes: three nodes, three etcd members, Redis with AOF.

Every test puts steady load on the cluster, injects one fault with a real signal,
then audits stored state: no acknowledged workflow lost, none completed twice.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from collections.abc import Iterator

import pytest

from devtools.drill import DrillReport, SteadyLoad, audit, kill_leader, register_demo, wait_for_first_decision
from devtools.local_cluster import ClusterSettings, LocalCluster, start_worker, wait_for_leader
from worker import WorkflowClient

TTL_S = 2.0
LOAD_PER_S = 15.0


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    settings = ClusterSettings(name="failover", etcd_members=3, node_ports=[0, 0, 0], lease_ttl_s=TTL_S,
                               workers=0, log_level="INFO")
    with LocalCluster(tmp_path, settings).start(workers=False) as running:
        yield running


@pytest.fixture
def client(cluster: LocalCluster) -> Iterator[WorkflowClient]:
    client = WorkflowClient(cluster.endpoints, timeout_s=15.0)
    wait_for_leader(client, 30.0)
    register_demo(client)
    try:
        yield client
    finally:
        client.close()


def add_worker(cluster: LocalCluster, name: str, endpoints: list[str], delay_ms: int = 0):
    process = start_worker(cluster.base_dir / "logs", name=name, endpoints=endpoints, concurrency=16,
                           extra=["--delay-ms", str(delay_ms), "--log-level", "WARNING"])
    cluster.workers.append(process)
    return process


def assert_nothing_lost(cluster: LocalCluster, client: WorkflowClient, started: list[str]) -> DrillReport:
    report = DrillReport(signal="-")
    audit(cluster, client, report, started, settle_timeout_s=60.0)
    assert report.started > 0
    assert report.lost == [], f"lost workflows: {report.lost[:5]}"
    assert report.completed_twice == [], f"completed twice: {report.completed_twice[:5]}"
    assert report.completed == report.started, report.summary()
    return report


def leader_of(client: WorkflowClient) -> str:
    return wait_for_leader(client)["leader_id"]


def test_sigkill_leader_new_leader_decides_and_nothing_is_lost(cluster, client):
    add_worker(cluster, "w1", cluster.endpoints)
    with SteadyLoad(client, "three_noops", LOAD_PER_S) as load:
        time.sleep(1.0)
        old = leader_of(client)
        failover_ms = kill_leader(cluster, client, signal.SIGKILL, restart=False)
        time.sleep(1.0)
    assert leader_of(client) != old
    # Detection is bounded by the lease: at most TTL plus etcd's and our own slack.
    assert failover_ms < (TTL_S + 3.0) * 1000, failover_ms
    assert_nothing_lost(cluster, client, load.started)


def test_sigterm_leader_hands_over_fast(cluster, client):
    add_worker(cluster, "w1", cluster.endpoints)
    with SteadyLoad(client, "three_noops", LOAD_PER_S) as load:
        time.sleep(1.0)
        old = leader_of(client)
        handover_ms = kill_leader(cluster, client, signal.SIGTERM, restart=False)
        time.sleep(0.5)
    assert leader_of(client) != old
    assert handover_ms < TTL_S * 1000, "a graceful leader revokes its lease instead of letting it expire"
    assert "leadership released" in cluster.nodes[old].log_path.read_text()
    assert_nothing_lost(cluster, client, load.started)


def test_sigstop_leader_past_its_ttl_is_fenced_and_steps_down(cluster, client):
    add_worker(cluster, "w1", cluster.endpoints)
    with SteadyLoad(client, "three_noops", LOAD_PER_S) as load:
        time.sleep(1.0)
        old = leader_of(client)
        frozen = cluster.nodes[old]
        frozen.pause()
        try:
            wait_for_first_decision(cluster, not_id=old)
            new_status = wait_for_leader(client, not_id=old)
            time.sleep(0.5)
        finally:
            frozen.resume()
        time.sleep(2.0)
    # the old leader noticed its deadline had passed and stopped leading; it is a follower now
    old_client = WorkflowClient([cluster.endpoint_of(old)], timeout_s=5.0)
    try:
        status = old_client.cluster_status()
    finally:
        old_client.close()
    assert status["role"] == "FOLLOWER" and status["leader_id"] == new_status["leader_id"]
    assert int(status["epoch"]) >= int(new_status["epoch"]) > 0
    log_text = cluster.nodes[old].log_path.read_text()
    assert "stopped leading" in log_text
    # the stored fencing epoch belongs to the new term in every partition: any write of the old one is refused
    import redis

    from orchestrator.store.redis.keys import Keys, cluster_prefix
    keys = Keys(cluster_prefix("failover"))
    with redis.Redis.from_url(cluster.redis.url) as raw:
        epochs = raw.mget([keys.epoch(p) for p in keys.all_partitions()])
    assert None not in epochs
    assert min(int(e) for e in epochs) >= int(new_status["epoch"])
    assert_nothing_lost(cluster, client, load.started)


def test_sigkill_follower_its_workers_reconnect(cluster, client):
    leader = leader_of(client)
    follower = next(n for n in cluster.nodes if n != leader)
    others = [cluster.endpoint_of(n) for n in cluster.nodes if n != follower]
    # both workers talk to the follower first; tasks take a while so some are in flight at the kill
    add_worker(cluster, "w1", [cluster.endpoint_of(follower), *others], delay_ms=200)
    add_worker(cluster, "w2", [cluster.endpoint_of(follower), *others], delay_ms=200)
    with SteadyLoad(client, "three_noops", LOAD_PER_S) as load:
        time.sleep(1.5)
        cluster.nodes[follower].kill()
        time.sleep(2.0)
    assert leader_of(client) == leader   # losing a follower costs no election
    assert_nothing_lost(cluster, client, load.started)


def test_sigkill_worker_mid_task_is_redispatched(cluster, client):
    client.register_task_def({"name": "noop", "retryCount": 3, "retryDelaySeconds": 0,
                              "responseTimeoutSeconds": 1})
    victim = add_worker(cluster, "victim", cluster.endpoints, delay_ms=3000)
    with SteadyLoad(client, "three_noops", 5.0) as load:
        time.sleep(1.0)
    victim.kill()   # it holds every task started so far, mid-handler
    add_worker(cluster, "rescuer", cluster.endpoints)
    report = assert_nothing_lost(cluster, client, load.started)
    assert report.repeated_attempts >= 1
    assert all(reason.startswith("lease expired") for reason in report.repeat_reasons), report.repeat_reasons


def test_redis_restart_loses_nothing_acknowledged(cluster, client):
    add_worker(cluster, "w1", cluster.endpoints)
    with SteadyLoad(client, "three_noops", LOAD_PER_S) as load:
        time.sleep(1.0)
        cluster.redis.restart()   # SIGTERM, then the same port and AOF
        time.sleep(2.0)
    # starts refused while Redis was down were not acknowledged; every acknowledged one finishes
    assert_nothing_lost(cluster, client, load.started)


def test_one_etcd_member_down_the_cluster_carries_on(cluster, client):
    add_worker(cluster, "w1", cluster.endpoints)
    cluster.etcd.stop_member(0)
    with SteadyLoad(client, "three_noops", LOAD_PER_S) as load:
        time.sleep(1.0)
        old = leader_of(client)
        kill_leader(cluster, client, signal.SIGKILL, restart=False)   # an election with two etcd members
        time.sleep(1.0)
    assert leader_of(client) != old
    assert_nothing_lost(cluster, client, load.started)


def test_operator_step_down_moves_leadership_without_losing_work(cluster, client):
    import subprocess
    import sys

    from worker import ClientError

    add_worker(cluster, "w1", cluster.endpoints)
    before = wait_for_leader(client)
    follower = next(n for n in cluster.nodes if n != before["leader_id"])
    follower_client = WorkflowClient([cluster.endpoint_of(follower)])
    try:
        with pytest.raises(ClientError) as err:
            follower_client.step_down()
        assert err.value.code == "FAILED_PRECONDITION" and before["leader_id"] in str(err.value)
    finally:
        follower_client.close()
    with SteadyLoad(client, "three_noops", LOAD_PER_S) as load:
        time.sleep(1.0)
        done = subprocess.run([sys.executable, "-m", "orchestrator.cli", "--endpoints", ",".join(cluster.endpoints),
                               "cluster", "step-down"], capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        assert "resigned leadership" in done.stdout
        after = wait_for_leader(client, not_id=before["leader_id"])
        time.sleep(1.0)
    assert int(after["epoch"]) > int(before["epoch"])
    assert cluster.nodes[before["leader_id"]].alive()   # it stays in the cluster, as a follower
    assert_nothing_lost(cluster, client, load.started)


def _completion_times_ms(cluster: LocalCluster) -> list[float]:
    """When each workflow ended, from the store's audit stream."""
    import asyncio

    from orchestrator.store.redis import RedisStore
    from orchestrator.store.redis.keys import cluster_prefix

    async def read() -> list[float]:
        assert cluster.redis is not None
        store = RedisStore.from_url(cluster.redis.url, cluster_prefix(cluster.settings.name))
        try:
            return [float(at) for _, at in await store.ended_entries()]
        finally:
            await store.close()
    return asyncio.run(read())


def test_work_goes_on_while_the_leader_is_frozen(cluster, client):
    """Events are decided where they land: with the leader frozen (SIGSTOP) and not yet replaced,
    workflows keep completing; only timers wait for the next leader. (The worker and the client
    talk to followers: a frozen process does not reset its connections, so whoever talks to it
    waits for a timeout, leader or not.)"""
    old = leader_of(client)
    followers = [cluster.endpoint_of(n) for n in cluster.nodes if n != old]
    add_worker(cluster, "w1", followers)
    follower_client = WorkflowClient(followers, timeout_s=15.0)
    try:
        with SteadyLoad(follower_client, "three_noops", LOAD_PER_S) as load:
            time.sleep(1.0)
            frozen = cluster.nodes[old]
            frozen_at_ms = time.time() * 1000
            frozen.pause()
            try:
                new_leader_ms = wait_for_first_decision(cluster, not_id=old)
            finally:
                frozen.resume()
            time.sleep(0.5)
        report = assert_nothing_lost(cluster, follower_client, load.started)
    finally:
        follower_client.close()
    during = [at for at in _completion_times_ms(cluster) if frozen_at_ms + 200 < at < new_leader_ms]
    window_s = (new_leader_ms - frozen_at_ms) / 1000
    assert window_s > 1.0, "SIGSTOP is not detected early: the lease decides"
    assert len(during) >= LOAD_PER_S * (window_s - 0.5) * 0.5, (len(during), window_s, report.summary())


def test_a_killed_leader_is_noticed_before_its_lease_expires(cluster, client):
    """The next candidate sees the leader's port refuse connections and revokes its lease."""
    add_worker(cluster, "w1", cluster.endpoints)
    with SteadyLoad(client, "three_noops", LOAD_PER_S) as load:
        time.sleep(1.0)
        old = leader_of(client)
        kill_leader(cluster, client, signal.SIGKILL, restart=False)
        time.sleep(0.5)
    logs = "".join(cluster.nodes[n].log_path.read_text() for n in cluster.nodes if n != old)
    assert f"leader {old} at" in logs and "revoking its lease" in logs, logs[-3000:]
    assert_nothing_lost(cluster, client, load.started)


def _leadership_acquisitions(cluster: LocalCluster) -> int:
    return sum(p.log_path.read_text().count("acquired leadership") for p in cluster.nodes.values())


def test_redis_down_during_a_leader_change_storms_nothing_and_a_stop_still_exits(cluster, client):
    """With the state store gone, a new leader waits for it (as leader) instead of resigning:
    no election storm. A node told to stop meanwhile exits promptly. Work resumes with Redis."""
    add_worker(cluster, "w1", cluster.endpoints)
    old = leader_of(client)
    cluster.redis.stop()
    before = _leadership_acquisitions(cluster)
    cluster.nodes[old].signal(signal.SIGTERM)          # a leader change while Redis is down
    assert cluster.nodes[old].wait(15) == 0             # and a stop that must not hang on Redis
    time.sleep(4.0)
    elections = _leadership_acquisitions(cluster) - before
    assert 1 <= elections <= 2, f"{elections} elections in 4 s with Redis down"
    cluster.redis.start()
    done = client.execute_workflow("three_noops", {}, wait_s=30)
    assert done["status"] == "COMPLETED"
