"""Nothing acknowledged is lost when the Redis master dies (issue 19), on real processes.

A master with two replicas that reach it through devtools/netproxy.py, one Sentinel, a node that
follows the master through it (`--redis-min-replicas N`), and load from outside: starts with
idempotency keys (gRPC), signals of a HUMAN task (gRPC) and task results (Conductor's REST API).
The proxy holds the replication stream for the last second, then the master is SIGKILLed and
Sentinel promotes a replica that never saw that second. With N = 1 every start, signal and result
the node acknowledged survives; with N = 0 the loss is observed, and it is bounded by what was
acknowledged while the stream was held.

Then a replica that stops (SIGSTOP) under N = 1: writes are refused within the bound, first as
"not confirmed" (WAIT), then by the master itself (min-replicas-to-write); nothing is half-written
or done twice, and once the replica is back every workflow completes without an operator.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import redis

from devtools.local_cluster import REPLICAS_ENV, ClusterSettings, LocalCluster, start_node, wait_for_leader
from devtools.netproxy import TO_CLIENT, NetProxy
from devtools.procs import (EtcdCluster, ManagedProcess, RedisServer, SentinelServer, free_port, start_redis,
                            start_sentinel, stop_all, wait_for_replicas)
from helpers import BackgroundWorker, unique, wait_for_status
from orchestrator.cli import build_parser
from orchestrator.config import NodeConfig
from orchestrator_api.structs import to_struct
from orchestrator_api.v1 import orchestrator_pb2 as pb
from orchestrator_api.v1 import orchestrator_pb2_grpc as pb_grpc
from worker import ClientError, Worker, WorkflowClient, task

REPLICA_TIMEOUT_MS = 500
HOLD_S = 1.0                  # the replication stream is held this long before the master dies
STEADY_S = 2.0                # load before that
STARTERS = 4                  # threads starting workflows, each STARTS_PER_S a second
STARTS_PER_S = 10.0
SLACK_S = 0.2                 # bytes the proxy had read before the hold began may be held with the rest
FAST_SYNC = ("--repl-diskless-sync-delay", "0")   # a replica syncs at once (Redis waits 5 s by default)
DEPLOY = Path(__file__).resolve().parents[3] / "deploy"


# --------------------------------------------------------------------------- the setting

def test_the_setting_its_flags_and_the_production_files() -> None:
    assert (NodeConfig().redis_min_replicas, NodeConfig().redis_replica_timeout_ms) == (0, 1000)
    production = NodeConfig.load(DEPLOY / "production/node.yaml")
    assert (production.redis_min_replicas, production.redis_replica_timeout_ms) == (1, 1000)
    redis_conf = (DEPLOY / "production/redis.conf").read_text()
    assert "\nmin-replicas-to-write 1\n" in redis_conf and "\nmin-replicas-max-lag " in redis_conf
    with pytest.raises(ValueError, match="redis_min_replicas"):
        NodeConfig(redis_min_replicas=-1)
    with pytest.raises(ValueError, match="redis_replica_timeout_ms"):
        NodeConfig(redis_replica_timeout_ms=0)
    args = build_parser().parse_args(["node", "--redis-min-replicas", "2", "--redis-replica-timeout-ms", "250"])
    assert (args.redis_min_replicas, args.redis_replica_timeout_ms) == (2, 250)


# --------------------------------------------------------------------------- the master kill under load

@dataclass
class Acked:
    """What the node acknowledged, with when (time.monotonic() at the answer)."""

    starts: dict[str, tuple[str, float]] = field(default_factory=dict)     # idempotency key -> (id, at)
    signals: dict[str, float] = field(default_factory=dict)                # workflow id -> at
    results: dict[str, tuple[str, float]] = field(default_factory=dict)    # task id -> (workflow id, at)
    refused: int = 0                                                       # calls that ended in an error
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class Outcome:
    acked: Acked
    hold_at: float
    lost_starts: list[str]
    lost_signals: list[str]
    lost_results: list[str]

    def lost_at(self) -> list[float]:
        """When each lost item had been acknowledged."""
        a = self.acked
        return ([a.starts[k][1] for k in self.lost_starts] + [a.signals[w] for w in self.lost_signals]
                + [a.results[t][1] for t in self.lost_results])

    def acked_after(self, moment: float) -> int:
        a = self.acked
        return (sum(at >= moment for _, at in a.starts.values()) + sum(at >= moment for at in a.signals.values())
                + sum(at >= moment for _, at in a.results.values()))


class Load:
    """Starts (with idempotency keys), signals of each started workflow's HUMAN task `approve`, and
    results of its SIMPLE task through the REST API, from threads, recording what was acknowledged."""

    def __init__(self, endpoint: str, http_base: str, workflow: str, task_type: str) -> None:
        self.endpoint, self.http_base, self.workflow, self.task_type = endpoint, http_base, workflow, task_type
        self.acked = Acked()
        self.stop_event = threading.Event()
        self.to_signal: list[str] = []
        self.threads = [threading.Thread(target=self._starter, args=(i,), daemon=True) for i in range(STARTERS)]
        self.threads += [threading.Thread(target=self._signaller, daemon=True),
                         threading.Thread(target=self._rest_worker, daemon=True)]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        for thread in self.threads:
            thread.join(15)

    def _starter(self, index: int) -> None:
        with WorkflowClient([self.endpoint], timeout_s=1.5) as client:
            n = 0
            while not self.stop_event.is_set():
                key = f"s{index}-{n}"
                n += 1
                try:
                    workflow_id = client.start_workflow(self.workflow, {"key": key}, idempotency_key=key)
                except ClientError:
                    with self.acked.lock:
                        self.acked.refused += 1
                    continue
                with self.acked.lock:
                    self.acked.starts[key] = (workflow_id, time.monotonic())
                    self.to_signal.append(workflow_id)
                self.stop_event.wait(1 / STARTS_PER_S)

    def _signaller(self) -> None:
        tries: dict[str, int] = {}
        with WorkflowClient([self.endpoint], timeout_s=1.5) as client:
            while not self.stop_event.is_set():
                with self.acked.lock:
                    batch, self.to_signal = self.to_signal, []
                for workflow_id in batch:
                    if self.stop_event.is_set():
                        return
                    try:
                        client.signal_task(workflow_id, "approve", output={"by": "test"})
                    except ClientError as refused:
                        tries[workflow_id] = tries.get(workflow_id, 0) + 1
                        if "waiting for a signal" in refused.message and tries[workflow_id] < 40:
                            with self.acked.lock:   # not scheduled yet: again in a moment
                                self.to_signal.append(workflow_id)
                        else:
                            with self.acked.lock:
                                self.acked.refused += 1
                        continue
                    with self.acked.lock:
                        self.acked.signals[workflow_id] = time.monotonic()
                self.stop_event.wait(0.02)

    def _rest_worker(self) -> None:
        with httpx.Client(base_url=self.http_base, timeout=3.0) as http:
            while not self.stop_event.is_set():
                try:
                    polled = http.get(f"/tasks/poll/batch/{self.task_type}",
                                      params={"workerid": "rest", "count": 8, "timeout": 100})
                except httpx.HTTPError:
                    self.stop_event.wait(0.05)
                    continue
                if polled.status_code != 200:
                    self.stop_event.wait(0.05)
                    continue
                for found in polled.json():
                    if self.stop_event.is_set():
                        return
                    try:
                        answer = http.post("/tasks", json={
                            "workflowInstanceId": found["workflowInstanceId"], "taskId": found["taskId"],
                            "status": "COMPLETED", "workerId": "rest", "outputData": {"done": found["taskId"]}})
                    except httpx.HTTPError:
                        answer = None
                    if answer is not None and answer.status_code == 200:
                        with self.acked.lock:
                            self.acked.results[found["taskId"]] = (found["workflowInstanceId"], time.monotonic())
                    else:
                        with self.acked.lock:
                            self.acked.refused += 1


class ReplicatedRedis:
    """A master, two replicas reaching it through one proxy, and a Sentinel that knows them all."""

    def __init__(self, folder: Path) -> None:
        self.processes: list[Any] = []
        self.master: RedisServer = start_redis(folder / "master", options=FAST_SYNC)
        self.processes.append(self.master)
        self.proxy = NetProxy(self.master.port).start()
        self.replicas = [start_redis(folder / f"replica{i}", replica_of=self.proxy.port, options=FAST_SYNC)
                         for i in (1, 2)]
        self.processes += self.replicas
        wait_for_replicas(self.master.port, 2)
        # failover-timeout also delays a Sentinel pointing replicas that follow another address (the proxy)
        # straight at the master: past this test's end
        # down-after above the node's replica timeout: no write still waits for replicas by the time a
        # replica can be promoted (ReplicationBarrier)
        self.sentinel: SentinelServer = start_sentinel(folder / "sentinel", self.master.port, down_after_ms=1000,
                                                       failover_timeout_ms=120_000)
        self.sentinel_client = redis.Redis(port=self.sentinel.port, decode_responses=True)
        deadline = time.monotonic() + 15
        while len(self.sentinel_client.sentinel_slaves("mymaster")) < 2:
            assert time.monotonic() < deadline, "the Sentinel never saw both replicas"
            time.sleep(0.05)

    def master_port(self) -> int:
        address = self.sentinel_client.sentinel_get_master_addr_by_name("mymaster")
        assert isinstance(address, tuple), address   # (host, port) of the master it names
        return int(address[1])

    def wait_for_promotion(self, timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        while self.master_port() == self.master.port:
            assert time.monotonic() < deadline, "Sentinel did not promote a replica"
            time.sleep(0.05)

    def stop(self) -> None:
        self.sentinel_client.close()
        try:
            stop_all([self.sentinel.process, *(p.process for p in self.processes)])
        finally:
            self.proxy.stop()


def human_then_simple(client: WorkflowClient, task_type: str) -> str:
    name = unique("durable")
    client.register_task_def({"name": task_type, "retryCount": 0, "responseTimeoutSeconds": 60})
    client.register_workflow_def({"name": name, "tasks": [
        {"name": "approve", "taskReferenceName": "approve", "type": "HUMAN"},
        {"name": task_type, "taskReferenceName": "work"}]})
    return name


def master_kill_under_load(folder: Path, etcd: EtcdCluster, min_replicas: int) -> Outcome:
    servers = ReplicatedRedis(folder)
    port, http_port = free_port(), free_port()
    node: ManagedProcess | None = None
    try:
        node = start_node(folder / "node", node_id="durable", port=port, redis_url="", cluster=unique("dur"),
                          etcd_endpoints=etcd.endpoints, lease_ttl_s=2.0, redis_sentinels=[servers.sentinel.address],
                          http_port=http_port, extra=["--redis-min-replicas", str(min_replicas),
                                                      "--redis-replica-timeout-ms", str(REPLICA_TIMEOUT_MS)])
        endpoint = f"127.0.0.1:{port}"
        with WorkflowClient([endpoint], timeout_s=20.0) as client:
            wait_for_leader(client, 20.0)
            task_type = unique("work")
            workflow = human_then_simple(client, task_type)
            load = Load(endpoint, f"http://127.0.0.1:{http_port}/api", workflow, task_type)
            load.start()
            try:
                time.sleep(STEADY_S)
                hold_at = time.monotonic()
                servers.proxy.hold(TO_CLIENT)     # the replicas hear nothing more from the master
                time.sleep(HOLD_S)
                servers.master.process.kill()
                servers.proxy.drop()              # what the replicas never got dies with the master
            finally:
                load.stop()
            servers.wait_for_promotion()
            acked = load.acked
            assert len(acked.starts) >= 30 and len(acked.signals) >= 15 and len(acked.results) >= 15, (
                f"too little load to tell: {len(acked.starts)} starts, {len(acked.signals)} signals, "
                f"{len(acked.results)} results acknowledged")
            outcome = audit(client, acked, hold_at)
            if min_replicas:   # the promoted replica has the other one behind it: work goes on
                work_goes_on(client, node, folder / "node" / "durable.log", f"http://127.0.0.1:{http_port}/api",
                             workflow, task_type)
            return outcome
    finally:
        if node is not None:
            node.stop()
        servers.stop()


def audit(client: WorkflowClient, acked: Acked, hold_at: float) -> Outcome:
    """Read back every acknowledged start, signal and result from the promoted replica."""
    workflows: dict[str, dict[str, Any] | None] = {}
    for workflow_id in {w for w, _ in acked.starts.values()} | set(acked.signals) | {w for w, _ in
                                                                                   acked.results.values()}:
        try:
            workflows[workflow_id] = client.get_workflow(workflow_id)
        except ClientError as missing:
            assert missing.code == "NOT_FOUND", missing
            workflows[workflow_id] = None

    def task_status(workflow_id: str, match: Any) -> str:
        found = workflows.get(workflow_id)
        if found is None:
            return "MISSING"
        return next((t["status"] for t in found.get("tasks", []) if match(t)), "MISSING")

    lost_starts = [key for key, (workflow_id, _) in acked.starts.items() if workflows[workflow_id] is None]
    lost_signals = [w for w in acked.signals if task_status(w, lambda t: t["reference_name"] == "approve")
                    != "COMPLETED"]
    lost_results = [t for t, (w, _) in acked.results.items()
                    if task_status(w, lambda found, t=t: found["task_id"] == t) != "COMPLETED"]
    outcome = Outcome(acked, hold_at, lost_starts, lost_signals, lost_results)
    print(f"acknowledged {len(acked.starts)} starts, {len(acked.signals)} signals, {len(acked.results)} results "
          f"({outcome.acked_after(hold_at)} of them while the stream was held), {acked.refused} calls refused; "
          f"lost {len(lost_starts)} starts, {len(lost_signals)} signals, {len(lost_results)} results")
    return outcome


def log_tail(log: Path, lines: int = 60) -> str:
    """The node's last log lines above DEBUG: what a failure here needs to be understood."""
    kept = [line for line in log.read_text(errors="replace").splitlines() if " DEBUG " not in line]
    return "\n".join(kept[-lines:])


def stuck_report(client: WorkflowClient, node: ManagedProcess, node_log: Path, workflow_id: str) -> str:
    """Why a workflow may not move: how it reads now, and the node's log after it dumped what each of
    its tasks awaits (SIGUSR1): a hang logs nothing else."""
    try:
        found: Any = client.get_workflow(workflow_id)
        summary = {"status": found.get("status"), "tasks": [(t.get("referenceTaskName"), t.get("status"))
                                                             for t in found.get("tasks", [])]}
    except ClientError as refused:
        summary = {"error": str(refused)}
    os.kill(node.pid, signal.SIGUSR1)
    time.sleep(0.5)
    return f"it reads {summary}; the node's log:\n{log_tail(node_log, 200)}"


def work_goes_on(client: WorkflowClient, node: ManagedProcess, node_log: Path, http_base: str, workflow: str,
                 task_type: str) -> None:
    workflow_id = client.start_workflow(workflow, {"after": True}, idempotency_key=uuid.uuid4().hex)
    deadline = time.monotonic() + 20
    while True:
        try:
            client.signal_task(workflow_id, "approve", output={"by": "after"})
            break
        except ClientError as refused:
            assert "waiting for a signal" in refused.message, refused
            assert time.monotonic() < deadline, (f"workflow {workflow_id}, started after the failover, was not "
                                                 f"decided within 20 s: "
                                                 f"{stuck_report(client, node, node_log, workflow_id)}")
            time.sleep(0.05)
    with httpx.Client(base_url=http_base, timeout=5.0) as http:
        while True:
            polled = http.get(f"/tasks/poll/batch/{task_type}", params={"workerid": "rest", "count": 8,
                                                                         "timeout": 200}).json()
            for found in polled:
                http.post("/tasks", json={"workflowInstanceId": found["workflowInstanceId"],
                                          "taskId": found["taskId"], "status": "COMPLETED", "workerId": "rest"})
            if any(found["workflowInstanceId"] == workflow_id for found in polled):
                break
            assert time.monotonic() < deadline, (f"the task of workflow {workflow_id}, started after the failover, "
                                                 f"never came: {stuck_report(client, node, node_log, workflow_id)}")
    wait_for_status(client, workflow_id, "COMPLETED")


def test_with_one_replica_nothing_acknowledged_is_lost(tmp_path: Path, etcd: EtcdCluster) -> None:
    outcome = master_kill_under_load(tmp_path, etcd, min_replicas=1)
    assert (outcome.lost_starts, outcome.lost_signals, outcome.lost_results) == ([], [], []), (
        f"acknowledged but lost with --redis-min-replicas 1: {len(outcome.lost_starts)} starts, "
        f"{len(outcome.lost_signals)} signals, {len(outcome.lost_results)} results")


def test_without_replicas_the_loss_is_observed_and_bounded(tmp_path: Path, etcd: EtcdCluster) -> None:
    """N = 0 is the issue's measurement: what was acknowledged while the stream was held is lost,
    and only that (everything acknowledged before the hold survives)."""
    outcome = master_kill_under_load(tmp_path, etcd, min_replicas=0)
    assert outcome.lost_starts, "the held second should have cost acknowledged starts with N = 0"
    assert all(at >= outcome.hold_at - SLACK_S for at in outcome.lost_at()), \
        "something acknowledged well before the hold was lost"
    assert len(outcome.lost_at()) <= outcome.acked_after(outcome.hold_at - SLACK_S)


# --------------------------------------------------------------------------- a replica that stops

@pytest.fixture
def stoppable_replica(tmp_path: Path) -> Iterator[tuple[RedisServer, RedisServer]]:
    """A master that refuses writes 2 s after it last heard from its one replica, and that replica."""
    master = start_redis(tmp_path / "master", options=(*FAST_SYNC, "--min-replicas-to-write", "1",
                                                       "--min-replicas-max-lag", "2"))
    replica = start_redis(tmp_path / "replica", replica_of=master.port, options=FAST_SYNC)
    try:
        wait_for_replicas(master.port, 1)
        yield master, replica
    finally:
        stop_all([replica.process, master.process])


def test_a_stopped_replica_refuses_writes_in_time_and_work_resumes(tmp_path: Path, etcd: EtcdCluster,
                                                                  stoppable_replica: tuple[RedisServer,
                                                                                           RedisServer]) -> None:
    master, replica = stoppable_replica
    port, http_port = free_port(), free_port()
    node = start_node(tmp_path / "node", node_id="careful", port=port, redis_url=master.url, cluster=unique("rep"),
                      etcd_endpoints=etcd.endpoints, lease_ttl_s=2.0, http_port=http_port,
                      extra=["--redis-min-replicas", "1", "--redis-replica-timeout-ms", str(REPLICA_TIMEOUT_MS)])
    endpoint = f"127.0.0.1:{port}"
    client = WorkflowClient([endpoint], timeout_s=30.0)
    name, task_type = unique("steps"), unique("step")

    @task(task_type)
    def step(data: dict[str, Any]) -> dict[str, Any]:
        return {"seen": data.get("key")}

    background = None
    channel = grpc.insecure_channel(endpoint)
    stub = pb_grpc.WorkflowServiceStub(channel)
    try:
        wait_for_leader(client, 20.0)
        # a task the node could not give back while Redis refused writes (handed to a worker whose stream
        # ended) comes back when its lease expires: a short lease, and retries for those attempts
        client.register_task_def({"name": task_type, "retryCount": 3, "retryDelaySeconds": 0,
                                  "responseTimeoutSeconds": 3})
        client.register_workflow_def({"name": name, "tasks": [
            {"name": task_type, "taskReferenceName": f"s{i}", "inputParameters": {"key": "${workflow.input.key}"}}
            for i in range(3)]})
        background = BackgroundWorker(Worker(endpoints=[endpoint], handlers=[step], concurrency=8))
        first = client.start_workflow(name, {"key": "first"}, idempotency_key="first", correlation_id="first")
        wait_for_status(client, first, "COMPLETED")
        in_flight = [client.start_workflow(name, {"key": f"f{i}"}, idempotency_key=f"f{i}", correlation_id=f"f{i}")
                     for i in range(8)]

        replica.process.pause()   # the replica stops: it keeps its connection and answers nothing

        def refused_start(key: str) -> tuple[float, str]:
            began = time.monotonic()
            with pytest.raises(grpc.RpcError) as refused:
                stub.StartWorkflow(pb.StartWorkflowRequest(name=name, idempotency_key=key, correlation_id=key),
                                   timeout=10)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE, refused.value
            return time.monotonic() - began, str(refused.value.details())

        # WAIT finds no replica: refused within the bound, and told why and what to do
        refused_keys = ["during-0"]
        took, why = refused_start(refused_keys[-1])
        assert took <= REPLICA_TIMEOUT_MS / 1000 + 0.5, f"refused after {took:.2f} s"
        assert f"not confirmed by 1 replica within {REPLICA_TIMEOUT_MS} ms" in why and "same idempotency key" in why
        # once the replica is 2 s silent the master refuses writes itself: at once, nothing written
        deadline = time.monotonic() + 10
        while True:
            refused_keys.append(f"during-{len(refused_keys)}")
            took, why = refused_start(refused_keys[-1])
            if "min-replicas-to-write" in why:
                break
            assert f"not confirmed by 1 replica within {REPLICA_TIMEOUT_MS} ms" in why, why
            assert took <= REPLICA_TIMEOUT_MS / 1000 + 0.5, f"refused after {took:.2f} s"
            assert time.monotonic() < deadline, f"the master kept taking writes: {why}"
        assert took <= 0.5 and "nothing was written" in why, (took, why)
        with httpx.Client(base_url=f"http://127.0.0.1:{http_port}/api", timeout=10.0) as http:   # REST alike
            answer = http.post("/workflow", json={"name": name, "input": {"key": "rest"}, "correlationId": "rest"})
        assert answer.status_code == 503 and "min-replicas-to-write" in answer.json()["message"]
        time.sleep(1.0)            # workflows in flight meet refusals too (results, decisions)

        replica.process.resume()   # back: nothing to do by hand
        again = {key: client.start_workflow(name, {"key": key}, idempotency_key=key, correlation_id=key)
                 for key in refused_keys}
        for workflow_id in [first, *in_flight, *again.values()]:
            assert wait_for_status(client, workflow_id, {"COMPLETED", "FAILED"}, timeout_s=30)["status"] == \
                "COMPLETED", client.get_workflow(workflow_id)
        # each refused start, retried with its key, exists exactly once; the REST one never was
        for key, workflow_id in again.items():
            assert [w["workflow_id"] for w in client.search_workflows(correlation_id=key)[0]] == [workflow_id]
        assert client.search_workflows(correlation_id="rest")[0] == []
    finally:
        channel.close()
        if background is not None:
            background.stop()
        client.close()
        replica.process.resume()
        node.stop()


def test_a_step_not_acknowledged_gives_back_the_task_it_handed_over(tmp_path: Path, etcd: EtcdCluster,
                                                                    stoppable_replica: tuple[RedisServer,
                                                                                             RedisServer]) -> None:
    """A result's STEP applied on the master but not confirmed by the replica (its outcome unknown
    to the node) may have handed the next task to this node's worker without the push. That task
    went back to its queue only when its lease ran out (2 minutes here); now the node gives it back
    once Redis answers, as it does for a start."""
    master, replica = stoppable_replica
    port = free_port()
    node = start_node(tmp_path / "node", node_id="giver", port=port, redis_url=master.url, cluster=unique("back"),
                      etcd_endpoints=etcd.endpoints, lease_ttl_s=2.0, http_port=0,
                      extra=["--redis-min-replicas", "1", "--redis-replica-timeout-ms", str(REPLICA_TIMEOUT_MS)])
    endpoint = f"127.0.0.1:{port}"
    client = WorkflowClient([endpoint], timeout_s=30.0)
    name, gated_type, next_type = unique("gated"), unique("gated"), unique("next")
    entered, gate = threading.Event(), threading.Event()

    @task(gated_type)
    def gated(data: dict[str, Any]) -> dict[str, Any]:
        entered.set()
        gate.wait(30)
        return {"gated": True}

    @task(next_type)
    def after(data: dict[str, Any]) -> dict[str, Any]:
        return {"after": True}

    background = None
    try:
        wait_for_leader(client, 20.0)
        for task_type in (gated_type, next_type):   # a lease far longer than the test may wait
            client.register_task_def({"name": task_type, "retryCount": 0, "responseTimeoutSeconds": 120})
        client.register_workflow_def({"name": name, "tasks": [
            {"name": gated_type, "taskReferenceName": "gated"}, {"name": next_type, "taskReferenceName": "next"}]})
        background = BackgroundWorker(Worker(endpoints=[endpoint], handlers=[gated, after], concurrency=4))
        workflow_id = client.start_workflow(name, {})
        assert entered.wait(20), "the first task never reached its worker"

        replica.process.pause()   # the STEP of the first result applies on the master, unconfirmed
        gate.set()
        time.sleep(3 * REPLICA_TIMEOUT_MS / 1000)
        replica.process.resume()

        done = wait_for_status(client, workflow_id, {"COMPLETED", "FAILED"}, timeout_s=30)
        assert done["status"] == "COMPLETED", done
    finally:
        gate.set()
        if background is not None:
            background.stop()
        client.close()
        replica.process.resume()
        node.stop()


def test_an_event_taken_by_a_publish_that_replicas_did_not_confirm_is_handled_at_once(
        tmp_path: Path, etcd: EtcdCluster, stoppable_replica: tuple[RedisServer, RedisServer]) -> None:
    """A publish through a node reads the event for that node's handlers in the script that appends
    it (cluster/events.py `take`). Refused afterwards because no replica confirmed it, the event
    stays taken by this node's consumer: it was handled only after the handler's
    redeliverAfterSeconds (60 s here). Now the node handles what the append took before it waits
    for replicas, so the handler's workflow exists while the publish is still being refused."""
    master, replica = stoppable_replica
    port = free_port()
    node = start_node(tmp_path / "node", node_id="taker", port=port, redis_url=master.url, cluster=unique("take"),
                      etcd_endpoints=etcd.endpoints, lease_ttl_s=2.0, http_port=0,
                      extra=["--redis-min-replicas", "1", "--redis-replica-timeout-ms", str(REPLICA_TIMEOUT_MS)])
    client = WorkflowClient([f"127.0.0.1:{port}"], timeout_s=30.0)
    name, topic, tag, parked = unique("taken"), unique("taken.topic"), unique("tag"), unique("parked")
    try:
        wait_for_leader(client, 20.0)
        client.register_task_def({"name": parked})   # no worker: the workflow waits on it
        client.register_workflow_def({"name": name, "tasks": [{"name": parked, "taskReferenceName": "p"}]})
        client.register_event_handler({"name": unique("taken_handler"), "event": topic, "redeliverAfterSeconds": 60,
                                       "actions": [{"action": "start_workflow", "start_workflow": {
                                           "name": name, "correlationId": "${$.payload.tag}"}}]})
        time.sleep(2.5)   # the node runs a new handler within a second
        client.publish_event(topic, {"tag": unique("before")})   # confirmed: the handler reads

        replica.process.pause()   # no replica confirms from now on; the master takes writes for 2 s more
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel, pytest.raises(grpc.RpcError) as refused:
            pb_grpc.EventServiceStub(channel).PublishEvent(   # once: the SDK's client would try again
                pb.PublishEventRequest(topic=topic, payload=to_struct({"tag": tag})), timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE, refused.value
        assert "not confirmed by 1 replica" in str(refused.value.details())
        deadline = time.monotonic() + 1.0
        while not (found := client.search_workflows(correlation_id=tag)[0]) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(found) == 1, found
    finally:
        client.close()
        replica.process.resume()
        node.stop()


# --------------------------------------------------------------------------- make cluster REPLICAS=N

def test_local_cluster_with_replicas_survives_a_master_kill(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`make cluster REPLICAS=2` (ORCHESTRATOR_REDIS_REPLICAS): a master, two replicas, three Sentinels
    (quorum 2), nodes that follow the master through them with redis_min_replicas 1. kill -9 the
    master: a replica is promoted, the other follows it, and writes go on."""
    monkeypatch.setenv(REPLICAS_ENV, "2")
    config = tmp_path / "cluster.yaml"
    config.write_text("name: replicas\netcd_members: 1\nnode_ports: [0, 0]\nworkers: 0\nlog_level: WARNING\n")
    settings = ClusterSettings.load(config)
    assert (settings.redis_replicas, settings.min_replicas) == (2, 1)
    cluster = LocalCluster(tmp_path / "run", settings, fresh_election=True, announce=False)
    plan = cluster.plan()
    assert [role for _, role in plan.roles()].count("Sentinel 2") == 1 and len(plan.replicas) == 2
    with cluster.start(workers=False), WorkflowClient(cluster.endpoints, timeout_s=30.0) as client:
        assert cluster.redis is not None
        master = redis.Redis(port=cluster.redis.port, decode_responses=True)
        assert master.config_get("min-replicas-to-write") == {"min-replicas-to-write": "1"}
        master.close()
        wait_for_leader(client, 20.0, members=2)
        name, task_type = unique("rp"), unique("rpt")

        @task(task_type)
        def echo(data: dict[str, Any]) -> dict[str, Any]:
            return {"n": data.get("n")}

        client.register_task_def({"name": task_type, "retryCount": 3, "retryDelaySeconds": 0.2})
        client.register_workflow_def({"name": name, "tasks": [
            {"name": task_type, "taskReferenceName": "echo", "inputParameters": {"n": "${workflow.input.n}"}}]})
        background = BackgroundWorker(Worker(endpoints=cluster.endpoints, handlers=[echo]))
        try:
            before = client.start_workflow(name, {"n": 1})
            wait_for_status(client, before, "COMPLETED")
            assert cluster.redis is not None
            cluster.redis.process.kill()
            after = client.start_workflow(name, {"n": 2})
            assert wait_for_status(client, after, "COMPLETED", timeout_s=30)["tasks"][-1]["output"] == {"n": 2}
            assert client.get_workflow(before)["status"] == "COMPLETED"
        finally:
            background.stop()
