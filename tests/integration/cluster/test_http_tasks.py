"""HTTP and HTTP_POLL tasks, run by the nodes against real HTTP servers on loopback."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from helpers import serving, unique, wait_for_status


class Recorder(BaseHTTPRequestHandler):
    """Answers by path: /json, /fail (500), /slow (sleeps), /job (RUNNING twice, then DONE), /big."""

    server: RecordingServer

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.requests.append({"method": self.command, "path": self.path, "body": body.decode(),
                                     "headers": {k.lower(): v for k, v in self.headers.items()}})
        path = self.path.split("?")[0]
        if path == "/fail":
            self._send(500, b'{"error": "database is down"}')
        elif path == "/slow":
            time.sleep(1.5)
            self._send(200, b'{"late": true}')
        elif path == "/job":
            polls = sum(1 for r in self.server.requests if r["path"].startswith("/job"))
            self._send(200, json.dumps({"state": "DONE" if polls >= 3 else "RUNNING", "polls": polls}).encode())
        elif path == "/big":
            self._send(200, b"x" * (600 * 1024), "text/plain")
        elif path == "/text":
            self._send(200, b"plain words", "text/plain")
        else:
            self._send(200, json.dumps({"path": self.path, "method": self.command}).encode())

    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("X-Served-By", "recorder")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


class RecordingServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Recorder)
        self.requests: list[dict[str, Any]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture(scope="module")
def http_server() -> Iterator[RecordingServer]:
    with serving(RecordingServer()) as server:
        yield server


def http_workflow(client: Any, name: str, request: dict[str, Any], kind: str = "HTTP",
                  **task_def: Any) -> None:
    if task_def:
        client.register_task_def({"name": f"{name}_call", **task_def})
    client.register_workflow_def({
        "name": name, "schemaVersion": 2,
        "tasks": [{"name": f"{name}_call", "taskReferenceName": "call", "type": kind,
                   "inputParameters": {"http_request": request}}],
        "outputParameters": {"response": "${call.output.response}"}})


def call_task(workflow: dict[str, Any]) -> list[dict[str, Any]]:
    return [t for t in workflow["tasks"] if t["reference_name"] == "call"]


def test_an_http_task_calls_the_url_and_its_response_is_the_output(node: Any, http_server: RecordingServer) -> None:
    name = unique("http_post")
    http_workflow(node.client, name, {"uri": f"{http_server.url}/orders/${{workflow.input.id}}", "method": "POST",
                                      "headers": {"X-Tenant": "${workflow.input.tenant}"},
                                      "body": {"id": "${workflow.input.id}", "items": [1, 2]}})
    workflow_id = node.client.start_workflow(name, {"id": "o-17", "tenant": "acme"})
    workflow = wait_for_status(node.client, workflow_id, "COMPLETED")
    response = workflow["output"]["response"]
    assert response["statusCode"] == 200 and response["reasonPhrase"] == "OK"
    assert response["body"] == {"path": "/orders/o-17", "method": "POST"}
    assert response["headers"]["x-served-by"] == ["recorder"]
    sent = next(r for r in http_server.requests if r["path"] == "/orders/o-17")
    assert json.loads(sent["body"]) == {"id": "o-17", "items": [1, 2]}
    assert sent["headers"]["x-tenant"] == "acme" and sent["headers"]["content-type"] == "application/json"


def test_a_text_body_stays_text(node: Any, http_server: RecordingServer) -> None:
    name = unique("http_text")
    http_workflow(node.client, name, {"uri": f"{http_server.url}/text", "method": "GET"})
    workflow = wait_for_status(node.client, node.client.start_workflow(name, {}), "COMPLETED")
    assert workflow["output"]["response"]["body"] == "plain words"


def test_an_error_status_fails_the_attempt_and_the_task_definition_retries_it(
        node: Any, http_server: RecordingServer) -> None:
    name = unique("http_fail")
    http_workflow(node.client, name, {"uri": f"{http_server.url}/fail?w={name}", "method": "GET"},
                  retryCount=1, retryLogic="FIXED", retryDelaySeconds=0)
    workflow = wait_for_status(node.client, node.client.start_workflow(name, {}), "FAILED")
    attempts = call_task(workflow)
    assert [t["status"] for t in attempts] == ["FAILED", "FAILED"]
    assert "answered 500 Internal Server Error" in attempts[-1]["reason"]
    assert "database is down" in attempts[-1]["reason"]
    assert attempts[-1]["output"]["response"]["statusCode"] == 500
    assert sum(1 for r in http_server.requests if r["path"] == f"/fail?w={name}") == 2


def test_a_read_timeout_fails_the_task_and_never_holds_up_other_workflows(
        node: Any, http_server: RecordingServer) -> None:
    slow, quick = unique("http_slow"), unique("http_quick")
    http_workflow(node.client, slow, {"uri": f"{http_server.url}/slow", "method": "GET", "readTimeOut": 300})
    http_workflow(node.client, quick, {"uri": f"{http_server.url}/quick", "method": "GET"})
    slow_ids = [node.client.start_workflow(slow, {}) for _ in range(4)]
    started = time.monotonic()
    quick_id = node.client.start_workflow(quick, {})
    wait_for_status(node.client, quick_id, "COMPLETED")
    assert time.monotonic() - started < 1.0   # not behind the slow calls
    for workflow_id in slow_ids:
        workflow = wait_for_status(node.client, workflow_id, "FAILED")
        assert "timed out waiting for the answer" in call_task(workflow)[-1]["reason"]


def test_http_poll_polls_until_its_termination_condition_holds(node: Any, http_server: RecordingServer) -> None:
    name = unique("http_poll")
    http_workflow(node.client, name, {
        "uri": f"{http_server.url}/job", "method": "GET", "pollingInterval": 0, "pollingStrategy": "FIXED",
        "terminationCondition": "(function(){ return $.output.response.body.state === 'DONE'; })();"},
        kind="HTTP_POLL")
    workflow = wait_for_status(node.client, node.client.start_workflow(name, {}), "COMPLETED")
    assert workflow["output"]["response"]["body"] == {"state": "DONE", "polls": 3}
    assert call_task(workflow)[-1]["output"]["pollCount"] == 3


def test_http_poll_gives_up_after_max_poll_count(node: Any, http_server: RecordingServer) -> None:
    name = unique("http_poll_max")
    http_workflow(node.client, name, {
        "uri": f"{http_server.url}/never", "method": "GET", "pollingInterval": 0, "maxPollCount": 2,
        "terminationCondition": "$.output.response.body.state == 'DONE'"}, kind="HTTP_POLL")
    workflow = wait_for_status(node.client, node.client.start_workflow(name, {}), "FAILED")
    assert "still false after maxPollCount=2 polls" in call_task(workflow)[-1]["reason"]


@pytest.mark.parametrize("request_fields,reason", [
    ({"method": "GET"}, "missing HTTP URI"),
    ({"uri": "ftp://example.org/x", "method": "GET"}, "must be an http:// or https:// URL"),
    ({"uri": "http://127.0.0.1:9/x", "method": "BREW"}, "is not one of GET"),
    ({"uri": "http://127.0.0.1:9/x", "method": "GET", "readTimeOut": -1}, "readTimeOut must be milliseconds"),
])
def test_a_request_that_cannot_be_sent_fails_for_good_with_the_reason(
        node: Any, request_fields: dict[str, Any], reason: str) -> None:
    name = unique("http_bad")
    http_workflow(node.client, name, request_fields, retryCount=3, retryDelaySeconds=0)
    workflow = wait_for_status(node.client, node.client.start_workflow(name, {}), "FAILED")
    attempts = call_task(workflow)
    assert len(attempts) == 1 and attempts[0]["status"] == "FAILED_WITH_TERMINAL_ERROR"
    assert reason in attempts[0]["reason"]


@pytest.mark.parametrize("host", ["{host}", "127.1", "2130706433", "0x7f000001", "[::ffff:127.0.0.1]", "localhost",
                                  "0.0.0.0", "127.0.0.9"])
@pytest.mark.parametrize("service", ["etcd", "redis"])
def test_an_http_task_may_not_call_the_clusters_own_etcd_or_redis(node: Any, etcd: Any, service: str,
                                                                  host: str) -> None:
    """However the address is spelled: this node allows loopback (the tests' servers are there),
    and etcd and Redis are refused by the address they are reached at, not by the URL's text."""
    name = unique("http_etcd")
    endpoint = etcd.endpoints[0] if service == "etcd" else node.redis_url.split("//")[1].split("/")[0]
    endpoint_host, _, port = endpoint.rpartition(":")
    http_workflow(node.client, name, {"uri": f"http://{host.format(host=endpoint_host)}:{port}/v3/kv/range",
                                      "method": "POST", "body": {"key": "Lw=="}})
    workflow = wait_for_status(node.client, node.client.start_workflow(name, {}), "FAILED")
    attempt = call_task(workflow)[-1]
    assert attempt["status"] == "FAILED_WITH_TERMINAL_ERROR"
    assert "is the cluster's own etcd or Redis" in attempt["reason"], attempt["reason"]


def test_a_body_too_large_to_keep_fails_the_attempt(node: Any, http_server: RecordingServer) -> None:
    name = unique("http_big")
    http_workflow(node.client, name, {"uri": f"{http_server.url}/big", "method": "GET"})
    workflow = wait_for_status(node.client, node.client.start_workflow(name, {}), "FAILED")
    assert "body larger than" in call_task(workflow)[-1]["reason"]
