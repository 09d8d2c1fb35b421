"""The Conductor corpus on a real node: every accepted definition of `../shared/conductor-corpus/`
(read in place, through tests/conductor_corpus.py's loader), registered over gRPC and run by
one node with one generic worker of the SDK, must end in the status the simulator test expects
(RUNS there, with its inputs and signals).

What is run: every accepted definition, JavaScript ones included (INLINE, LAMBDA, SWITCH and
DECISION scripts, DO_WHILE loop conditions, HTTP_POLL), except those that wait on the clock for
longer than MAX_REAL_WAIT_S (a `WAIT` of 30 s or 90 s: the simulator skips the time, a node
cannot); `test_every_javascript_definition_runs_on_the_node` holds that no JavaScript definition
is among them. All runs are started first, one after another (each with its file's definitions
registered, since four names are defined differently by two files and a run keeps the snapshot it
started with), then driven together: the 126 runs take about 20 s on one node (2 cores).

How they run, as in the simulator:
- the node is started with `--http-tasks 0`, so HTTP and HTTP_POLL tasks go to the generic
  worker like every other worker task (the corpus calls hosts this machine cannot reach); the
  worker answers each task with `generic_output` of tests/conductor_corpus.py;
- a WAIT or HUMAN task that waits for a signal (no duration or time) is signalled, with the run's
  `signal` output, in the workflow or any of its sub-workflows.
The one HTTP_POLL definition also runs on a node that makes the calls itself (the `node` fixture),
against an HTTP server of the test: its JavaScript termination condition is then the node's.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from conductor_corpus import (CUSTOM_TYPES, NOT_ACCEPTED, RUNS, Run, accepted, corpus, generic_output, latest,
                              registered)
from devtools.local_cluster import start_node, wait_for_leader
from devtools.procs import free_port
from helpers import BackgroundWorker, send_json, serving, unique, wait_for_status
from orchestrator.core.definitions import (DELEGATED_KINDS, HTTP_KINDS, check_workflow_def, needs_every_workflow_def,
                                           referenced_workflow_names)
from orchestrator.core.timetext import parse_duration_seconds
from worker import ClientError, Worker, WorkflowClient, task

MAX_REAL_WAIT_S = 5.0
DRIVE_DEADLINE_S = 150.0
TERMINAL = {"COMPLETED", "FAILED", "TIMED_OUT", "TERMINATED", "COMPENSATED", "COMPENSATION_FAILED"}
JAVASCRIPT = ("javascript", "graaljs")

Key = tuple[str, int]   # (file stem, index of the definition in the file)


# ---------------------------------------------------------------- what a definition needs

def task_nodes(value: Any) -> Iterator[dict[str, Any]]:
    """Every task of a definition, however nested (inline sub-workflows and fork specs too)."""
    stack = [value]
    while stack:
        current = stack.pop()
        if isinstance(current, dict):
            if "taskReferenceName" in current:
                yield current
            stack.extend(current.values())
        elif isinstance(current, list):
            stack.extend(current)


def uses_javascript(definition: dict[str, Any]) -> bool:
    """Whether a run of the definition evaluates JavaScript (as the node normalises it: a loop
    condition of a Conductor definition without evaluatorType is JavaScript)."""
    normalised = check_workflow_def(definition, corpus().task_defs, latest(corpus().registry)).definition
    for node in task_nodes(normalised):
        raw = node.get("inputParameters")
        inputs: dict[str, Any] = raw if isinstance(raw, dict) else {}
        kind = node.get("type")
        evaluator = node.get("evaluatorType") or inputs.get("evaluatorType")
        if kind in ("LAMBDA", "HTTP_POLL") or (kind == "DECISION" and node.get("caseExpression")):
            return True
        if kind in ("INLINE", "SWITCH", "DO_WHILE") and evaluator in JAVASCRIPT:
            return True
    return False


def real_wait_s(definition: dict[str, Any]) -> float:
    """The seconds its literal WAIT durations hold a run up, at the least."""
    total = 0.0
    for node in task_nodes(definition):
        raw = node.get("inputParameters")
        inputs: dict[str, Any] = raw if isinstance(raw, dict) else {}
        duration = node.get("duration", inputs.get("duration")) if node.get("type") == "WAIT" else None
        if isinstance(duration, (int, float)) and not isinstance(duration, bool):
            total += float(duration)
        elif isinstance(duration, str) and "${" not in duration:
            total += parse_duration_seconds(duration)
    return total


def all_keys() -> list[Key]:
    return [(stem, index) for stem, definitions in corpus().files.items() for index in range(len(definitions))]


def definition_of(key: Key) -> dict[str, Any]:
    return corpus().files[key[0]][key[1]]


def run_of(key: Key) -> Run:
    return RUNS.get((key[0], definition_of(key)["name"]), Run())


def skip_reason(key: Key) -> str:
    if not accepted(key[0])[0]:
        return f"not accepted: {NOT_ACCEPTED[key[0]]}"
    waits = real_wait_s(definition_of(key))
    if waits > MAX_REAL_WAIT_S:
        return f"its WAIT tasks hold a run {waits:g} s of real time (more than {MAX_REAL_WAIT_S:g} s)"
    return ""


def key_id(key: Key) -> str:
    return f"{key[0].split('__')[-1]}[{key[1]}]"


# ---------------------------------------------------------------- the node, its worker and the runs

@dataclass
class CorpusRuns:
    client: WorkflowClient
    started: dict[Key, str]          # the run's workflow id
    ended: dict[Key, dict[str, Any]]   # the run's workflow as it ended (with its tasks)
    signalled: set[str]              # task ids signalled


def worker_types() -> list[str]:
    """Every task type a corpus run can queue: its task definitions (SIMPLE and DYNAMIC), the
    SIMPLE tasks that embed their definition, the I/O types, the types that are not Conductor's
    and EVENT (a sink of another broker)."""
    embedding = {node["name"] for versions in corpus().registry.values() for definition in versions.values()
                 for node in task_nodes(definition) if node.get("type", "SIMPLE") == "SIMPLE"
                 and isinstance(node.get("name"), str)}
    return sorted(set(corpus().task_defs) | embedding | set(HTTP_KINDS) | set(DELEGATED_KINDS) | set(CUSTOM_TYPES)
                  | {"EVENT"})


def generic_handler(task_type: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    @task(task_type)
    def handle(data: dict[str, Any]) -> dict[str, Any]:
        return generic_output(task_type, data)   # for the I/O types the task type is the kind
    return handle


class Registrar:
    """Keeps the node's definitions as one file's run needs them: its own definitions, and the
    corpus's for every other name (two files define four names differently)."""

    def __init__(self, client: WorkflowClient) -> None:
        self.client = client
        self.on_node: dict[tuple[str, int], str] = {}

    def put(self, definition: dict[str, Any]) -> None:
        text = json.dumps(definition, sort_keys=True)
        key = (definition["name"], definition.get("version", 1))
        if self.on_node.get(key) != text:
            self.client.register_workflow_def(definition)
            self.on_node[key] = text

    def everything(self) -> None:
        """Every accepted definition of the corpus, referenced ones first."""
        merged = latest(corpus().registry)
        pending = [d for versions in corpus().registry.values() for d in versions.values()
                   if not check_workflow_def(d, corpus().task_defs, merged).problems]
        while pending:
            waiting = []
            for definition in pending:
                try:
                    self.put(definition)
                except ClientError as refused:   # it names one not registered yet
                    waiting.append((definition, refused))
            assert len(waiting) < len(pending), [str(r) for _, r in waiting]
            pending = [d for d, _ in waiting]

    def view_of(self, stem: str) -> None:
        """The definitions a run of this file sees, as the simulator test gives them to it."""
        view = registered(stem)
        names = set(view)
        needed = {d["name"] for d in corpus().files[stem]}
        if not any(needs_every_workflow_def(d) for d in corpus().files[stem]):
            frontier = set(needed)
            while frontier:
                name = frontier.pop()
                for definition in view.get(name, {}).values():
                    fresh = referenced_workflow_names(definition) & names - needed
                    needed |= fresh
                    frontier |= fresh
        else:
            needed = names
        for name in needed:
            for definition in view[name].values():
                if not check_workflow_def(definition, corpus().task_defs, latest(view)).problems:
                    self.put(definition)


def timed(task_view: dict[str, Any]) -> bool:
    inputs = task_view.get("input") or {}
    return inputs.get("duration") is not None or inputs.get("until") is not None


def waiting_for_a_signal(client: WorkflowClient, workflow: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(workflow id, task) of every WAIT or HUMAN task waiting for a signal in the workflow and
    its sub-workflows."""
    stack = [workflow]
    while stack:
        current = stack.pop()
        for attempt in current["tasks"]:
            if attempt["kind"] in ("WAIT", "HUMAN") and attempt["status"] == "IN_PROGRESS" and not timed(attempt):
                yield current["workflow_id"], attempt
            if attempt["sub_workflow_id"] and attempt["status"] == "IN_PROGRESS":
                stack.append(client.get_workflow(attempt["sub_workflow_id"]))


def drive(runs: CorpusRuns, deadline_s: float) -> None:
    deadline = time.monotonic() + deadline_s
    pending = dict(runs.started)
    while pending and time.monotonic() < deadline:
        for key, workflow_id in list(pending.items()):
            workflow = runs.client.get_workflow(workflow_id)
            if workflow["status"] in TERMINAL:
                runs.ended[key] = workflow
                del pending[key]
                continue
            for owner, waiting in list(waiting_for_a_signal(runs.client, workflow)):
                if waiting["task_id"] not in runs.signalled:
                    runs.signalled.add(waiting["task_id"])
                    runs.client.signal_task(owner, task_id=waiting["task_id"], output=dict(run_of(key).signal))
        time.sleep(0.1)
    for key, workflow_id in pending.items():   # shown as they were when time ran out
        runs.ended[key] = runs.client.get_workflow(workflow_id)


@pytest.fixture(scope="module")
def corpus_runs(tmp_path_factory: pytest.TempPathFactory, etcd: Any, redis_server: Any) -> Iterator[CorpusRuns]:
    port = free_port()
    process = start_node(tmp_path_factory.mktemp("corpus_node"), node_id="corpus", port=port,
                         redis_url=redis_server.url, etcd_endpoints=etcd.endpoints,
                         cluster=f"t{uuid.uuid4().hex[:8]}", lease_ttl_s=2.0, http_port=0,
                         extra=["--http-tasks", "0"])
    client = WorkflowClient([f"127.0.0.1:{port}"], timeout_s=30.0)
    background: BackgroundWorker | None = None
    try:
        wait_for_leader(client, 20.0)
        for definition in corpus().task_defs.values():
            client.register_task_def(definition)
        registrar = Registrar(client)
        registrar.everything()
        background = BackgroundWorker(Worker(endpoints=[f"127.0.0.1:{port}"],
                                             handlers=[generic_handler(t) for t in worker_types()], concurrency=16))
        runs = CorpusRuns(client, {}, {}, set())
        for key in all_keys():
            if skip_reason(key):
                continue
            registrar.view_of(key[0])
            definition = definition_of(key)
            runs.started[key] = client.start_workflow(definition["name"], run_of(key).input,
                                                      version=definition.get("version", 1))
        drive(runs, DRIVE_DEADLINE_S)
        yield runs
    finally:
        if background is not None:
            background.stop(grace_s=1.0)
        client.close()
        process.stop()


@pytest.mark.parametrize("key", all_keys(), ids=key_id)
def test_each_definition_ends_on_the_node_where_the_simulator_ends_it(corpus_runs: CorpusRuns, key: Key) -> None:
    reason = skip_reason(key)
    if reason:
        pytest.skip(reason)
    ended = corpus_runs.ended[key]
    expected = run_of(key).expect
    assert ended["status"] == expected, (ended["status"], ended["reason"],
                                         [(t["key"], t["status"], t["reason"]) for t in ended["tasks"]])


def test_every_javascript_definition_runs_on_the_node(corpus_runs: CorpusRuns) -> None:
    scripted = [key for key in all_keys() if accepted(key[0])[0] and uses_javascript(definition_of(key))]
    assert len(scripted) >= 30, scripted   # 38 of the 126 runs: a detector that finds few is wrong
    assert [key_id(k) for k in scripted if k not in corpus_runs.started] == []
    kinds = {node.get("type") for key in scripted for node in task_nodes(definition_of(key))}
    assert {"INLINE", "LAMBDA", "SWITCH", "DECISION", "DO_WHILE", "HTTP_POLL"} <= kinds


def test_only_long_waits_are_left_out(corpus_runs: CorpusRuns) -> None:
    left_out = {key_id(k): skip_reason(k) for k in all_keys() if accepted(k[0])[0] and k not in corpus_runs.started}
    assert all("real time" in why for why in left_out.values()), left_out
    assert len(left_out) <= 2, left_out


# ---------------------------------------------------------------- HTTP_POLL, with the node making the calls

class JobApi(ThreadingHTTPServer):
    """The slow third-party job API of the cookbook's http-poll-external-job: POST /jobs submits a
    job, GET /jobs/<id> reports it (already ended: its pollingInterval is 60 s)."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), JobApiHandler)
        self.datasets: dict[str, str] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class JobApiHandler(BaseHTTPRequestHandler):
    server: JobApi

    def do_POST(self) -> None:
        dataset = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))["dataset"]
        job_id = f"job-{len(self.server.datasets) + 1}"
        self.server.datasets[job_id] = dataset
        send_json(self, {"jobId": job_id})

    def do_GET(self) -> None:
        job_id = self.path.rsplit("/", 1)[-1]
        dataset = self.server.datasets[job_id]
        if dataset == "broken":
            send_json(self, {"jobId": job_id, "state": "FAILED", "error": "dataset is broken"})
        else:
            send_json(self, {"jobId": job_id, "state": "SUCCEEDED",
                        "result": {"rows": len(dataset), "artifact": f"s3://{dataset}"}})

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def job_api() -> Iterator[JobApi]:
    with serving(JobApi()) as server:
        yield server


def test_the_http_poll_definition_with_the_node_calling_a_real_server(node: Any, job_api: JobApi) -> None:
    stem = next(s for s in corpus().files if s.endswith("http-poll-external-job"))
    definition = dict(corpus().files[stem][0], name=unique("http_poll_external_job"))
    node.client.register_workflow_def(definition)
    done = wait_for_status(node.client, node.client.start_workflow(
        definition["name"], {"jobApiUrl": job_api.url, "dataset": "orders"}), {"COMPLETED", "FAILED"})
    assert done["status"] == run_of((stem, 0)).expect == "COMPLETED", done["reason"]
    assert done["output"] == {"jobId": done["output"]["jobId"], "finalState": "SUCCEEDED", "rows": 6,
                              "artifact": "s3://orders"}
    poll = next(t for t in done["tasks"] if t["key"] == "await_job")
    assert poll["output"]["pollCount"] == 1 and poll["output"]["response"]["body"]["state"] == "SUCCEEDED"

    failed = wait_for_status(node.client, node.client.start_workflow(
        definition["name"], {"jobApiUrl": job_api.url, "dataset": "broken"}), {"COMPLETED", "FAILED"})
    assert failed["status"] == "FAILED" and failed["output"]["error"] == "remote_job_failed"
    assert failed["output"]["detail"] == "dataset is broken"
