"""The HTTP port against a careful attacker (issue 22, items 6, 9, 10 and 11), on real nodes with tokens.

- Bodies are capped before anyone is known: a 50 MB chunked upload (no Content-Length) to the
  open /login and /api/token is refused 413 having read no more than the cap, and the node's
  memory does not grow by it (both read the whole body before).
- The console's counts for a correlation id are the namespace's own (team b saw team a's).
- CSRF: a form token belongs to one browser session (it was one per node, printed on the open
  login page for anyone to copy); /api does not take the console's cookie (it took it with no
  CSRF check, so any page could make a signed-in browser post JSON as text/plain); every answer
  carries X-Frame-Options, a CSP and nosniff; signing out ends the session; the Secure flag can
  be asked for behind a TLS-terminating proxy (`console_secure_cookies`).
- Conductor's search query is answered at once (a 16 KiB query of spaces took 1-2 s of the
  event loop, for every node's every request; the parser alone: tests/unit/rest/test_search_query.py).
"""

from __future__ import annotations

import select
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from devtools.local_cluster import start_node, wait_for_leader
from devtools.procs import ManagedProcess, free_port
from helpers import start_node_with_tokens
from worker import WorkflowClient

TOKENS = {"root": "harden-root-token-0123456789", "reader": "harden-reader-token-0123456789",
          "operator": "harden-operator-token-0123456789",
          "a_admin": "harden-team-a-admin-token-0123456789", "a_ops": "harden-team-a-ops-token-0123456789",
          "b_admin": "harden-team-b-admin-token-0123456789", "b_ops": "harden-team-b-ops-token-0123456789"}
MIB = 1024 * 1024


@dataclass
class Hardened:
    process: ManagedProcess
    endpoint: str
    http: str


def _tokens() -> dict[str, Any]:
    return {"tokens": [
        {"name": "root", "roles": ["admin"], "token": TOKENS["root"]},
        {"name": "audit", "roles": ["reader"], "token": TOKENS["reader"]},
        {"name": "ops", "roles": ["operator"], "token": TOKENS["operator"]},
        *({"name": f"{team}-{role}", "roles": [role], "namespace": f"team-{team}", "token": TOKENS[f"{team}_{key}"]}
          for team in ("a", "b") for key, role in (("admin", "admin"), ("ops", "operator")))]}


@pytest.fixture(scope="module")
def hardened(tmp_path_factory: pytest.TempPathFactory, etcd: Any, redis_server: Any) -> Iterator[Hardened]:
    process, endpoint, http = start_node_with_tokens(tmp_path_factory.mktemp("harden"), _tokens(),
                                                     node_id="hardened", etcd=etcd, redis_server=redis_server)
    try:
        with WorkflowClient([endpoint], token=TOKENS["root"]) as root:
            wait_for_leader(root, 20.0)
            for team in ("a", "b"):
                with WorkflowClient([endpoint], token=TOKENS[f"{team}_admin"]) as admin:
                    admin.register_workflow_def({"name": "order", "tasks": [
                        {"name": "hold", "taskReferenceName": "hold", "type": "WAIT"}]})
            root.register_workflow_def({"name": "order", "tasks": [
                {"name": "hold", "taskReferenceName": "hold", "type": "WAIT"}]})
        yield Hardened(process, endpoint, http)
    finally:
        process.stop()


# ---------------------------------------------------------------- item 6: bodies before authentication

def _memory_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


def _chunked_upload(http: str, path: str, total: int) -> tuple[int, int]:
    """POST `total` bytes to `path` chunked (no Content-Length), stopping once the node answers;
    returns (the answer's status, 0 if none; how many body bytes were sent before it)."""
    host, port = http.removeprefix("http://").rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall((f"POST {path} HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n"
                  "Content-Type: application/x-www-form-urlencoded\r\n\r\n").encode())
    chunk = b"t" * (64 * 1024)
    framed = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    sent, answer = 0, b""
    sock.setblocking(False)
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            readable, writable, _ = select.select([sock], [sock] if sent < total else [], [], 1.0)
            if readable:
                try:
                    data = sock.recv(65536)
                except ConnectionResetError:
                    break
                if not data:
                    break
                answer += data
                if b"\r\n\r\n" in answer:
                    break
            if writable and sent < total:
                try:
                    sent += sock.send(framed) and len(chunk)   # a partly sent frame is still a chunk's worth
                except (BrokenPipeError, ConnectionResetError):
                    break
                except BlockingIOError:
                    pass
            if sent >= total and not readable:
                sock.setblocking(True)
                sock.sendall(b"0\r\n\r\n")
                sock.setblocking(False)
                sent += 1
    finally:
        sock.close()
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0
    return status, sent


@pytest.mark.parametrize("path", ["/login", "/api/token"])
def test_an_endless_body_to_an_open_route_is_refused_at_the_cap(hardened: Hardened, path: str) -> None:
    pid = hardened.process.pid
    with httpx.Client(base_url=hardened.http, timeout=10.0) as http:
        assert http.get("/healthz").status_code == 200
    peak_before = _memory_kib(pid, "VmHWM")
    status, sent = _chunked_upload(hardened.http, path, 50 * MIB)
    grown_mib = (_memory_kib(pid, "VmHWM") - peak_before) / 1024
    assert status == 413, (status, sent)
    assert sent < 16 * MIB, f"{sent / MIB:.1f} MiB were taken before the refusal"   # the cap, plus socket buffers
    assert grown_mib < 10, f"the node's peak memory grew by {grown_mib:.0f} MiB"
    with httpx.Client(base_url=hardened.http, timeout=10.0) as http:   # and it still answers
        assert http.get("/healthz").status_code == 200


def test_a_body_without_a_token_is_not_read_at_all(hardened: Hardened) -> None:
    status, sent = _chunked_upload(hardened.http, "/api/workflow", 50 * MIB)
    assert status == 401 and sent < 16 * MIB


# ---------------------------------------------------------------- item 9: counts of a namespace

def test_the_counts_for_a_correlation_id_are_the_namespace_s_own(hardened: Hardened) -> None:
    correlation = f"order-{uuid.uuid4().hex[:6]}"
    with WorkflowClient([hardened.endpoint], token=TOKENS["a_ops"]) as team_a:
        started = [team_a.start_workflow("order", {}, correlation_id=correlation) for _ in range(3)]
    with WorkflowClient([hardened.endpoint], token=TOKENS["b_ops"]) as team_b:
        own = team_b.start_workflow("order", {}, correlation_id=correlation)
    with httpx.Client(base_url=hardened.http, timeout=10.0) as http:
        for who, running in (("b_ops", 1), ("a_ops", 3), ("operator", 0)):
            page = http.get("/executions", params={"correlation_id": correlation},
                            headers={"Authorization": f"Bearer {TOKENS[who]}"})
            assert page.status_code == 200
            counts = page.text.split('id="status-counts"', 1)[1].split("</div>", 1)[0]
            shown = counts.split("st-RUNNING", 1)[1].split("<b>", 1)[1].split("</b>", 1)[0]
            assert shown == str(running), (who, shown)
            listed = sum(workflow_id in page.text for workflow_id in [*started, own])
            assert listed == running, who
        # with a name too: the name and the correlation id, in the namespace
        page = http.get("/executions", params={"correlation_id": correlation, "name": "order"},
                        headers={"Authorization": f"Bearer {TOKENS['b_ops']}"})
        counts = page.text.split('id="status-counts"', 1)[1].split("</div>", 1)[0]
        assert counts.split("st-RUNNING", 1)[1].split("<b>", 1)[1].split("</b>", 1)[0] == "1"


# ---------------------------------------------------------------- item 10: CSRF, headers, sign-out, Secure

def _csrf(page: httpx.Response) -> str:
    return page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]


def _signed_in(http: str, token: str) -> tuple[httpx.Client, str]:
    client = httpx.Client(base_url=http, timeout=10.0, follow_redirects=False)
    signed = client.post("/login", data={"token": token, "csrf": _csrf(client.get("/login")), "next": "/cluster"})
    assert signed.status_code == 303, signed.text
    return client, _csrf(client.get("/login"))


def test_a_form_token_belongs_to_one_session(hardened: Hardened) -> None:
    with WorkflowClient([hardened.endpoint], token=TOKENS["operator"]) as operator:
        workflow_id = operator.start_workflow("order", {})
    with httpx.Client(base_url=hardened.http, timeout=10.0) as stranger:   # anyone may open the login page
        copied = _csrf(stranger.get("/login"))
    victim, own = _signed_in(hardened.http, TOKENS["operator"])
    with closing(victim):
        forged = victim.post(f"/executions/{workflow_id}/terminate", data={"csrf": copied, "reason": "forged"})
        assert forged.status_code == 403
        with WorkflowClient([hardened.endpoint], token=TOKENS["reader"]) as reader:
            assert reader.get_workflow(workflow_id)["status"] == "RUNNING"
        done = victim.post(f"/executions/{workflow_id}/terminate", data={"csrf": own, "reason": "mine"})
        assert done.status_code == 303
    other, theirs = _signed_in(hardened.http, TOKENS["operator"])   # the same token, another browser
    with closing(other):
        assert theirs != own
        assert other.post(f"/executions/{workflow_id}/restart", data={"csrf": own}).status_code == 403


def test_the_api_does_not_take_the_console_cookie(hardened: Hardened) -> None:
    browser, _ = _signed_in(hardened.http, TOKENS["operator"])
    with closing(browser):
        assert browser.get("/executions").status_code == 200   # the console does
        # what a page elsewhere could make this browser send: a "simple" cross-site POST, no header of ours
        sneaky = browser.post("/api/workflow", content=b'{"name": "order", "input": {}}',
                              headers={"Content-Type": "text/plain"})
        assert sneaky.status_code == 401
        assert browser.get("/api/workflow/search").status_code == 401
        assert browser.get("/api/workflow/search", headers={"X-Authorization": TOKENS["reader"]}).status_code == 200


def test_every_answer_carries_the_security_headers(hardened: Hardened) -> None:
    browser, _ = _signed_in(hardened.http, TOKENS["reader"])
    with closing(browser), httpx.Client(base_url=hardened.http, timeout=10.0) as anonymous:
        answers = {"page": browser.get("/executions"), "fragment": browser.get("/cluster/live"),
                   "static": browser.get("/static/console.css"), "login": anonymous.get("/login"),
                   "redirect to login": anonymous.get("/executions", follow_redirects=False),
                   "401": anonymous.get("/api/metadata/taskdefs"), "403": browser.post("/definitions/order/start"),
                   "404": browser.get("/no/such/page"), "health": anonymous.get("/healthz"),
                   "api": anonymous.get("/api/metadata/taskdefs", headers={"X-Authorization": TOKENS["reader"]})}
    for what, answer in answers.items():
        headers = answer.headers
        assert headers.get("x-frame-options") == "DENY", what
        assert headers.get("x-content-type-options") == "nosniff", what
        policy = headers.get("content-security-policy", "")
        assert "frame-ancestors 'none'" in policy and "default-src 'self'" in policy, what
        assert headers.get("referrer-policy"), what


def test_signing_out_ends_the_session(hardened: Hardened) -> None:
    browser, csrf = _signed_in(hardened.http, TOKENS["reader"])
    with closing(browser):
        assert browser.get("/executions").status_code == 200
        assert 'action="/logout"' in browser.get("/executions").text   # every page offers it
        assert browser.post("/logout", data={"csrf": "forged"}).status_code == 403   # nobody else signs you out
        out = browser.post("/logout", data={"csrf": csrf})
        assert out.status_code == 303 and out.headers["location"] == "/login"
        assert "orchestrator_token" not in browser.cookies
        again = browser.get("/executions")
        assert again.status_code == 303 and again.headers["location"].startswith("/login")


def test_cookies_are_secure_behind_a_tls_terminating_proxy(tmp_path: Path, etcd: Any, redis_server: Any) -> None:
    (tmp_path / "tokens.yaml").write_text(yaml.safe_dump(_tokens()))
    (tmp_path / "node.yaml").write_text(yaml.safe_dump({"console_secure_cookies": True}))
    port, http_port = free_port(), free_port()
    process = start_node(tmp_path, node_id="proxied", port=port, redis_url=redis_server.url,
                         etcd_endpoints=etcd.endpoints, cluster=f"p{uuid.uuid4().hex[:8]}", lease_ttl_s=2.0,
                         http_port=http_port, extra=["--tokens-file", str(tmp_path / "tokens.yaml"),
                                                     "--config", str(tmp_path / "node.yaml")])
    try:
        with WorkflowClient([f"127.0.0.1:{port}"], token=TOKENS["reader"]) as client:
            wait_for_leader(client, 20.0)
        with httpx.Client(base_url=f"http://127.0.0.1:{http_port}", timeout=10.0) as http:   # plain http here
            page = http.get("/login")
            session = page.headers["set-cookie"]
            assert "; secure" in session.lower()   # the session's cookie (the client keeps it for https only)
            signed = http.post("/login", data={"token": TOKENS["reader"], "csrf": _csrf(page), "next": "/cluster"},
                               headers={"Cookie": session.split(";", 1)[0]})
            assert signed.status_code == 303
            for cookie in signed.headers.get_list("set-cookie"):
                assert "; secure" in cookie.lower() and "httponly" in cookie.lower(), cookie
    finally:
        process.stop()


# ---------------------------------------------------------------- item 11: the search query, in linear time

def test_a_hostile_search_query_is_answered_at_once(hardened: Hardened) -> None:
    query = "a" + " " * 14_000 + "b"   # as long as the node takes a request line (16 KiB)
    with httpx.Client(base_url=f"{hardened.http}/api", timeout=10.0,
                      headers={"X-Authorization": TOKENS["reader"]}) as http:
        http.get("/workflow/search", params={"query": "status = RUNNING"})   # warm
        started = time.perf_counter()
        answer = http.get("/workflow/search", params={"query": query})
        took = time.perf_counter() - started
    assert took < 0.1, f"{took * 1000:.0f} ms"
    assert answer.status_code == 400 and "query clause" in answer.json()["message"], answer.text[:200]
