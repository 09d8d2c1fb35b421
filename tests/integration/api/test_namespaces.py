"""Namespaces on a real node: two teams register the same names (`charge_card`, `checkout`,
`child`, topic `orders`) and run side by side; each sees, runs and reaches only its own, through
gRPC, workers, events, Conductor's REST API and the console. A confined token cannot leave its
namespace; an open node takes the namespace the client names."""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from assertions import wait_until_topic_handled, wait_until_waiting
from devtools.local_cluster import wait_for_leader
from devtools.procs import ManagedProcess
from helpers import BackgroundWorker, code_of, start_node_with_tokens, wait_for_status
from orchestrator_api.v1 import orchestrator_pb2 as pb
from orchestrator_api.v1 import orchestrator_pb2_grpc as pb_grpc
from worker import Worker, WorkflowClient, task

JWT_SECRET = "namespaces-test-secret-of-32-bytes-" + uuid.uuid4().hex
TOKENS = {
    "root": "root-token-0123456789",                     # admin of the cluster: any namespace it names
    "a_admin": "team-a-admin-token-0123456789", "a_ops": "team-a-ops-token-0123456789",
    "a_worker": "team-a-worker-token-0123456789",
    "b_admin": "team-b-admin-token-0123456789", "b_ops": "team-b-ops-token-0123456789",
    "b_worker": "team-b-worker-token-0123456789",
}
SDK_WORKER = Path(__file__).resolve().parents[2] / "conductor_sdk" / "sdk_worker.py"


class Teams:
    def __init__(self, endpoint: str, http: str) -> None:
        self.endpoint = endpoint
        self.http = http
        self.clients = {role: WorkflowClient([endpoint], token=token) for role, token in TOKENS.items()}

    def close(self) -> None:
        for client in self.clients.values():
            client.close()


def _register(admin: WorkflowClient, team: str, retries: int) -> None:
    """The same names in each team, with different contents: what each team gets shows whose it is."""
    admin.register_task_def({"name": "charge_card", "retryCount": retries, "description": f"team {team}"})
    admin.register_task_def({"name": "pack", "description": f"team {team}"})
    admin.register_workflow_def({"name": "child", "tasks": [
        {"name": "note", "taskReferenceName": "note", "type": "SET_VARIABLE", "inputParameters": {"team": team}}],
        "outputParameters": {"team": team}})
    admin.register_workflow_def({"name": "checkout", "tasks": [
        {"name": "charge_card", "taskReferenceName": "charge", "inputParameters": {"n": "${workflow.input.n}"}},
        {"name": "sub", "taskReferenceName": "sub", "type": "SUB_WORKFLOW", "subWorkflowParam": {"name": "child"}},
        {"name": "dyn", "taskReferenceName": "dyn", "type": "DYNAMIC", "dynamicTaskNameParam": "which",
         "inputParameters": {"which": "${workflow.input.which}"}},
        {"name": "spawn", "taskReferenceName": "spawn", "type": "START_WORKFLOW",
         "inputParameters": {"startWorkflow": {"name": "child", "input": {}}}}],
        "failureWorkflow": "child",
        "outputParameters": {"charged_by": "${charge.output.team}", "child_team": "${sub.output.team}",
                             "dynamic_by": "${dyn.output.team}", "type": "${charge.taskType}",
                             "spawned": "${spawn.output.workflowId}"}})


@pytest.fixture(scope="module")
def teams(tmp_path_factory: pytest.TempPathFactory, etcd: Any, redis_server: Any) -> Iterator[Teams]:
    tokens = {"jwt": {"algorithm": "HS256", "secret_file": "jwt.secret"}, "tokens": [
        {"name": "root", "roles": ["admin"], "token": TOKENS["root"]},
        *({"name": f"{team}-{role}", "roles": [role], "namespace": f"team-{team}", "token": TOKENS[f"{team}_{key}"]}
          for team in ("a", "b") for key, role in (("admin", "admin"), ("ops", "operator"), ("worker", "worker")))]}
    process, endpoint, http = start_node_with_tokens(tmp_path_factory.mktemp("namespaces"), tokens, node_id="shared",
                                                     etcd=etcd, redis_server=redis_server, jwt_secret=JWT_SECRET)
    running = Teams(endpoint, http)
    try:
        wait_for_leader(running.clients["root"], 20.0)
        _register(running.clients["a_admin"], "a", retries=1)
        _register(running.clients["b_admin"], "b", retries=4)
        yield running
    finally:
        running.close()
        process.stop()


def team_worker(teams: Teams, team: str) -> BackgroundWorker:
    @task("charge_card")
    def charge(data: dict[str, Any]) -> dict[str, Any]:
        return {"team": team}

    @task("pack")
    def pack(data: dict[str, Any]) -> dict[str, Any]:
        return {"team": team}

    return BackgroundWorker(Worker(endpoints=[teams.endpoint], handlers=[charge, pack], worker_id="same-id",
                                   token=TOKENS[f"{team}_worker"]))


def test_two_teams_run_the_same_names_side_by_side_and_each_reaches_only_its_own(teams: Teams) -> None:
    a_ops, b_ops = teams.clients["a_ops"], teams.clients["b_ops"]
    a_worker, b_worker = team_worker(teams, "a"), team_worker(teams, "b")   # the same worker id, too
    try:
        started = {team: [ops.start_workflow("checkout", {"n": i, "which": "pack"}) for i in range(8)]
                   for team, ops in (("a", a_ops), ("b", b_ops))}
        for team, ops in (("a", a_ops), ("b", b_ops)):
            for workflow_id in started[team]:
                done = wait_for_status(ops, workflow_id, "COMPLETED")
                assert done["name"] == "checkout"
                spawned = done["output"].pop("spawned")   # START_WORKFLOW: a workflow of the same team
                assert done["output"] == {"charged_by": team, "child_team": team, "dynamic_by": team,
                                          "type": "charge_card"}
                assert wait_for_status(ops, spawned, "COMPLETED")["output"] == {"team": team}
                assert {t["task_type"] for t in done["tasks"] if t["kind"] == "SIMPLE"} == {"charge_card"}
    finally:
        a_worker.stop()
        b_worker.stop()
    # definitions: each team lists and reads its own
    for team, retries in (("a", 1), ("b", 4)):
        ops = teams.clients[f"{team}_ops"]
        assert sorted(d["name"] for d in ops.list_task_defs()) == ["charge_card", "pack"]
        assert ops.get_task_def("charge_card")["definition"]["retryCount"] == retries
        assert sorted(d["name"] for d in ops.list_workflow_defs()) == ["checkout", "child"]
        found, _ = ops.search_workflows(name="checkout", limit=100)
        assert {w["workflow_id"] for w in found} >= set(started[team])
        assert not {w["workflow_id"] for w in found} & set(started["a" if team == "b" else "b"])
        everything, _ = ops.search_workflows(limit=1000)   # no name: still only its own namespace
        assert all(w["name"] in ("checkout", "child") for w in everything)
        assert not {w["workflow_id"] for w in everything} & set(started["a" if team == "b" else "b"])
    # another team's workflow is not found, by any operation, and stays as it was
    theirs = started["b"][0]
    assert code_of(lambda: a_ops.get_workflow(theirs)) == "NOT_FOUND"
    assert code_of(lambda: a_ops.terminate_workflow(theirs, reason="not mine")) == "NOT_FOUND"
    assert code_of(lambda: a_ops.restart_workflow(theirs)) == "NOT_FOUND"
    assert b_ops.get_workflow(theirs)["status"] == "COMPLETED"
    # the cluster's admin sees the default namespace unless it names one
    root = teams.clients["root"]
    assert not [d for d in root.list_task_defs() if d["name"] in ("charge_card", "pack")]
    with WorkflowClient([teams.endpoint], token=TOKENS["root"], namespace="team-b") as root_in_b:
        assert root_in_b.get_task_def("charge_card")["definition"]["retryCount"] == 4
        assert root_in_b.get_workflow(theirs)["status"] == "COMPLETED"


def test_a_confined_token_cannot_leave_its_namespace(teams: Teams) -> None:
    with WorkflowClient([teams.endpoint], token=TOKENS["a_admin"], namespace="team-b") as escaping:
        assert code_of(escaping.list_task_defs) == "PERMISSION_DENIED"
        assert code_of(lambda: escaping.register_task_def({"name": "planted"})) == "PERMISSION_DENIED"
    with WorkflowClient([teams.endpoint], token=TOKENS["a_admin"], namespace="team-a") as same:
        assert "charge_card" in {d["name"] for d in same.list_task_defs()}   # naming its own is fine
    with WorkflowClient([teams.endpoint], token=TOKENS["root"], namespace="Not A Name") as odd:
        assert code_of(odd.list_task_defs) == "INVALID_ARGUMENT"
    with WorkflowClient([teams.endpoint], token=TOKENS["root"], namespace="team-b") as root_in_b:
        assert "planted" not in {d["name"] for d in root_in_b.list_task_defs()}   # refused wrote nothing
    # a name with ':' cannot reach another namespace's definition either
    a_ops = teams.clients["a_ops"]
    assert code_of(lambda: a_ops.start_workflow("team-b:checkout", {})) in ("NOT_FOUND", "INVALID_ARGUMENT")
    assert code_of(lambda: teams.clients["a_admin"].register_task_def({"name": "team-b:charge_card"})) \
        == "INVALID_ARGUMENT"
    # a team's worker may not take the system types every namespace shares
    channel = grpc.insecure_channel(teams.endpoint)
    hello = pb.WorkerMessage(hello=pb.WorkerHello(worker_id="w", task_types=["HTTP"], capacity=1))
    stream = pb_grpc.TaskServiceStub(channel).Connect(
        iter([hello]), timeout=5, metadata=(("authorization", f"Bearer {TOKENS['a_worker']}"),))
    with pytest.raises(grpc.RpcError) as refused:
        next(stream)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    channel.close()


def test_a_runtime_name_cannot_reach_into_another_namespace(teams: Teams) -> None:
    a_ops = teams.clients["a_ops"]
    workflow_id = a_ops.start_workflow("checkout", {"n": 1, "which": "team-b:pack"})
    worker = team_worker(teams, "a")
    try:
        failed = wait_for_status(a_ops, workflow_id, "FAILED")
    finally:
        worker.stop()
    dynamic = next(t for t in failed["tasks"] if t["reference_name"] == "dyn")
    assert "names no task definition" in dynamic["reason"]
    # its failure workflow is its own team's `child`, started in its namespace
    children, _ = a_ops.search_workflows(name="child", limit=200)
    failure = [w for w in children if w["input"].get("workflowId") == workflow_id]
    assert len(failure) == 1 and wait_for_status(a_ops, failure[0]["workflow_id"], "COMPLETED")["output"] == {
        "team": "a"}


def test_topics_and_event_waits_belong_to_a_namespace(teams: Teams) -> None:
    """Both teams wait on their own topic `orders`. Team b's event keyed by team a's workflow is
    handled by team b's consumer, which must not complete it; team a's event does."""
    a_admin, b_admin = teams.clients["a_admin"], teams.clients["b_admin"]
    for admin in (a_admin, b_admin):
        admin.register_workflow_def({"name": "await_order", "tasks": [
            {"name": "wait", "taskReferenceName": "wait", "type": "WAIT", "inputParameters": {"event": "orders"}}],
            "outputParameters": {"got": "${wait.output.payload.item}"}})
    a_ops, b_ops = teams.clients["a_ops"], teams.clients["b_ops"]
    workflow_id = a_ops.start_workflow("await_order", {})
    wait_until_waiting(a_ops, workflow_id)
    b_ops.publish_event("orders", {"item": "from team b"}, key=workflow_id)   # team b's own `orders`
    wait_until_topic_handled(b_ops, "orders", "await_order")   # handled by team b's consumer ...
    wait_until_topic_handled(a_ops, "orders", "await_order")   # ... and by team a's, had it gone there
    assert a_ops.get_workflow(workflow_id)["status"] == "RUNNING"

    def published(admin: WorkflowClient) -> list[dict[str, Any]]:
        return [e for e in admin.read_events("orders") if not e["payload"].get("marker")]
    assert [e["payload"] for e in published(b_admin)] == [{"item": "from team b"}]
    assert published(a_admin) == []
    a_ops.publish_event("orders", {"item": "from team a"}, key=workflow_id)
    assert wait_for_status(a_ops, workflow_id, "COMPLETED")["output"] == {"got": "from team a"}
    events = published(a_admin)
    assert [e["payload"] for e in events] == [{"item": "from team a"}] and events[0]["topic"] == "orders"


def test_event_handlers_act_within_their_namespace(teams: Teams) -> None:
    """Both teams register handler `on_order` on their topic `orders`, starting their own `child`;
    team a's handler told to terminate team b's workflow cannot: the event is dead-lettered in
    team a's own dead-letter topic, team b's workflow runs on."""
    a_admin, b_admin, a_ops, b_ops = (teams.clients[k] for k in ("a_admin", "b_admin", "a_ops", "b_ops"))
    topic = f"orders_{uuid.uuid4().hex[:6]}"
    for admin in (a_admin, b_admin):
        admin.register_event_handler({"name": "on_order", "event": topic, "actions": [
            {"action": "start_workflow", "start_workflow": {"name": "child", "input": {"order": "${$.payload.order}"},
                                                            "correlationId": "${$.payload.order}"}}]})
        admin.register_event_handler({"name": "stopper", "event": f"{topic}_stop", "actions": [
            {"action": "terminate_workflow", "terminate_workflow": {"workflowId": "${$.payload.workflowId}"}}]})
    assert {h["name"] for h in a_admin.list_event_handlers()} == {"on_order", "stopper"}
    order = f"o-{uuid.uuid4().hex[:6]}"
    a_ops.publish_event(topic, {"order": order})
    deadline = time.monotonic() + 20
    started: list[dict[str, Any]] = []
    while time.monotonic() < deadline and not started:
        started, _ = a_ops.search_workflows(name="child", correlation_id=order, limit=5)
        time.sleep(0.1)
    assert len(started) == 1 and wait_for_status(a_ops, started[0]["workflow_id"], "COMPLETED")["output"] == {
        "team": "a"}
    # team b's handler has handled whatever its topic held before: two events of its own, published
    # after team a's, one after the other, each started team b's child (a batch of events is
    # handled at once, so the second one is read only after the first's batch is done)
    for _ in range(2):
        mark = f"mark-{uuid.uuid4().hex[:6]}"
        b_ops.publish_event(topic, {"order": mark})
        deadline = time.monotonic() + 20
        while not b_ops.search_workflows(name="child", correlation_id=mark, limit=5)[0]:
            assert time.monotonic() < deadline, "team b's handler never started its child"
            time.sleep(0.05)
    assert b_ops.search_workflows(name="child", correlation_id=order, limit=5)[0] == []   # team b's did not run
    victim = b_ops.start_workflow("checkout", {"which": "pack"})   # no worker: it waits on charge_card
    a_ops.publish_event(f"{topic}_stop", {"workflowId": victim})
    deadline = time.monotonic() + 20
    letters: list[dict[str, Any]] = []
    while time.monotonic() < deadline and not letters:
        letters = [e for e in a_admin.read_events("deadletter") if e["payload"].get("topic") == f"{topic}_stop"]
        time.sleep(0.1)
    assert letters and "no such workflow" in letters[0]["payload"]["reason"]
    assert b_ops.get_workflow(victim)["status"] == "RUNNING"
    assert not [e for e in b_admin.read_events("deadletter") if e["payload"].get("topic") == f"{topic}_stop"]
    b_ops.terminate_workflow(victim, reason="test over")


def test_conductor_rest_and_the_console_scope_by_namespace(teams: Teams) -> None:
    b_ops = teams.clients["b_ops"]
    workflow_id = b_ops.start_workflow("checkout", {"n": 1, "which": "pack"})
    a_worker, b_worker = ({"X-Authorization": TOKENS[f"{t}_worker"]} for t in ("a", "b"))
    with httpx.Client(base_url=teams.http, timeout=10.0) as http:
        assert http.get("/api/tasks/poll/batch/charge_card", params={"timeout": 300, "workerid": "rest"},
                        headers=a_worker).json() == []   # team a's queue is empty
        polled = http.get("/api/tasks/poll/batch/charge_card", params={"timeout": 5000, "workerid": "rest"},
                          headers=b_worker).json()
        mine = next(t for t in polled if t["workflowInstanceId"] == workflow_id)
        assert mine["taskType"] == "charge_card" and mine["taskDefName"] == "charge_card"
        result = {"taskId": mine["taskId"], "workflowInstanceId": workflow_id, "workerId": "rest",
                  "status": "COMPLETED", "outputData": {"team": "b"}}
        assert http.post("/api/tasks", json=result, headers=a_worker).status_code == 409   # not its attempt
        assert http.post("/api/tasks", json=result, headers=b_worker).status_code == 200
        # task logs are the namespace's too: team a cannot read (nor add to) team b's by task id
        log_path = f"/api/tasks/{mine['taskId']}/log"
        assert http.post(log_path, content='"charged card 4242"', headers=b_worker).status_code == 200
        assert http.post(log_path, content='"planted by a"', headers=a_worker).status_code == 200
        as_b_ops = {"X-Authorization": TOKENS["b_ops"]}
        assert [e["log"] for e in http.get(log_path, headers=as_b_ops).json()] == ["charged card 4242"]
        assert [e["log"] for e in http.get(log_path, headers={"X-Authorization": TOKENS["a_ops"]}).json()] == [
            "planted by a"]
        as_a = {"X-Authorization": TOKENS["a_ops"]}
        assert http.get(f"/api/workflow/{workflow_id}", headers=as_a).status_code == 404
        assert http.get(f"/api/workflow/{workflow_id}", headers={"X-Authorization": TOKENS["b_ops"]}).json()[
            "workflowName"] == "checkout"
        assert http.get("/api/metadata/taskdefs", headers={**as_a, "X-Namespace": "team-b"}).status_code == 403
        defs = http.get("/api/metadata/taskdefs", headers=as_a).json()
        assert sorted(d["name"] for d in defs) == ["charge_card", "pack"] and defs[0]["description"] == "team a"
        # the console, signed in as team a, lists team a's definitions and not team b's workflow
        page = http.get("/definitions", headers=as_a)
        assert page.status_code == 200 and "checkout" in page.text and "team-b" not in page.text
        assert http.get(f"/executions/{workflow_id}", headers=as_a).status_code == 404
        # the cluster page shows a team its own queues and workers only; /metrics is the cluster's
        cluster_page = http.get("/cluster", headers=as_a)
        assert cluster_page.status_code == 200 and "team-b" not in cluster_page.text
        assert http.get("/metrics", headers=as_a).status_code == 403
        assert "team-b:charge_card" in http.get("/metrics", headers={"X-Authorization": TOKENS["root"]}).text


def test_an_open_node_takes_the_namespace_the_client_names(node: Any) -> None:
    space = f"ns-{uuid.uuid4().hex[:6]}"
    with WorkflowClient([node.endpoint], namespace=space) as scoped:
        scoped.register_task_def({"name": "greet"})
        scoped.register_workflow_def({"name": "hello", "tasks": [{"name": "greet", "taskReferenceName": "g"}],
                                      "outputParameters": {"said": "${g.output.said}"}})
        assert code_of(lambda: node.client.start_workflow("hello", {})) == "NOT_FOUND"   # not in the default one

        @task("greet")
        def greet(data: dict[str, Any]) -> dict[str, Any]:
            return {"said": "hi"}

        run_worker_in = BackgroundWorker(Worker(endpoints=[node.endpoint], handlers=[greet], namespace=space))
        try:
            workflow_id = scoped.start_workflow("hello", {})
            assert wait_for_status(scoped, workflow_id, "COMPLETED")["output"] == {"said": "hi"}
        finally:
            run_worker_in.stop()
        assert code_of(lambda: node.client.get_workflow(workflow_id)) == "NOT_FOUND"


def test_the_same_idempotency_key_in_two_namespaces_starts_two_workflows(teams: Teams) -> None:
    """A key is the caller's: team b reusing team a's key must neither get team a's workflow id
    nor be told its start already happened."""
    key = f"order-{uuid.uuid4().hex[:6]}"
    a_ops, b_ops = teams.clients["a_ops"], teams.clients["b_ops"]
    first_a = a_ops.start_workflow("child", {}, idempotency_key=key)
    first_b = b_ops.start_workflow("child", {}, idempotency_key=key)
    assert first_a != first_b
    assert a_ops.start_workflow("child", {}, idempotency_key=key) == first_a   # still idempotent per team
    assert b_ops.get_workflow(first_b)["name"] == "child"


def test_conductor_workers_reach_a_namespace_through_their_task_domain(node: Any, teams: Teams,
                                                                      tmp_path: Path) -> None:
    """conductor-python's workers, given a task domain, send it as `domain` on every poll: they
    serve that namespace's tasks and no other. A confined token may name only its own."""
    space, prefix = f"dom-{uuid.uuid4().hex[:6]}", f"d{uuid.uuid4().hex[:6]}"
    with WorkflowClient([node.endpoint], namespace=space) as scoped, \
            WorkflowClient([node.endpoint]) as default:
        for client in (scoped, default):   # the same names in the default namespace: left alone
            client.register_task_def({"name": f"{prefix}_echo"})
            client.register_workflow_def({"name": f"{prefix}_flow", "tasks": [
                {"name": f"{prefix}_echo", "taskReferenceName": "e", "inputParameters": {"n": 7}}],
                "outputParameters": {"n": "${e.output.n}"}})
        sdk = ManagedProcess("sdk-domain-worker", [sys.executable, str(SDK_WORKER)], tmp_path, env={
            **os.environ, "CONDUCTOR_SERVER_URL": f"http://{node.http_address}/api", "SDK_TASK_PREFIX": prefix,
            "SDK_DOMAIN": space})
        try:
            theirs = default.start_workflow(f"{prefix}_flow", {})
            deadline = time.monotonic() + 10
            while not default.get_workflow(theirs)["tasks"]:   # queued before any of the namespace's
                assert time.monotonic() < deadline, "the default namespace's task was never queued"
                time.sleep(0.02)
            # the namespace's workflows run by the SDK's workers, before and after half a second of
            # polls on the namespace's empty queue: all made after the default namespace's task was
            # queued, and none took it; a poll naming the domain, made here, waits and gets nothing
            mine = scoped.start_workflow(f"{prefix}_flow", {})
            assert wait_for_status(scoped, mine, "COMPLETED", timeout_s=60)["output"] == {"n": 7}
            with httpx.Client(base_url=f"http://{node.http_address}/api", timeout=10.0) as http:
                empty = http.get(f"/tasks/poll/batch/{prefix}_echo", params={
                    "domain": space, "workerid": "probe", "timeout": 500})
            assert empty.status_code == 200 and empty.json() == [], empty.text
            mine = scoped.start_workflow(f"{prefix}_flow", {})
            assert wait_for_status(scoped, mine, "COMPLETED", timeout_s=60)["output"] == {"n": 7}
            waiting = default.get_workflow(theirs)
            assert waiting["status"] == "RUNNING" and [t["status"] for t in waiting["tasks"]] == ["SCHEDULED"]
        finally:
            sdk.stop(timeout=10.0)
        default.terminate_workflow(theirs, reason="test over")
    with httpx.Client(base_url=f"http://{node.http_address}/api", timeout=10.0) as http:
        assert http.get(f"/tasks/poll/batch/{prefix}_echo", params={"domain": "Bad Domain"}).status_code == 400
    with httpx.Client(base_url=teams.http, timeout=10.0) as http:
        escaping = http.get("/api/tasks/poll/batch/charge_card", params={"domain": "team-b", "timeout": 0},
                            headers={"X-Authorization": TOKENS["a_worker"]})
        assert escaping.status_code == 403
