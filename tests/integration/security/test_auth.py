"""Tokens and roles on a real node given a tokens file: every gRPC call, every HTTP route (the
console, /metrics, Conductor's REST API) refused without a known token or the role it needs,
before anything is written; workers only for their task types; Conductor's SDK signs in."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import jwt
import pytest
import yaml

from grpc_health.v1 import health_pb2, health_pb2_grpc

from devtools.local_cluster import wait_for_leader
from devtools.procs import free_port
from helpers import BackgroundWorker, code_of, start_node_with_tokens, unique, wait_for_status
from orchestrator.core.auth import Tokens, TokensError
from orchestrator_api.v1 import orchestrator_pb2 as pb
from orchestrator_api.v1 import orchestrator_pb2_grpc as pb_grpc
from worker import Worker, WorkflowClient, task

JWT_SECRET = "a-shared-secret-of-at-least-32-bytes-" + uuid.uuid4().hex
TOKENS = {"admin": "admin-token-0123456789", "operator": "operator-token-0123456789",
          "reader": "reader-token-0123456789", "worker": "worker-token-0123456789",
          "other_worker": "other-worker-token-0123456789"}


class Secured:
    def __init__(self, endpoint: str, http: str) -> None:
        self.endpoint = endpoint
        self.http = http
        self.clients = {role: WorkflowClient([endpoint], token=token) for role, token in TOKENS.items()}
        self.anonymous = WorkflowClient([endpoint], token="")

    def close(self) -> None:
        for client in (*self.clients.values(), self.anonymous):
            client.close()


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory, etcd: Any, redis_server: Any) -> Iterator[Secured]:
    tokens = {"jwt": {"algorithm": "HS256", "secret_file": "jwt.secret", "issuer": "https://id.example"}, "tokens": [
        {"name": "ada", "roles": ["admin"], "token": TOKENS["admin"]},
        {"name": "ops", "roles": ["operator"], "token": TOKENS["operator"]},
        {"name": "audit", "roles": ["reader"], "token": TOKENS["reader"]},
        {"name": "billing-worker", "roles": ["worker"], "task_types": ["auth_charge"], "token": TOKENS["worker"]},
        {"name": "other-worker", "roles": ["worker"], "token": TOKENS["other_worker"]}]}
    process, endpoint, http = start_node_with_tokens(tmp_path_factory.mktemp("auth"), tokens, node_id="guarded",
                                                     etcd=etcd, redis_server=redis_server, jwt_secret=JWT_SECRET)
    running = Secured(endpoint, http)
    try:
        wait_for_leader(running.clients["reader"], 20.0)
        running.clients["admin"].register_task_def({"name": "auth_charge"})
        running.clients["admin"].register_workflow_def({
            "name": "auth_flow", "tasks": [{"name": "auth_charge", "taskReferenceName": "charge"}]})
        yield running
    finally:
        running.close()
        process.stop()


def test_grpc_calls_need_a_known_token_and_the_right_role(secured: Secured) -> None:
    assert code_of(secured.anonymous.list_task_defs) == "UNAUTHENTICATED"
    with WorkflowClient([secured.endpoint], token="not-a-known-token-at-all") as stranger:
        assert code_of(stranger.list_task_defs) == "UNAUTHENTICATED"
    reader, operator, admin = (secured.clients[r] for r in ("reader", "operator", "admin"))
    assert any(d["name"] == "auth_charge" for d in reader.list_task_defs())
    name = unique("denied")
    assert code_of(lambda: reader.register_task_def({"name": name})) == "PERMISSION_DENIED"
    assert code_of(lambda: operator.register_task_def({"name": name})) == "PERMISSION_DENIED"
    assert all(d["name"] != name for d in admin.list_task_defs())   # refused means nothing written
    assert code_of(lambda: reader.start_workflow("auth_flow", {})) == "PERMISSION_DENIED"
    workflow_id = operator.start_workflow("auth_flow", {})
    assert reader.get_workflow(workflow_id)["name"] == "auth_flow"
    assert code_of(lambda: operator.step_down()) == "PERMISSION_DENIED"
    assert code_of(lambda: reader.publish_event("auth.topic", {})) == "PERMISSION_DENIED"
    operator.terminate_workflow(workflow_id, reason="done with it")
    channel = grpc.insecure_channel(secured.endpoint)   # health checks stay open, for load balancers
    assert health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status == 1
    channel.close()


def test_a_worker_token_serves_only_its_task_types(secured: Secured) -> None:
    @task("auth_charge")
    def charge(data: dict[str, Any]) -> dict[str, Any]:
        return {"charged": True}

    background = BackgroundWorker(Worker(endpoints=[secured.endpoint], handlers=[charge], token=TOKENS["worker"]))
    try:
        workflow_id = secured.clients["operator"].start_workflow("auth_flow", {})
        assert wait_for_status(secured.clients["reader"], workflow_id, "COMPLETED")["output"] == {"charged": True}
    finally:
        background.stop()
    channel = grpc.insecure_channel(secured.endpoint)
    hello = pb.WorkerMessage(hello=pb.WorkerHello(worker_id="w", task_types=["payroll"], capacity=1))
    stream = pb_grpc.TaskServiceStub(channel).Connect(iter([hello]), timeout=5,
                                                      metadata=(("authorization", f"Bearer {TOKENS['worker']}"),))
    with pytest.raises(grpc.RpcError) as refused:
        next(stream)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED and "payroll" in refused.value.details()
    channel.close()


def test_http_routes_need_tokens_and_the_console_signs_in(secured: Secured) -> None:
    with httpx.Client(base_url=secured.http, timeout=10.0, follow_redirects=False) as http:
        assert http.get("/healthz").status_code == 200
        assert http.get("/api/metadata/taskdefs").status_code == 401
        assert http.get("/metrics").status_code == 401
        as_reader = {"X-Authorization": TOKENS["reader"]}
        assert http.get("/api/metadata/taskdefs", headers=as_reader).status_code == 200
        assert http.get("/metrics", headers={"Authorization": f"Bearer {TOKENS['reader']}"}).status_code == 200
        denied = http.post("/api/metadata/taskdefs", json=[{"name": "nope"}], headers=as_reader)
        assert denied.status_code == 403 and "admin" in denied.json()["message"]
        polled = http.get("/api/tasks/poll/batch/payroll", headers={"X-Authorization": TOKENS["worker"]})
        assert polled.status_code == 403
        assert http.get("/api/tasks/poll/batch/auth_charge", params={"timeout": 0},
                        headers={"X-Authorization": TOKENS["worker"]}).status_code == 200
        exchanged = http.post("/api/token", json={"keyId": "audit", "keySecret": TOKENS["reader"]})
        assert exchanged.json() == {"token": TOKENS["reader"]}
        assert http.post("/api/token", json={"keyId": "ada", "keySecret": TOKENS["reader"]}).status_code == 401
        # the console: a browser is sent to /login, signs in, and reads with its cookie
        page = http.get("/executions?name=auth_flow")
        assert page.status_code == 303 and page.headers["location"].startswith("/login?next=")
        login = http.get("/login")
        csrf = login.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        forged = http.post("/login", data={"token": TOKENS["reader"], "csrf": "forged", "next": "/executions"})
        assert forged.status_code == 403 and "set-cookie" not in forged.headers
        wrong = http.post("/login", data={"token": "guess-guess-guess", "csrf": csrf, "next": "/executions"})
        assert wrong.status_code == 401 and "unknown token" in wrong.text
        signed = http.post("/login", data={"token": TOKENS["reader"], "csrf": csrf, "next": "/executions"})
        assert signed.status_code == 303 and signed.headers["location"] == "/executions"
        assert "HttpOnly" in signed.headers["set-cookie"]
        assert http.get("/executions").status_code == 200   # the client keeps the cookie


def test_a_worker_token_reports_only_what_it_polled_itself(secured: Secured) -> None:
    workflow_id = secured.clients["operator"].start_workflow("auth_flow", {})
    with httpx.Client(base_url=f"{secured.http}/api", timeout=10.0) as http:
        polled = http.get("/tasks/poll/batch/auth_charge", params={"workerid": "w1", "timeout": 5000},
                          headers={"X-Authorization": TOKENS["worker"]}).json()
        task = next(t for t in polled if t["workflowInstanceId"] == workflow_id)
        result = {"taskId": task["taskId"], "workflowInstanceId": workflow_id, "workerId": "w1",
                  "status": "COMPLETED", "outputData": {"by": "a thief"}}
        stolen = http.post("/tasks", json=result, headers={"X-Authorization": TOKENS["other_worker"]})
        assert stolen.status_code == 409 and "held by another worker" in stolen.json()["message"]
        anonymous = {k: v for k, v in result.items() if k != "workerId"}
        unnamed = http.post("/tasks", json=anonymous, headers={"X-Authorization": TOKENS["other_worker"]})
        assert unnamed.status_code == 400
        by_reference = http.post(f"/tasks/{workflow_id}/charge/COMPLETED", json={},
                                 headers={"X-Authorization": TOKENS["other_worker"]})
        assert by_reference.status_code == 403 and "operator" in by_reference.json()["message"]
        own = http.post("/tasks", json={**result, "outputData": {"by": "its worker"}},
                        headers={"X-Authorization": TOKENS["worker"]})
        assert own.status_code == 200
    done = wait_for_status(secured.clients["reader"], workflow_id, "COMPLETED")
    assert done["output"] == {"by": "its worker"}


def signed(claims: dict[str, Any], secret: str = JWT_SECRET) -> str:
    now = int(time.time())
    return jwt.encode({"iss": "https://id.example", "iat": now, "exp": now + 300, **claims}, secret,
                      algorithm="HS256")


def test_jwts_from_an_identity_provider_carry_their_roles(secured: Secured) -> None:
    def client(token: str) -> WorkflowClient:
        return WorkflowClient([secured.endpoint], token=token, timeout_s=5.0)

    with client(signed({"sub": "ci-bot", "roles": ["operator"]})) as bot:
        workflow_id = bot.start_workflow("auth_flow", {})
        assert code_of(lambda: bot.register_task_def({"name": unique("jwt")})) == "PERMISSION_DENIED"
        bot.terminate_workflow(workflow_id, reason="jwt test")
    refused = {
        "expired": signed({"sub": "late", "roles": ["admin"], "exp": int(time.time()) - 10}),
        "forged": signed({"sub": "mallory", "roles": ["admin"]}, secret="another-secret-of-at-least-32-bytes!!"),
        "unknown role": signed({"sub": "odd", "roles": ["superuser"]}),
        "another issuer": jwt.encode({"iss": "https://evil.example", "sub": "x", "roles": ["admin"],
                                      "exp": int(time.time()) + 300}, JWT_SECRET, algorithm="HS256"),
        "no expiry": jwt.encode({"iss": "https://id.example", "sub": "x", "roles": ["admin"]}, JWT_SECRET,
                                algorithm="HS256")}
    for why, token in refused.items():
        with client(token) as stranger:
            assert code_of(stranger.list_task_defs) == "UNAUTHENTICATED", why
    with httpx.Client(base_url=secured.http, timeout=10.0) as http:   # the HTTP port takes them too
        reader_jwt = signed({"sub": "dash", "roles": ["reader"]})
        assert http.get("/api/metadata/taskdefs", headers={"Authorization": f"Bearer {reader_jwt}"}).status_code == 200


def test_conductor_python_signs_in_with_a_key_and_secret(secured: Secured) -> None:
    from conductor.client.configuration.configuration import Configuration
    from conductor.client.configuration.settings.authentication_settings import AuthenticationSettings
    from conductor.client.orkes_clients import OrkesClients

    settings = AuthenticationSettings(key_id="audit", key_secret=TOKENS["reader"])
    clients = OrkesClients(configuration=Configuration(server_api_url=f"{secured.http}/api",
                                                       authentication_settings=settings))
    assert any(d.name == "auth_charge" for d in clients.get_metadata_client().get_all_task_defs())


def test_a_node_refuses_to_start_with_a_tokens_file_it_cannot_use(tmp_path: Path, etcd: Any,
                                                                  redis_server: Any) -> None:
    bad = tmp_path / "tokens.yaml"
    bad.write_text(yaml.safe_dump({"tokens": [{"name": "x", "roles": ["root"], "token": "t" * 20}]}))
    done = subprocess.run([sys.executable, "-m", "orchestrator.cli", "node", "--node-id", "misconfigured",
                           "--listen", f"127.0.0.1:{free_port()}", "--http-listen", "",
                           "--redis-url", redis_server.url, "--etcd", ",".join(etcd.endpoints),
                           "--cluster", f"b{uuid.uuid4().hex[:8]}", "--tokens-file", str(bad)],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "cannot use the tokens file" in done.stderr and "`roles` must list some of" in done.stderr


@pytest.mark.parametrize("document,key,words", [
    ({"jwt": {"algorithm": "none"}}, b"k" * 40, "jwt.algorithm must be one of"),
    ({"jwt": {"algorithm": "HS256"}}, b"short", "at least 32 bytes"),
    ({"jwt": {"algorithm": "HS256"}}, None, "give `secret_file`"),
    ({"tokens": [{"name": "n", "roles": ["admin"], "sha256": 1111}]}, None, "quote the token"),
    ({"tokens": [{"name": "n", "roles": ["admin"], "token": "short"}]}, None, "at least 16 characters"),
    ({"tokens": [{"name": "n", "roles": ["admin"], "token": "same-token-twice-0000"},
                 {"name": "m", "roles": ["reader"], "token": "same-token-twice-0000"}]}, None, "listed twice"),
    ([], None, "must be a mapping"),
])
def test_a_tokens_file_that_cannot_be_trusted_is_refused_with_the_reason(document: Any, key: bytes | None,
                                                                         words: str) -> None:
    with pytest.raises(TokensError) as refused:
        Tokens.from_document(document, key)
    assert words in str(refused.value)
