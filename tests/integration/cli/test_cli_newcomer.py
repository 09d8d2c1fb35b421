"""What a new user hit with the CLI (issue 18), each on real processes: a workflow the engine
could not decide is not blamed on its definition or input; a refused port fails in well under a
second and a TLS node reached without TLS says which flags are missing; `workflow search` fits
80 columns; a FAILED workflow's JSON has its `output`; `--all` without `--yes` off a terminal
exits 1 as the README says."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from devtools.certs import make_dev_certs
from devtools.local_cluster import start_node, wait_for_leader
from devtools.procs import free_port
from helpers import BackgroundWorker, make_undecidable, unique, wait_for_status
from orchestrator.store.redis.keys import Keys, cluster_prefix
from worker import TerminalTaskError, Worker, WorkflowClient, task


def run(*args: str, columns: int = 200, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The CLI as a script runs it: no terminal; no TLS settings from the environment."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRATOR_")}
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL,
                          env={**clean, "COLUMNS": str(columns), **(env or {})})


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    return lines[0]


@task("newcomer_refuse")
def refuse(data: dict[str, Any]) -> dict[str, Any]:
    raise TerminalTaskError("no, never")


@pytest.fixture(scope="module")
def served(node: Any) -> Iterator[Any]:
    node.client.register_task_def({"name": "newcomer_refuse", "retryCount": 0})
    node.client.register_workflow_def({"name": "newcomer_refused",
                                       "tasks": [{"name": "newcomer_refuse", "taskReferenceName": "no"}]})
    background = BackgroundWorker(Worker(endpoints=[node.endpoint], handlers=[refuse]))
    yield node
    background.stop()


def waiting_on_a_gate(node: Any, name: str) -> str:
    """A workflow of a new definition `name` whose HUMAN task `gate` waits, a SET_VARIABLE after it."""
    node.client.register_workflow_def({"name": name, "tasks": [
        {"name": "gate", "taskReferenceName": "gate", "type": "HUMAN"},
        {"name": "note", "taskReferenceName": "note", "type": "SET_VARIABLE", "inputParameters": {"seen": True}}]})
    workflow_id = node.client.start_workflow(name)
    deadline = time.monotonic() + 10
    while not any(t["status"] == "IN_PROGRESS" for t in node.client.get_workflow(workflow_id)["tasks"]):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return workflow_id


# ------------------------------------------------------------ 1. the engine's fault is not the user's

def test_a_workflow_the_engine_could_not_decide_is_not_blamed_on_its_definition(served: Any) -> None:
    """A stored state the decider cannot work with fails the workflow with "the engine could not
    decide it"; the CLI says the fault is the orchestrator's, and does not send the user to fix
    a good definition."""
    workflow_id = waiting_on_a_gate(served, unique("undecidable"))
    make_undecidable(served.redis_url, served.cluster, workflow_id)
    try:
        served.client.signal_task(workflow_id, "gate", output={"ok": True})
    except Exception:   # the answer may already be the failure; the stored workflow is what counts
        pass
    failed = wait_for_status(served.client, workflow_id, "FAILED")
    assert "the engine could not decide it" in failed["reason"], failed["reason"]
    shown = run("--endpoints", served.endpoint, "workflow", "get", workflow_id, "--table").stdout
    assert "the engine could not decide it" in shown, shown
    assert "fix its definition or input" not in " ".join(shown.split()), shown
    assert "fault in the orchestrator" in " ".join(shown.split()), shown
    plain = run("--endpoints", served.endpoint, "workflow", "get", workflow_id, "--json")
    assert json.loads(plain.stdout)["reason"] == failed["reason"], "scripts get the stored reason as it is"


def test_a_workflow_that_failed_on_its_own_task_keeps_its_reason(served: Any) -> None:
    workflow_id = served.client.start_workflow("newcomer_refused")
    wait_for_status(served.client, workflow_id, "FAILED")
    shown = " ".join(run("--endpoints", served.endpoint, "workflow", "get", workflow_id, "--table").stdout.split())
    assert "no, never" in shown and "fault in the orchestrator" not in shown, shown


def test_an_internal_error_names_the_node_in_one_line(served: Any) -> None:
    workflow_id = uuid.uuid4().hex
    with redis.Redis.from_url(served.redis_url) as store:
        store.hset(Keys(cluster_prefix(served.cluster)).workflow(workflow_id), mapping={"m": "{not json"})
    done = run("--endpoints", served.endpoint, "workflow", "get", workflow_id)
    line = one_line(done)
    assert done.returncode == 1 and "INTERNAL" in line and "node solo" in line, line


# ------------------------------------------------------------ 2. nothing listening, and TLS

def test_a_refused_port_fails_at_once_naming_the_endpoint() -> None:
    nowhere = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    done = run("--endpoints", nowhere, "taskdef", "list")
    took = time.monotonic() - started
    line = one_line(done)
    assert done.returncode == 1 and f"nothing listens at {nowhere}" in line, line
    assert took < 2.0, f"the CLI took {took:.1f} s to say nothing listens (it used to retry for 10 s)"
    with WorkflowClient([nowhere], fail_fast=True) as client:   # the call itself, without Python's start-up
        started = time.monotonic()
        with pytest.raises(Exception, match="nothing listens"):
            client.list_task_defs()
        assert time.monotonic() - started < 0.5


def test_every_refused_endpoint_is_named_and_watch_fails_fast_too() -> None:
    nowhere = [f"127.0.0.1:{free_port()}" for _ in range(3)]
    started = time.monotonic()
    done = run("--endpoints", ",".join(nowhere), "workflow", "watch", "some-id")
    line = one_line(done)
    assert done.returncode == 1 and f"nothing listens at {', '.join(nowhere)}" in line, line
    assert time.monotonic() - started < 2.0


def test_a_program_s_client_still_waits_for_a_node_to_come_back() -> None:
    """Without fail_fast (the SDK's default) a refused connection is retried until the timeout:
    a service's client rides out a node's restart; the look at the endpoint only adds why."""
    nowhere = f"127.0.0.1:{free_port()}"
    with WorkflowClient([nowhere], timeout_s=1.0) as client:
        started = time.monotonic()
        with pytest.raises(Exception, match="nothing listens") as raised:
            client.list_task_defs()
        assert time.monotonic() - started >= 0.5 and "within 1 s" in str(raised.value)


@pytest.fixture(scope="module")
def tls_node(tmp_path_factory: pytest.TempPathFactory, etcd: Any, redis_server: Any) -> Iterator[tuple[Any, str]]:
    folder = tmp_path_factory.mktemp("tls")
    certs = make_dev_certs(folder / "certs")
    port = free_port()
    process = start_node(folder, node_id="sealed", port=port, redis_url=redis_server.url,
                         etcd_endpoints=etcd.endpoints, cluster=f"s{uuid.uuid4().hex[:8]}", lease_ttl_s=2.0,
                         http_port=free_port(), extra=certs.node_flags())
    try:
        with WorkflowClient([f"127.0.0.1:{port}"], tls_ca=str(certs.ca), tls_cert=str(certs.client_cert),
                            tls_key=str(certs.client_key)) as client:
            wait_for_leader(client, 20.0)
        yield certs, f"127.0.0.1:{port}"
    finally:
        process.stop()


def test_a_tls_node_reached_without_tls_says_which_flags_are_missing(tls_node: tuple[Any, str]) -> None:
    certs, endpoint = tls_node
    started = time.monotonic()
    done = run("--endpoints", endpoint, "cluster", "status")
    line = one_line(done)
    assert done.returncode == 1 and f"{endpoint} speaks TLS and this client does not" in line, line
    assert "--tls-ca" in line and "--tls-cert" in line, line
    assert "Socket closed" not in line and time.monotonic() - started < 5.0, line
    with_tls = run("--endpoints", endpoint, "--json", "cluster", "status", env=certs.client_env())
    assert with_tls.returncode == 0 and json.loads(with_tls.stdout)["leader_id"] == "sealed", with_tls.stderr


def test_a_plaintext_node_reached_with_tls_says_so(served: Any, tls_node: tuple[Any, str]) -> None:
    certs, _ = tls_node
    done = run("--endpoints", served.endpoint, "cluster", "status", env=certs.client_env())
    line = one_line(done)
    assert done.returncode == 1 and f"{served.endpoint} does not speak TLS" in line, line


# ------------------------------------------------------------ 3. search on 80 columns

def test_search_fits_80_columns_with_name_and_whole_statuses(served: Any) -> None:
    name = unique("narrow_name")
    served.client.register_workflow_def({"name": name, "tasks": [
        {"name": "newcomer_refuse", "taskReferenceName": "no"}]})
    ids = [served.client.start_workflow(name, correlation_id=f"order-{i}") for i in range(2)]
    for workflow_id in ids:
        wait_for_status(served.client, workflow_id, "FAILED")
    gate = waiting_on_a_gate(served, name + "_w")   # a RUNNING one beside them: "running 1 s"
    shown = run("--endpoints", served.endpoint, "workflow", "search", "--text", name, "--table", columns=80).stdout
    lines = shown.splitlines()
    assert all(len(line) <= 80 for line in lines), shown
    header = next(line for line in lines if "STATUS" in line)
    assert "NAME" in header and "CREATED" in header, shown
    for workflow_id in ids:
        row = next(line for line in lines if workflow_id[:8] in line)
        assert f"{name} v1" in row and " FAILED " in f"{row} " and "order-" in row, shown
    assert any(gate[:8] in line and "RUNNING" in line for line in lines), shown
    assert "--wide" in shown, "says how to see the ids in full"
    wide = run("--endpoints", served.endpoint, "workflow", "search", "--text", name, "--table", "--wide",
               columns=80).stdout
    assert all(workflow_id in wide for workflow_id in [*ids, gate]), wide
    found = json.loads(run("--endpoints", served.endpoint, "workflow", "search", "--text", name, "--json").stdout)
    assert {w["workflow_id"] for w in found["workflows"]} >= {*ids, gate}


# ------------------------------------------------------------ 4. JSON of a FAILED workflow, --all off a terminal

def test_a_failed_workflow_s_json_has_its_output_as_a_completed_one_does(served: Any) -> None:
    workflow_id = served.client.start_workflow("newcomer_refused")
    wait_for_status(served.client, workflow_id, "FAILED")
    shown = json.loads(run("--endpoints", served.endpoint, "workflow", "get", workflow_id, "--json").stdout)
    assert shown["status"] == "FAILED" and shown["output"] == {}, shown
    assert all("output" in t for t in shown["tasks"]), shown["tasks"]
    waited = json.loads(run("--endpoints", served.endpoint, "workflow", "start", "newcomer_refused", "--wait", "20",
                            "--json").stdout)
    assert waited["status"] == "FAILED" and waited["output"] == {}, waited
    assert served.client.get_workflow(workflow_id)["output"] == {}


def test_all_without_yes_off_a_terminal_refuses_with_exit_code_1(served: Any) -> None:
    workflow_id = served.client.start_workflow("newcomer_refused")
    wait_for_status(served.client, workflow_id, "FAILED")
    done = run("--endpoints", served.endpoint, "workflow", "retry", "--all", "--name", "newcomer_refused")
    line = one_line(done)
    assert done.returncode == 1 and "add --yes" in line, (done.returncode, line)
    assert served.client.get_workflow(workflow_id)["status"] == "FAILED", "nothing was retried"
