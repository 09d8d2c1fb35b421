"""The `orchestrator` command: run a node, manage definitions and workflows, watch the cluster."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any
from collections.abc import Callable

DEFAULT_ENDPOINTS = "127.0.0.1:50051,127.0.0.1:50052,127.0.0.1:50053"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    return int(args.handler(args) or 0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="orchestrator", description=__doc__)
    parser.add_argument("--endpoints", default=os.environ.get("ORCHESTRATOR_ENDPOINTS", DEFAULT_ENDPOINTS),
                        help="comma-separated node addresses, tried in turn (env ORCHESTRATOR_ENDPOINTS)")
    commands = parser.add_subparsers(metavar="COMMAND")

    node = commands.add_parser("node", help="run one orchestrator node in the foreground")
    node.add_argument("--config", help="YAML file with node settings (see deploy/)")
    node.add_argument("--node-id")
    node.add_argument("--listen", help="host:port to serve gRPC on")
    node.add_argument("--advertise", help="host:port other nodes and clients reach this node at")
    node.add_argument("--redis-url")
    node.add_argument("--redis-sentinels", help="comma-separated Sentinel host:port list (instead of --redis-url)")
    node.add_argument("--redis-master", help="the master name the Sentinels monitor")
    node.add_argument("--etcd", dest="etcd_endpoints", help="comma-separated etcd endpoints host:port")
    node.add_argument("--cluster", help="cluster name (election prefix and Redis key prefix)")
    node.add_argument("--lease-ttl", dest="lease_ttl_s", type=float)
    node.add_argument("--log-level")
    node.set_defaults(handler=run_node)

    taskdef = commands.add_parser("taskdef", help="task definitions").add_subparsers(metavar="ACTION")
    _add(taskdef, "register", "register task definitions from JSON/YAML files (one object or a list)",
         lambda c, a: [c.register_task_def(d) for f in a.files for d in _documents(f)], files=True)
    _add(taskdef, "get", "show one task definition", lambda c, a: c.get_task_def(a.name), with_name=True)
    _add(taskdef, "list", "list task definitions", lambda c, a: c.list_task_defs())

    wfdef = commands.add_parser("workflowdef", help="workflow definitions").add_subparsers(metavar="ACTION")
    _add(wfdef, "register", "register workflow definitions from JSON/YAML files",
         lambda c, a: [c.register_workflow_def(d) for f in a.files for d in _documents(f)], files=True)
    _add(wfdef, "validate", "check workflow definitions without registering them", _validate, files=True)
    _add(wfdef, "get", "show a workflow definition (latest version unless --version)",
         lambda c, a: c.get_workflow_def(a.name, a.version), with_name=True, version=True)
    _add(wfdef, "list", "list workflow definitions", lambda c, a: c.list_workflow_defs())

    workflow = commands.add_parser("workflow", help="workflows").add_subparsers(metavar="ACTION")
    start = _add(workflow, "start", "start a workflow and print its id", _start, with_name=True, version=True)
    start.add_argument("--input", default="{}", help="workflow input as JSON, or @file.json")
    start.add_argument("--correlation-id", default="")
    start.add_argument("--idempotency-key", default="")
    start.add_argument("--wait", type=float, default=0.0,
                       help="wait up to N seconds for the end and print the workflow (start-and-wait)")
    _add(workflow, "get", "show a workflow with its tasks", lambda c, a: c.get_workflow(a.id), wid=True)
    search = _add(workflow, "search", "search workflows, newest first", _search)
    search.add_argument("--name", default="")
    search.add_argument("--status", default="")
    search.add_argument("--correlation-id", default="")
    search.add_argument("--limit", type=int, default=50)
    search.add_argument("--page-token", default="")
    search.add_argument("--from-ms", type=int, default=0, help="created at or after (epoch ms)")
    search.add_argument("--to-ms", type=int, default=0, help="created at or before (epoch ms)")
    terminate = _add(workflow, "terminate", "terminate a running workflow",
                     lambda c, a: c.terminate_workflow(a.id, a.reason, compensate=a.compensate), wid=True)
    terminate.add_argument("--reason", default="terminated from the CLI")
    terminate.add_argument("--compensate", action="store_true", help="undo the completed steps first (saga)")
    _add(workflow, "pause", "stop scheduling new tasks", lambda c, a: c.pause_workflow(a.id), wid=True)
    _add(workflow, "resume", "resume a paused workflow", lambda c, a: c.resume_workflow(a.id), wid=True)
    _add(workflow, "retry", "retry a FAILED or TIMED_OUT workflow from its failed tasks",
         lambda c, a: c.retry_workflow(a.id), wid=True)
    restart = _add(workflow, "restart", "run an ended workflow again from the start",
                   lambda c, a: c.restart_workflow(a.id, use_latest_definition=a.latest), wid=True)
    restart.add_argument("--latest", action="store_true", help="with the latest version of its definition")
    rerun = _add(workflow, "rerun", "run again from a task (with new input)",
                 lambda c, a: c.rerun_workflow(a.id, a.task, _json_arg(a.input) if a.input else None), wid=True)
    rerun.add_argument("task", help="task reference (with __<n> inside loops)")
    rerun.add_argument("--input", default="", help="new task input as JSON, or @file.json")
    skip = _add(workflow, "skip", "skip a task", lambda c, a: c.skip_task(a.id, a.task), wid=True)
    skip.add_argument("task", help="task reference")
    signal = _add(workflow, "signal", "complete a waiting WAIT or HUMAN task",
                  lambda c, a: c.signal_task(a.id, a.task, output=_json_arg(a.output), failed=a.failed,
                                             reason=a.reason), wid=True)
    signal.add_argument("task", help="task reference")
    signal.add_argument("--output", default="{}", help="task output as JSON, or @file.json")
    signal.add_argument("--failed", action="store_true", help="complete it as FAILED")
    signal.add_argument("--reason", default="")
    _add(workflow, "watch", "print the workflow each time it changes, until it ends", _watch, wid=True)

    cluster = commands.add_parser("cluster", help="the cluster").add_subparsers(metavar="ACTION")
    _add(cluster, "status", "who leads, since when, with which epoch", _cluster_status)
    _add(cluster, "step-down", "ask the leader to resign; another member takes over", _step_down)
    return parser


def _add(group: Any, name: str, help_text: str, action: Callable[[Any, argparse.Namespace], Any], *,
         files: bool = False, with_name: bool = False, version: bool = False,
         wid: bool = False) -> argparse.ArgumentParser:
    sub = group.add_parser(name, help=help_text)
    if files:
        sub.add_argument("files", nargs="+", type=Path)
    if with_name:
        sub.add_argument("name")
    if version:
        sub.add_argument("--version", type=int, default=0)
    if wid:
        sub.add_argument("id", help="workflow id")
    sub.set_defaults(handler=lambda args: _call(args, action))
    return sub  # type: ignore[no-any-return]


def _call(args: argparse.Namespace, action: Callable[[Any, argparse.Namespace], Any]) -> int:
    from worker import ClientError, WorkflowClient

    from .config import split_list

    client = WorkflowClient(split_list(args.endpoints))
    try:
        result = action(client, args)
    except ClientError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        client.close()
    if result is not None:
        print(json.dumps(result, indent=2, sort_keys=False))
    return 0


def _documents(path: Path) -> list[dict[str, Any]]:
    from .core.definitions import parse_document

    text = path.read_text()
    stripped = text.lstrip()
    if stripped.startswith("["):
        return list(json.loads(text))
    return [parse_document(text)]


def _validate(client: Any, args: argparse.Namespace) -> dict[str, Any]:
    report = {}
    for path in args.files:
        for document in _documents(path):
            valid, errors = client.validate_workflow_def(document)
            report[f"{path}:{document.get('name')}"] = "valid" if valid else errors
    return report


def _json_arg(value: str) -> Any:
    return json.loads(Path(value[1:]).read_text() if value.startswith("@") else value)


def _start(client: Any, args: argparse.Namespace) -> Any:
    options = {"version": args.version, "correlation_id": args.correlation_id,
               "idempotency_key": args.idempotency_key}
    if args.wait:
        return client.execute_workflow(args.name, _json_arg(args.input), wait_s=args.wait, **options)
    return {"workflow_id": client.start_workflow(args.name, _json_arg(args.input), **options)}


def _watch(client: Any, args: argparse.Namespace) -> None:
    for workflow in client.watch_workflow(args.id, include_tasks=True):
        tasks = ", ".join(f"{t['key']}={t['status']}" for t in workflow.get("tasks", []))
        print(f"{time.strftime('%H:%M:%S')} {workflow['status']}: {tasks}", flush=True)


def _search(client: Any, args: argparse.Namespace) -> dict[str, Any]:
    found, token = client.search_workflows(name=args.name, status=args.status,
                                           correlation_id=args.correlation_id, limit=args.limit,
                                           page_token=args.page_token, created_from_ms=args.from_ms,
                                           created_to_ms=args.to_ms)
    return {"workflows": [{k: w.get(k) for k in ("workflow_id", "name", "status", "correlation_id")}
                          for w in found], "next_page_token": token}


def _cluster_status(client: Any, args: argparse.Namespace) -> dict[str, Any]:
    status = client.cluster_status()
    elected = int(status.get("elected_at_ms", 0))
    if elected:
        status["elected_at"] = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(elected / 1000))
        status["leading_for_s"] = round(time.time() - elected / 1000, 1)
    return dict(status)


def _step_down(client: Any, args: argparse.Namespace) -> dict[str, Any]:
    leader = client.cluster_status().get("leader_address")
    if not leader:
        return {"detail": "no leader right now"}
    from worker import WorkflowClient

    with_leader = WorkflowClient([leader])
    try:
        return {"detail": with_leader.step_down()}
    finally:
        with_leader.close()


def run_node(args: argparse.Namespace) -> int:
    from .config import NodeConfig
    from .cluster.event_loop import loop_factory
    from .node import Node

    config = NodeConfig.load(args.config, node_id=args.node_id, listen=args.listen, advertise=args.advertise,
                             redis_url=args.redis_url, redis_sentinels=args.redis_sentinels,
                             redis_master=args.redis_master, etcd_endpoints=args.etcd_endpoints,
                             cluster=args.cluster, lease_ttl_s=args.lease_ttl_s, log_level=args.log_level)
    logging.basicConfig(level=config.log_level.upper(),
                        format=f"%(asctime)s {config.node_id} %(levelname)s %(name)s: %(message)s")
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(Node(config).run_until_signalled())
    return 0


if __name__ == "__main__":
    sys.exit(main())
