"""The `orchestrator` command: run a node, manage definitions and workflows, watch the cluster."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from . import __version__
from .core.statuses import TERMINAL_WORKFLOW

DEFAULT_ENDPOINTS = "127.0.0.1:50051,127.0.0.1:50052,127.0.0.1:50053"
ENDPOINTS_HELP = ("comma-separated node addresses, tried in turn (default: env ORCHESTRATOR_ENDPOINTS, "
                  f"else {DEFAULT_ENDPOINTS}); accepted before or after the command")

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_STILL_RUNNING, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
EXIT_CODES = """exit codes:
  0    done
  1    the cluster refused the call, or (workflowdef validate) a definition is invalid
  2    bad usage: an unknown flag, unreadable file, or invalid JSON/YAML in a flag or file
  3    workflow start --wait: the wait ran out before the workflow ended (it is printed as it is)
  130  interrupted (Ctrl-C)"""
OPERATION_NOTE = "; prints the workflow without its tasks (see `workflow get`)"


class UsageError(Exception):
    """Bad input from the command line (a flag or a file): one line on stderr, exit code 2."""


@dataclass(frozen=True)
class Reply:
    """What an action prints: `output` as JSON on stdout and, when it fell short, a sentence
    on stderr and a non-zero exit code."""

    output: Any
    exit_code: int = EXIT_OK
    note: str = ""


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="orchestrator", description=__doc__, epilog=EXIT_CODES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}",
                        help="print the version and exit")
    parser.add_argument("--endpoints", default=os.environ.get("ORCHESTRATOR_ENDPOINTS", DEFAULT_ENDPOINTS),
                        help=ENDPOINTS_HELP)
    commands = parser.add_subparsers(metavar="COMMAND", help="what to do")
    _add_node(commands)
    _add_definitions(commands)
    _add_workflows(commands)
    cluster = _group(commands, "cluster", "the cluster")
    _add(cluster, "status", "who leads, since when, with which epoch", _cluster_status)
    _add(cluster, "step-down", "ask the leader to resign; another member takes over", _step_down)
    return parser


def _group(commands: Any, name: str, help_text: str) -> Any:
    return commands.add_parser(name, help=help_text).add_subparsers(metavar="ACTION", help=f"{help_text}: actions")


def _add_node(commands: Any) -> None:
    node = commands.add_parser("node", help="run one orchestrator node in the foreground")
    node.add_argument("--config", help="YAML file with node settings (see deploy/)")
    node.add_argument("--node-id", help="this node's name in the cluster (default: the host name)")
    node.add_argument("--listen", help="host:port to serve gRPC on")
    node.add_argument("--advertise", help="host:port other nodes and clients reach this node at")
    node.add_argument("--http-listen", help="host:port of the web console and /metrics (default: the gRPC "
                                            "port + 1000 on the same host; \"\" serves none)")
    node.add_argument("--redis-url", help="the Redis to keep state in, as redis://host:port/db")
    node.add_argument("--redis-sentinels", help="comma-separated Sentinel host:port list (instead of --redis-url)")
    node.add_argument("--redis-master", help="the master name the Sentinels monitor")
    node.add_argument("--etcd", dest="etcd_endpoints", help="comma-separated etcd endpoints host:port")
    node.add_argument("--cluster", help="cluster name (election prefix and Redis key prefix)")
    node.add_argument("--lease-ttl", dest="lease_ttl_s", type=float,
                      help="seconds the leader's etcd lease lives without renewal (failover detection time)")
    node.add_argument("--retention", dest="retention_s", type=float,
                      help="seconds a finished workflow stays in Redis before it is archived (default 7 days)")
    node.add_argument("--archive-dir", help="where archived workflows go; every node must see the same directory")
    node.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR")
    node.set_defaults(handler=run_node)


def _add_definitions(commands: Any) -> None:
    taskdef = _group(commands, "taskdef", "task definitions")
    _add(taskdef, "register", "register task definitions from JSON/YAML files (one object or a list)",
         lambda c, a: [c.register_task_def(d) for d in _all_documents(a.files)], files=True)
    _add(taskdef, "get", "show one task definition", lambda c, a: c.get_task_def(a.name), with_name=True)
    _add(taskdef, "list", "list task definitions", lambda c, a: c.list_task_defs())

    wfdef = _group(commands, "workflowdef", "workflow definitions")
    _add(wfdef, "register", "register workflow definitions from JSON/YAML files",
         lambda c, a: [c.register_workflow_def(d) for d in _dependencies_first(_all_documents(a.files))],
         files=True)
    _add(wfdef, "validate", "check workflow definitions without registering them; exits 1 if any is invalid",
         _validate, files=True)
    _add(wfdef, "get", "show a workflow definition (latest version unless --version)",
         lambda c, a: c.get_workflow_def(a.name, a.version), with_name=True, version=True)
    _add(wfdef, "list", "list workflow definitions", lambda c, a: c.list_workflow_defs())


def _add_workflows(commands: Any) -> None:
    workflow = _group(commands, "workflow", "workflows")
    _add_start(workflow)
    _add(workflow, "get", "show a workflow with its tasks", lambda c, a: c.get_workflow(a.id), wid=True)
    _add_search(workflow)
    terminate = _add(workflow, "terminate", "terminate a running workflow" + OPERATION_NOTE,
                     _operation(lambda c, a: c.terminate_workflow(a.id, a.reason, compensate=a.compensate)),
                     wid=True)
    terminate.add_argument("--reason", default="terminated from the CLI", help="why, stored on the workflow")
    terminate.add_argument("--compensate", action="store_true", help="undo the completed steps first (saga)")
    _add_operations(workflow)
    signal = _add(workflow, "signal", "complete a waiting WAIT or HUMAN task; prints the workflow with its tasks",
                  lambda c, a: c.signal_task(a.id, a.task, output=_json_arg("--output", a.output), failed=a.failed,
                                             reason=a.reason), wid=True)
    signal.add_argument("task", help="task reference")
    signal.add_argument("--output", default="{}", help="task output as a JSON object, or @file.json")
    signal.add_argument("--failed", action="store_true", help="complete it as FAILED")
    signal.add_argument("--reason", default="", help="why (with --failed: the task's failure reason)")
    _add(workflow, "watch", "print a line each time the workflow's or a task's status changes, until it ends "
         "(follows the cluster's endpoints when a node goes away)", _watch, wid=True)


def _add_start(workflow: Any) -> None:
    start = _add(workflow, "start", "start a workflow and print its id (with --wait: the workflow)", _start,
                 with_name=True, version=True)
    start.add_argument("--input", default="{}", help="workflow input as a JSON object, or @file.json")
    start.add_argument("--correlation-id", default="", help="your own id for the workflow, to search by")
    start.add_argument("--idempotency-key", default="",
                       help="a start with a key seen before returns the first workflow (default: a fresh key)")
    start.add_argument("--wait", type=float, default=0.0,
                       help="wait up to N seconds for the end and print the workflow (start-and-wait); "
                            "exit code 3 if it is still running then")


def _add_search(workflow: Any) -> None:
    search = _add(workflow, "search", "search workflows, newest first", _search)
    search.add_argument("--name", default="", help="workflow definition name")
    search.add_argument("--status", default="", help="workflow status, for example RUNNING or COMPLETED")
    search.add_argument("--correlation-id", default="", help="the correlation id given at start")
    search.add_argument("--limit", type=int, default=50, help="at most this many (1 to 1000)")
    search.add_argument("--page-token", default="", help="the next_page_token of the previous page")
    search.add_argument("--from-ms", type=int, default=0, help="created at or after (epoch ms)")
    search.add_argument("--to-ms", type=int, default=0, help="created at or before (epoch ms)")


def _add_operations(workflow: Any) -> None:
    _add(workflow, "pause", "stop scheduling new tasks" + OPERATION_NOTE,
         _operation(lambda c, a: c.pause_workflow(a.id)), wid=True)
    _add(workflow, "resume", "resume a paused workflow" + OPERATION_NOTE,
         _operation(lambda c, a: c.resume_workflow(a.id)), wid=True)
    _add(workflow, "retry", "retry a FAILED or TIMED_OUT workflow from its failed tasks" + OPERATION_NOTE,
         _operation(lambda c, a: c.retry_workflow(a.id)), wid=True)
    restart = _add(workflow, "restart", "run an ended workflow again from the start" + OPERATION_NOTE,
                   _operation(lambda c, a: c.restart_workflow(a.id, use_latest_definition=a.latest)), wid=True)
    restart.add_argument("--latest", action="store_true", help="with the latest version of its definition")
    rerun = _add(workflow, "rerun", "run again from a task (with new input)" + OPERATION_NOTE,
                 _operation(lambda c, a: c.rerun_workflow(a.id, a.task, _json_arg("--input", a.input)
                                                          if a.input else None)), wid=True)
    rerun.add_argument("task", help="task reference (with __<n> inside loops)")
    rerun.add_argument("--input", default="", help="new task input as a JSON object, or @file.json")
    skip = _add(workflow, "skip", "skip a task" + OPERATION_NOTE,
                _operation(lambda c, a: c.skip_task(a.id, a.task)), wid=True)
    skip.add_argument("task", help="task reference")


def _add(group: Any, name: str, help_text: str, action: Callable[[Any, argparse.Namespace], Any], *,
         files: bool = False, with_name: bool = False, version: bool = False,
         wid: bool = False) -> argparse.ArgumentParser:
    sub = group.add_parser(name, help=help_text, description=help_text)
    if files:
        sub.add_argument("files", nargs="+", type=Path, help="JSON or YAML files: one definition or a list")
    if with_name:
        sub.add_argument("name", help="definition name")
    if version:
        sub.add_argument("--version", type=int, default=0, help="definition version (default: the latest)")
    if wid:
        sub.add_argument("id", help="workflow id")
    # SUPPRESS: absent after the command, the value given before it (or the default) stands
    sub.add_argument("--endpoints", default=argparse.SUPPRESS, help=ENDPOINTS_HELP)
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
        return EXIT_REFUSED
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        client.close()
    return _print(result if isinstance(result, Reply) else Reply(result))


def _print(reply: Reply) -> int:
    if reply.output is not None:
        print(json.dumps(reply.output, indent=2, sort_keys=False), flush=True)
    if reply.note:
        print(reply.note, file=sys.stderr)
    return reply.exit_code


def _operation(action: Callable[[Any, argparse.Namespace], dict[str, Any]]
               ) -> Callable[[Any, argparse.Namespace], dict[str, Any]]:
    """Pause, resume, terminate...: the server answers with the workflow but not its tasks, so
    the (empty) task list is left out rather than printed as if the tasks were gone."""
    def run(client: Any, args: argparse.Namespace) -> dict[str, Any]:
        workflow = action(client, args)
        if not workflow.get("tasks"):
            workflow.pop("tasks", None)
        return workflow
    return run


# ------------------------------------------------------------ reading flags and files

def _read(path: Path, where: str) -> str:
    try:
        return path.read_text()
    except OSError as exc:
        raise UsageError(f"{where}: cannot read it: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise UsageError(f"{where}: not UTF-8 text: {exc.reason} at byte {exc.start}") from None


def _parse_json(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{where}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None


def _parse_yaml(text: str, where: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or " ".join(str(exc).split())
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise UsageError(f"{where}: invalid YAML{at}: {problem}") from None


def _json_arg(flag: str, value: str) -> dict[str, Any]:
    """A flag's JSON object, given inline or as @file.json."""
    if value.startswith("@"):
        where = f"{flag} {value}"
        parsed = _parse_json(_read(Path(value[1:]), where), where)
    else:
        where = flag
        parsed = _parse_json(value, flag)
    if not isinstance(parsed, dict):
        raise UsageError(f"{where}: expected a JSON object {{...}}, got {type(parsed).__name__}")
    return parsed


def _documents(path: Path) -> list[dict[str, Any]]:
    """The definitions in a JSON or YAML file: one object or a list of objects.

    A .json file must be JSON; any other file is read as JSON, else as YAML."""
    text = _read(path, str(path))
    if path.suffix.lower() == ".json":
        value = _parse_json(text, str(path))
    else:
        try:
            value = json.loads(text)
        except ValueError:
            value = _parse_yaml(text, str(path))
    documents = value if isinstance(value, list) else [value]
    for index, document in enumerate(documents):
        if not isinstance(document, dict):
            item = f"item {index + 1} is" if isinstance(value, list) else "it holds"
            raise UsageError(f"{path}: expected a definition object or a list of them; {item} "
                             f"a {type(document).__name__}")
    return documents


def _all_documents(paths: list[Path]) -> list[dict[str, Any]]:
    """Every file's definitions, all read before anything is sent."""
    return [document for path in paths for document in _documents(path)]


def _dependencies_first(documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Order workflow definitions so that each comes after the sub-workflows and failure
    workflows it names from the same batch (`register examples/*.yaml` in any file order).
    Names outside the batch must be registered already; a cycle keeps the given order
    (the server then says what is missing)."""
    from .core.definitions import referenced_workflow_names

    by_name = {d.get("name"): d for d in documents}
    ordered: list[dict[str, Any]] = []
    placed: set[int] = set()
    visiting: set[int] = set()

    def place(document: dict[str, Any]) -> None:
        if id(document) in placed or id(document) in visiting:
            return
        visiting.add(id(document))
        for name in sorted(referenced_workflow_names(document)):
            dependency = by_name.get(name)
            if dependency is not None and dependency is not document:
                place(dependency)
        visiting.discard(id(document))
        placed.add(id(document))
        ordered.append(document)

    for document in documents:
        place(document)
    return ordered


# ------------------------------------------------------------ actions

def _validate(client: Any, args: argparse.Namespace) -> Reply:
    documents = [(path, document) for path in args.files for document in _documents(path)]
    report: dict[str, Any] = {}
    invalid = 0
    for path, document in documents:
        valid, errors = client.validate_workflow_def(document)
        report[f"{path}:{document.get('name')}"] = "valid" if valid else errors
        invalid += not valid
    if not invalid:
        return Reply(report)
    return Reply(report, EXIT_REFUSED, f"error: {invalid} of {len(documents)} workflow definitions are invalid "
                                       "(the problems are listed above)")


def _start(client: Any, args: argparse.Namespace) -> Any:
    options = {"version": args.version, "correlation_id": args.correlation_id,
               "idempotency_key": args.idempotency_key}
    workflow_input = _json_arg("--input", args.input)
    if not args.wait:
        return {"workflow_id": client.start_workflow(args.name, workflow_input, **options)}
    workflow = client.execute_workflow(args.name, workflow_input, wait_s=args.wait, **options)
    if workflow["status"] in TERMINAL_WORKFLOW:
        return workflow
    workflow_id = workflow["workflow_id"]
    return Reply(workflow, EXIT_STILL_RUNNING,
                 f"workflow {workflow_id} is still {workflow['status']} after {args.wait:g} s; "
                 f"follow it with `orchestrator workflow watch {workflow_id}`")


def _watch(client: Any, args: argparse.Namespace) -> None:
    shown = ""
    for workflow in client.watch_workflow(args.id, include_tasks=True):
        tasks = ", ".join(f"{t['key']}={t['status']}" for t in workflow.get("tasks", []))
        line = f"{workflow['status']}: {tasks}"
        if line != shown:   # the stream also reports changes a line does not show (outputs, timestamps)
            shown = line
            print(f"{time.strftime('%H:%M:%S')} {line}", flush=True)


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
                             http_listen=args.http_listen,
                             redis_url=args.redis_url, redis_sentinels=args.redis_sentinels,
                             redis_master=args.redis_master, etcd_endpoints=args.etcd_endpoints,
                             cluster=args.cluster, lease_ttl_s=args.lease_ttl_s, log_level=args.log_level,
                             retention_s=args.retention_s, archive_dir=args.archive_dir)
    logging.basicConfig(level=config.log_level.upper(),
                        format=f"%(asctime)s {config.node_id} %(levelname)s %(name)s: %(message)s")
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(Node(config).run_until_signalled())
    return 0


if __name__ == "__main__":
    sys.exit(main())
