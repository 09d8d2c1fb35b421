"""Helpers shared by the integration tests (imported as `helpers`)."""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import json
import os
import socketserver
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, TypeVar

import grpc
import redis
import yaml

from devtools.local_cluster import ClusterSettings, LocalCluster, start_node, wait_for_leader
from devtools.procs import ManagedProcess, first_then_side_by_side, free_port
from orchestrator.store.redis.keys import Keys
from orchestrator_api.v1 import orchestrator_pb2_grpc as pb_grpc
from redis_mode import start_test_redis
from worker import ClientError, Worker, WorkflowClient

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

ServerT = TypeVar("ServerT", bound=socketserver.BaseServer)


@contextmanager
def serving(server: ServerT, poll_interval: float = 0.5) -> Iterator[ServerT]:
    """Run a test's HTTP (or other socketserver) server in a thread while the block lasts, then
    shut it down and close its socket."""
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": poll_interval}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@asynccontextmanager
async def serving_task_service(servicer: pb_grpc.TaskServiceServicer) -> AsyncIterator[str]:
    """A gRPC server on a free loopback port answering worker streams with `servicer` (a scripted
    node, for SDK tests that set up what a real node would not do); its address."""
    server = grpc.aio.server()
    add: Callable[[Any, grpc.aio.Server], None] = pb_grpc.add_TaskServiceServicer_to_server   # generated, untyped
    add(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(0)


def send_json(handler: BaseHTTPRequestHandler, payload: Any, status: int = 200) -> None:
    """Answer a test server's request with `payload` as JSON."""
    body = json.dumps(payload).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def load_example_handlers() -> list[Any]:
    """The handlers of examples/example_worker.py (a script, not a package)."""
    spec = importlib.util.spec_from_file_location("example_worker", EXAMPLES / "example_worker.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return list(module.HANDLERS)


@contextmanager
def two_nodes_on_their_own_redis(folder: Path, etcd_endpoints: list[str],
                                 cluster: str) -> Iterator[tuple[str, list[str], list[WorkflowClient]]]:
    """Nodes "plain" and "serving" of a fresh cluster on a Redis of their own, so that its command
    counts are theirs alone: (Redis URL, their endpoints, a client of each), once one leads."""
    with nodes_on_their_own_redis(folder, etcd_endpoints, cluster, ["plain", "serving"]) as nodes:
        yield nodes


@contextmanager
def nodes_on_their_own_redis(folder: Path, etcd_endpoints: list[str], cluster: str,
                             node_ids: list[str]) -> Iterator[tuple[str, list[str], list[WorkflowClient]]]:
    """The nodes `node_ids` of a fresh cluster on a Redis of their own, so that its command counts
    are theirs alone: (Redis URL, their endpoints, a client of each), once one leads."""
    server = start_test_redis(folder / "redis")
    try:
        with started_nodes(folder, etcd_endpoints, cluster, node_ids, server.url) as (endpoints, clients):
            yield server.url, endpoints, clients
    finally:
        server.stop()


@contextmanager
def started_nodes(folder: Path, etcd_endpoints: list[str], cluster: str, node_ids: list[str], redis_url: str,
                  extra: list[str] | None = None) -> Iterator[tuple[list[str], list[WorkflowClient]]]:
    """The nodes `node_ids` of a fresh cluster on `redis_url` (or the Redis that `extra`'s flags name):
    (their endpoints, a client of each), once one leads. Stopped by PID when done."""
    with running_nodes(folder, etcd_endpoints, cluster, node_ids, redis_url, extra) as (endpoints, clients, _):
        yield endpoints, clients


@contextmanager
def running_nodes(folder: Path, etcd_endpoints: list[str], cluster: str, node_ids: list[str], redis_url: str,
                  extra: list[str] | None = None
                  ) -> Iterator[tuple[list[str], list[WorkflowClient], list[ManagedProcess]]]:
    """`started_nodes` with the node processes too, in the order of `node_ids` (for a test that kills
    or freezes one)."""
    processes: list[ManagedProcess | None] = [None] * len(node_ids)
    clients: list[WorkflowClient] = []
    ports = [free_port() for _ in node_ids]

    def start(index: int) -> None:
        processes[index] = start_node(folder / node_ids[index], node_id=node_ids[index], port=ports[index],
                                      redis_url=redis_url, etcd_endpoints=etcd_endpoints, cluster=cluster,
                                      lease_ttl_s=2.0, http_port=0, log_level="WARNING", extra=extra or [])
    try:
        first_then_side_by_side([functools.partial(start, index) for index in range(len(node_ids))])
        endpoints = [f"127.0.0.1:{port}" for port in ports]
        clients.extend(WorkflowClient([endpoint]) for endpoint in endpoints)
        wait_for_leader(clients[0], 20.0)
        yield endpoints, clients, [process for process in processes if process is not None]
    finally:
        for client in clients:
            client.close()
        for process in processes:
            if process is not None:
                process.stop()


@contextmanager
def three_nodes_on_a_redis_cluster(folder: Path, name: str) -> Iterator[LocalCluster]:
    """Three nodes (one etcd member, no workers) on a Redis Cluster of 3 masters with a replica each, as
    `make cluster REDIS=cluster` runs them: an acknowledged write waits for one replica."""
    settings = ClusterSettings(name=name, etcd_members=1, node_ports=[0, 0, 0], lease_ttl_s=2.0, workers=0,
                               redis_cluster_masters=3, redis_min_replicas=1)
    with LocalCluster(folder, settings, announce=False).start(workers=False) as running:
        yield running


@contextmanager
def client_once_led(endpoints: list[str], members: int) -> Iterator[WorkflowClient]:
    """A client of every node, once one leads and `members` have joined; closed after."""
    client = WorkflowClient(endpoints, timeout_s=15.0)
    try:
        wait_for_leader(client, 30.0, members=members)
        yield client
    finally:
        client.close()


@dataclass
class NodePair:
    """What `two_nodes_on_their_own_redis` gives a module: its Redis, the cluster's keys, and a
    client of each node."""

    redis_url: str
    keys: Keys
    plain: WorkflowClient       # the node without a worker
    serving: WorkflowClient     # the node with the worker


class BackgroundWorker:
    """A real worker SDK instance on its own event loop in a thread (so sync tests can drive it)."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.loop = asyncio.new_event_loop()
        self._run_task: asyncio.Task[None] | None = None
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self.thread.start()
        ready.wait(5)

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self._run_task = self.loop.create_task(self.worker.run())
        ready.set()
        self.loop.run_forever()

    async def _shutdown(self, grace_s: float) -> None:
        await self.worker.shutdown(grace_s)
        assert self._run_task is not None
        await self._run_task

    def attached(self, timeout_s: float = 10.0) -> None:
        """Wait until the node has attached the worker's (first) stream: it answers the hello with an
        empty batch only after. A task queued before has no stream to be handed to, and goes to the
        queue with a `ready` (a loaded machine takes longer than a fixed sleep)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            stream = self.worker._links[0].stream
            if stream is not None and stream.node_reads_batches:
                return
            time.sleep(0.01)
        raise AssertionError(f"the worker's stream was not attached within {timeout_s:g} s")

    def stop(self, grace_s: float = 5.0) -> None:
        """Graceful shutdown of the worker, then the loop and the thread."""
        if not self.loop.is_closed():
            asyncio.run_coroutine_threadsafe(self._shutdown(grace_s), self.loop).result(grace_s + 10)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:6]}"


def register_sequence(client: WorkflowClient, name: str, task_names: list[str],
                      **task_def_fields: Any) -> None:
    """Register task definitions and a workflow that runs them in order."""
    for task_name in set(task_names):
        client.register_task_def({"name": task_name, **task_def_fields})
    client.register_workflow_def({
        "name": name,
        "tasks": [{"name": t, "taskReferenceName": f"step{i}", "inputParameters": {"n": "${workflow.input.n}"}}
                  for i, t in enumerate(task_names)],
        "outputParameters": {f"step{i}": f"${{step{i}.output}}" for i in range(len(task_names))},
    })


def wait_for_status(client: WorkflowClient, workflow_id: str, statuses: set[str] | str,
                    timeout_s: float = 20.0) -> dict[str, Any]:
    wanted = {statuses} if isinstance(statuses, str) else statuses
    deadline = time.monotonic() + timeout_s
    workflow: dict[str, Any] = {}
    while time.monotonic() < deadline:
        workflow = client.get_workflow(workflow_id)
        if workflow.get("status") in wanted:
            return workflow
        time.sleep(0.05)
    raise AssertionError(f"workflow {workflow_id} is {workflow.get('status')}, not {wanted}: {workflow}")


def start_node_with_tokens(folder: Path, tokens: dict[str, Any], *, node_id: str, etcd: Any, redis_server: Any,
                           jwt_secret: str = "") -> tuple[ManagedProcess, str, str]:
    """A node of its own cluster whose tokens file is `tokens` (with `jwt_secret` in the file its
    `jwt.secret_file` names); returns the process, its gRPC address and its HTTP base URL."""
    if jwt_secret:
        (folder / "jwt.secret").write_text(jwt_secret)
    tokens_file = folder / "tokens.yaml"
    tokens_file.write_text(yaml.safe_dump(tokens))
    port, http_port = free_port(), free_port()
    process = start_node(folder, node_id=node_id, port=port, redis_url=redis_server.url,
                         etcd_endpoints=etcd.endpoints, cluster=f"t{uuid.uuid4().hex[:8]}", lease_ttl_s=2.0,
                         http_port=http_port, extra=["--tokens-file", str(tokens_file)])
    return process, f"127.0.0.1:{port}", f"http://127.0.0.1:{http_port}"


def code_of(call: Any) -> str:
    """The status code name of the ClientError `call()` raises (it must raise one)."""
    try:
        call()
    except ClientError as refused:
        return refused.code
    raise AssertionError(f"{call!r} was not refused")


def make_undecidable(redis_url: str, cluster: str, workflow_id: str) -> None:
    """Make the workflow's stored copy of its definition one the decider cannot walk (its second
    task loses its reference name, which registration never lets through): what a bug in the
    engine looks like from outside. The workflow must have a second task."""
    import redis

    from orchestrator.store.redis.keys import Keys, cluster_prefix

    keys = Keys(cluster_prefix(cluster))
    with redis.Redis.from_url(redis_url, decode_responses=True) as store:
        row = store.hgetall(keys.workflow(workflow_id))
        snapshot = json.loads(store.get(keys.snapshot(keys.partition_of(workflow_id), row["snap"])) if "snap" in row
                              else row["def"])
        del snapshot["workflow"]["tasks"][1]["taskReferenceName"]
        store.hset(keys.workflow(workflow_id), "def", json.dumps(snapshot))
        store.hdel(keys.workflow(workflow_id), "snap")


def execute_alternately(clients: list[WorkflowClient], name: str, count: int, in_flight: int) -> None:
    """`count` workflows named `name`, `in_flight` at a time, each started and waited for with
    ExecuteWorkflow through the clients in turn; every one must complete."""
    left = [count]
    lock = threading.Lock()
    failures: list[str] = []

    def starter() -> None:
        while True:
            with lock:
                if left[0] == 0:
                    return
                left[0] -= 1
                client = clients[left[0] % len(clients)]
            status = client.execute_workflow(name, {})["status"]
            if status != "COMPLETED":
                failures.append(status)

    threads = [threading.Thread(target=starter) for _ in range(in_flight)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert failures == []


def ended_total(client: Any, keys: Any) -> int:
    """Entries in every partition's `ended` stream (one per workflow end), read in one round trip."""
    with client.pipeline(transaction=False) as pipe:
        for p in keys.all_partitions():
            pipe.xlen(keys.ended(p))
        return sum(int(n) for n in pipe.execute())


def publish_calls(redis_url: str) -> int:
    """PUBLISH commands a Redis has run since it started, those inside Lua scripts included: a node
    publishes `ready` only for a task it queued, and the bus `published` once per event."""
    with redis.Redis.from_url(redis_url) as r:
        return int(r.info("commandstats").get("cmdstat_publish", {}).get("calls", 0))


def index_members(client: Any, keys: Any, *index: str) -> list[str]:
    """The members of one search index (`"name", "<workflow name>"`, ...) over every partition."""
    with client.pipeline(transaction=False) as pipe:
        for p in keys.all_partitions():
            pipe.zrange(keys.index(p, *index), 0, -1)
        return [member for members in pipe.execute() for member in members]


def started_by_key(client: Any, keys: Any, idempotency_key: str) -> str | None:
    """The workflow a start with this idempotency key created (as stored beside the key), or None."""
    from orchestrator.store.redis.keys import partition_of_key

    found = client.get(keys.in_partition(partition_of_key(idempotency_key, keys.partitions), "idem", idempotency_key))
    return str(found) if found is not None else None


def idempotency_keys(client: Any, keys: Any, pattern: str) -> list[str]:
    """The stored idempotency keys (every partition's) whose key matches the glob `pattern`."""
    tag = keys.global_prefix[:-1]   # 'wfo:{name' : the partitions' tags continue it with ':p<n>}'
    return [str(k) for k in client.scan_iter(f"{tag}:p*}}:idem:{pattern}", count=1000)]


def wait_ended(client: WorkflowClient, workflow_ids: list[str], timeout_s: float) -> dict[str, dict[str, Any]]:
    """The workflows (without their tasks) that left RUNNING and PAUSED within `timeout_s`, by id; a
    read the cluster does not answer now (a failover, a slot moving) is tried again at the next look."""
    deadline = time.monotonic() + timeout_s
    found: dict[str, dict[str, Any]] = {}
    while time.monotonic() < deadline and len(found) < len(workflow_ids):
        for workflow_id in workflow_ids:
            if workflow_id not in found:
                try:
                    state = client.get_workflow(workflow_id, include_tasks=False)
                except ClientError:
                    continue
                if state["status"] not in ("RUNNING", "PAUSED"):
                    found[workflow_id] = state
        time.sleep(0.1)
    return found


def ended_counts_on_redis_cluster(seeds: list[str], prefix: str) -> Counter[str]:
    """How often each workflow was recorded as ended, over every partition's `ended` stream, read
    through a store of its own on the Redis Cluster of `seeds`."""
    from orchestrator.store.redis import RedisStore

    async def read() -> Counter[str]:
        store = RedisStore.from_cluster(seeds, prefix)
        try:
            await store.prepare()
            return await store.ended_counts()
        finally:
            await store.close()
    return asyncio.run(read())


def processes_working_in(folder: Path) -> list[int]:
    """The processes whose current folder is `folder` or below it, or whose command line names it
    (a redis-server moves to its `--dir` and rewrites its command line to its address, so only its
    current folder finds it)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().decode(errors="replace")
                cwd = Path(os.readlink(entry / "cwd"))
            except OSError:
                continue
            if str(folder) in argv or cwd.is_relative_to(folder):
                found.append(int(entry.name))
    return found
